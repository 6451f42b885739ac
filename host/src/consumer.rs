//! `shoal run`: resolves the config and builds every client first, then runs shard sync,
//! the lease coordinator and one shard worker per held lease, until a shutdown signal.
//!
//! Shutdown is structured: stop taking leases, let every worker finish its batch,
//! checkpoint, call `shutdown(requested)` and release its lease, with one timeout around
//! the whole of it. At the timeout the remaining guest calls are interrupted; each lease
//! is released once its worker's calls have returned, or left to expire if they have not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{
    ConsumerSettings, InitialPosition, LeaseStoreSettings, PluginSettings, RetrievalSettings,
    Settings, SourceSettings,
};
use crate::delivery::{OnPoison, ShardProcessor};
use crate::egress::EgressGrants;
use crate::lease::LeaseStore;
use crate::lease::coordinator::{
    CoordinatorSettings, HeldLease, IDLE_SCANS_PER_TICK, LeaseCoordinator,
};
use crate::lease::dynamo::DynamoLeaseStore;
use crate::lease::metered::MeteredLeaseStore;
use crate::lease::sqlite::SqliteLeaseStore;
use crate::plugin::bindings::ShardInfo;
use crate::plugin::reload::{PluginUpdates, ReloadOptions, spawn_reloader};
use crate::plugin::{InstanceConfig, Plugin, PluginEngine};
use crate::retrieval::queue::ReadAhead;
use crate::retrieval::{Mode, ReaderSettings, Retriever};
use crate::shard_sync::{jittered_interval, sync_shards};
use crate::source::fanout::KinesisSubscriber;
use crate::source::kinesis::KinesisSource;
use crate::source::local::LocalSource;
use crate::source::metered::{MeteredSource, MeteredSubscriber};
use crate::source::{ShardSource, ShardSubscriber, StartPosition};
use crate::telemetry::health::{Health, HealthWindows};
use crate::telemetry::metrics::{ShardMetrics, metrics};
use crate::worker::supervisor::supervise;
use crate::worker::{ShardWorker, WorkerExit, WorkerSettings};

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long workers interrupted at the shutdown timeout get to return before their
/// leases are released: an interrupted guest call ends within an epoch tick (10 ms).
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// Where the last `progress` line left off, for the rate of the next.
struct ProgressMark {
    records: u64,
    at: tokio::time::Instant,
}

impl ProgressMark {
    fn new() -> Self {
        Self {
            records: 0,
            at: tokio::time::Instant::now(),
        }
    }

    /// Records per second from the last mark to (`records`, `now`), which becomes the mark.
    fn rate_to(&mut self, records: u64, now: tokio::time::Instant) -> f64 {
        let seconds = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let rate = records.saturating_sub(self.records) as f64 / seconds;
        *self = Self { records, at: now };
        rate
    }
}

/// Build the configured source.
pub async fn build_source(settings: &SourceSettings) -> Arc<dyn ShardSource> {
    match settings {
        SourceSettings::Local {
            directory,
            stream_name,
        } => Arc::new(LocalSource::new(directory, stream_name)),
        SourceSettings::Kinesis {
            stream_name,
            stream_arn,
            region,
            endpoint,
        } => Arc::new(
            KinesisSource::connect(
                stream_name.as_deref(),
                stream_arn.as_deref(),
                region.as_deref(),
                endpoint.as_deref(),
            )
            .await,
        ),
    }
}

/// With `retrieval = "fan-out"` (which the config allows only on a Kinesis source): the
/// consumer's name and a client of its stream.
pub async fn fan_out_source(consumer: &ConsumerSettings) -> Option<(&str, KinesisSource)> {
    let (
        RetrievalSettings::FanOut { consumer_name },
        SourceSettings::Kinesis {
            stream_name,
            stream_arn,
            region,
            endpoint,
        },
    ) = (&consumer.retrieval, &consumer.source)
    else {
        return None;
    };
    let source = KinesisSource::connect(
        stream_name.as_deref(),
        stream_arn.as_deref(),
        region.as_deref(),
        endpoint.as_deref(),
    )
    .await;
    Some((consumer_name, source))
}

