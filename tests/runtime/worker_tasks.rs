//! Nothing a shard worker starts outlives it: its reader, its lease's keep-alive and the
//! watcher that interrupts a retry wait all end with it, whether it ends by a lost lease,
//! by the end of its shard or by shutdown. Many workers in turn (churn) leave the runtime
//! with the tasks it had before them. Real workers over the local source, the in-memory
//! lease store and the `checksum` guest.

use std::sync::Arc;
use std::time::Duration;

use shoal::config::SandboxSettings;
use shoal::delivery::OnPoison;
use shoal::lease::coordinator::{CoordinatorSettings, LeaseCoordinator};
use shoal::lease::memory::MemoryLeaseStore;
use shoal::lease::{Checkpoint, Lease, LeaseStore};
use shoal::retrieval::queue::ReadAhead;
use shoal::retrieval::{Mode, ReaderSettings, Retriever};
use shoal::source::StartPosition;
use shoal::source::local::LocalSource;
use shoal::telemetry::metrics::metrics;
use shoal::worker::{ShardWorker, WorkerExit, WorkerSettings};
use tokio_util::sync::CancellationToken;

use crate::fixtures::*;

const LEASE: Duration = Duration::from_millis(900);
const ROUNDS: usize = 6;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Wait (a few seconds at most) for the runtime's task count to come down to `baseline`;
/// what it is then.
async fn settled_tasks(baseline: usize) -> usize {
    for _ in 0..100 {
        if alive_tasks() <= baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    alive_tasks()
}

struct Bench {
    dir: tempfile::TempDir,
    store: Arc<MemoryLeaseStore>,
    retriever: Retriever,
    engine: shoal::plugin::PluginEngine,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(LocalSource::new(dir.path(), "local"));
        let retriever = Retriever::new(
            source,
            Mode::Polling,
            ReaderSettings {
                max_records: 100,
                idle_time: Duration::from_millis(10),
                deliver_empty_batches: false,
                read_ahead: ReadAhead {
                    records: 1000,
                    bytes: 1 << 20,
                },
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(10),
            },
        );
        Self {
            dir,
            store: Arc::new(MemoryLeaseStore::new()),
            retriever,
            engine: engine(),
        }
    }

    /// A shard of `records` lines (closed: it ends after them), with a new lease.
    async fn shard(&self, name: &str, records: usize, closed: bool) {
        let lines: String = (0..records)
            .map(|n| format!("{{\"partition_key\":\"pk\",\"data\":\"{name}-{n}\"}}\n"))
            .collect();
        std::fs::write(self.dir.path().join(format!("{name}.jsonl")), lines).expect("shard");
        if closed {
            std::fs::write(self.dir.path().join(format!("{name}.closed")), "").expect("closed");
        }
        let lease = Lease::new(name, Checkpoint::TrimHorizon);
        assert!(self.store.create_if_absent(&lease).await.expect("create"));
    }

    /// Take `name`'s lease as `worker` and run a shard worker on it until it ends; `during`
    /// runs beside it once the worker has processed the shard's records.
    async fn run_worker(
        &self,
        worker: &str,
        name: &str,
        during: impl AsyncFnOnce(&CancellationToken),
    ) -> WorkerExit {
        let mut coordinator = LeaseCoordinator::new(
            Arc::clone(&self.store) as Arc<dyn LeaseStore>,
            CoordinatorSettings::new(worker, LEASE),
        );
        let (_, acquired) = coordinator.tick().await.expect("tick");
        let held = acquired
            .into_iter()
            .find(|h| h.key() == name)
            .unwrap_or_else(|| panic!("{worker} takes {name}"));
        let processor = processor(
            &self.engine,
            load(&self.engine, "checksum"),
            instance_config(name, SandboxSettings::default(), test_limits()),
            &[],
            fast_failure(3),
            OnPoison::GiveUp,
        );
        let shutdown = CancellationToken::new();
        let worker = ShardWorker::new(
            self.retriever.clone(),
            Arc::clone(&self.store) as Arc<dyn LeaseStore>,
            held,
            processor,
            WorkerSettings {
                checkpoint_interval: Duration::ZERO,
                initial_position: StartPosition::TrimHorizon,
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(10),
                stable_batches: false,
            },
            shutdown.clone(),
            metrics().shard(name),
        );
        let running = tokio::spawn(worker.run());
        // Let it process what there is before the ending.
        for _ in 0..200 {
            let lease = self.store.get(name).await.expect("get").expect("lease");
            if lease.checkpoint != Checkpoint::TrimHorizon || running.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        during(&shutdown).await;
        let exit = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the worker ends")
            .expect("the worker does not panic");
        // Gone, so that the next worker's coordinator takes only the next shard's lease
        // (a lease taken with no worker to run it would keep its keep-alive running).
        let lease = self.store.get(name).await.expect("get").expect("lease");
        self.store.delete(&lease).await.expect("delete");
        exit
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_worker_starts_outlives_it_whether_it_ends_by_loss_shard_end_or_shutdown() {
    let bench = Bench::new();
    // The engine's and the store's own tasks are there before any worker.
    let baseline = settled_tasks(usize::MAX).await;
    let mut exits = Vec::new();
    for round in 0..ROUNDS {
        let lost = format!("shardId-lost-{round}");
        bench.shard(&lost, 30, false).await;
        let store = Arc::clone(&bench.store);
        let key = lost.clone();
        exits.push(
            bench
                .run_worker("w1", &lost, async move |_| {
                    // A peer takes the lease: w1's next renewal is refused.
                    let lease = store.get(&key).await.expect("get").expect("lease");
                    store
                        .take(&lease, "thief")
                        .await
                        .expect("the peer takes it");
                })
                .await,
        );

        let ended = format!("shardId-ended-{round}");
        bench.shard(&ended, 30, true).await;
        exits.push(bench.run_worker("w1", &ended, async |_| {}).await);

        let stopped = format!("shardId-stopped-{round}");
        bench.shard(&stopped, 30, false).await;
        exits.push(
            bench
                .run_worker("w1", &stopped, async |shutdown| shutdown.cancel())
                .await,
        );
    }
    let expected: Vec<WorkerExit> = (0..ROUNDS)
        .flat_map(|_| {
            [
                WorkerExit::LeaseLost,
                WorkerExit::ShardEnd,
                WorkerExit::Shutdown,
            ]
        })
        .collect();
    assert_eq!(exits, expected);
    let after = settled_tasks(baseline).await;
    assert!(
        after <= baseline,
        "{after} tasks alive after {} workers ended, {baseline} before: something a worker started outlived it",
        exits.len()
    );
}
