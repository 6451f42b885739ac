//! The enhanced fan-out reader: SubscribeToShard from the resume point, each pushed event
//! handed over and its continuation remembered; a new subscription when one ends (after
//! 5 minutes on Kinesis) or fails, at most one a second and with back-off. The next event
//! is read only when the queue has room, so a slow guest slows the push (HTTP/2 flow
//! control) instead of filling memory.
//!
//! The end of a shard is the event with no continuation (it carries the child shards). A
//! service that never sends one (kinesis-mock) is covered by the listing: while caught
//! up, the reader asks every few seconds whether the shard is closed, and if so reads the
//! rest by polling, which ends at the null iterator.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Arrival, ShardReader, Stopped, describe, polling};
use crate::source::{ShardSubscriber, SourceError};

/// Kinesis accepts one SubscribeToShard a second per consumer and shard.
const MIN_SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);
/// While caught up, how often to ask the listing whether the shard was closed.
const END_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Kinesis sends an event at least every 5 s; this long without one, the connection is
/// taken for dead and a new subscription made.
const EVENT_SILENCE: Duration = Duration::from_secs(30);

/// Read until the shard ends or a failure no retry fixes; hand that over last.
pub(super) async fn run(mut reader: ShardReader, subscriber: Arc<dyn ShardSubscriber>) {
    let Err(stopped) = read(&mut reader, subscriber.as_ref()).await;
    reader.stop(stopped);
}

/// How a subscription ended.
enum Ended {
    /// It ran its course or broke: subscribe again.
    Resubscribe,
    /// The listing says the shard is closed: read the rest by polling.
    Closed,
}

async fn read(
    r: &mut ShardReader,
    subscriber: &dyn ShardSubscriber,
) -> Result<Infallible, Stopped> {
    let mut last_subscribe: Option<Instant> = None;
    loop {
        if let Some(at) = last_subscribe {
            tokio::time::sleep_until(at + MIN_SUBSCRIBE_INTERVAL).await;
        }
        last_subscribe = Some(Instant::now());
        let from = r.resume.position().clone();
        let mut subscription = match subscriber.subscribe(&r.shard, &from).await {
            Ok(subscription) => subscription,
            Err(e) => {
                r.recover(e, "cannot subscribe to the shard").await?;
                continue;
            }
        };
        r.resume.acquired();
        tracing::debug!(from = %describe(&from), "subscribed to the shard");
        match follow(r, subscription.as_mut()).await? {
            Ended::Resubscribe => {}
            Ended::Closed => {
                tracing::info!(
                    "the shard is closed and the subscription caught up; reading its end by polling"
                );
                return polling::read(r).await;
            }
        }
    }
}

/// Hand over one subscription's events until it ends.
async fn follow(
    r: &mut ShardReader,
    subscription: &mut dyn crate::source::Subscription,
) -> Result<Ended, Stopped> {
    let mut checked_end_at = Instant::now();
    loop {
        r.queue.room().await;
        let event = match tokio::time::timeout(EVENT_SILENCE, subscription.next_event()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => {
                tracing::debug!("subscription ended; subscribing again");
                return Ok(Ended::Resubscribe);
            }
            Ok(Err(e)) => {
                r.recover(e, "subscription failed").await?;
                return Ok(Ended::Resubscribe);
            }
            Err(_silent) => {
                let silence =
                    SourceError::Transient(format!("no event for {}s", EVENT_SILENCE.as_secs()));
                r.recover(silence, "subscription silent").await?;
                return Ok(Ended::Resubscribe);
            }
        };
        r.failures = 0;
        let caught_up = event.records.is_empty() && event.millis_behind_latest == 0;
        r.hand_over(event.records, event.millis_behind_latest);
        match &event.continuation {
            Some(continuation) => r.resume.continue_after(continuation),
            None => {
                tracing::info!(children = ?event.child_shards, "the subscription reached the end of the shard");
                return Err(Arrival::End);
            }
        }
        if caught_up && checked_end_at.elapsed() >= END_CHECK_INTERVAL {
            checked_end_at = Instant::now();
            if r.listed_closed().await {
                return Ok(Ended::Closed);
            }
        }
    }
}
