//! A lease this worker holds: its renewals and self-fence (the lease argument in
//! `super::coordinator`), its fenced writes, and how a write whose answer was lost is
//! settled without ever extending the fence.
//!
//! # Writes whose answer was lost
//!
//! A renewal, checkpoint or release can be applied by the store and still be answered
//! with an error (a 500 after the write, a reset connection, retries given up). The store
//! then holds the next counter while this worker still holds the old one, so its next
//! write's condition fails. Such a refusal is settled by a consistent read:
//!
//! - owner and counter one step on, and the write's own effect there (for a checkpoint,
//!   the checkpoint asked): this write landed, on an attempt whose answer was lost;
//! - owner and counter one step on but not this write's effect, after a write whose
//!   outcome was unknown: that earlier write landed; the lease is adopted at the stored
//!   counter and this write sent once more;
//! - anything else: another worker wrote, and the lease is lost.
//!
//! Neither ever moves the fence further than the store's counter allows: a peer that sees
//! the counter an unconfirmed write left starts no sooner than a lease duration after
//! that write was *sent*, so a renewal confirmed this way counts from the first write
//! whose outcome was unknown, never from the retry that discovered it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BatchExtent, Checkpoint, Lease, LeaseError, LeaseStore};
use crate::plugin::bindings::FencingToken;
use crate::telemetry::metrics::metrics;

/// A lease this worker holds, shared by its keep-alive task (renewals, self-fencing) and
/// the shard worker (checkpoints). Both write through it, serialised by the mutex, so
/// each write carries the counter the previous one produced.
#[derive(Debug)]
pub struct HeldLease {
    key: String,
    /// This worker's id, the owner every write is conditional on.
    owner: Option<String>,
    lease: tokio::sync::Mutex<Lease>,
    /// The counter this worker's take left: the holding's fencing epoch.
    taken_at_counter: u64,
    lost: CancellationToken,
    /// A peer asked for this lease: finish the batch, checkpoint, release.
    handoff: CancellationToken,
    /// When the last confirmed renewal (or the take) was *sent*.
    renewed_at: Mutex<Instant>,
    /// When the first write whose outcome is unknown was sent (answered with an error
    /// after it may have been applied); cleared once a write is confirmed.
    unconfirmed_since: Mutex<Option<Instant>>,
    /// Processing stops this long after `renewed_at`.
    fence_after: Duration,
    /// The previous holder must have fenced itself by then: no processing before.
    start_after: Instant,
    /// Given up by this worker (released), as opposed to lost or fenced.
    released: AtomicBool,
    /// Stopped by this worker at its shutdown timeout: no guest call at all any more,
    /// not even `shutdown(lease-lost)`.
    interrupted: AtomicBool,
}

/// Why a held lease stopped being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loss {
    /// A renewal or checkpoint was refused: another worker took it, or it was deleted.
    Refused,
    /// No renewal succeeded for `fence_after`.
    Fenced,
}

/// A write on a held lease.
#[derive(Debug, Clone, Copy)]
enum Write<'a> {
    Renew,
    Checkpoint(&'a Checkpoint),
    /// A checkpoint and the extent of the batch about to be delivered.
    Prepare(&'a Checkpoint, &'a BatchExtent),
    Release,
}

impl Write<'_> {
    /// Whether `stored` (one counter step on, owner as this write leaves it) shows this
    /// write's own effect.
    fn shows_in(&self, stored: &Lease) -> bool {
        match self {
            Write::Renew | Write::Release => true,
            Write::Checkpoint(asked) => stored.checkpoint == **asked,
            Write::Prepare(asked, extent) => {
                stored.checkpoint == **asked && stored.pending_batch.as_ref() == Some(*extent)
            }
        }
    }
}

impl HeldLease {
    pub(super) fn new(
        lease: Lease,
        sent_at: Instant,
        fence_after: Duration,
        start_after: Instant,
    ) -> Self {
        Self {
            key: lease.key.clone(),
            owner: lease.owner.clone(),
            taken_at_counter: lease.counter,
            lease: tokio::sync::Mutex::new(lease),
            lost: CancellationToken::new(),
            handoff: CancellationToken::new(),
            renewed_at: Mutex::new(sent_at),
            unconfirmed_since: Mutex::new(None),
            fence_after,
            start_after,
            released: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
        }
    }

