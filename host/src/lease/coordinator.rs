//! The lease coordinator: takes expired and released leases and balances by asking the
//! most loaded worker to hand one over, one tick every `lease_duration / 3`; each held
//! lease renews itself on its own task and fences itself when renewals stop succeeding.
//!
//! # Who may process a shard when (the lease argument)
//!
//! Notation: `L` = `lease_duration` (default 10 s), `T` = `L / 3` (3.3 s, the renewal and
//! take period), `M` = `L / 5` (2 s, the self-fence margin). Every clock below is the
//! local monotonic clock of the worker that reads it; no two machines' clocks are ever
//! compared, so only clock *rate* drift matters (parts per million against seconds).
//!
//! 1. *Writes are fenced.* Every write a holder makes (renew, checkpoint, release) is
//!    conditional on `leaseOwner` = itself and `leaseCounter` = the value it last wrote,
//!    and every write by anyone bumps the counter. A take is conditional on the counter
//!    the taker observed. Once worker B has taken a lease from A, every later write by A
//!    fails: A can never checkpoint over B.
//! 2. *A holder fences itself.* A renews each lease every `T` on a task of its own (never
//!    queued behind the Scan, takes, balancing or guest calls). Let `r` be the moment A
//!    *sent* its last successful renewal (or take). From `r + L - M` on (8 s at the
//!    defaults) A starts no guest call for the shard, writes no checkpoint for it, and
//!    interrupts a guest call still in flight, as when a renewal is refused — whatever
//!    DynamoDB is doing: a renewal still unanswered at that moment is abandoned. Every AWS
//!    call also has an attempt and an operation timeout (see `crate::aws`).
//! 3. *A taker waits out the previous holder.* B takes a lease owned by A only when its
//!    own clock has seen the counter unchanged for `L` (expired), or to steal it after
//!    an ignored hand-off request. Either way B starts processing only at `o + L`, where
//!    `o` is when B first saw the counter value it took against. That value was written
//!    by A's last successful renewal, sent at `r <= o`, so A fenced itself at
//!    `r + L - M < o + L`: by the time B processes, A has stopped, with `M` to spare for
//!    interrupting A's guest call (an epoch tick, 10 ms) and scheduling. A released lease
//!    (graceful hand-off, shutdown, shard end) has no owner: A released only after its
//!    last checkpoint, so B starts at once.
//! 4. *What can repeat is bounded*: the batch in flight when A stopped (interrupted, never
//!    checkpointed), so B re-delivers at most the records after A's last checkpoint.
//!    Delivery is at least once; no two workers process one shard at overlapping times.
//!
//! Config validation keeps the numbers meaningful: `L` of at least 1 s (so `M` is at
//! least 200 ms, twenty epoch ticks).
//!
//! # How often a worker scans the table
//!
//! A tick's Scan reads the whole table, and every worker ticks: the fleet's scans grow
//! as workers × leases. A worker whose last scan found nothing to do (no lease to take,
//! none expired, no hand-off asked or awaited, nothing lost or released since) scans
//! again only after `T × max(1, W / 16)`, `W` the live workers it counted: up to 16
//! workers scan every tick, and a larger fleet's idle scans add up to about 16 per `T`
//! whatever its size. Hand-off requests reach an idle owner without a scan, through the
//! item each renewal returns. What slower scans cost is time: past 16 workers, a crashed
//! worker's leases are noticed later (KCL 2.x scans every `2 L`). Reads may be stale
//! (eventually consistent on DynamoDB); that only ever makes a take fail or expiry be
//! judged later, since a counter value is seen only after it was written (point 3).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use super::held::HeldLease;
use super::{Lease, LeaseError, LeaseStore};
use crate::telemetry::metrics::metrics;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// This worker's id (the `leaseOwner` it writes).
    pub worker_id: String,
    /// A lease not renewed for this long (by the observer's clock) is expired.
    pub lease_duration: Duration,
    /// Most leases this worker holds (`None`: no limit).
    pub max_leases: Option<usize>,
    /// How long a requested hand-off may take before the lease is stolen instead: long
    /// enough for the owner to finish a batch (`lease_duration` + the guest deadline).
    pub handoff_wait: Duration,
    /// An idle worker among `W` live ones scans every `tick × max(1, W / this)`, so idle
    /// workers together scan about this many times per tick (see the module docs).
    /// `usize::MAX`: every worker scans every tick.
    pub idle_scans_per_tick: usize,
}

