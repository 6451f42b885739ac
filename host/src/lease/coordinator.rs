//! The lease coordinator: renews the leases this worker holds, takes expired and released
//! ones, and balances by asking the most loaded worker to hand one lease over (stealing it
//! only if that owner ignores the request for `lease_duration`; if the lease changes hands
//! meanwhile the request lapses), one tick every `lease_duration / 3`.
//!
//! # Why no two workers ever process-and-checkpoint one shard at once
//!
//! 1. *Checkpoints are fenced.* Every write a holder makes (renew, checkpoint, release) is
//!    conditional on `leaseOwner` = itself and `leaseCounter` = the value it last wrote,
//!    and every write by anyone bumps the counter. A take is conditional on the counter
//!    the taker observed. So after worker B takes a lease from A, every later write by A
//!    fails: A can never checkpoint over B.
//! 2. *Processing stops before a peer may take over.* B takes a lease held by A only
//!    after B's own clock has seen its counter unchanged for a whole `lease_duration`
//!    (never by comparing wall clocks across machines). A renews every
//!    `lease_duration / 3`, and stops its shard worker (without checkpointing) as soon
//!    as a renewal is refused, or when `lease_duration` has passed since the start of its
//!    last successful renewal. Since B's observation window began no earlier than that
//!    renewal, A has stopped by the time B takes the lease (up to clock *rate* drift,
//!    which is negligible against seconds). A graceful hand-off (release) is safe by
//!    construction: A releases only after it has finished and checkpointed.
//! 3. What can repeat is bounded: a guest call already in flight when A stops (it is
//!    not interrupted, but its result is never checkpointed), so B re-delivers at most
//!    the batches after A's last checkpoint. Delivery is at least once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Checkpoint, Lease, LeaseError, LeaseStore};

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// This worker's id (the `leaseOwner` it writes).
    pub worker_id: String,
    /// A lease not renewed for this long (by the observer's clock) is expired.
    pub lease_duration: Duration,
    /// Most leases this worker holds (`None`: no limit).
    pub max_leases: Option<usize>,
}

impl CoordinatorSettings {
    /// Renewal (and take/steal) period: a third of the lease duration.
    pub fn tick(&self) -> Duration {
        self.lease_duration / 3
    }
}

/// A lease this worker holds, shared by the coordinator (renewals) and the shard worker
/// (checkpoints). Both write through it, serialised by the mutex, so each write carries
/// the counter the previous one produced.
#[derive(Debug)]
pub struct HeldLease {
    key: String,
    lease: tokio::sync::Mutex<Lease>,
    lost: CancellationToken,
    /// A peer asked for this lease: finish the batch, checkpoint, release.
    handoff: CancellationToken,
    /// When the last successful renewal (or take) was *sent*.
    renewed_at: Mutex<Instant>,
}

impl HeldLease {
    fn new(lease: Lease, sent_at: Instant) -> Self {
        Self {
            key: lease.key.clone(),
            lease: tokio::sync::Mutex::new(lease),
            lost: CancellationToken::new(),
            handoff: CancellationToken::new(),
            renewed_at: Mutex::new(sent_at),
        }
    }

    /// The shard id.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Cancelled the moment the lease is lost: stop at once, do not checkpoint.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Cancelled when a peer asks for this lease for balance: stop like a shutdown
    /// (finish the batch, checkpoint, release), so the hand-off repeats nothing.
    pub fn handoff(&self) -> &CancellationToken {
        &self.handoff
    }

    /// A copy of the lease as last written.
    pub async fn snapshot(&self) -> Lease {
        self.lease.lock().await.clone()
    }