/// How the configured consumer retrieves records; for enhanced fan-out, the stream
/// consumer is found or registered, and waited for until ACTIVE.
pub async fn retrieval_mode(consumer: &ConsumerSettings) -> anyhow::Result<Mode> {
    let Some((consumer_name, source)) = fan_out_source(consumer).await else {
        return Ok(Mode::Polling);
    };
    let subscriber = KinesisSubscriber::register(&source, consumer_name)
        .await
        .with_context(|| format!("cannot set up enhanced fan-out consumer {consumer_name}"))?;
    let subscriber: Arc<dyn ShardSubscriber> = Arc::new(subscriber);
    Ok(Mode::FanOut(subscriber))
}

/// Build the configured lease store (not yet prepared).
pub async fn build_store(
    settings: &LeaseStoreSettings,
    application: &str,
) -> anyhow::Result<Arc<dyn LeaseStore>> {
    Ok(match settings {
        LeaseStoreSettings::Sqlite { path } => Arc::new(SqliteLeaseStore::open(path, application)?),
        LeaseStoreSettings::DynamoDb {
            table,
            region,
            endpoint,
        } => {
            Arc::new(DynamoLeaseStore::connect(table, region.as_deref(), endpoint.as_deref()).await)
        }
    })
}

fn start_position(position: &InitialPosition) -> StartPosition {
    match position {
        InitialPosition::TrimHorizon => StartPosition::TrimHorizon,
        InitialPosition::Latest => StartPosition::Latest,
        InitialPosition::AtTimestamp(ms) => StartPosition::AtTimestamp(*ms),
    }
}

/// How long a transient failure to prepare the lease store (a busy SQLite file while a
/// peer sets it up, a DynamoDB table still being created, throttling) is retried.
const PREPARE_RETRY_FOR: Duration = Duration::from_secs(60);

/// Prepare the lease store, retrying transient failures with back-off for
/// `PREPARE_RETRY_FOR`; a fatal error, or a transient one that outlasts it, ends the run.
async fn prepare_store(store: &dyn LeaseStore, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PREPARE_RETRY_FOR;
    let mut attempt = 0;
    loop {
        match store.prepare().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                attempt += 1;
                let delay = crate::delivery::backoff::jittered(
                    attempt,
                    Duration::from_millis(50),
                    Duration::from_secs(2),
                );
                tracing::warn!(attempt, "lease store not ready, retrying: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down while preparing the lease store"),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot prepare the lease store")),
        }
    }
}

/// Run the consumer until `shutdown` is cancelled (SIGTERM/SIGINT in `main`). Every
/// event is in the span `consumer{worker, stream}`, its tasks' too.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = settings
        .consumer
        .as_ref()
        .map(|c| c.worker_id.clone())
        .unwrap_or_default();
    let span = tracing::info_span!("consumer", worker = %worker, stream = tracing::field::Empty);
    run_in_span(settings, shutdown).instrument(span).await
}