    /// The shard id.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This holding's fencing token: the counter the take left, and this worker. Every
    /// later take of the lease leaves a larger counter (each write is conditional on the
    /// counter and bumps it), so a sink that refuses epochs below the highest it has seen
    /// refuses this holder's writes once a peer has taken the lease and written.
    pub fn fencing_token(&self) -> FencingToken {
        FencingToken {
            epoch: self.taken_at_counter,
            owner: self.owner.clone().unwrap_or_default(),
        }
    }

    /// Cancelled the moment the lease is lost (or fenced): stop at once, do not checkpoint.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Cancelled when a peer asks for this lease for balance: stop like a shutdown
    /// (finish the batch, checkpoint, release), so the hand-off repeats nothing.
    pub fn handoff(&self) -> &CancellationToken {
        &self.handoff
    }

    /// When processing may begin: the previous holder has fenced itself by then.
    pub fn start_after(&self) -> Instant {
        self.start_after
    }

    /// The moment this worker stops processing unless a renewal succeeds first. After a
    /// loss it no longer moves: no peer processes the shard before it (see the lease
    /// argument), so it also bounds what may still run to say the lease was lost.
    pub fn fence_deadline(&self) -> Instant {
        *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) + self.fence_after
    }

    /// Whether a guest call may start (or a checkpoint be written) now: the lease is
    /// not lost and its last confirmed renewal is recent enough. Past the fence
    /// deadline this also marks the lease lost, so everything waiting on it stops.
    pub fn may_process(&self) -> bool {
        if self.lost.is_cancelled() {
            return false;
        }
        if Instant::now() >= self.fence_deadline() {
            self.fence();
            return false;
        }
        true
    }

    /// Until when a guest may still be told the lease was lost: the fence deadline, or
    /// `None` if the lease was released or interrupted at the shutdown timeout (a peer
    /// may start at once) or the deadline has passed.
    pub fn lost_call_until(&self) -> Option<Instant> {
        if self.is_released() || self.interrupted.load(Ordering::SeqCst) {
            return None;
        }
        let until = self.fence_deadline();
        (Instant::now() < until).then_some(until)
    }

    /// Stop every guest call for this lease now and start no other one (the shutdown
    /// timeout): like a loss, and without `shutdown(lease-lost)` either.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.lost.cancel();
    }

    /// Whether [`interrupt`](Self::interrupt) stopped it.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    pub(super) fn fence(&self) {
        if !self.lost.is_cancelled() {
            metrics().lease_lost("fenced");
            tracing::warn!(
                lease = %self.key,
                "no lease renewal succeeded for {:?}: self-fencing (stopping the shard without checkpointing) before a peer may take it",
                self.fence_after
            );
            self.lost.cancel();
        }
    }

    /// Given up by this worker (not lost to a peer or fenced).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// A copy of the lease as last written.
    pub async fn snapshot(&self) -> Lease {
        self.lease.lock().await.clone()
    }

    /// Write a checkpoint, fenced by owner and counter, and only while
    /// [`may_process`](Self::may_process) holds. A conflict marks the lease lost. `Ok`
    /// only once the store holds exactly this checkpoint.
    pub async fn checkpoint(
        &self,
        store: &dyn LeaseStore,
        checkpoint: &Checkpoint,
    ) -> Result<(), LeaseError> {
        self.progress(store, Write::Checkpoint(checkpoint)).await
    }

    /// Before delivering a batch (`consumer.stable_batches`): write `checkpoint` and the
    /// batch's extent in one write, fenced and settled as [`checkpoint`](Self::checkpoint)
    /// is. `Ok` only once the store holds exactly both.
    pub async fn prepare_batch(
        &self,
        store: &dyn LeaseStore,
        checkpoint: &Checkpoint,
        extent: &BatchExtent,
    ) -> Result<(), LeaseError> {
        self.progress(store, Write::Prepare(checkpoint, extent))
            .await
    }

    async fn progress(&self, store: &dyn LeaseStore, write: Write<'_>) -> Result<(), LeaseError> {
        if !self.may_process() {
            return Err(LeaseError::Conflict {
                key: self.key.clone(),
            });
        }
        let mut lease = self.lease.lock().await;
        let write = self.write(store, &mut lease, write);
        let result = match tokio::time::timeout_at(self.fence_deadline(), write).await {
            Ok(result) => result,
            Err(_) => {
                // Unanswered at the fence deadline: this worker may not write any more.
                self.fence();
                return Err(LeaseError::Transient(
                    "checkpoint unanswered at the self-fence deadline".into(),
                ));
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                if matches!(e, LeaseError::Conflict { .. } | LeaseError::NotFound { .. }) {
                    self.refused();
                }
                Err(e)
            }
        }
    }

    /// Give the lease up (owner removed) so a peer takes it on its next tick. Before
    /// [`start_after`](Self::start_after) the previous holder may still be processing, and
    /// an unowned lease would let a peer start at once: then renewals just stop and the
    /// lease expires (a peer waits a lease duration from this worker's last write).
    pub async fn release(&self, store: &dyn LeaseStore) -> Result<(), LeaseError> {
        let mut lease = self.lease.lock().await;
        self.released.store(true, Ordering::SeqCst);
        if Instant::now() < self.start_after {
            self.lost.cancel();
            tracing::info!(
                lease = %self.key,
                "stopping before the previous holder's fence: leaving the lease to expire instead of releasing it"
            );
            return Ok(());
        }
        let released = self.write(store, &mut lease, Write::Release).await;
        self.lost.cancel();
        released?;
        if self.handoff.is_cancelled() {
            metrics().leases_handed_off.inc();
        } else {
            metrics().leases_released.inc();
        }
        Ok(())
    }

    /// A peer asked for this lease: tell the shard worker to stop at its next batch
    /// boundary (it checkpoints and releases). `true` if this is news.
    pub(super) fn hand_over_to(&self, requester: &str) -> bool {
        if self.handoff.is_cancelled() {
            return false;
        }
        tracing::info!(lease = %self.key, to = requester, "handing the lease over after the in-flight batch");
        self.handoff.cancel();
        true
    }

    /// A write was refused (another worker took the lease, or it was deleted): lost.
    pub(super) fn refused(&self) {
        if !self.lost.is_cancelled() && !self.is_released() {
            metrics().lease_lost("refused");
        }
        self.lost.cancel();
    }

    /// Renew once, unless the fence deadline passes first.
    pub(super) async fn renew(&self, store: &dyn LeaseStore) -> Result<(), Option<Loss>> {
        let mut lease = self.lease.lock().await;
        if self.lost.is_cancelled() {
            return Err(None);
        }
        let write = self.write(store, &mut lease, Write::Renew);
        match tokio::time::timeout_at(self.fence_deadline(), write).await {
            Ok(Ok(())) => {
                if let Some(requester) = lease.handoff_to.as_deref()
                    && lease.owner.as_deref() != Some(requester)
                {
                    self.hand_over_to(requester);
                }
                Ok(())
            }
            Ok(Err(LeaseError::Conflict { .. } | LeaseError::NotFound { .. })) => {
                Err(Some(Loss::Refused))
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.key, "lease renewal failed, will retry: {e}");
                Err(None)
            }
            Err(_) => Err(Some(Loss::Fenced)),
        }
    }

    /// Renew every `tick` until the lease is lost, released or fenced. A failed renewal
    /// is retried sooner (a quarter tick); none succeeding until the fence deadline
    /// fences the lease.
    pub(super) async fn keep_alive(
        self: std::sync::Arc<Self>,
        store: std::sync::Arc<dyn LeaseStore>,
        tick: Duration,
    ) {
        let mut next = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) + tick;
        loop {
            tokio::select! {
                _ = self.lost.cancelled() => return,
                _ = tokio::time::sleep_until(self.fence_deadline()) => {
                    self.fence();
                    return;
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            match self.renew(store.as_ref()).await {
                Ok(()) => {
                    next = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) + tick;
                }
                Err(Some(Loss::Refused)) => {
                    if !self.lost.is_cancelled() && !self.is_released() {
                        tracing::warn!(lease = %self.key, "lease renewal refused (another worker took it); its shard worker stops without checkpointing");
                    }
                    self.refused();
                    return;
                }
                Err(Some(Loss::Fenced)) => {
                    self.fence();
                    return;
                }
                Err(None) => next = Instant::now() + tick / 4,
            }
        }
    }

    /// Send `write` for `lease` (the lease as last written, updated on success) and
    /// settle a refused condition by a consistent read (see the module docs).
    async fn write(
        &self,
        store: &dyn LeaseStore,
        lease: &mut Lease,
        write: Write<'_>,
    ) -> Result<(), LeaseError> {
        let sent_at = Instant::now();
        match send(store, lease, write).await {
            Ok(updated) => {
                *lease = updated;
                self.confirmed(write, sent_at);
                Ok(())
            }
            Err(LeaseError::Conflict { .. }) => {
                self.settle_refusal(store, lease, write, sent_at).await
            }
            Err(e) => {
                if !matches!(e, LeaseError::NotFound { .. }) {
                    // It may have been applied: until a write is confirmed, the store's
                    // counter may be one step on, moved at this moment or later.
                    self.unconfirmed_since
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(sent_at);
                }
                Err(e)
            }
        }
    }

    async fn settle_refusal(
        &self,
        store: &dyn LeaseStore,
        lease: &mut Lease,
        write: Write<'_>,
        sent_at: Instant,
    ) -> Result<(), LeaseError> {
        let conflict = || LeaseError::Conflict {
            key: self.key.clone(),
        };
        let Some(stored) = store.get(&self.key).await? else {
            return Err(LeaseError::NotFound {
                key: self.key.clone(),
            });
        };
        if stored.counter != lease.counter + 1 {
            return Err(conflict());
        }
        let owner_after = match write {
            Write::Release => None,
            Write::Renew | Write::Checkpoint(_) | Write::Prepare(..) => self.owner.clone(),
        };
        if stored.owner == owner_after && write.shows_in(&stored) {
            tracing::debug!(lease = %self.key, ?write, "a lease write whose answer was lost had landed");
            *lease = stored;
            self.confirmed(write, sent_at);
            return Ok(());
        }
        let earlier_unknown = self
            .unconfirmed_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if stored.owner == self.owner && earlier_unknown {
            // An earlier write of ours, answered with an error, was applied after all.
            // It moved the counter no sooner than it was sent, so the fence stays where
            // it is; write once more on top of it.
            tracing::info!(lease = %self.key, ?write, "an earlier lease write answered with an error had been applied; writing again on top of it");
            *lease = stored;
            *self
                .unconfirmed_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            let sent_again = Instant::now();
            let updated = send(store, lease, write).await?;
            *lease = updated;
            self.confirmed(write, sent_again);
            return Ok(());
        }
        Err(conflict())
    }

    /// A write sent at `sent_at` is confirmed. A renewal moves the fence to when the
    /// counter can have last moved: the first unconfirmed write's send time, if one came
    /// before this one.
    fn confirmed(&self, write: Write<'_>, sent_at: Instant) {
        let first_unknown = self
            .unconfirmed_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if matches!(write, Write::Renew) {
            let moved_from = first_unknown.map_or(sent_at, |u| u.min(sent_at));
            let mut renewed_at = self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
            if moved_from > *renewed_at {
                *renewed_at = moved_from;
            }
        }
    }
}