    /// Write a checkpoint, fenced by owner and counter. A conflict marks the lease lost.
    pub async fn checkpoint(
        &self,
        store: &dyn LeaseStore,
        checkpoint: &Checkpoint,
    ) -> Result<(), LeaseError> {
        if self.lost.is_cancelled() {
            return Err(LeaseError::Conflict {
                key: self.key.clone(),
            });
        }
        let mut lease = self.lease.lock().await;
        match store.checkpoint(&lease, checkpoint).await {
            Ok(updated) => {
                *lease = updated;
                Ok(())
            }
            Err(e) => {
                if matches!(e, LeaseError::Conflict { .. } | LeaseError::NotFound { .. }) {
                    self.lost.cancel();
                }
                Err(e)
            }
        }
    }

    /// Give the lease up (owner removed) so a peer takes it on its next tick.
    pub async fn release(&self, store: &dyn LeaseStore) -> Result<(), LeaseError> {
        let mut lease = self.lease.lock().await;
        let released = store.release(&lease).await?;
        *lease = released;
        self.lost.cancel();
        Ok(())
    }

    async fn renew(
        &self,
        store: &dyn LeaseStore,
        lease_duration: Duration,
    ) -> Result<(), LeaseError> {
        let sent_at = Instant::now();
        let mut lease = self.lease.lock().await;
        match store.renew(&lease).await {
            Ok(updated) => {
                *lease = updated;
                *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = sent_at;
                Ok(())
            }
            Err(e @ (LeaseError::Conflict { .. } | LeaseError::NotFound { .. })) => {
                self.lost.cancel();
                Err(e)
            }
            Err(e) => {
                let since = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
                if since.elapsed() >= lease_duration {
                    // Peers may consider it expired by now: stop before they take it.
                    self.lost.cancel();
                }
                Err(e)
            }
        }
    }
}

/// What a tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickSummary {
    /// Leases held after the tick.
    pub held: usize,
    /// Leases newly taken (expired, released or new).
    pub taken: Vec<String>,
    /// A lease this worker asked its owner to hand over (graceful rebalance), if any.
    pub handoff_requested: Option<String>,
    /// A lease taken from a live owner without a hand-off (fallback), if any.
    pub stolen: Option<String>,
    /// Leases this worker was asked to hand over (its workers are finishing them).
    pub handing_over: Vec<String>,
    /// Leases lost (renewal refused or overdue).
    pub lost: Vec<String>,
    /// Workers seen (including this one).
    pub workers: usize,
    /// Target leases per worker.
    pub target: usize,
}

/// When this worker last saw each lease's counter change.
#[derive(Debug, Clone)]
struct Observation {
    counter: u64,
    owner: Option<String>,
    changed_at: Instant,
}

/// Renews, takes and steals leases for one worker.
#[derive(Debug)]
pub struct LeaseCoordinator {
    store: Arc<dyn LeaseStore>,
    settings: CoordinatorSettings,
    held: Arc<Mutex<BTreeMap<String, Arc<HeldLease>>>>,
    observed: HashMap<String, Observation>,
    /// Shutting down: keep renewing, take nothing new.
    draining: bool,
    /// The hand-off this worker requested: one at a time; if the owner it was asked of
    /// has not released within a lease duration, the lease is stolen instead.
    pending_handoff: Option<PendingHandoff>,
}

/// A hand-off this worker asked for. It holds only for the owner it was asked of, and
/// only while the request is still on the lease: any take (even by that owner, after
/// losing the lease) clears the request there, and a new owner was never asked.
#[derive(Debug, Clone)]
struct PendingHandoff {
    key: String,
    owner: String,
    asked_at: Instant,
}

impl PendingHandoff {
    /// Whether `lease` is still held by the owner that was asked, with this worker's
    /// request on it.
    fn still_asked(&self, lease: &Lease, requester: &str) -> bool {
        lease.owner.as_deref() == Some(self.owner.as_str())
            && lease.handoff_to.as_deref() == Some(requester)
    }
}

