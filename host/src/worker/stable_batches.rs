//! Re-delivery with the boundaries of before (`consumer.stable_batches`): the worker that
//! takes a shard over cuts the batch its previous holder was delivering, and had recorded
//! with the lease, exactly as it was, whatever the reads now return, so a sink that keys
//! a batch by its first and last record sees the same key again.

use std::cmp::Ordering;

use crate::lease::{BatchExtent, Checkpoint};
use crate::plugin::bindings::{Batch, KinesisRecord};

/// Reshapes arriving batches until the recorded batch has been cut again; from then on
/// batches pass through as they arrive.
#[derive(Debug, Default)]
pub struct Regroup {
    /// The recorded batch still to be cut, if any.
    target: Option<BatchExtent>,
    /// Its records gathered so far (at most one batch's worth).
    held: Vec<KinesisRecord>,
    /// Set when the recorded batch has just been cut again (taken by `take_recut`).
    recut: Option<Recut>,
}

/// The recorded batch, cut again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recut {
    /// The recorded extent.
    pub extent: BatchExtent,
    /// Its records as delivered again.
    pub records: usize,
    /// Whether the reads had returned it differently (more, fewer or other records in
    /// one arrival), so that cutting it again changed what the guest gets.
    pub reshaped: bool,
}

impl Regroup {
    /// Cut `pending` again unless `checkpoint` covers it already (it was processed).
    pub fn new(pending: Option<BatchExtent>, checkpoint: &Checkpoint) -> Self {
        Self {
            target: pending.filter(|extent| !extent.is_covered_by(checkpoint)),
            held: Vec::new(),
            recut: None,
        }
    }

    /// Nothing to reshape: every batch passes through.
    pub fn pass_through() -> Self {
        Self::default()
    }

    /// The recorded batch this is waiting to cut again, if any.
    pub fn target(&self) -> Option<&BatchExtent> {
        self.target.as_ref()
    }

    /// The batches to deliver now for `batch`, in order: records before the recorded
    /// batch as they came, then the recorded batch once its last record (or anything
    /// after it) has arrived, then what follows it. None while the recorded batch is
    /// still incomplete.
    pub fn arrived(&mut self, batch: Batch) -> Vec<Batch> {
        let Some(target) = &self.target else {
            return vec![batch];
        };
        let behind = batch.millis_behind_latest;
        let gathered_before = !self.held.is_empty();
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut complete = false;
        for record in batch.records {
            match target.locate(&record.sequence_number, record.sub_sequence_number) {
                Ordering::Less => before.push(record),
                Ordering::Equal => {
                    complete = record.sequence_number == target.last_sequence
                        && record.sub_sequence_number == target.last_sub_sequence;
                    self.held.push(record);
                }
                Ordering::Greater => {
                    complete = true;
                    after.push(record);
                }
            }
        }
        let mut out = Vec::new();
        let batch_of = |records: Vec<KinesisRecord>| Batch {
            records,
            millis_behind_latest: behind,
        };
        if !before.is_empty() {
            out.push(batch_of(before));
        }
        if complete {
            let extent = self.target.take().expect("a target while cutting");
            let held = std::mem::take(&mut self.held);
            self.recut = Some(Recut {
                extent,
                records: held.len(),
                reshaped: gathered_before || !out.is_empty() || !after.is_empty(),
            });
            if !held.is_empty() {
                out.push(batch_of(held));
            }
            if !after.is_empty() {
                out.push(batch_of(after));
            }
        }
        out
    }

    /// The recorded batch, if the last `arrived` cut it again.
    pub fn take_recut(&mut self) -> Option<Recut> {
        self.recut.take()
    }

    /// The shard ended (or reading stops) before the recorded batch was complete: what
    /// was gathered of it goes out as it is.
    pub fn flush(&mut self) -> Option<Batch> {
        self.target = None;
        let held = std::mem::take(&mut self.held);
        (!held.is_empty()).then_some(Batch {
            records: held,
            millis_behind_latest: 0,
        })
    }
}

