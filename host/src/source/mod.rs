//! Where records come from: the `ShardSource` trait (list shards, get an iterator, fetch
//! records) with two implementations, Kinesis and a local directory of JSON-lines files,
//! and `ShardSubscriber` for records the service pushes (Kinesis enhanced fan-out).

pub mod fanout;
pub mod kinesis;
pub mod kinesis_http;
pub mod local;
pub mod metered;

/// A shard as the source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDescription {
    /// The shard id.
    pub shard_id: String,
    /// The parent (split or merge).
    pub parent_shard_id: Option<String>,
    /// The other parent of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// Hash key range start.
    pub starting_hash_key: Option<String>,
    /// Hash key range end.
    pub ending_hash_key: Option<String>,
    /// The last sequence number of a closed shard (`SequenceNumberRange`'s
    /// `EndingSequenceNumber`); `None` while the shard is open.
    pub ending_sequence_number: Option<String>,
}

impl ShardDescription {
    /// Both parents, if any.
    pub fn parents(&self) -> Vec<String> {
        self.parent_shard_id
            .iter()
            .chain(self.adjacent_parent_shard_id.iter())
            .cloned()
            .collect()
    }

    /// Closed: no record will be added (a reshard made it a parent).
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record.
    TrimHorizon,
    /// Records arriving from now on.
    Latest,
    /// Records that arrived at or after this time (ms since the epoch).
    AtTimestamp(i64),
    /// The record with this sequence number and everything after it.
    AtSequence(String),
    /// Everything after the record with this sequence number.
    AfterSequence(String),
}

pub use crate::source_record::SourceRecord;

/// One fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Records, in order.
    pub records: Vec<SourceRecord>,
    /// The iterator for the next fetch; `None` at shard end.
    pub next_iterator: Option<String>,
    /// How far behind the tip, ms.
    pub millis_behind_latest: u64,
    /// Child shards reported at shard end (a hint; lineage comes from the shard list).
    pub child_shards: Vec<String>,
}

/// Why a source call failed, in the terms a shard reader acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Over the shard's read limit (or KMS throttling): back off and retry.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The iterator is older than 5 minutes: get a new one from the last position.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// The shard (or stream) does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// 5xx, timeouts, dropped connections: back off and retry.
    #[error("transient source error: {0}")]
    Transient(String),
    /// Retrying will not help (access denied, bad request).
    #[error("source error: {0}")]
    Fatal(String),
}

/// A stream of shards.
#[async_trait::async_trait]
pub trait ShardSource: Send + Sync + std::fmt::Debug {
    /// The stream's name (passed to guests).
    fn stream_name(&self) -> &str;

    /// Every shard, open or closed, that the stream still lists.
    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError>;

    /// The ids of the shards that were open at `at_ms` (ms since the epoch): created at
    /// or before it and closed at or after it, or still open (ListShards with the
    /// `AT_TIMESTAMP` shard filter). `None` when the source cannot tell.
    async fn shards_open_at(&self, at_ms: i64) -> Result<Option<Vec<String>>, SourceError> {
        let _ = at_ms;
        Ok(None)
    }

    /// An iterator for `shard_id` at `position`.
    async fn iterator(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, SourceError>;

    /// Up to `limit` records from `iterator`.
    async fn fetch(&self, iterator: &str, limit: usize) -> Result<Fetched, SourceError>;
}

/// One pushed event of a subscription (enhanced fan-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEvent {
    /// Records, in order.
    pub records: Vec<SourceRecord>,
    /// Where a new subscription continues (after this sequence number); `None` once the
    /// shard has ended and every record was sent.
    pub continuation: Option<String>,
    /// How far behind the tip, ms.
    pub millis_behind_latest: u64,
    /// Child shards, sent with the end of the shard.
    pub child_shards: Vec<String>,
}

/// Subscriptions to shards of a stream (Kinesis enhanced fan-out).
#[async_trait::async_trait]
pub trait ShardSubscriber: Send + Sync + std::fmt::Debug {
    /// Subscribe to `shard_id` from `position`; the subscription ends by itself after a
    /// while (5 minutes on Kinesis), when a new one continues.
    async fn subscribe(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<Box<dyn Subscription>, SourceError>;
}

/// An open subscription's events.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// The next event; `None` when the subscription ended.
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, SourceError>;
}