async fn run_in_span(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let consumer = settings
        .consumer
        .clone()
        .context("the config has no [consumer], [source] and [leases] sections")?;
    let plugin_settings = settings
        .plugin
        .clone()
        .context("the config has no [plugin] section")?;
    let mut engine_settings = settings.engine.clone();
    engine_settings.memory_bytes = plugin_settings.limits.memory_bytes;

    // Everything is resolved and built before any worker starts.
    let source = build_source(&consumer.source).await;
    tracing::Span::current().record("stream", source.stream_name());
    crate::telemetry::metrics::install(source.stream_name());
    let health = Arc::new(Health::new(HealthWindows::for_consumer(
        consumer.lease_duration,
        consumer.shard_sync_interval,
    )));
    let source: Arc<dyn ShardSource> = Arc::new(MeteredSource::new(source, Arc::clone(&health)));
    let store = build_store(&consumer.leases, &consumer.application).await?;
    let store: Arc<dyn LeaseStore> = Arc::new(MeteredLeaseStore::new(store, Arc::clone(&health)));
    let metrics_stop = CancellationToken::new();
    let _stop_metrics = metrics_stop.clone().drop_guard();
    if let Some(address) = settings.metrics_address {
        crate::telemetry::server::serve(address, Arc::clone(&health), metrics_stop).await?;
    }
    prepare_store(store.as_ref(), &shutdown).await?;
    let mode = match tokio::select! {
        mode = retrieval_mode(&consumer) => mode?,
        _ = shutdown.cancelled() => return Ok(()),
    } {
        Mode::FanOut(subscriber) => Mode::FanOut(Arc::new(MeteredSubscriber::new(
            subscriber,
            Arc::clone(&health),
        ))),
        polling => polling,
    };
    let engine = PluginEngine::new(&engine_settings)?;
    let plugin = {
        let (engine, path) = (engine.clone(), plugin_settings.path.clone());
        tokio::task::spawn_blocking(move || engine.load_file(&path, 1)).await??
    };
    tracing::info!(
        worker = %consumer.worker_id,
        application = %consumer.application,
        stream = %source.stream_name(),
        plugin = %plugin.path().display(),
        generation = 1,
        digest = plugin.short_digest(),
        "shoal consumer starting"
    );
    report_ungranted_outbound(&plugin, &plugin_settings.sandbox.egress);
    metrics().plugin_generation.set(1);
    let reload_cancel = CancellationToken::new();
    let (updates, _reload, reloader) = spawn_reloader(
        engine.clone(),
        Arc::new(plugin),
        ReloadOptions {
            debounce: plugin_settings.reload_debounce,
            watch_file: plugin_settings.watch,
            on_sighup: true,
        },
        reload_cancel.clone(),
    )?;

    {
        // Each accepted reload says what its outbound imports cannot reach, too.
        let mut generations = updates.plugin.clone();
        generations.borrow_and_update();
        let grants = plugin_settings.sandbox.egress.clone();
        tokio::spawn(
            async move {
                while generations.changed().await.is_ok() {
                    let plugin = Arc::clone(&generations.borrow_and_update());
                    report_ungranted_outbound(&plugin, &grants);
                }
            }
            .in_current_span(),
        );
    }
    let initial = consumer.initial_position.clone();
    let sync_cancel = CancellationToken::new();
    let failure = Failure::default();
    let sync_task = {
        let (source, store, cancel, interval) = (
            Arc::clone(&source),
            Arc::clone(&store),
            sync_cancel.clone(),
            consumer.shard_sync_interval,
        );
        let initial = initial.clone();
        // The first sync runs before the coordinator's first tick so new shards have leases.
        match sync_shards(source.as_ref(), store.as_ref(), &initial).await {
            Err(e) if e.is_fatal() => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot start consuming stream {}",
                    source.stream_name()
                )));
            }
            Err(e) => tracing::warn!("initial shard sync failed, will retry: {e}"),
            Ok(_) => {}
        }
        let failure = failure.clone();
        let sync = async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(jittered_interval(interval)) => {}
                }
                match sync_shards(source.as_ref(), store.as_ref(), &initial).await {
                    Ok(s) if !s.created.is_empty() || !s.deleted.is_empty() => {
                        tracing::info!(created = ?s.created, deleted = ?s.deleted, shards = s.shards, "shard sync");
                    }
                    Ok(_) => {}
                    Err(e) if e.is_fatal() => {
                        failure.raise(format!("shard sync: {e}"));
                        break;
                    }
                    Err(e) => tracing::warn!("shard sync failed, will retry: {e}"),
                }
            }
        };
        tokio::spawn(sync.in_current_span())
    };

    let plugin_deadline = plugin_settings.limits.deadline;
    let retriever = Retriever::new(Arc::clone(&source), mode, reader_settings(&consumer));
    let scheduler = Scheduler {
        source,
        retriever,
        store: Arc::clone(&store),
        engine,
        updates,
        plugin: plugin_settings,
        worker: worker_settings(&consumer),
        workers_shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        stats: Arc::new(std::sync::Mutex::new(BTreeMap::new())),
        failure,
        health,
    };
    let mut coordinator = LeaseCoordinator::new(
        store,
        CoordinatorSettings {
            worker_id: consumer.worker_id.clone(),
            lease_duration: consumer.lease_duration,
            max_leases: consumer.max_leases_per_worker,
            // Time for the owner to finish the batch in flight when it is asked.
            handoff_wait: consumer.lease_duration + plugin_deadline,
            idle_scans_per_tick: IDLE_SCANS_PER_TICK,
        },
    );
    scheduler.run(&mut coordinator, &consumer, &shutdown).await;

    sync_cancel.cancel();
    reload_cancel.cancel();
    let _ = sync_task.await;
    let _ = reloader.await;
    if let Some(message) = scheduler.failure.message() {
        anyhow::bail!("{message}");
    }
    tracing::info!("shoal consumer stopped");
    Ok(())
}

