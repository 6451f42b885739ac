//! Where a shard's reader resumes reading: the position a fresh iterator starts at, and
//! which of the first records read from it were processed already. One type owns it, so
//! a start, an expired iterator, a batch and a rewind each move it in one place.

use crate::lease::{Checkpoint, compare_sequence_numbers};
use crate::plugin::bindings::{KinesisRecord, Position};
use crate::source::StartPosition;

/// Records at or before this position are skipped after a (re)start or a rewind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SkipThrough {
    sequence: String,
    /// Skip sub-records up to this one; `None`: skip none of this sequence's (a rewind
    /// to sub-sequence 0).
    sub_sequence: Option<u64>,
}

impl SkipThrough {
    fn covers(&self, record: &KinesisRecord) -> bool {
        match compare_sequence_numbers(&record.sequence_number, &self.sequence) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => self
                .sub_sequence
                .is_some_and(|s| record.sub_sequence_number <= s),
            std::cmp::Ordering::Greater => false,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Where a new iterator starts.
    position: StartPosition,
    /// What to skip of the first records an iterator acquired at `position` returns.
    skip_at_position: Option<SkipThrough>,
    /// What to skip of the next fetch: only the first fetch after an acquire, since an
    /// iterator that GetRecords returned already starts past what was read.
    pending_skip: Option<SkipThrough>,
}

impl Resume {
    /// From a stored checkpoint: always AT the checkpointed sequence number, skipping
    /// through its sub-sequence, which is right for plain and aggregated records alike;
    /// a lease with no position yet starts at its sentinel, or at `initial`.
    pub fn from_checkpoint(checkpoint: &Checkpoint, initial: &StartPosition) -> Self {
        let (position, skip) = match checkpoint {
            Checkpoint::Sequence {
                sequence,
                sub_sequence,
            } => (
                StartPosition::AtSequence(sequence.clone()),
                Some(SkipThrough {
                    sequence: sequence.clone(),
                    sub_sequence: Some(*sub_sequence),
                }),
            ),
            Checkpoint::TrimHorizon => (StartPosition::TrimHorizon, None),
            Checkpoint::Latest => (StartPosition::Latest, None),
            Checkpoint::AtTimestamp | Checkpoint::ShardEnd => (initial.clone(), None),
        };
        Self {
            position,
            skip_at_position: skip.clone(),
            pending_skip: skip,
        }
    }

    /// Deliver again from `to` (inclusive): a guest's rewind, or records a failed shard
    /// end left unacknowledged.
    pub fn from_record(to: &Position) -> Self {
        let mut resume =
            Self::from_checkpoint(&Checkpoint::TrimHorizon, &StartPosition::TrimHorizon);
        resume.rewind_to(to);
        resume
    }

    /// A subscription's events went through `continuation`: a new subscription starts
    /// after it. What is to be skipped stays armed: an event may carry no records, so a
    /// continuation can lie before a record that was processed already.
    pub fn continue_after(&mut self, continuation: &str) {
        self.position = StartPosition::AfterSequence(continuation.to_string());
    }

    /// Where a new iterator must start.
    pub fn position(&self) -> &StartPosition {
        &self.position
    }

    /// A new iterator was acquired at [`position`](Self::position): its first records
    /// may repeat what was processed.
    pub fn acquired(&mut self) {
        self.pending_skip = self.skip_at_position.clone();
    }

    /// Drop the already-processed prefix of a fetch (records come in sequence order).
    pub fn trim(&mut self, records: &mut Vec<KinesisRecord>) {
        let Some(skip) = &self.pending_skip else {
            return;
        };
        let already = records.iter().take_while(|r| skip.covers(r)).count();
        records.drain(..already);
        if records
            .first()
            .is_some_and(|r| r.sequence_number != skip.sequence)
        {
            self.pending_skip = None;
        }
    }

    /// A batch was delivered through `last`: a new iterator resumes after it.
    pub fn delivered_through(&mut self, last: &Position) {
        self.position = StartPosition::AtSequence(last.sequence_number.clone());
        self.skip_at_position = Some(SkipThrough {
            sequence: last.sequence_number.clone(),
            sub_sequence: Some(last.sub_sequence_number),
        });
    }