/// The default `idle_scans_per_tick`: fleets of up to 16 workers scan every tick.
pub const IDLE_SCANS_PER_TICK: usize = 16;

impl CoordinatorSettings {
    /// Settings whose hand-off wait is one lease duration (for a guest deadline of 0).
    pub fn new(worker_id: impl Into<String>, lease_duration: Duration) -> Self {
        Self {
            worker_id: worker_id.into(),
            lease_duration,
            max_leases: None,
            handoff_wait: lease_duration,
            idle_scans_per_tick: IDLE_SCANS_PER_TICK,
        }
    }

    /// Renewal (and take/steal) period: a third of the lease duration.
    pub fn tick(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long an idle worker among `workers` live ones waits between scans.
    pub fn idle_scan_period(&self, workers: usize) -> Duration {
        let share = workers as f64 / self.idle_scans_per_tick.max(1) as f64;
        self.tick().mul_f64(share.max(1.0))
    }

    /// How long after its last successful renewal was sent a holder keeps processing:
    /// the lease duration minus the self-fence margin (a fifth of it).
    pub fn fence_after(&self) -> Duration {
        self.lease_duration - self.lease_duration / 5
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
    /// Leases that were available to take when this worker was below its target.
    pub available: usize,
    /// Workers seen (including this one).
    pub workers: usize,
    /// Target leases per worker.
    pub target: usize,
    /// Whether this tick scanned the table (an idle worker skips most; see the module
    /// docs). Without a scan, `workers` and `target` are the last scan's.
    pub scanned: bool,
}

/// What the last scan found, to decide whether the next tick may skip its scan.
#[derive(Debug, Clone)]
struct LastScan {
    at: Instant,
    /// Nothing to do: nothing to take, none expired, no hand-off asked or awaited.
    idle: bool,
    /// Leases held after that tick: fewer now means one was released or lost.
    held: usize,
    workers: usize,
    target: usize,
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
    last_scan: Option<LastScan>,
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
            last_scan: None,
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

    /// One round: forget lost leases, then (unless idle, see the module docs) scan the
    /// table and take and steal toward the balanced target (renewals run on each held
    /// lease's own task). Returns the leases newly acquired (start a shard worker for each).
    pub async fn tick(&mut self) -> Result<(TickSummary, Vec<Arc<HeldLease>>), LeaseError> {
        let mut summary = TickSummary::default();
        self.prune_lost(&mut summary);
        let held_now = self.held.lock().unwrap_or_else(|p| p.into_inner()).len();
        if let Some(last) = &self.last_scan
            && summary.lost.is_empty()
            && self.may_skip_scan(last, held_now)
        {
            summary.held = held_now;
            summary.workers = last.workers;
            summary.target = last.target;
            metrics()
                .leases_held
                .set(i64::try_from(held_now).unwrap_or(i64::MAX));
            return Ok((summary, Vec::new()));
        }

        let scanned_at = Instant::now();
        let leases = self.store.list().await?;
        summary.scanned = true;
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
            summary.available = available.len();
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
        let expired = active
            .iter()
            .any(|l| l.owner.as_deref() != Some(worker.as_str()) && self.is_expired(l, now));
        self.last_scan = Some(LastScan {
            at: scanned_at,
            idle: acquired.is_empty()
                && summary.available == 0
                && summary.handoff_requested.is_none()
                && summary.stolen.is_none()
                && self.pending_handoff.is_none()
                && !expired,
            held: summary.held,
            workers,
            target,
        });
        let m = metrics();
        m.leases_held
            .set(i64::try_from(summary.held).unwrap_or(i64::MAX));
        m.leases_taken
            .inc_by(summary.taken.len() as u64 + u64::from(summary.stolen.is_some()));
        if summary.stolen.is_some() {
            m.leases_stolen.inc();
        }
        Ok((summary, acquired))
    }

    /// The last scan found nothing to do, nothing was released since, no hand-off is
    /// awaited, and the idle period for the fleet's size has not passed.
    fn may_skip_scan(&self, last: &LastScan, held_now: usize) -> bool {
        last.idle
            && held_now >= last.held
            && self.pending_handoff.is_none()
            && last.at.elapsed() < self.settings.idle_scan_period(last.workers)
    }

    /// Drop the leases whose keep-alive task gave them up (renewal refused, or fenced)
    /// from the registry, reporting them as lost. Released ones are the worker's doing.
    fn prune_lost(&self, summary: &mut TickSummary) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|key, h| {
            let gone = h.lost().is_cancelled();
            if gone && !h.is_released() {
                summary.lost.push(key.clone());
            }
            !gone
        });
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
                    if now.duration_since(pending.asked_at) < self.settings.handoff_wait {
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
                && h.hand_over_to(requester)
            {
                summary.handing_over.push(lease.key.clone());
            }
        }
    }