/// Back-off after a failed source call, checkpoint or dead-letter write.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

fn worker_settings(c: &ConsumerSettings) -> WorkerSettings {
    WorkerSettings {
        checkpoint_interval: c.checkpoint_interval,
        initial_position: start_position(&c.initial_position),
        backoff_initial: BACKOFF_INITIAL,
        backoff_max: BACKOFF_MAX,
        stable_batches: c.stable_batches,
    }
}

fn reader_settings(c: &ConsumerSettings) -> ReaderSettings {
    ReaderSettings {
        max_records: c.max_records,
        idle_time: c.idle_time_between_reads,
        deliver_empty_batches: c.deliver_empty_batches,
        read_ahead: ReadAhead {
            records: c.read_ahead_records,
            bytes: c.read_ahead_bytes,
        },
        backoff_initial: BACKOFF_INITIAL,
        backoff_max: BACKOFF_MAX,
    }
}

/// Spawns shard workers for acquired leases and winds them down at shutdown.
struct Scheduler {
    source: Arc<dyn ShardSource>,
    /// Opens each shard's retrieval (polling or enhanced fan-out).
    retriever: Retriever,
    store: Arc<dyn LeaseStore>,
    engine: PluginEngine,
    updates: PluginUpdates,
    plugin: PluginSettings,
    worker: WorkerSettings,
    workers_shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Each shard's series as its latest worker here counted them (kept after the worker
    /// stops, so the progress total does not drop).
    stats: Arc<std::sync::Mutex<BTreeMap<String, ShardMetrics>>>,
    /// The first error no retry fixes; set, it stops the consumer (non-zero exit).
    failure: Failure,
    /// Liveness and readiness stamps for `/healthz` and `/readyz`.
    health: Arc<Health>,
}

/// An error that ends the run, reported by whichever task met it first.
#[derive(Debug, Clone, Default)]
struct Failure {
    raised: CancellationToken,
    message: Arc<std::sync::Mutex<Option<String>>>,
}

