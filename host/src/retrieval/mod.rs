//! How records arrive for one shard: a reader task (polling GetRecords, or an enhanced
//! fan-out subscription) de-aggregates what it reads, drops what was processed already,
//! and queues it for the shard worker, bounded by the read-ahead. Both readers share the
//! "where to resume" type, the de-aggregation and the shard-end handling; the worker only
//! sees [`Arrival`]s.
//!
//! A reader is a task owned by its [`Retrieval`]: dropping the retrieval (rewind, lost
//! lease, shutdown, shard end) aborts the task and discards whatever it read ahead.

pub mod fanout;
pub mod pacing;
pub mod polling;
pub mod queue;
pub mod resume;

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::backoff;
use crate::kpl;
use crate::plugin::bindings::KinesisRecord;
use crate::source::{ShardSource, ShardSubscriber, SourceError, SourceRecord, StartPosition};
use crate::telemetry::metrics::ShardMetrics;
use queue::{ArrivalQueue, ReadAhead};
use resume::Resume;

/// Records ready for the guest: de-aggregated, without what was processed already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievedBatch {
    /// Records, in order.
    pub records: Vec<KinesisRecord>,
    /// How far behind the tip the read was, ms.
    pub millis_behind_latest: u64,
    /// Bytes of record data.
    pub bytes: usize,
}

impl RetrievedBatch {
    /// A batch of `records`.
    pub fn new(records: Vec<KinesisRecord>, millis_behind_latest: u64) -> Self {
        let bytes = records.iter().map(|r| r.data.len()).sum();
        Self {
            records,
            millis_behind_latest,
            bytes,
        }
    }
}

/// What a reader hands its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// The next records (empty only when empty batches are delivered).
    Batch(RetrievedBatch),
    /// Every record of the shard was handed over: the shard has ended.
    End,
    /// An error no retry fixes (stream deleted, access denied, KMS key unusable).
    Failed(String),
}

/// How records are retrieved.
#[derive(Debug, Clone)]
pub enum Mode {
    /// GetRecords, paced, reading ahead up to the read-ahead.
    Polling,
    /// SubscribeToShard through this registered consumer.
    FanOut(Arc<dyn ShardSubscriber>),
}

/// How a reader behaves.
#[derive(Debug, Clone)]
pub struct ReaderSettings {
    /// Records per GetRecords call (≤ 10,000).
    pub max_records: usize,
    /// Sleep when caught up and a fetch returned nothing.
    pub idle_time: Duration,
    /// Hand over empty reads too (for guests that flush on time).
    pub deliver_empty_batches: bool,
    /// How much may be read ahead of the worker.
    pub read_ahead: ReadAhead,
    /// First back-off after a source error.
    pub backoff_initial: Duration,
    /// Longest back-off after source errors.
    pub backoff_max: Duration,
}

/// Opens retrievals for shards: one per process, shared by the workers.
#[derive(Debug, Clone)]
pub struct Retriever {
    source: Arc<dyn ShardSource>,
    mode: Mode,
    settings: ReaderSettings,
}

impl Retriever {
    /// Retrievals from `source` in `mode`.
    pub fn new(source: Arc<dyn ShardSource>, mode: Mode, settings: ReaderSettings) -> Self {
        Self {
            source,
            mode,
            settings,
        }
    }

    /// Start reading `shard` from `resume`.
    pub fn open(&self, shard: &str, resume: Resume, metrics: ShardMetrics) -> Retrieval {
        self.open_in(
            self.mode.clone(),
            self.settings.read_ahead,
            shard,
            resume,
            metrics,
        )
    }

    /// Read `shard` from `resume` to its end by polling, one batch at a time (re-reading
    /// a closed shard's tail, e.g. to dead-letter it).
    pub fn open_serial_polling(
        &self,
        shard: &str,
        resume: Resume,
        metrics: ShardMetrics,
    ) -> Retrieval {
        self.open_in(Mode::Polling, ReadAhead::SERIAL, shard, resume, metrics)
    }

    fn open_in(
        &self,
        mode: Mode,
        read_ahead: ReadAhead,
        shard: &str,
        resume: Resume,
        metrics: ShardMetrics,
    ) -> Retrieval {
        let queue = Arc::new(ArrivalQueue::new(read_ahead));
        let reader = ShardReader {
            source: Arc::clone(&self.source),
            shard: shard.to_string(),
            resume,
            settings: self.settings.clone(),
            queue: Arc::clone(&queue),
            metrics,
            failures: 0,
        };
        let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
            match mode {
                Mode::Polling => polling::run(reader).await,
                Mode::FanOut(subscriber) => fanout::run(reader, subscriber).await,
            }
        }));
        Retrieval { queue, task }
    }
}