async fn send(
    store: &dyn LeaseStore,
    lease: &Lease,
    write: Write<'_>,
) -> Result<Lease, LeaseError> {
    match write {
        Write::Renew => store.renew(lease).await,
        Write::Checkpoint(checkpoint) => store.checkpoint(lease, checkpoint).await,
        Write::Prepare(checkpoint, extent) => store.prepare_batch(lease, checkpoint, extent).await,
        Write::Release => store.release(lease).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::memory::{Fault, MemoryLeaseStore, Operation};

    const FENCE_AFTER: Duration = Duration::from_secs(8);

    fn seq(n: u64) -> Checkpoint {
        Checkpoint::Sequence {
            sequence: n.to_string(),
            sub_sequence: 0,
        }
    }

    /// A store with one lease taken by `w1`, and `w1`'s hold on it, which may process at
    /// once (`start_after` now, or `wait` later).
    async fn held_by_w1(wait: Duration) -> (MemoryLeaseStore, HeldLease) {
        let store = MemoryLeaseStore::new();
        let lease = Lease::new("shardId-0", Checkpoint::TrimHorizon);
        assert!(store.create_if_absent(&lease).await.expect("create"));
        let taken = store.take(&lease, "w1").await.expect("take");
        let now = Instant::now();
        let held = HeldLease::new(taken, now, FENCE_AFTER, now + wait);
        (store, held)
    }

    async fn stored(store: &MemoryLeaseStore) -> Lease {
        store.get("shardId-0").await.expect("get").expect("lease")
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_confirmed_by_a_reread_counts_from_the_first_unconfirmed_attempt() {
        let (store, held) = held_by_w1(Duration::ZERO).await;
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        store.inject(Operation::Renew, Fault::ApplyThenFail);
        assert_eq!(
            held.renew(&store).await,
            Err(None),
            "answered with an error"
        );
        assert_eq!(stored(&store).await.counter, 2, "but applied");
        assert_eq!(
            held.fence_deadline(),
            start + FENCE_AFTER,
            "unconfirmed: no extension"
        );

        store.inject(Operation::Renew, Fault::None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            held.renew(&store).await,
            Ok(()),
            "the re-read finds our write"
        );
        assert_eq!(
            held.fence_deadline(),
            start + Duration::from_secs(3) + FENCE_AFTER,
            "the counter moved when the first attempt was sent (3 s), not at the retry (4 s)"
        );
        assert_eq!(held.snapshot().await.counter, stored(&store).await.counter);

        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(held.renew(&store).await, Ok(()));
        assert_eq!(
            held.fence_deadline(),
            start + Duration::from_secs(7) + FENCE_AFTER,
            "a plain renewal counts from its own send time again"
        );
        assert_eq!(stored(&store).await.counter, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_after_a_renewal_whose_answer_was_lost_is_really_written() {
        let (store, held) = held_by_w1(Duration::ZERO).await;
        store.inject(Operation::Renew, Fault::ApplyThenFail);
        assert_eq!(held.renew(&store).await, Err(None));
        // The store is one counter step ahead of what `held` knows; the checkpoint's
        // condition fails, and the re-read shows the renewal, not this checkpoint.
        held.checkpoint(&store, &seq(5)).await.expect("checkpoint");
        let now = stored(&store).await;
        assert_eq!(
            now.checkpoint,
            seq(5),
            "written, not just reported: {now:?}"
        );
        assert_eq!(now.counter, 3);
        assert_eq!(held.snapshot().await.counter, 3);
        assert!(!held.lost().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_is_confirmed_by_a_reread_only_if_it_is_the_one_stored() {
        let (store, held) = held_by_w1(Duration::ZERO).await;
        store.inject(Operation::Checkpoint, Fault::ApplyThenFail);
        assert!(held.checkpoint(&store, &seq(5)).await.is_err());
        store.inject(Operation::Checkpoint, Fault::None);
        // A later, different checkpoint: the re-read shows 5, so 7 is written on top.
        held.checkpoint(&store, &seq(7))
            .await
            .expect("checkpoint 7");
        assert_eq!(stored(&store).await.checkpoint, seq(7));

        // SHARD_END answered with an error but applied; its retry finds it stored.
        store.inject(Operation::Checkpoint, Fault::ApplyThenFail);
        assert!(
            held.checkpoint(&store, &Checkpoint::ShardEnd)
                .await
                .is_err()
        );
        store.inject(Operation::Checkpoint, Fault::None);
        let before = stored(&store).await.counter;
        held.checkpoint(&store, &Checkpoint::ShardEnd)
            .await
            .expect("SHARD_END");
        let now = stored(&store).await;
        assert_eq!(now.checkpoint, Checkpoint::ShardEnd);
        assert_eq!(
            now.counter, before,
            "confirmed by the re-read, not written twice"
        );
    }

    /// A batch extent (stable batches) is settled like a checkpoint: confirmed by the
    /// re-read only if both the checkpoint and the extent stored are the ones asked.
    #[tokio::test(start_paused = true)]
    async fn a_batch_extent_is_confirmed_by_a_reread_only_if_it_is_the_one_stored() {
        let (store, held) = held_by_w1(Duration::ZERO).await;
        let extent = |first: u64, last: u64| BatchExtent {
            first_sequence: first.to_string(),
            first_sub_sequence: 0,
            last_sequence: last.to_string(),
            last_sub_sequence: 0,
        };
        store.inject(Operation::Checkpoint, Fault::ApplyThenFail);
        assert!(
            held.prepare_batch(&store, &seq(5), &extent(6, 9))
                .await
                .is_err()
        );
        store.inject(Operation::Checkpoint, Fault::None);
        let before = stored(&store).await.counter;
        held.prepare_batch(&store, &seq(5), &extent(6, 9))
            .await
            .expect("the retry finds it stored");
        assert_eq!(stored(&store).await.counter, before, "not written twice");

        // Applied but unanswered, then a different extent: written on top of it.
        store.inject(Operation::Checkpoint, Fault::ApplyThenFail);
        assert!(
            held.prepare_batch(&store, &seq(9), &extent(10, 12))
                .await
                .is_err()
        );
        store.inject(Operation::Checkpoint, Fault::None);
        held.prepare_batch(&store, &seq(12), &extent(13, 20))
            .await
            .expect("written on top");
        let now = stored(&store).await;
        assert_eq!(
            (now.checkpoint, now.pending_batch),
            (seq(12), Some(extent(13, 20)))
        );
        assert!(!held.lost().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peers_take_after_an_unconfirmed_write_is_still_a_loss() {
        for fault in [Fault::ApplyThenFail, Fault::Fail] {
            let (store, held) = held_by_w1(Duration::ZERO).await;
            store.inject(Operation::Renew, fault);
            assert_eq!(held.renew(&store).await, Err(None));
            store.inject(Operation::Renew, Fault::None);
            store
                .take(&stored(&store).await, "w2")
                .await
                .expect("w2 takes");
            assert_eq!(
                held.renew(&store).await,
                Err(Some(Loss::Refused)),
                "{fault:?}: another owner's counter is never ours"
            );
            assert!(held.checkpoint(&store, &seq(1)).await.is_err());
            assert_eq!(stored(&store).await.owner.as_deref(), Some("w2"));
            assert_eq!(stored(&store).await.checkpoint, Checkpoint::TrimHorizon);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_given_up_before_the_previous_holder_fenced_is_left_to_expire() {
        let (store, held) = held_by_w1(Duration::from_secs(5)).await;
        let counter = stored(&store).await.counter;
        held.release(&store).await.expect("release");
        let now = stored(&store).await;
        assert_eq!(
            now.owner.as_deref(),
            Some("w1"),
            "still owned, so no peer takes it at once"
        );
        assert_eq!(now.counter, counter, "not written at all");
        assert!(held.lost().is_cancelled(), "renewals stop");

        let (store, held) = held_by_w1(Duration::ZERO).await;
        held.release(&store).await.expect("release");
        assert_eq!(stored(&store).await.owner, None, "after it: released");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_loss_the_guest_may_be_told_until_the_fence_and_never_after_an_interrupt() {
        let (store, held) = held_by_w1(Duration::ZERO).await;
        let fence = held.fence_deadline();
        store
            .take(&stored(&store).await, "w2")
            .await
            .expect("w2 takes");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(held.renew(&store).await, Err(Some(Loss::Refused)));
        held.refused();
        assert!(!held.may_process());
        assert_eq!(held.lost_call_until(), Some(fence));
        tokio::time::advance(FENCE_AFTER).await;
        assert_eq!(held.lost_call_until(), None, "past the fence: never");

        let (_store, held) = held_by_w1(Duration::ZERO).await;
        held.interrupt();
        assert!(!held.may_process());
        assert_eq!(held.lost_call_until(), None);
    }
}
