//! The polling reader: GetRecords in a loop, paced within Kinesis' 5 calls per second per
//! shard, reading ahead of the worker as far as the read-ahead allows; a new iterator
//! after an expired one; the end of the shard at the null iterator.

use std::convert::Infallible;

use tokio::time::Instant;

use super::{Arrival, ShardReader, Stopped, pacing};
use crate::source::SourceError;

/// Read until the shard ends or a failure no retry fixes; hand that over last.
pub(super) async fn run(mut reader: ShardReader) {
    let Err(stopped) = read(&mut reader).await;
    reader.stop(stopped);
}

/// Read from the reader's resume point to the end of the shard.
pub(super) async fn read(r: &mut ShardReader) -> Result<Infallible, Stopped> {
    let mut iterator = r.acquire_iterator().await?;
    // What the last call returned, and when it was sent: the pacing's input.
    let mut last: Option<(usize, u64, Instant)> = None;
    loop {
        r.queue.room().await;
        if let Some((records, behind, sent_at)) = last {
            let delay = pacing::next_fetch_delay(
                records,
                behind,
                r.settings.idle_time,
                Instant::now().duration_since(sent_at),
            );
            tokio::time::sleep(delay).await;
        }
        // Kinesis counts calls per second from when they are made: pace from the send.
        let sent_at = Instant::now();
        let result = r.source.fetch(&iterator, r.settings.max_records).await;
        match result {
            Ok(fetched) => {
                r.failures = 0;
                last = Some((fetched.records.len(), fetched.millis_behind_latest, sent_at));
                r.hand_over(fetched.records, fetched.millis_behind_latest);
                match fetched.next_iterator {
                    Some(next) => iterator = next,
                    None => return Err(Arrival::End),
                }
            }
            Err(SourceError::ExpiredIterator) => {
                tracing::info!("shard iterator expired; re-acquiring after the last record read");
                iterator = r.acquire_iterator().await?;
            }
            Err(e) => {
                r.recover(e, "fetch failed").await?;
                last = None;
            }
        }
    }
}
