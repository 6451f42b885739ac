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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::retrieval::queue::ReadAhead;
    use crate::retrieval::resume::Resume;
    use crate::retrieval::{Mode, Retrieval, Retriever};
    use crate::source::local::LocalSource;
    use crate::source::{ShardEvent, ShardSource, StartPosition, Subscription};

    /// Pushes a local shard's records as events of up to 10, `events_per_subscription`
    /// events a subscription; at the end of a closed shard, an event without a
    /// continuation — or, `never_ends`, empty events forever (as kinesis-mock does).
    #[derive(Debug)]
    struct FakeSubscriber {
        source: Arc<LocalSource>,
        events_per_subscription: usize,
        never_ends: bool,
        subscriptions: Mutex<Vec<StartPosition>>,
    }

    struct FakeSubscription {
        source: Arc<LocalSource>,
        iterator: Option<String>,
        left: usize,
        never_ends: bool,
        last: Option<String>,
    }

    #[async_trait::async_trait]
    impl ShardSubscriber for FakeSubscriber {
        async fn subscribe(
            &self,
            shard_id: &str,
            position: &StartPosition,
        ) -> Result<Box<dyn Subscription>, SourceError> {
            self.subscriptions
                .lock()
                .expect("lock")
                .push(position.clone());
            let iterator = self.source.iterator(shard_id, position).await?;
            Ok(Box::new(FakeSubscription {
                source: Arc::clone(&self.source),
                iterator: Some(iterator),
                left: self.events_per_subscription,
                never_ends: self.never_ends,
                last: None,
            }))
        }
    }

    #[async_trait::async_trait]
    impl Subscription for FakeSubscription {
        async fn next_event(&mut self) -> Result<Option<ShardEvent>, SourceError> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            let Some(iterator) = &self.iterator else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Ok(Some(ShardEvent {
                    records: Vec::new(),
                    continuation: self.last.clone(),
                    millis_behind_latest: 0,
                    child_shards: Vec::new(),
                }));
            };
            let fetched = self.source.fetch(iterator, 10).await?;
            if let Some(last) = fetched.records.last() {
                self.last = Some(last.sequence_number.clone());
            }
            self.iterator = fetched.next_iterator;
            let ended = self.iterator.is_none() && !self.never_ends;
            Ok(Some(ShardEvent {
                records: fetched.records,
                continuation: if ended { None } else { self.last.clone() },
                millis_behind_latest: 0,
                child_shards: if ended {
                    vec!["shardId-1".into()]
                } else {
                    Vec::new()
                },
            }))
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        subscriber: Arc<FakeSubscriber>,
        retrieval: Retrieval,
    }

    fn setup(records: usize, closed: bool, never_ends: bool, read_ahead: ReadAhead) -> Setup {
        let dir = crate::retrieval::tests::local_shard(records);
        if closed {
            std::fs::write(dir.path().join("shardId-0.closed"), "").expect("close");
        }
        let source = Arc::new(LocalSource::new(dir.path(), "s"));
        let subscriber = Arc::new(FakeSubscriber {
            source: Arc::clone(&source),
            events_per_subscription: 3,
            never_ends,
            subscriptions: Mutex::new(Vec::new()),
        });
        let settings = crate::retrieval::tests::settings(read_ahead);
        let mode = Mode::FanOut(Arc::clone(&subscriber) as Arc<dyn ShardSubscriber>);
        let retriever = Retriever::new(source, mode, settings);
        let retrieval = retriever.open(
            "shardId-0",
            Resume::from_checkpoint(
                &crate::lease::Checkpoint::TrimHorizon,
                &StartPosition::TrimHorizon,
            ),
            crate::telemetry::metrics::metrics().shard("shardId-0"),
        );
        Setup {
            _dir: dir,
            subscriber,
            retrieval,
        }
    }

    /// Every record's data until the end of the shard.
    async fn read_to_end(retrieval: &Retrieval) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match retrieval.next().await {
                Arrival::Batch(b) => seen.extend(
                    b.records
                        .into_iter()
                        .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
                ),
                Arrival::End => return seen,
                Arrival::Failed(e) => panic!("{e}"),
            }
        }
    }

    fn expected(records: usize) -> Vec<String> {
        (0..records).map(|n| format!("r{n}")).collect()
    }

    #[tokio::test]
    async fn subscribes_again_from_each_continuation_and_ends_with_the_last_event() {
        let s = setup(95, true, false, ReadAhead::SERIAL);
        assert_eq!(read_to_end(&s.retrieval).await, expected(95));
        let seq = LocalSource::sequence_of;
        assert_eq!(
            *s.subscriber.subscriptions.lock().expect("lock"),
            vec![
                StartPosition::TrimHorizon,
                StartPosition::AfterSequence(seq(30)),
                StartPosition::AfterSequence(seq(60)),
                StartPosition::AfterSequence(seq(90)),
            ]
        );
    }

    #[tokio::test]
    async fn a_closed_shard_the_service_never_ends_is_ended_through_the_listing() {
        let s = setup(25, true, true, ReadAhead::SERIAL);
        let read = tokio::time::timeout(END_CHECK_INTERVAL * 4, read_to_end(&s.retrieval))
            .await
            .expect("the end is found within a few listing checks");
        assert_eq!(read, expected(25));
    }

    #[tokio::test]
    async fn events_are_read_only_while_there_is_room() {
        let s = setup(
            200,
            false,
            false,
            ReadAhead {
                records: 15,
                bytes: 1 << 20,
            },
        );
        let queued = |s: &Setup| s.retrieval.queue.queued().0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while queued(&s) < 20 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            queued(&s),
            20,
            "two events of 10: 10 < 15 read on, 20 ≥ 15 stop"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(queued(&s), 20, "no event read while the worker is busy");
        let mut seen = Vec::new();
        while seen.len() < 200 {
            match s.retrieval.next().await {
                Arrival::Batch(b) => seen.extend(
                    b.records
                        .into_iter()
                        .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, expected(200));
    }
}