    /// The guest asked to read again from `to` (inclusive): acquire a new iterator there.
    pub fn rewind_to(&mut self, to: &Position) {
        self.position = StartPosition::AtSequence(to.sequence_number.clone());
        self.skip_at_position = Some(SkipThrough {
            sequence: to.sequence_number.clone(),
            sub_sequence: to.sub_sequence_number.checked_sub(1),
        });
        self.pending_skip = self.skip_at_position.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: &str, sub: u64) -> KinesisRecord {
        KinesisRecord {
            partition_key: "k".into(),
            sequence_number: seq.into(),
            sub_sequence_number: sub,
            approximate_arrival_ms: 0,
            explicit_hash_key: None,
            data: vec![],
        }
    }

    fn at(seq: &str, sub: u64) -> Position {
        Position {
            sequence_number: seq.into(),
            sub_sequence_number: sub,
        }
    }

    fn kept(resume: &mut Resume, records: &[(&str, u64)]) -> Vec<(String, u64)> {
        let mut records: Vec<KinesisRecord> = records.iter().map(|(s, n)| rec(s, *n)).collect();
        resume.trim(&mut records);
        records
            .into_iter()
            .map(|r| (r.sequence_number, r.sub_sequence_number))
            .collect()
    }

    #[test]
    fn restarts_skip_through_the_checkpointed_sub_record() {
        let checkpoint = Checkpoint::Sequence {
            sequence: "20".into(),
            sub_sequence: 1,
        };
        let mut resume = Resume::from_checkpoint(&checkpoint, &StartPosition::TrimHorizon);
        assert_eq!(resume.position(), &StartPosition::AtSequence("20".into()));
        let got = kept(
            &mut resume,
            &[("19", 5), ("20", 0), ("20", 1), ("20", 2), ("100", 0)],
        );
        assert_eq!(
            got,
            vec![("20".into(), 2), ("100".into(), 0)],
            "numeric order"
        );
        // Past the checkpointed record: the next fetch is not trimmed.
        assert_eq!(kept(&mut resume, &[("21", 0)]).len(), 1);
        assert_eq!(resume.pending_skip, None);
    }

    #[test]
    fn a_rewind_to_sub_zero_skips_nothing_of_that_record() {
        let mut resume = Resume::from_checkpoint(&Checkpoint::TrimHorizon, &StartPosition::Latest);
        assert_eq!(resume.position(), &StartPosition::TrimHorizon);
        resume.rewind_to(&at("20", 0));
        assert_eq!(resume.position(), &StartPosition::AtSequence("20".into()));
        let got = kept(&mut resume, &[("19", 0), ("20", 0), ("21", 0)]);
        assert_eq!(got, vec![("20".into(), 0), ("21".into(), 0)]);
    }

    /// After an expired iterator, the new one (at the last delivered record) repeats
    /// nothing that was delivered, even inside an aggregate.
    #[test]
    fn a_reacquired_iterator_resumes_after_the_last_delivered_sub_record() {
        let mut resume = Resume::from_checkpoint(&Checkpoint::TrimHorizon, &StartPosition::Latest);
        resume.delivered_through(&at("30", 2));
        assert_eq!(
            kept(&mut resume, &[("30", 0)]).len(),
            1,
            "the current iterator is not trimmed"
        );
        resume.acquired();
        let got = kept(&mut resume, &[("30", 1), ("30", 2), ("30", 3), ("31", 0)]);
        assert_eq!(got, vec![("30".into(), 3), ("31".into(), 0)]);
    }

    #[test]
    fn sentinels_start_at_their_position_or_the_initial_one() {
        let initial = StartPosition::AtTimestamp(5);
        for (checkpoint, expected) in [
            (Checkpoint::Latest, StartPosition::Latest),
            (Checkpoint::AtTimestamp, initial.clone()),
            (Checkpoint::ShardEnd, initial.clone()),
        ] {
            assert_eq!(
                Resume::from_checkpoint(&checkpoint, &initial).position(),
                &expected
            );
        }
    }
}
