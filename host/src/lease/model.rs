//! The lease record (KCL 2.x compatible fields) and checkpoint values, as pure data.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Where a shard's processing has got to, as stored in the lease's `checkpoint`
/// attribute (plus `checkpointSubSequenceNumber`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Nothing processed yet: start at the oldest record.
    TrimHorizon,
    /// Nothing processed yet: start at the tip.
    Latest,
    /// Nothing processed yet: start at the configured timestamp.
    AtTimestamp,
    /// Every record of a closed shard has been processed.
    ShardEnd,
    /// Processed through this record (and sub-record).
    Sequence {
        /// The record's sequence number.
        sequence: String,
        /// Its sub-sequence number (0 unless aggregated).
        sub_sequence: u64,
    },
}

impl Checkpoint {
    /// The `checkpoint` attribute value.
    pub fn as_attribute(&self) -> &str {
        match self {
            Checkpoint::TrimHorizon => "TRIM_HORIZON",
            Checkpoint::Latest => "LATEST",
            Checkpoint::AtTimestamp => "AT_TIMESTAMP",
            Checkpoint::ShardEnd => "SHARD_END",
            Checkpoint::Sequence { sequence, .. } => sequence,
        }
    }

    /// The `checkpointSubSequenceNumber` attribute value.
    pub fn sub_sequence(&self) -> u64 {
        match self {
            Checkpoint::Sequence { sub_sequence, .. } => *sub_sequence,
            _ => 0,
        }
    }

    /// Rebuild from the two stored attributes.
    pub fn from_attributes(checkpoint: &str, sub_sequence: u64) -> Result<Self, String> {
        Ok(match checkpoint {
            "TRIM_HORIZON" => Checkpoint::TrimHorizon,
            "LATEST" => Checkpoint::Latest,
            "AT_TIMESTAMP" => Checkpoint::AtTimestamp,
            "SHARD_END" => Checkpoint::ShardEnd,
            s if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Checkpoint::Sequence {
                sequence: s.to_string(),
                sub_sequence,
            },
            other => return Err(format!("unknown checkpoint value {other:?}")),
        })
    }

    /// Whether this checkpoint is a processed position (not a starting sentinel).
    pub fn is_position(&self) -> bool {
        matches!(self, Checkpoint::Sequence { .. } | Checkpoint::ShardEnd)
    }

    /// Would moving from `self` to `next` go backwards? Sentinels are before every
    /// position; `SHARD_END` is after every position.
    pub fn is_behind(&self, next: &Checkpoint) -> bool {
        compare(self, next) == Ordering::Greater
    }
}

fn compare(a: &Checkpoint, b: &Checkpoint) -> Ordering {
    use Checkpoint::*;
    match (a, b) {
        (ShardEnd, ShardEnd) => Ordering::Equal,
        (ShardEnd, _) => Ordering::Greater,
        (_, ShardEnd) => Ordering::Less,
        (
            Sequence {
                sequence: sa,
                sub_sequence: ua,
            },
            Sequence {
                sequence: sb,
                sub_sequence: ub,
            },
        ) => compare_sequence_numbers(sa, sb).then(ua.cmp(ub)),
        (Sequence { .. }, _) => Ordering::Greater,
        (_, Sequence { .. }) => Ordering::Less,
        _ => Ordering::Equal,
    }
}

/// Compare two decimal sequence numbers of any length numerically.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::Sequence {
                sequence,
                sub_sequence,
            } if *sub_sequence > 0 => write!(f, "{sequence}/{sub_sequence}"),
            other => f.write_str(other.as_attribute()),
        }
    }
}

/// The first and last record of the batch a holder is delivering (with
/// `consumer.stable_batches`), written with the lease before the guest sees the batch, so
/// that a worker delivering it again after a crash or a lease move cuts the same batch.
/// Stored as one attribute (`shoalPendingBatch`): `<first>/<sub> <last>/<sub>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchExtent {
    /// The first record's sequence number.
    pub first_sequence: String,
    /// Its sub-sequence number.
    pub first_sub_sequence: u64,
    /// The last record's sequence number.
    pub last_sequence: String,
    /// Its sub-sequence number.
    pub last_sub_sequence: u64,
}

impl BatchExtent {
    /// The stored attribute value.
    pub fn as_attribute(&self) -> String {
        format!(
            "{}/{} {}/{}",
            self.first_sequence,
            self.first_sub_sequence,
            self.last_sequence,
            self.last_sub_sequence
        )
    }

    /// Rebuild from the stored attribute.
    pub fn from_attribute(value: &str) -> Result<Self, String> {
        let bad = || format!("pending batch {value:?} is not `<sequence>/<sub> <sequence>/<sub>`");
        let position = |text: &str| -> Result<(String, u64), String> {
            let (sequence, sub) = text.split_once('/').ok_or_else(bad)?;
            if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            Ok((sequence.to_string(), sub.parse().map_err(|_| bad())?))
        };
        let (first, last) = value.split_once(' ').ok_or_else(bad)?;
        let (first_sequence, first_sub_sequence) = position(first)?;
        let (last_sequence, last_sub_sequence) = position(last)?;
        Ok(Self {
            first_sequence,
            first_sub_sequence,
            last_sequence,
            last_sub_sequence,
        })
    }

