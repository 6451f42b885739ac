//! Runs a shard worker on a task of its own and cleans up after it: its lease leaves
//! the coordinator's registry however it ended, and a worker that panicked has its lease
//! released, so the shard restarts from its last checkpoint (here or on a peer) instead
//! of being renewed forever with nothing processing it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::lease::LeaseStore;
use crate::lease::coordinator::HeldLease;

use super::WorkerExit;

/// Run `work` (a shard worker's `run`) to its end; `None` if it panicked.
pub async fn supervise(
    work: impl Future<Output = WorkerExit> + Send + 'static,
    held: Arc<HeldLease>,
    registry: Arc<Mutex<BTreeMap<String, Arc<HeldLease>>>>,
    store: Arc<dyn LeaseStore>,
) -> Option<WorkerExit> {
    // On a task of its own, so a panic in the worker is caught here.
    let exit = tokio::spawn(work).await;
    forget_own_entry(&registry, &held);
    match exit {
        Ok(exit) => Some(exit),
        Err(e) => {
            // Nothing was checkpointed after the panic; releasing lets this or another
            // worker restart the shard from its last checkpoint.
            tracing::error!(
                shard = held.key(),
                "shard worker failed ({e}); releasing its lease so the shard restarts from its last checkpoint"
            );
            if let Err(e) = held.release(store.as_ref()).await {
                tracing::warn!(
                    shard = held.key(),
                    "cannot release the lease (it will expire instead): {e}"
                );
            }
            None
        }
    }
}

/// Remove `held`'s registry entry and its shard's series, unless the entry is another
/// lease for the same shard: a lost lease leaves the registry before its worker returns,
/// and the coordinator may take the shard again meanwhile, for a new worker whose entry
/// and series must stay. Series go before the entry, under its lock, so a new worker's
/// are never removed.
fn forget_own_entry(registry: &Mutex<BTreeMap<String, Arc<HeldLease>>>, held: &Arc<HeldLease>) {
    let mut entries = registry.lock().unwrap_or_else(|p| p.into_inner());
    match entries.get(held.key()) {
        Some(entry) if Arc::ptr_eq(entry, held) => {
            crate::telemetry::metrics::metrics().forget_shard(held.key());
            entries.remove(held.key());
        }
        // Another worker holds the shard now: its entry and series stay.
        Some(_) => {}
        None => crate::telemetry::metrics::metrics().forget_shard(held.key()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lease::coordinator::{CoordinatorSettings, LeaseCoordinator};
    use crate::lease::memory::MemoryLeaseStore;
    use crate::lease::{Checkpoint, Lease};

    /// A store with one lease, and a coordinator that has taken it.
    async fn one_held_lease() -> (Arc<dyn LeaseStore>, LeaseCoordinator, Arc<HeldLease>) {
        let store = Arc::new(MemoryLeaseStore::new());
        let lease = Lease::new("shardId-0", Checkpoint::TrimHorizon);
        assert!(store.create_if_absent(&lease).await.expect("create"));
        let store: Arc<dyn LeaseStore> = store;
        let mut coordinator = LeaseCoordinator::new(
            Arc::clone(&store),
            CoordinatorSettings::new("w1", Duration::from_secs(9)),
        );
        let (_, acquired) = coordinator.tick().await.expect("tick");
        let [held] = &acquired[..] else {
            panic!("expected one lease, got {acquired:?}")
        };
        let held = Arc::clone(held);
        (store, coordinator, held)
    }

    /// A worker that panics mid-shard gives its lease back at once, and the coordinator
    /// takes it again on its next tick (a new worker restarts the shard): the lease is
    /// neither renewed forever with nothing processing it nor left to expire.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_releases_its_lease_and_the_shard_is_taken_again() {
        let (store, mut coordinator, held) = one_held_lease().await;
        let registry = coordinator.held_registry();
        assert!(registry.lock().expect("registry").contains_key("shardId-0"));

        let exit = supervise(
            async { panic!("a bug in the worker") },
            Arc::clone(&held),
            Arc::clone(&registry),
            Arc::clone(&store),
        )
        .await;

        assert_eq!(exit, None, "the panic is reported as no exit");
        assert!(
            !registry.lock().expect("registry").contains_key("shardId-0"),
            "the panicked worker's lease left the registry"
        );
        let stored = store.get("shardId-0").await.expect("get").expect("lease");
        assert_eq!(
            stored.owner, None,
            "released, not left renewing: {stored:?}"
        );
        assert!(held.lost().is_cancelled(), "its renewals stopped");

        let (_, again) = coordinator.tick().await.expect("tick");
        assert_eq!(
            again.iter().map(|h| h.key()).collect::<Vec<_>>(),
            ["shardId-0"],
            "the next tick takes the shard again"
        );
    }

    /// A lost lease leaves the registry before its worker returns (the coordinator
    /// prunes it), and the shard may be taken again meanwhile: the old worker's exit
    /// must not remove the new holder's entry, or the coordinator would start a second
    /// worker for a shard it is processing.
    #[tokio::test(start_paused = true)]
    async fn an_old_workers_exit_leaves_the_new_holder_of_its_shard_registered() {
        let (store, mut coordinator, old) = one_held_lease().await;
        let registry = coordinator.held_registry();
        old.lost().cancel(); // lost while its worker still runs
        // The lease expires by the coordinator's clock and is taken again.
        tokio::time::advance(Duration::from_secs(10)).await;
        coordinator.tick().await.expect("tick");
        tokio::time::advance(Duration::from_secs(10)).await;
        let (_, again) = coordinator.tick().await.expect("tick");
        let [new] = &again[..] else {
            panic!("expected the shard taken again, got {again:?}")
        };
        assert!(!Arc::ptr_eq(new, &old));

        let exit = supervise(
            async { WorkerExit::LeaseLost },
            Arc::clone(&old),
            Arc::clone(&registry),
            store,
        )
        .await;
        assert_eq!(exit, Some(WorkerExit::LeaseLost));
        let entries = registry.lock().expect("registry");
        let entry = entries
            .get("shardId-0")
            .expect("the new holder's entry stays");
        assert!(Arc::ptr_eq(entry, new), "and it is the new holder's");
    }

    #[tokio::test]
    async fn a_worker_that_ends_is_forgotten_and_its_exit_returned() {
        let (store, coordinator, held) = one_held_lease().await;
        let registry = coordinator.held_registry();
        let exit = supervise(
            async { WorkerExit::LeaseLost },
            held,
            Arc::clone(&registry),
            store,
        )
        .await;
        assert_eq!(exit, Some(WorkerExit::LeaseLost));
        assert!(registry.lock().expect("registry").is_empty());
    }
}