/// One shard's records as they arrive; dropping it stops the reader.
#[derive(Debug)]
pub struct Retrieval {
    queue: Arc<ArrivalQueue>,
    task: tokio::task::JoinHandle<()>,
}

impl Retrieval {
    /// The next arrival. Cancel-safe.
    pub async fn next(&self) -> Arrival {
        self.queue.pop().await
    }

    /// Whether the next arrival is ready now (`next` would not wait) and is a batch with
    /// records.
    pub fn has_records_next(&self) -> bool {
        self.queue.has_records_next()
    }
}

impl Drop for Retrieval {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a reader stopped reading: what it hands the worker last.
type Stopped = Arrival;

/// The state both readers share: where they are, the queue, the back-off.
struct ShardReader {
    source: Arc<dyn ShardSource>,
    shard: String,
    resume: Resume,
    settings: ReaderSettings,
    queue: Arc<ArrivalQueue>,
    metrics: ShardMetrics,
    /// Consecutive failed source calls.
    failures: u32,
}

impl ShardReader {
    /// De-aggregate, drop what was processed, and queue what is left (an empty read only
    /// when empty batches are delivered); the resume point moves past it.
    fn hand_over(&mut self, read: Vec<SourceRecord>, millis_behind_latest: u64) {
        self.metrics.set_behind_latest(millis_behind_latest);
        let mut records = Vec::with_capacity(read.len());
        for record in read {
            kpl::deaggregate_into(record, &self.shard, &mut records);
        }
        self.resume.trim(&mut records);
        if let Some(last) = records.last() {
            self.resume
                .delivered_through(&crate::plugin::bindings::Position {
                    sequence_number: last.sequence_number.clone(),
                    sub_sequence_number: last.sub_sequence_number,
                });
        }
        if !records.is_empty() || self.settings.deliver_empty_batches {
            self.queue.push(Arrival::Batch(RetrievedBatch::new(
                records,
                millis_behind_latest,
            )));
        }
    }

    /// A new iterator where the resume point says, retrying what a retry may fix.
    async fn acquire_iterator(&mut self) -> Result<String, Stopped> {
        loop {
            match self
                .source
                .iterator(&self.shard, self.resume.position())
                .await
            {
                Ok(iterator) => {
                    self.resume.acquired();
                    return Ok(iterator);
                }
                Err(SourceError::Fatal(e)) => {
                    return Err(Arrival::Failed(format!(
                        "cannot get an iterator for shard {}: {e}",
                        self.shard
                    )));
                }
                Err(e) => self.recover(e, "cannot get a shard iterator").await?,
            }
        }
    }