    /// Where a record lies against the extent: before its first record (`Less`), inside
    /// it (`Equal`), or after its last (`Greater`).
    pub fn locate(&self, sequence: &str, sub_sequence: u64) -> Ordering {
        let at = |s: &str, u: u64| compare_sequence_numbers(sequence, s).then(sub_sequence.cmp(&u));
        if at(&self.first_sequence, self.first_sub_sequence) == Ordering::Less {
            Ordering::Less
        } else if at(&self.last_sequence, self.last_sub_sequence) == Ordering::Greater {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }

    /// Whether `checkpoint` covers the whole extent (nothing of it is left to deliver).
    pub fn is_covered_by(&self, checkpoint: &Checkpoint) -> bool {
        let last = Checkpoint::Sequence {
            sequence: self.last_sequence.clone(),
            sub_sequence: self.last_sub_sequence,
        };
        checkpoint.is_behind(&last) || checkpoint == &last
    }
}

impl fmt::Display for BatchExtent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_attribute())
    }
}

/// One shard's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `leaseKey`: the shard id.
    pub key: String,
    /// `leaseOwner`: the worker holding it, if any.
    pub owner: Option<String>,
    /// `leaseCounter`: the fencing token; every write is conditional on it and bumps it.
    pub counter: u64,
    /// `checkpoint` + `checkpointSubSequenceNumber`.
    pub checkpoint: Checkpoint,
    /// `ownerSwitchesSinceCheckpoint`.
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId` (a string set).
    pub parent_shard_ids: Vec<String>,
    /// `childShardIds` (a string set).
    pub child_shard_ids: Vec<String>,
    /// `startingHashKey`.
    pub starting_hash_key: Option<String>,
    /// `endingHashKey`.
    pub ending_hash_key: Option<String>,
    /// A worker asking the owner to hand this lease over gracefully (finish the batch,
    /// checkpoint, release). shoal's own attribute (`shoalHandoffTo`); KCL ignores it.
    pub handoff_to: Option<String>,
    /// The batch being delivered when it was written (`consumer.stable_batches`): shoal's
    /// own attribute (`shoalPendingBatch`); KCL ignores it.
    pub pending_batch: Option<BatchExtent>,
    /// Attributes written by other tools, kept as they are (store-specific encoding).
    pub extra: BTreeMap<String, String>,
}

impl Lease {
    /// A new, unowned lease for a shard.
    pub fn new(key: &str, checkpoint: Checkpoint) -> Self {
        Self {
            key: key.to_string(),
            owner: None,
            counter: 0,
            checkpoint,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            starting_hash_key: None,
            ending_hash_key: None,
            handoff_to: None,
            pending_batch: None,
            extra: BTreeMap::new(),
        }
    }

    /// Finished: the shard is closed and fully processed.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == Checkpoint::ShardEnd
    }

    /// Held by `worker`.
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.owner.as_deref() == Some(worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str, sub: u64) -> Checkpoint {
        Checkpoint::Sequence {
            sequence: s.into(),
            sub_sequence: sub,
        }
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence_numbers("0010", "10"), Ordering::Equal);
        assert_eq!(
            compare_sequence_numbers(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618"
            ),
            Ordering::Less
        );
    }

    #[test]
    fn checkpoints_order_sentinels_positions_and_shard_end() {
        assert!(seq("20", 0).is_behind(&Checkpoint::TrimHorizon));
        assert!(!Checkpoint::TrimHorizon.is_behind(&seq("1", 0)));
        assert!(seq("20", 3).is_behind(&seq("20", 2)));
        assert!(!seq("20", 3).is_behind(&seq("21", 0)));
        assert!(Checkpoint::ShardEnd.is_behind(&seq("99", 0)));
        assert!(!seq("99", 0).is_behind(&Checkpoint::ShardEnd));
    }

    #[test]
    fn checkpoints_round_trip_through_attributes() {
        for c in [
            Checkpoint::TrimHorizon,
            Checkpoint::Latest,
            Checkpoint::AtTimestamp,
            Checkpoint::ShardEnd,
            seq("123", 4),
        ] {
            assert_eq!(
                Checkpoint::from_attributes(c.as_attribute(), c.sub_sequence()),
                Ok(c)
            );
        }
        assert!(Checkpoint::from_attributes("banana", 0).is_err());
    }

    fn extent() -> BatchExtent {
        BatchExtent {
            first_sequence: "100".into(),
            first_sub_sequence: 2,
            last_sequence: "205".into(),
            last_sub_sequence: 0,
        }
    }

    #[test]
    fn batch_extents_round_trip_and_reject_what_is_not_one() {
        let e = extent();
        assert_eq!(e.as_attribute(), "100/2 205/0");
        assert_eq!(BatchExtent::from_attribute(&e.as_attribute()), Ok(e));
        for bad in [
            "",
            "100/2",
            "100 205/0",
            "100/x 205/0",
            "a/1 205/0",
            "100/2 205/",
        ] {
            assert!(BatchExtent::from_attribute(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batch_extents_locate_records_and_know_when_a_checkpoint_covers_them() {
        use Ordering::*;
        let e = extent();
        assert_eq!(e.locate("99", 7), Less);
        assert_eq!(e.locate("100", 1), Less);
        assert_eq!(e.locate("100", 2), Equal);
        assert_eq!(e.locate("150", 0), Equal);
        assert_eq!(e.locate("205", 0), Equal);
        assert_eq!(e.locate("205", 1), Greater);
        assert_eq!(e.locate("1000", 0), Greater);
        assert!(e.is_covered_by(&seq("205", 0)));
        assert!(e.is_covered_by(&seq("300", 0)));
        assert!(e.is_covered_by(&Checkpoint::ShardEnd));
        assert!(!e.is_covered_by(&seq("204", 9)));
        assert!(!e.is_covered_by(&Checkpoint::TrimHorizon));
    }
}
