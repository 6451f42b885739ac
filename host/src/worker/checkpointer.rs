//! Coalesces checkpoint directives: at most one write per checkpoint interval (0 = every
//! directive), never backwards, always flushed on shutdown and at shard end.

use std::time::Duration;

use tokio::time::Instant;

use crate::lease::Checkpoint;

/// Pending and written checkpoints of one shard.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    interval: Duration,
    written: Checkpoint,
    pending: Option<Checkpoint>,
    last_write: Option<Instant>,
}

impl Checkpointer {
    /// Start from the checkpoint stored in the lease.
    pub fn new(interval: Duration, stored: Checkpoint) -> Self {
        Self {
            interval,
            written: stored,
            pending: None,
            last_write: None,
        }
    }

    /// Offer a position the guest asked to checkpoint. Ignored (with `false`) if it would
    /// move the checkpoint backwards.
    pub fn offer(&mut self, position: Checkpoint) -> bool {
        let newest = self.pending.as_ref().unwrap_or(&self.written);
        if newest.is_behind(&position) {
            return false;
        }
        if *newest != position {
            self.pending = Some(position);
        }
        true
    }

    /// The checkpoint to write now, if one is pending and the interval has passed.
    pub fn due(&self, now: Instant) -> Option<&Checkpoint> {
        let pending = self.pending.as_ref()?;
        match self.last_write {
            Some(at) if now.duration_since(at) < self.interval => None,
            _ => Some(pending),
        }
    }

    /// The pending checkpoint regardless of the interval (shutdown, shard end).
    pub fn pending(&self) -> Option<&Checkpoint> {
        self.pending.as_ref()
    }

    /// Record a successful write of `checkpoint`.
    pub fn written(&mut self, checkpoint: Checkpoint, now: Instant) {
        if self.pending.as_ref() == Some(&checkpoint) {
            self.pending = None;
        }
        self.written = checkpoint;
        self.last_write = Some(now);
    }

    /// The last checkpoint written (or stored at start).
    pub fn last_written(&self) -> &Checkpoint {
        &self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> Checkpoint {
        Checkpoint::Sequence {
            sequence: n.to_string(),
            sub_sequence: 0,
        }
    }

    #[test]
    fn coalesces_within_the_interval_and_never_goes_backwards() {
        let start = Instant::now();
        let mut c = Checkpointer::new(Duration::from_secs(10), Checkpoint::TrimHorizon);
        assert!(c.offer(seq(5)));
        assert_eq!(c.due(start), Some(&seq(5)), "first write is due at once");
        c.written(seq(5), start);
        assert!(c.offer(seq(9)));
        assert_eq!(c.due(start + Duration::from_secs(1)), None, "coalesced");
        assert!(c.offer(seq(12)));
        assert!(!c.offer(seq(11)), "backwards is refused");
        assert_eq!(c.due(start + Duration::from_secs(10)), Some(&seq(12)));
        assert_eq!(c.pending(), Some(&seq(12)));
        c.written(seq(12), start + Duration::from_secs(10));
        assert_eq!(c.pending(), None);
        assert!(c.offer(Checkpoint::ShardEnd));
    }

    #[test]
    fn zero_interval_writes_every_directive() {
        let now = Instant::now();
        let mut c = Checkpointer::new(Duration::ZERO, seq(1));
        assert!(!c.offer(Checkpoint::TrimHorizon));
        c.offer(seq(2));
        c.written(seq(2), now);
        c.offer(seq(3));
        assert_eq!(c.due(now), Some(&seq(3)));
    }
}