/// The extent of a non-empty batch.
pub fn extent_of(batch: &Batch) -> Option<BatchExtent> {
    let (first, last) = (batch.records.first()?, batch.records.last()?);
    Some(BatchExtent {
        first_sequence: first.sequence_number.clone(),
        first_sub_sequence: first.sub_sequence_number,
        last_sequence: last.sequence_number.clone(),
        last_sub_sequence: last.sub_sequence_number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64, sub: u64) -> KinesisRecord {
        KinesisRecord {
            partition_key: "pk".into(),
            sequence_number: format!("{sequence:020}"),
            sub_sequence_number: sub,
            approximate_arrival_ms: 0,
            explicit_hash_key: None,
            data: Vec::new(),
        }
    }

    fn batch(positions: &[(u64, u64)]) -> Batch {
        Batch {
            records: positions.iter().map(|&(s, u)| record(s, u)).collect(),
            millis_behind_latest: 0,
        }
    }

    fn positions(batches: &[Batch]) -> Vec<Vec<(u64, u64)>> {
        batches
            .iter()
            .map(|b| {
                b.records
                    .iter()
                    .map(|r| {
                        (
                            r.sequence_number.parse().expect("number"),
                            r.sub_sequence_number,
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn extent(first: (u64, u64), last: (u64, u64)) -> BatchExtent {
        extent_of(&batch(&[first, last])).expect("extent")
    }

    fn checkpoint(sequence: u64, sub: u64) -> Checkpoint {
        Checkpoint::Sequence {
            sequence: format!("{sequence:020}"),
            sub_sequence: sub,
        }
    }

    #[test]
    fn a_recorded_batch_is_cut_again_from_reads_of_any_size() {
        // Recorded: 11..=15. Re-read as 10 (already before it), 11..13, then 14..20.
        let mut regroup = Regroup::new(Some(extent((11, 0), (15, 0))), &checkpoint(9, 0));
        let first = regroup.arrived(batch(&[(10, 0), (11, 0), (12, 0), (13, 0)]));
        assert_eq!(positions(&first), vec![vec![(10, 0)]]);
        let rest = regroup.arrived(batch(&[(14, 0), (15, 0), (16, 0), (17, 0)]));
        assert_eq!(
            positions(&rest),
            vec![
                vec![(11, 0), (12, 0), (13, 0), (14, 0), (15, 0)],
                vec![(16, 0), (17, 0)]
            ]
        );
        assert!(regroup.target().is_none());
        let later = regroup.arrived(batch(&[(18, 0)]));
        assert_eq!(
            positions(&later),
            vec![vec![(18, 0)]],
            "passes through after"
        );
    }

    #[test]
    fn one_big_read_is_split_at_the_recorded_batch_end_and_aggregates_count_sub_records() {
        let mut regroup = Regroup::new(Some(extent((5, 1), (7, 0))), &checkpoint(5, 0));
        let out = regroup.arrived(batch(&[(5, 1), (5, 2), (7, 0), (7, 1), (8, 0)]));
        assert_eq!(
            positions(&out),
            vec![vec![(5, 1), (5, 2), (7, 0)], vec![(7, 1), (8, 0)]]
        );
    }

    #[test]
    fn a_recut_says_whether_the_reads_had_returned_the_batch_differently() {
        let mut same = Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::TrimHorizon);
        same.arrived(batch(&[(1, 0), (2, 0), (3, 0)]));
        let recut = same.take_recut().expect("cut");
        assert_eq!((recut.records, recut.reshaped), (3, false));
        assert!(same.take_recut().is_none());
        let mut longer = Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::TrimHorizon);
        longer.arrived(batch(&[(1, 0), (2, 0), (3, 0), (4, 0)]));
        assert_eq!(longer.take_recut().map(|r| r.reshaped), Some(true));
        let mut split = Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::TrimHorizon);
        split.arrived(batch(&[(1, 0)]));
        assert!(split.take_recut().is_none());
        split.arrived(batch(&[(2, 0), (3, 0)]));
        assert_eq!(split.take_recut().map(|r| r.reshaped), Some(true));
    }

    #[test]
    fn a_read_ending_exactly_at_the_recorded_end_completes_it() {
        let mut regroup = Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::TrimHorizon);
        assert!(
            regroup.arrived(batch(&[(1, 0), (2, 0)])).is_empty(),
            "incomplete"
        );
        let out = regroup.arrived(batch(&[(3, 0)]));
        assert_eq!(positions(&out), vec![vec![(1, 0), (2, 0), (3, 0)]]);
        assert!(regroup.target().is_none());
    }

    #[test]
    fn a_missing_last_record_ends_the_batch_at_the_first_record_after_it() {
        // Record 3 is gone (trimmed, or never there): 4 shows the batch is complete.
        let mut regroup = Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::TrimHorizon);
        assert!(regroup.arrived(batch(&[(1, 0), (2, 0)])).is_empty());
        let out = regroup.arrived(batch(&[(4, 0)]));
        assert_eq!(positions(&out), vec![vec![(1, 0), (2, 0)], vec![(4, 0)]]);
    }

    #[test]
    fn a_covered_or_absent_extent_changes_nothing() {
        for mut regroup in [
            Regroup::new(Some(extent((1, 0), (3, 0))), &checkpoint(3, 0)),
            Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::ShardEnd),
            Regroup::new(None, &Checkpoint::TrimHorizon),
            Regroup::pass_through(),
        ] {
            assert!(regroup.target().is_none());
            let out = regroup.arrived(batch(&[(4, 0), (5, 0)]));
            assert_eq!(positions(&out), vec![vec![(4, 0), (5, 0)]]);
            let empty = regroup.arrived(batch(&[]));
            assert_eq!(empty.len(), 1, "empty batches pass through too");
        }
    }

    #[test]
    fn a_checkpoint_inside_the_recorded_batch_leaves_its_rest_as_one_batch() {
        // The guest checkpointed `at` record 2 of 1..=3: 3 alone is left of it.
        let mut regroup = Regroup::new(Some(extent((1, 0), (3, 0))), &checkpoint(2, 0));
        let out = regroup.arrived(batch(&[(3, 0), (4, 0)]));
        assert_eq!(positions(&out), vec![vec![(3, 0)], vec![(4, 0)]]);
    }

    #[test]
    fn the_shard_ending_first_flushes_what_was_gathered() {
        let mut regroup = Regroup::new(Some(extent((1, 0), (3, 0))), &Checkpoint::TrimHorizon);
        assert!(regroup.arrived(batch(&[(1, 0), (2, 0)])).is_empty());
        let flushed = regroup.flush().expect("held records");
        assert_eq!(positions(&[flushed]), vec![vec![(1, 0), (2, 0)]]);
        assert!(regroup.flush().is_none());
    }
}