    /// React to a failed source call: a shard or stream that is really gone stops the
    /// reader; anything else is counted and backed off.
    async fn recover(&mut self, error: SourceError, what: &str) -> Result<(), Stopped> {
        match error {
            SourceError::NotFound(ref e) => self.confirm_gone(e).await?,
            SourceError::Fatal(ref e) => {
                return Err(Arrival::Failed(format!(
                    "cannot read shard {}: {e}",
                    self.shard
                )));
            }
            _ => {}
        }
        self.failures += 1;
        let delay = backoff::jittered(
            self.failures,
            self.settings.backoff_initial,
            self.settings.backoff_max,
        );
        tracing::warn!(
            attempt = self.failures,
            delay_ms = delay.as_millis() as u64,
            "{what}: {error}"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// A `ResourceNotFound` alone does not end a shard: ask the listing whether the shard
    /// (or the whole stream) is really gone. `Ok` means retry.
    async fn confirm_gone(&self, error: &str) -> Result<(), Stopped> {
        match self.source.list_shards().await {
            Ok(shards) if shards.iter().any(|s| s.shard_id == self.shard) => {
                tracing::warn!(
                    "shard not found ({error}), yet the stream still lists it; retrying"
                );
                Ok(())
            }
            Ok(_) => {
                tracing::warn!(
                    "the stream no longer lists this shard (expired past retention); treating it as ended"
                );
                Err(Arrival::End)
            }
            Err(SourceError::NotFound(e)) => Err(Arrival::Failed(format!(
                "stream {} not found ({e}): it was deleted or the name, ARN or region is wrong",
                self.source.stream_name()
            ))),
            Err(e) => {
                tracing::warn!("shard not found ({error}) and the listing failed ({e}); retrying");
                Ok(())
            }
        }
    }

    /// Whether the stream lists this shard as closed (no record will be added to it).
    async fn listed_closed(&self) -> bool {
        match self.source.list_shards().await {
            Ok(shards) => shards
                .iter()
                .any(|s| s.shard_id == self.shard && s.is_closed()),
            Err(e) => {
                tracing::debug!("cannot list shards to check for shard end: {e}");
                false
            }
        }
    }

    /// Hand over what stopped the reader (end of shard, or a failure).
    fn stop(&self, stopped: Stopped) {
        self.queue.push(stopped);
    }
}

/// The start position of a resume point (for logs).
fn describe(position: &StartPosition) -> String {
    match position {
        StartPosition::TrimHorizon => "TRIM_HORIZON".into(),
        StartPosition::Latest => "LATEST".into(),
        StartPosition::AtTimestamp(ms) => format!("AT_TIMESTAMP {ms}"),
        StartPosition::AtSequence(s) => format!("AT_SEQUENCE_NUMBER {s}"),
        StartPosition::AfterSequence(s) => format!("AFTER_SEQUENCE_NUMBER {s}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::local::LocalSource;

    /// A local stream whose one shard, `shardId-0`, holds `records` records `r0`, `r1`, …
    pub(super) fn local_shard(records: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines: String = (0..records)
            .map(|n| format!("{{\"partition_key\":\"k\",\"data\":\"r{n}\"}}\n"))
            .collect();
        std::fs::write(dir.path().join("shardId-0.jsonl"), lines).expect("shard file");
        dir
    }

    /// Reading 10 records a call with `read_ahead`, backing off briefly.
    pub(super) fn settings(read_ahead: ReadAhead) -> ReaderSettings {
        ReaderSettings {
            max_records: 10,
            idle_time: Duration::from_millis(50),
            deliver_empty_batches: false,
            read_ahead,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        }
    }

    /// A local stream with one shard of `records` records, and a polling retriever.
    fn retriever(records: usize, read_ahead: ReadAhead) -> (tempfile::TempDir, Retriever) {
        let dir = local_shard(records);
        let source: Arc<dyn ShardSource> = Arc::new(LocalSource::new(dir.path(), "s"));
        (
            dir,
            Retriever::new(source, Mode::Polling, settings(read_ahead)),
        )
    }

    fn open(retriever: &Retriever) -> Retrieval {
        let metrics = crate::telemetry::metrics::metrics().shard("shardId-0");
        retriever.open(
            "shardId-0",
            Resume::from_checkpoint(
                &crate::lease::Checkpoint::TrimHorizon,
                &StartPosition::TrimHorizon,
            ),
            metrics,
        )
    }

    /// Paced at 5 calls a second, the reader would make three more calls in this time.
    const THREE_CALLS: Duration = Duration::from_millis(700);

    #[tokio::test]
    async fn polling_reads_ahead_up_to_its_bound_while_the_worker_is_busy() {
        let (_dir, retriever) = retriever(
            100,
            ReadAhead {
                records: 15,
                bytes: 1 << 20,
            },
        );
        let retrieval = open(&retriever);
        // 10 queued < 15: one more read; 20 ≥ 15: no more, however long the worker takes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while retrieval.queue.queued().0 < 20 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(retrieval.queue.queued().0, 20);
        tokio::time::sleep(THREE_CALLS).await;
        assert_eq!(retrieval.queue.queued().0, 20);
        let mut seen = Vec::new();
        while seen.len() < 100 {
            match retrieval.next().await {
                Arrival::Batch(b) => seen.extend(b.records.into_iter().map(|r| r.data)),
                other => panic!("{other:?}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..100).map(|n| format!("r{n}").into_bytes()).collect();
        assert_eq!(seen, expected, "every record once, in order");
    }

    #[tokio::test]
    async fn serial_polling_reads_only_when_asked() {
        let (_dir, retriever) = retriever(100, ReadAhead::SERIAL);
        let retrieval = open(&retriever);
        tokio::time::sleep(THREE_CALLS).await;
        assert_eq!(retrieval.queue.queued().0, 0, "nothing read before asked");
        assert!(matches!(retrieval.next().await, Arrival::Batch(b) if b.records.len() == 10));
        tokio::time::sleep(THREE_CALLS).await;
        assert_eq!(
            retrieval.queue.queued().0,
            0,
            "nothing read while processing"
        );
    }

    #[tokio::test]
    async fn a_closed_shard_ends_after_its_last_record() {
        let (dir, retriever) = retriever(25, ReadAhead::SERIAL);
        std::fs::write(dir.path().join("shardId-0.closed"), "").expect("close");
        let retrieval = open(&retriever);
        let mut records = 0;
        loop {
            match retrieval.next().await {
                Arrival::Batch(b) => records += b.records.len(),
                Arrival::End => break,
                Arrival::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(records, 25);
    }
}
