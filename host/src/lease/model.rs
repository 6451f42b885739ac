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
}