impl Failure {
    fn raise(&self, message: String) {
        let mut slot = self.message.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!("stopping the consumer: {message}");
            *slot = Some(message);
        }
        self.raised.cancel();
    }

    fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Scheduler {
    async fn run(
        &self,
        coordinator: &mut LeaseCoordinator,
        consumer: &ConsumerSettings,
        shutdown: &CancellationToken,
    ) {
        let tick = coordinator.settings().tick();
        let mut next_tick = tokio::time::Instant::now();
        let mut next_progress = next_tick + PROGRESS_EVERY;
        let mut progress = ProgressMark::new();
        loop {
            if tokio::time::Instant::now() >= next_tick {
                self.tick(coordinator).await;
                next_tick = tokio::time::Instant::now() + tick;
            }
            // Progress has its own timer, so lines come every PROGRESS_EVERY whatever
            // the lease tick, and the rate is over the time that really passed.
            let now = tokio::time::Instant::now();
            if now >= next_progress {
                while next_progress <= now {
                    next_progress += PROGRESS_EVERY;
                }
                self.log_progress(coordinator, &mut progress);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.failure.raised.cancelled() => break,
                _ = tokio::time::sleep_until(next_tick.min(next_progress)) => {}
            }
        }

        tracing::info!(
            held = coordinator.held().len(),
            "shutting down: finishing in-flight batches, checkpointing, releasing leases"
        );
        coordinator.drain();
        self.workers_shutdown.cancel();
        self.tracker.close();
        let deadline = tokio::time::Instant::now() + consumer.shutdown_timeout;
        // Held leases keep renewing on their own tasks while workers finish, so no peer
        // takes a lease mid-checkpoint.
        tokio::select! {
            _ = self.tracker.wait() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("shutdown timeout reached; interrupting the remaining guest calls (not checkpointed) and releasing their leases once they returned");
                // Stop every remaining worker as on a lost lease (a guest call ends within
                // an epoch tick; no shutdown call follows) before its lease is released
                // for a peer to take at once.
                for held in coordinator.held() {
                    held.interrupt();
                }
                if tokio::time::timeout(INTERRUPT_GRACE, self.tracker.wait()).await.is_err() {
                    tracing::warn!("shard workers still running {INTERRUPT_GRACE:?} after being interrupted: their leases are left to expire, not released");
                }
            }
        }
        // A worker leaves the registry only once it has returned (having released its
        // lease), so a lease still there has a worker, and maybe a guest call, still
        // running: releasing it would let a peer start while that call runs. Its
        // renewals stop; it expires instead.
        for held in coordinator.held() {
            held.interrupt();
            tracing::warn!(
                lease = held.key(),
                "its shard worker has not returned: leaving the lease to expire instead of releasing it"
            );
            coordinator.forget(held.key());
        }
        self.log_progress(coordinator, &mut progress);
    }

    /// One lease-coordinator tick: renew, take, steal; start workers for new leases.
    async fn tick(&self, coordinator: &mut LeaseCoordinator) {
        let ticked = coordinator.tick().await;
        self.health.ticked();
        match ticked {
            Ok((summary, acquired)) => {
                self.health
                    .leases_ok(summary.held > 0 || summary.available == 0);
                if !summary.taken.is_empty() || summary.stolen.is_some() || !summary.lost.is_empty()
                {
                    tracing::info!(
                        held = summary.held, target = summary.target, workers = summary.workers,
                        taken = ?summary.taken, stolen = ?summary.stolen, lost = ?summary.lost,
                        "leases changed"
                    );
                }
                for held in acquired {
                    self.spawn_worker(held, coordinator);
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!("lease coordinator tick failed, will retry: {e}")
            }
            Err(e) => self
                .failure
                .raise(format!("cannot read the lease table: {e}")),
        }
    }

    fn spawn_worker(&self, held: Arc<HeldLease>, coordinator: &LeaseCoordinator) {
        let shard = held.key().to_string();
        let processor = ShardProcessor::new(
            self.engine.clone(),
            self.updates.plugin.clone(),
            InstanceConfig {
                shard: ShardInfo {
                    stream_name: self.source.stream_name().to_string(),
                    shard_id: shard.clone(),
                },
                sandbox: self.plugin.sandbox.clone(),
                limits: self.plugin.limits,
                fencing: held.fencing_token(),
            },
            &self.plugin.guest_settings,
            self.plugin.failure.clone(),
            OnPoison::from_policy(&self.plugin.failure.poison),
        );
        // The worker also stops like a shutdown when its lease is asked for (hand-off):
        // it watches the lease's hand-off token itself.
        let stop = self.workers_shutdown.clone();
        let shard_metrics = metrics().shard(&shard);
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard.clone(), shard_metrics.clone());
        let worker = ShardWorker::new(
            self.retriever.clone(),
            Arc::clone(&self.store),
            Arc::clone(&held),
            processor,
            self.worker.clone(),
            stop,
            shard_metrics,
        );
        let registry = coordinator.held_registry();
        let store = Arc::clone(&self.store);
        let failure = self.failure.clone();
        let span = tracing::Span::current();
        let work = worker.run().instrument(span.clone());
        let supervised = async move {
            match supervise(work, held, registry, store).await {
                Some(WorkerExit::ShardEnd) => tracing::info!(shard, "shard finished"),
                Some(WorkerExit::LeaseLost) => {
                    tracing::info!(shard, "shard worker stopped: lease lost")
                }
                Some(WorkerExit::Shutdown) => {
                    tracing::debug!(shard, "shard worker stopped (shutdown or hand-off)")
                }
                Some(WorkerExit::Failed(message)) => failure.raise(message),
                // Panicked: logged, and the lease released for a restart.
                None => {}
            }
        };
        self.tracker.spawn(supervised.instrument(span));
    }

    fn log_progress(&self, coordinator: &LeaseCoordinator, mark: &mut ProgressMark) {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let records: u64 = stats.values().map(|s| s.records.get()).sum();
        let behind = stats
            .values()
            .map(|s| (s.behind_latest.get() * 1000.0).round() as u64)
            .max()
            .unwrap_or(0);
        tracing::info!(
            leases = coordinator.held().len(),
            records,
            rate = (mark.rate_to(records, tokio::time::Instant::now()) * 10.0).round() / 10.0,
            max_millis_behind = behind,
            generation = self.updates.plugin.borrow().generation(),
            "progress"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_rate_is_over_the_time_that_really_passed() {
        let start = tokio::time::Instant::now();
        let mut mark = ProgressMark {
            records: 0,
            at: start,
        };
        // 1,000 records in 3.33 s (a tick shorter than the nominal 5 s) is ≈ 300/s, not 200/s.
        let rate = mark.rate_to(1_000, start + Duration::from_millis(3_333));
        assert!((rate - 300.03).abs() < 0.1, "{rate}");
        assert_eq!(mark.records, 1_000);
        // Counters that went down (a worker's stats dropped) give 0, never an underflow.
        assert_eq!(mark.rate_to(400, start + Duration::from_secs(5)), 0.0);
    }
}

#[cfg(test)]
mod prepare {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::lease::{Checkpoint, Lease, LeaseError};

    /// A store whose `prepare` fails with `errors` in turn, then succeeds.
    #[derive(Debug)]
    struct Flaky {
        errors: Vec<LeaseError>,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl LeaseStore for Flaky {
        async fn prepare(&self) -> Result<(), LeaseError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
            self.errors.get(call).cloned().map_or(Ok(()), Err)
        }
        async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            unreachable!()
        }
        async fn get(&self, _: &str) -> Result<Option<Lease>, LeaseError> {
            unreachable!()
        }
        async fn create_if_absent(&self, _: &Lease) -> Result<bool, LeaseError> {
            unreachable!()
        }
        async fn renew(&self, _: &Lease) -> Result<Lease, LeaseError> {
            unreachable!()
        }
        async fn take(&self, _: &Lease, _: &str) -> Result<Lease, LeaseError> {
            unreachable!()
        }
        async fn checkpoint(&self, _: &Lease, _: &Checkpoint) -> Result<Lease, LeaseError> {
            unreachable!()
        }
        async fn prepare_batch(
            &self,
            _: &Lease,
            _: &Checkpoint,
            _: &crate::lease::BatchExtent,
        ) -> Result<Lease, LeaseError> {
            unreachable!()
        }
        async fn release(&self, _: &Lease) -> Result<Lease, LeaseError> {
            unreachable!()
        }
        async fn request_handoff(&self, _: &Lease, _: &str) -> Result<(), LeaseError> {
            unreachable!()
        }
        async fn set_child_shards(&self, _: &str, _: &[String]) -> Result<(), LeaseError> {
            unreachable!()
        }
        async fn delete(&self, _: &Lease) -> Result<(), LeaseError> {
            unreachable!()
        }
    }

    /// A peer setting up the same SQLite file can answer "database is locked" at once,
    /// without waiting for the busy timeout: that must not end the process.
    #[tokio::test]
    async fn transient_prepare_failures_are_retried() {
        let busy = || LeaseError::Transient("database is locked".into());
        let store = Flaky {
            errors: vec![busy(), busy(), busy()],
            calls: AtomicU32::new(0),
        };
        prepare_store(&store, &CancellationToken::new())
            .await
            .expect("prepared after retries");
        assert_eq!(store.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_fatal_prepare_failure_ends_the_run_at_once() {
        let store = Flaky {
            errors: vec![LeaseError::Fatal("no such table permission".into())],
            calls: AtomicU32::new(0),
        };
        let e = prepare_store(&store, &CancellationToken::new())
            .await
            .expect_err("fatal");
        assert!(
            format!("{e:#}").contains("cannot prepare the lease store"),
            "{e:#}"
        );
        assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    }
}

/// Say, before the first batch of a generation, which of its outbound imports the config
/// grants nothing to reach.
fn report_ungranted_outbound(plugin: &Plugin, grants: &EgressGrants) {
    for sentence in crate::plugin::inspect::ungranted_outbound(plugin.imports(), grants) {
        tracing::info!(
            plugin = %plugin.path().display(),
            generation = plugin.generation(),
            "plugin generation {}: {sentence}",
            plugin.generation()
        );
    }
}
