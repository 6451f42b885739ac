//! The record every stream source delivers (and the GetRecords body reader builds), before
//! KPL de-aggregation. Outside the engine so the body reader's fuzz target can build it.

/// A record as the source delivers it, before KPL de-aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Sequence number.
    pub sequence_number: String,
    /// Partition key.
    pub partition_key: String,
    /// Approximate arrival, ms since the epoch.
    pub approximate_arrival_ms: i64,
    /// Explicit hash key, if the source knows it.
    pub explicit_hash_key: Option<String>,
    /// The payload (possibly a KPL aggregate).
    pub data: Vec<u8>,
}