    async fn take(&mut self, lease: &Lease) -> Result<Arc<HeldLease>, LeaseError> {
        let sent_at = Instant::now();
        let taken = self.store.take(lease, &self.settings.worker_id).await?;
        // A previous holder may process until it fences itself: wait it out (point 3 of
        // the argument above). `o`, when this worker first saw the counter it took
        // against, is the observation's `changed_at`.
        let start_after = match (&lease.owner, self.observed.get(&lease.key)) {
            (None, _) => sent_at,
            (Some(_), Some(o)) => o.changed_at + self.settings.lease_duration,
            (Some(_), None) => sent_at + self.settings.lease_duration,
        };
        tracing::info!(
            lease = %taken.key,
            previous_owner = lease.owner.as_deref().unwrap_or("-"),
            checkpoint = %taken.checkpoint,
            epoch = taken.counter,
            waits_ms = start_after.saturating_duration_since(sent_at).as_millis() as u64,
            "took lease"
        );
        let held = Arc::new(HeldLease::new(
            taken,
            sent_at,
            self.settings.fence_after(),
            start_after,
        ));
        tokio::spawn(tracing::Instrument::in_current_span(
            Arc::clone(&held).keep_alive(Arc::clone(&self.store), self.settings.tick()),
        ));
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
    use crate::lease::Checkpoint;
    use crate::lease::memory::{Fault, MemoryLeaseStore, Operation};

    const LEASE: Duration = Duration::from_secs(9);

    async fn store_with(keys: &[&str]) -> Arc<MemoryLeaseStore> {
        let store = MemoryLeaseStore::new();
        for key in keys {
            let lease = Lease::new(key, Checkpoint::TrimHorizon);
            assert!(store.create_if_absent(&lease).await.expect("create"));
        }
        Arc::new(store)
    }

    fn coordinator(store: &Arc<MemoryLeaseStore>, worker: &str) -> LeaseCoordinator {
        LeaseCoordinator::new(
            Arc::clone(store) as Arc<dyn LeaseStore>,
            CoordinatorSettings::new(worker, LEASE),
        )
    }

    async fn get(store: &MemoryLeaseStore, key: &str) -> Lease {
        store.get(key).await.expect("get").expect("lease exists")
    }

    /// `owner` takes `keys` directly in the store (a peer without a coordinator here).
    async fn take_as(store: &MemoryLeaseStore, keys: &[&str], owner: &str) {
        for key in keys {
            store
                .take(&get(store, key).await, owner)
                .await
                .unwrap_or_else(|e| panic!("{owner} takes {key}: {e}"));
        }
    }

    /// w1 holds both leases; w3 joins and asks w1 for `shardId-1`.
    async fn w3_asks_w1(store: &Arc<MemoryLeaseStore>) -> LeaseCoordinator {
        take_as(store, &["shardId-0", "shardId-1"], "w1").await;
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
        let store = store_with(&["shardId-0", "shardId-1"]).await;
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
        let store = store_with(&["shardId-0", "shardId-1"]).await;
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
        let store = store_with(&["shardId-0", "shardId-1"]).await;
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

    /// A stolen lease is not processed until the owner it was taken from must have
    /// fenced itself: a lease duration after w3 first saw the counter it took against
    /// (w1's last renewal, one tick ago), never at once.
    #[tokio::test(start_paused = true)]
    async fn a_stolen_lease_waits_until_its_previous_owner_has_fenced_itself() {
        let store = store_with(&["shardId-0", "shardId-1"]).await;
        let mut w3 = w3_asks_w1(&store).await;
        let mut stolen = None;
        for _ in 1..=6 {
            tokio::time::advance(LEASE / 3).await;
            for key in ["shardId-0", "shardId-1"] {
                let lease = get(&store, key).await;
                if lease.owner.as_deref() == Some("w1") {
                    store.renew(&lease).await.expect("w1 renews");
                }
            }
            let (summary, acquired) = w3.tick().await.expect("tick");
            if summary.stolen.is_some() {
                stolen = acquired.into_iter().next();
                break;
            }
        }
        let stolen = stolen.expect("stolen after the hand-off wait");
        // w3 first saw w1's newest counter on the tick that stole it.
        let waits = stolen.start_after().duration_since(Instant::now());
        assert_eq!(
            waits, LEASE,
            "processing starts a lease duration after that renewal was seen"
        );
        // w1 fences itself at its renewal + 0.8 L: before w3 may start.
        assert!(CoordinatorSettings::new("w1", LEASE).fence_after() < waits);
    }

    /// An expired lease (its owner stopped renewing a lease duration ago) is processed
    /// at once; an unowned one too.
    #[tokio::test(start_paused = true)]
    async fn expired_and_released_leases_are_processed_at_once() {
        let store = store_with(&["shardId-0", "shardId-1"]).await;
        store
            .take(&get(&store, "shardId-0").await, "dead")
            .await
            .expect("a worker that then dies");
        let mut w1 = coordinator(&store, "w1");
        let (summary, acquired) = w1.tick().await.expect("tick");
        assert_eq!(
            summary.taken,
            vec!["shardId-1".to_string()],
            "only the unowned one"
        );
        assert!(acquired[0].start_after() <= Instant::now());
        tokio::time::advance(LEASE).await;
        let (summary, acquired) = w1.tick().await.expect("tick");
        assert_eq!(summary.taken, vec!["shardId-0".to_string()], "expired now");
        assert!(acquired[0].start_after() <= Instant::now());
    }

    /// The fencing token a holding gives its guest calls is the counter its take left,
    /// and every later holding's is larger than any counter an earlier holder wrote
    /// (renewals included), whether the lease expired or was released.
    #[tokio::test(start_paused = true)]
    async fn every_later_holding_of_a_lease_has_a_larger_fencing_epoch() {
        let store = store_with(&["shardId-0"]).await;
        // A peer takes the lease, renews it three times and dies.
        let mut dead = store
            .take(&get(&store, "shardId-0").await, "dead")
            .await
            .expect("a peer takes the lease");
        for _ in 0..3 {
            dead = store.renew(&dead).await.expect("the peer renews");
        }
        let mut last_written = dead.counter;
        let mut epochs = vec![1];
        for worker in ["w2", "w3"] {
            let mut next = coordinator(&store, worker);
            let mut taken = None;
            for _ in 0..12 {
                let (_, acquired) = next.tick().await.expect("tick");
                if let Some(held) = acquired.into_iter().next() {
                    taken = Some(held);
                    break;
                }
                tokio::time::sleep(LEASE / 3).await;
            }
            let held = taken.unwrap_or_else(|| panic!("{worker} takes the lease"));
            let token = held.fencing_token();
            assert_eq!(token.owner, worker);
            assert_eq!(token.epoch, get(&store, "shardId-0").await.counter);
            assert!(
                token.epoch > last_written,
                "{worker}'s epoch {} after counters up to {last_written}",
                token.epoch
            );
            epochs.push(token.epoch);
            // It renews for a while (its keep-alive), then hands the lease back.
            tokio::time::sleep(LEASE).await;
            assert!(get(&store, "shardId-0").await.counter > token.epoch + 1);
            held.release(store.as_ref()).await.expect("release");
            last_written = get(&store, "shardId-0").await.counter;
        }
        assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
    }

    /// Renewals that fail (500s, throttling) keep the lease only until the fence
    /// deadline, 0.8 L after the last successful one was sent: processing stops there,
    /// before any peer can see the lease expire (L).
    #[tokio::test(start_paused = true)]
    async fn failing_renewals_fence_the_lease_before_it_can_expire() {
        let store = store_with(&["shardId-0"]).await;
        let mut w1 = coordinator(&store, "w1");
        let (_, acquired) = w1.tick().await.expect("tick");
        let held = Arc::clone(&acquired[0]);
        let taken_at = Instant::now();
        // Renewals work for a while: the lease stays usable well past L.
        tokio::time::sleep(LEASE * 2).await;
        assert!(held.may_process(), "renewed on its own cadence");
        let counter = get(&store, "shardId-0").await.counter;
        assert!(
            counter >= 6,
            "renewed every third of the lease, counter {counter}"
        );
        store.inject(Operation::Renew, Fault::Fail);
        let failing_since = Instant::now();
        held.lost().cancelled().await;
        let fenced_after = Instant::now().duration_since(failing_since);
        assert!(!held.may_process());
        let fence = CoordinatorSettings::new("w1", LEASE).fence_after();
        // The last good renewal was at most a tick before the failures began.
        assert!(fenced_after <= fence, "fenced after {fenced_after:?}");
        assert!(
            fenced_after + LEASE / 3 >= fence,
            "fenced after {fenced_after:?}"
        );
        assert!(Instant::now().duration_since(taken_at) > LEASE * 2);
        let err = held
            .checkpoint(store.as_ref(), &Checkpoint::TrimHorizon)
            .await
            .expect_err("a fenced lease writes no checkpoint");
        assert!(matches!(err, LeaseError::Conflict { .. }), "{err}");
        let (summary, _) = w1.tick().await.expect("tick");
        assert_eq!(summary.lost, vec!["shardId-0".to_string()]);
    }

    /// A renewal that never answers (a hung connection) does not hold the lease either:
    /// the fence deadline abandons it.
    #[tokio::test(start_paused = true)]
    async fn a_hung_renewal_fences_the_lease_at_the_deadline() {
        let store = store_with(&["shardId-0"]).await;
        let mut w1 = coordinator(&store, "w1");
        let (_, acquired) = w1.tick().await.expect("tick");
        let held = Arc::clone(&acquired[0]);
        store.inject(Operation::Renew, Fault::Hang);
        let taken_at = Instant::now();
        let deadline = held.fence_deadline();
        assert_eq!(
            deadline.duration_since(taken_at),
            CoordinatorSettings::new("w1", LEASE).fence_after()
        );
        held.lost().cancelled().await;
        assert_eq!(Instant::now(), deadline, "fenced exactly at the deadline");
        assert!(!held.may_process());
    }

    /// A hung checkpoint write is abandoned at the fence deadline too, and fences.
    #[tokio::test(start_paused = true)]
    async fn a_hung_checkpoint_is_abandoned_at_the_fence_deadline() {
        let store = store_with(&["shardId-0"]).await;
        let mut w1 = coordinator(&store, "w1");
        let (_, acquired) = w1.tick().await.expect("tick");
        let held = Arc::clone(&acquired[0]);
        store.inject(Operation::Renew, Fault::Hang);
        store.inject(Operation::Checkpoint, Fault::Hang);
        let deadline = held.fence_deadline();
        let result = held
            .checkpoint(store.as_ref(), &Checkpoint::TrimHorizon)
            .await;
        assert!(result.is_err(), "{result:?}");
        assert!(Instant::now() >= deadline);
        assert!(held.lost().is_cancelled());
    }

    /// A renewal refused (another worker took the lease) stops processing at once.
    #[tokio::test(start_paused = true)]
    async fn a_refused_renewal_marks_the_lease_lost_on_the_next_renewal() {
        let store = store_with(&["shardId-0"]).await;
        let mut w1 = coordinator(&store, "w1");
        let (_, acquired) = w1.tick().await.expect("tick");
        let held = Arc::clone(&acquired[0]);
        store
            .take(&get(&store, "shardId-0").await, "w2")
            .await
            .expect("w2 takes it");
        let before = Instant::now();
        held.lost().cancelled().await;
        assert!(Instant::now().duration_since(before) <= LEASE / 3);
        let (summary, _) = w1.tick().await.expect("tick");
        assert_eq!(summary.lost, vec!["shardId-0".to_string()]);
        assert!(
            summary.taken.is_empty(),
            "w2's lease is not expired: {summary:?}"
        );
    }

    /// `max_leases_per_worker` caps what one worker takes, whatever the balance.
    #[tokio::test(start_paused = true)]
    async fn max_leases_caps_what_a_worker_takes() {
        let store = store_with(&["shardId-0", "shardId-1", "shardId-2", "shardId-3"]).await;
        let mut settings = CoordinatorSettings::new("w1", LEASE);
        settings.max_leases = Some(3);
        let mut w1 = LeaseCoordinator::new(Arc::clone(&store) as Arc<dyn LeaseStore>, settings);
        let (summary, _) = w1.tick().await.expect("tick");
        assert_eq!(summary.taken.len(), 3, "{summary:?}");
        tokio::time::sleep(LEASE * 2).await;
        let (summary, _) = w1.tick().await.expect("tick");
        assert!(summary.taken.is_empty(), "{summary:?}");
        assert_eq!(summary.held, 3);
    }

    /// w1 and w2 hold two leases each, w1 through a coordinator whose idle scan period
    /// among two workers is `2 T` (one idle scan per tick for the fleet). w2 renews its
    /// own leases by hand.
    async fn idle_w1_beside_w2(store: &Arc<MemoryLeaseStore>) -> LeaseCoordinator {
        take_as(store, &["shardId-2", "shardId-3"], "w2").await;
        let mut settings = CoordinatorSettings::new("w1", LEASE);
        settings.idle_scans_per_tick = 1;
        let mut w1 = LeaseCoordinator::new(Arc::clone(store) as Arc<dyn LeaseStore>, settings);
        let (summary, _) = w1.tick().await.expect("first tick");
        assert_eq!(summary.taken.len(), 2, "{summary:?}");
        tokio::time::advance(LEASE / 3).await;
        let (summary, _) = w1.tick().await.expect("second tick");
        assert!(summary.scanned && summary.taken.is_empty(), "{summary:?}");
        assert_eq!((summary.workers, summary.target), (2, 2));
        w1
    }

    async fn w2_renews(store: &MemoryLeaseStore) {
        for key in ["shardId-2", "shardId-3"] {
            store
                .renew(&get(store, key).await)
                .await
                .expect("w2 renews");
        }
    }

    /// An idle worker skips scans until its idle period has passed; a failing Scan
    /// shows whether a tick read the table.
    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_scans_once_per_idle_period() {
        let store = store_with(&["shardId-0", "shardId-1", "shardId-2", "shardId-3"]).await;
        let mut w1 = idle_w1_beside_w2(&store).await;
        store.inject(Operation::List, Fault::Fail);
        tokio::time::advance(LEASE / 3).await;
        w2_renews(&store).await;
        let (summary, _) = w1.tick().await.expect("an idle tick reads nothing");
        assert!(!summary.scanned, "{summary:?}");
        assert_eq!((summary.held, summary.target), (2, 2));
        tokio::time::advance(LEASE / 3).await;
        assert!(
            w1.tick().await.is_err(),
            "two ticks after the last scan, the table is read again"
        );
        store.inject(Operation::List, Fault::None);
        let (summary, _) = w1.tick().await.expect("tick");
        assert!(summary.scanned, "a failed scan is retried at once");
    }

    /// With the default fleet-wide budget, a small fleet scans every tick.
    #[tokio::test(start_paused = true)]
    async fn a_fleet_of_up_to_sixteen_workers_scans_every_tick() {
        let settings = CoordinatorSettings::new("w1", LEASE);
        for workers in [1, 2, 16] {
            assert_eq!(settings.idle_scan_period(workers), settings.tick());
        }
        assert_eq!(settings.idle_scan_period(32), settings.tick() * 2);
        assert_eq!(
            settings.idle_scan_period(100),
            settings.tick().mul_f64(6.25)
        );
        let store = store_with(&["shardId-0", "shardId-1", "shardId-2", "shardId-3"]).await;
        take_as(&store, &["shardId-2", "shardId-3"], "w2").await;
        let mut w1 = coordinator(&store, "w1");
        w1.tick().await.expect("first tick");
        for _ in 0..3 {
            tokio::time::advance(LEASE / 3).await;
            w2_renews(&store).await;
            let (summary, _) = w1.tick().await.expect("tick");
            assert!(summary.scanned && summary.taken.is_empty(), "{summary:?}");
        }
    }

    /// A hand-off request reaches an idle owner through the item its renewal returns,
    /// while its ticks read nothing.
    #[tokio::test(start_paused = true)]
    async fn an_idle_owner_learns_of_a_handoff_request_from_its_renewal() {
        let store = store_with(&["shardId-0", "shardId-1", "shardId-2", "shardId-3"]).await;
        let mut w1 = idle_w1_beside_w2(&store).await;
        store.inject(Operation::List, Fault::Fail);
        let asked = w1
            .held()
            .into_iter()
            .find(|h| h.key() == "shardId-1")
            .expect("w1 holds shardId-1");
        store
            .request_handoff(&get(&store, "shardId-1").await, "w3")
            .await
            .expect("w3 asks");
        assert!(!asked.handoff().is_cancelled());
        tokio::time::advance(LEASE / 3).await;
        w2_renews(&store).await;
        let (summary, _) = w1.tick().await.expect("an idle tick reads nothing");
        assert!(!summary.scanned);
        tokio::time::timeout(LEASE / 3, asked.handoff().cancelled())
            .await
            .expect("the next renewal raises the hand-off");
        assert!(
            !w1.held()
                .iter()
                .any(|h| h.key() == "shardId-0" && h.handoff().is_cancelled()),
            "only the lease asked for is handed over"
        );
    }

    /// A lease given up (released at shard end or hand-off) makes the next tick scan,
    /// idle period or not: the worker is below target again.
    #[tokio::test(start_paused = true)]
    async fn a_released_lease_ends_idling_at_once() {
        let store = store_with(&["shardId-0", "shardId-1", "shardId-2", "shardId-3"]).await;
        let mut w1 = idle_w1_beside_w2(&store).await;
        let held = w1
            .held()
            .into_iter()
            .find(|h| h.key() == "shardId-0")
            .expect("w1 holds shardId-0");
        held.release(store.as_ref()).await.expect("release");
        w1.forget("shardId-0");
        store.inject(Operation::List, Fault::Fail);
        assert!(
            w1.tick().await.is_err(),
            "the tick after a release reads the table"
        );
    }
}