impl LeaseCoordinator {
    /// A coordinator for `settings.worker_id`.
    pub fn new(store: Arc<dyn LeaseStore>, settings: CoordinatorSettings) -> Self {
        Self {
            store,
            settings,
            held: Arc::new(Mutex::new(BTreeMap::new())),
            observed: HashMap::new(),
            draining: false,
            pending_handoff: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// Leases held now.
    pub fn held(&self) -> Vec<Arc<HeldLease>> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stop taking and stealing (shutdown in progress); renewals continue.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Forget a lease this worker no longer holds (released at shutdown or shard end).
    pub fn forget(&self, key: &str) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// A handle to forget leases from other tasks.
    pub fn held_registry(&self) -> Arc<Mutex<BTreeMap<String, Arc<HeldLease>>>> {
        Arc::clone(&self.held)
    }

    /// One round: renew held leases, then take and steal toward the balanced target.
    /// Returns the leases newly acquired (start a shard worker for each).
    pub async fn tick(&mut self) -> Result<(TickSummary, Vec<Arc<HeldLease>>), LeaseError> {
        let mut summary = TickSummary::default();
        self.renew_all(&mut summary).await;

        let leases = self.store.list().await?;
        let now = Instant::now();
        self.observe(&leases, now);

        let worker = self.settings.worker_id.clone();
        self.honour_handoffs(&leases, &mut summary);
        let held_keys: Vec<String> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let finished: HashMap<&str, bool> = leases
            .iter()
            .map(|l| (l.key.as_str(), l.is_finished()))
            .collect();
        let active: Vec<&Lease> = leases.iter().filter(|l| !l.is_finished()).collect();

        // Who is alive: owners of leases renewed within the lease duration, plus us.
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        counts.insert(worker.clone(), 0);
        for lease in &active {
            if let Some(owner) = &lease.owner
                && !self.is_expired(lease, now)
            {
                *counts.entry(owner.clone()).or_default() += 1;
            }
        }
        let mine = held_keys
            .iter()
            .filter(|k| finished.get(k.as_str()) == Some(&false))
            .count();
        counts.insert(worker.clone(), mine);
        let workers = counts.len();
        let mut target = active.len().div_ceil(workers.max(1));
        if let Some(max) = self.settings.max_leases {
            target = target.min(max);
        }
        summary.workers = workers;
        summary.target = target;

        let mut acquired = Vec::new();
        if !self.draining && mine < target {
            // Available: unowned, or expired by our clock; and every parent finished.
            let available: Vec<&Lease> = active
                .iter()
                .copied()
                .filter(|l| !held_keys.contains(&l.key))
                .filter(|l| self.is_available(l, now))
                .filter(|l| parents_done(l, &finished))
                .collect();
            for lease in available.into_iter().take(target - mine) {
                match self.take(lease).await {
                    Ok(held) => {
                        summary.taken.push(held.key().to_string());
                        acquired.push(held);
                    }
                    Err(LeaseError::Conflict { .. }) => {} // someone else was quicker
                    Err(e) => tracing::warn!(lease = %lease.key, "cannot take lease: {e}"),
                }
            }
            let now_mine = mine + acquired.len();
            if now_mine < target && acquired.is_empty() {
                self.rebalance(
                    &active,
                    &counts,
                    target,
                    &finished,
                    now,
                    &mut summary,
                    &mut acquired,
                )
                .await;
            }
        }
        summary.held = self.held.lock().unwrap_or_else(|p| p.into_inner()).len();
        Ok((summary, acquired))
    }

    /// Renew every held lease concurrently (each on its own task, so one slow write
    /// does not delay the others past their deadline).
    async fn renew_all(&mut self, summary: &mut TickSummary) {
        let duration = self.settings.lease_duration;
        let mut renewals = tokio::task::JoinSet::new();
        for h in self.held() {
            let store = Arc::clone(&self.store);
            renewals.spawn(async move {
                let result = h.renew(store.as_ref(), duration).await;
                (h, result)
            });
        }
        while let Some(joined) = renewals.join_next().await {
            let Ok((h, result)) = joined else { continue };
            match result {
                Ok(()) => {}
                Err(e) if h.lost().is_cancelled() => {
                    tracing::warn!(
                        lease = h.key(),
                        "lease lost ({e}); its shard worker stops without checkpointing"
                    );
                    summary.lost.push(h.key().to_string());
                    self.forget(h.key());
                }
                Err(e) => tracing::warn!(lease = h.key(), "lease renewal failed, will retry: {e}"),
            }
        }
    }

    /// Ask the most loaded worker over target for one lease; if an earlier request was
    /// not honoured within a lease duration (a peer that does not know hand-offs, such
    /// as a KCL worker), steal that lease instead.
    #[allow(clippy::too_many_arguments)]
    async fn rebalance(
        &mut self,
        active: &[&Lease],
        counts: &BTreeMap<String, usize>,
        target: usize,
        finished: &HashMap<&str, bool>,
        now: Instant,
        summary: &mut TickSummary,
        acquired: &mut Vec<Arc<HeldLease>>,
    ) {
        let worker = self.settings.worker_id.clone();
        if let Some(pending) = self.pending_handoff.take() {
            match active.iter().find(|l| l.key == pending.key) {
                Some(lease) if pending.still_asked(lease, &worker) => {
                    if now.duration_since(pending.asked_at) < self.settings.lease_duration {
                        self.pending_handoff = Some(pending);
                        return; // still waiting for the owner's batch boundary
                    }
                    match self.take(lease).await {
                        Ok(held) => {
                            tracing::warn!(lease = %pending.key, owner = %pending.owner, "owner did not hand the lease over within the lease duration; stole it");
                            summary.stolen = Some(pending.key);
                            acquired.push(held);
                        }
                        Err(LeaseError::Conflict { .. }) => {}
                        Err(e) => tracing::warn!(lease = %pending.key, "cannot steal lease: {e}"),
                    }
                    return;
                }
                Some(lease)
                    if lease.owner.is_some() && lease.owner.as_deref() != Some(worker.as_str()) =>
                {
                    // Taken by another worker (or re-taken by the one asked, which clears
                    // the request): that owner was never asked, so nothing may be stolen.
                    tracing::info!(lease = %pending.key, asked = %pending.owner, owner = ?lease.owner, "hand-off request cancelled: the lease changed hands");
                }
                _ => {} // released, taken by us, or gone
            }
        }
        let victim = counts
            .iter()
            .filter(|(owner, _)| **owner != worker)
            .max_by_key(|(_, n)| **n)
            .filter(|(_, n)| **n > target)
            .map(|(owner, _)| owner.clone());
        let Some(victim) = victim else { return };
        let Some(lease) = active
            .iter()
            .filter(|l| {
                l.owner.as_deref() == Some(victim.as_str())
                    && l.handoff_to.is_none()
                    && parents_done(l, finished)
            })
            .max_by(|a, b| a.key.cmp(&b.key))
        else {
            return;
        };
        match self.store.request_handoff(lease, &worker).await {
            Ok(()) => {
                tracing::info!(lease = %lease.key, from = %victim, "asked for a lease hand-off for balance");
                summary.handoff_requested = Some(lease.key.clone());
                self.pending_handoff = Some(PendingHandoff {
                    key: lease.key.clone(),
                    owner: victim,
                    asked_at: now,
                });
            }
            Err(LeaseError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(lease = %lease.key, "cannot request a hand-off: {e}"),
        }
    }

    /// Leases this worker holds that a peer asked for: tell their workers to stop at the
    /// next batch boundary (they checkpoint and release).
    fn honour_handoffs(&self, leases: &[Lease], summary: &mut TickSummary) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for lease in leases {
            let Some(requester) = lease.handoff_to.as_deref() else {
                continue;
            };
            if requester == self.settings.worker_id {
                continue;
            }
            if let Some(h) = held.get(&lease.key)
                && !h.handoff.is_cancelled()
            {
                tracing::info!(lease = %lease.key, to = requester, "handing the lease over after the in-flight batch");
                h.handoff.cancel();
                summary.handing_over.push(lease.key.clone());
            }
        }
    }

    async fn take(&mut self, lease: &Lease) -> Result<Arc<HeldLease>, LeaseError> {
        let sent_at = Instant::now();
        let taken = self.store.take(lease, &self.settings.worker_id).await?;
        tracing::info!(
            lease = %taken.key,
            previous_owner = lease.owner.as_deref().unwrap_or("-"),
            checkpoint = %taken.checkpoint,
            "took lease"
        );
        let held = Arc::new(HeldLease::new(taken, sent_at));
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(held.key().to_string(), Arc::clone(&held));
        Ok(held)
    }

    fn observe(&mut self, leases: &[Lease], now: Instant) {
        let keys: std::collections::HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
        self.observed.retain(|k, _| keys.contains(k.as_str()));
        for lease in leases {
            let entry = self
                .observed
                .entry(lease.key.clone())
                .or_insert_with(|| Observation {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    changed_at: now,
                });
            if entry.counter != lease.counter || entry.owner != lease.owner {
                *entry = Observation {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    changed_at: now,
                };
            }
        }
    }

    /// Takeable by this worker: expired, or unowned and not reserved for another worker
    /// by a hand-off (a reservation lapses once unchanged for a lease duration, in case
    /// its requester died).
    fn is_available(&self, lease: &Lease, now: Instant) -> bool {
        if lease.owner.is_some() {
            return self.is_expired(lease, now);
        }
        match lease.handoff_to.as_deref() {
            None => true,
            Some(requester) if requester == self.settings.worker_id => true,
            Some(_) => self
                .observed
                .get(&lease.key)
                .is_some_and(|o| now.duration_since(o.changed_at) >= self.settings.lease_duration),
        }
    }

    /// Expired: owned by someone whose counter this worker has seen unchanged for a
    /// whole lease duration.
    fn is_expired(&self, lease: &Lease, now: Instant) -> bool {
        match self.observed.get(&lease.key) {
            Some(o) => {
                lease.owner.is_some()
                    && now.duration_since(o.changed_at) >= self.settings.lease_duration
            }
            None => false,
        }
    }
}

/// Every parent is finished, or has no lease any more (its shard expired and was cleaned up).
fn parents_done(lease: &Lease, finished: &HashMap<&str, bool>) -> bool {
    lease
        .parent_shard_ids
        .iter()
        .all(|p| finished.get(p.as_str()).copied().unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::sqlite::SqliteLeaseStore;

    const LEASE: Duration = Duration::from_secs(9);

    async fn store(dir: &std::path::Path) -> Arc<SqliteLeaseStore> {
        let store = SqliteLeaseStore::open(&dir.join("leases.db"), "app").expect("open");
        store.prepare().await.expect("prepare");
        for key in ["shardId-0", "shardId-1"] {
            let lease = Lease::new(key, Checkpoint::TrimHorizon);
            assert!(store.create_if_absent(&lease).await.expect("create"));
        }
        Arc::new(store)
    }

    fn coordinator(store: &Arc<SqliteLeaseStore>, worker: &str) -> LeaseCoordinator {
        LeaseCoordinator::new(
            Arc::clone(store) as Arc<dyn LeaseStore>,
            CoordinatorSettings {
                worker_id: worker.into(),
                lease_duration: LEASE,
                max_leases: None,
            },
        )
    }

    async fn get(store: &SqliteLeaseStore, key: &str) -> Lease {
        store.get(key).await.expect("get").expect("lease exists")
    }

    /// w1 holds both leases; w3 joins and asks w1 for `shardId-1`.
    async fn w3_asks_w1(store: &Arc<SqliteLeaseStore>) -> LeaseCoordinator {
        for key in ["shardId-0", "shardId-1"] {
            store
                .take(&get(store, key).await, "w1")
                .await
                .expect("w1 takes");
        }
        let mut w3 = coordinator(store, "w3");
        let (summary, acquired) = w3.tick().await.expect("tick");
        assert!(acquired.is_empty(), "{summary:?}");
        assert_eq!(summary.handoff_requested.as_deref(), Some("shardId-1"));
        assert_eq!(
            get(store, "shardId-1").await.handoff_to.as_deref(),
            Some("w3")
        );
        w3
    }

    /// The sequence a chaos soak caught: w3 asks w1 to hand a lease over; w1 loses it
    /// (its lease store was unreachable) and w2 takes it; w2 then renews it. w2 was never
    /// asked, so w3 must not steal the lease from it, however long it waits.
    #[tokio::test(start_paused = true)]
    async fn a_handoff_request_lapses_when_the_lease_changes_hands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path()).await;
        let mut w3 = w3_asks_w1(&store).await;

        tokio::time::advance(LEASE / 3).await;
        let w2 = store
            .take(&get(&store, "shardId-1").await, "w2")
            .await
            .expect("w2 takes the lease w1 lost");
        assert_eq!(w2.handoff_to, None, "a take clears the request");

        let mut w2 = w2;
        for _ in 0..9 {
            tokio::time::advance(LEASE / 3).await;
            w2 = store.renew(&w2).await.expect("w2 renews");
            let w1 = get(&store, "shardId-0").await;
            store
                .renew(&w1)
                .await
                .expect("w1 renews what it still holds");
            let (summary, acquired) = w3.tick().await.expect("tick");
            assert_eq!(summary.stolen, None, "{summary:?}");
            assert!(acquired.is_empty(), "{summary:?}");
            assert_eq!(get(&store, "shardId-1").await.owner.as_deref(), Some("w2"));
        }
    }

    /// The same lease re-taken by the owner that was asked (after losing it) carries no
    /// request any more: that is a change of hands too. The old request is dropped, and
    /// the new one (w1 is still over target) gets a lease duration of its own.
    #[tokio::test(start_paused = true)]
    async fn a_handoff_request_lapses_when_the_asked_owner_takes_the_lease_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path()).await;
        let mut w3 = w3_asks_w1(&store).await;

        let mut again = store
            .take(&get(&store, "shardId-1").await, "w1")
            .await
            .expect("w1 takes it again");
        for tick in 1..=3 {
            tokio::time::advance(LEASE / 3).await;
            again = store.renew(&again).await.expect("renew");
            let other = get(&store, "shardId-0").await;
            store.renew(&other).await.expect("renew");
            let (summary, _) = w3.tick().await.expect("tick");
            assert_eq!(summary.stolen, None, "tick {tick}: {summary:?}");
            let asked_again = summary.handoff_requested.as_deref() == Some("shardId-1");
            assert_eq!(asked_again, tick == 1, "tick {tick}: {summary:?}");
        }
        assert_eq!(get(&store, "shardId-1").await.owner.as_deref(), Some("w1"));
    }

    /// The fallback stays: an owner that keeps renewing but ignores the request (a peer
    /// that does not know hand-offs) loses the lease once a lease duration has passed.
    #[tokio::test(start_paused = true)]
    async fn an_ignored_handoff_request_ends_in_a_steal_after_the_lease_duration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path()).await;
        let mut w3 = w3_asks_w1(&store).await;

        let mut stolen_after = None;
        for tick in 1..=6 {
            tokio::time::advance(LEASE / 3).await;
            for key in ["shardId-0", "shardId-1"] {
                let lease = get(&store, key).await;
                if lease.owner.as_deref() == Some("w1") {
                    store.renew(&lease).await.expect("w1 renews");
                }
            }
            let (summary, _) = w3.tick().await.expect("tick");
            if summary.stolen.is_some() {
                assert_eq!(summary.stolen.as_deref(), Some("shardId-1"));
                stolen_after = Some(tick);
                break;
            }
        }
        assert_eq!(
            stolen_after,
            Some(3),
            "stolen on the first tick a lease duration after asking"
        );
        assert_eq!(get(&store, "shardId-1").await.owner.as_deref(), Some("w3"));
    }
}
