//! Delivers each batch of one shard to the guest until it is done: switches plugin
//! generations at batch boundaries, rebuilds trapped instances, replaces instances whose
//! memory grew past `recycle_above`, retries with capped back-off, and applies the poison
//! policy. Nothing is dropped silently: a batch ends
//! processed, dead-lettered (on disk, synced), given up (replay only, reported), or the
//! caller cancels while it is still pending.

pub mod backoff;
pub mod dead_letter;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{FailurePolicy, PoisonPolicy};
use crate::plugin::bindings::{Batch, CheckpointDirective, ShutdownReason};
use crate::plugin::instance::CallStats;
use crate::plugin::{
    CallOutcome, GuestError, GuestTrap, InstanceConfig, Plugin, PluginEngine, ProcessorInstance,
    TrapKind,
};
use crate::telemetry::metrics::{KindLabel, metrics};
use dead_letter::{DeadLetterReason, DeadLetterWriter};

/// What bounds every guest call of one shard: for a consumer, the shard's lease. A call
/// starts only while [`may_start`](CallGate::may_start) holds and is interrupted when
/// [`stopped`](CallGate::stopped) is cancelled (a waiting guest at once, a computing one
/// at the next epoch tick).
pub trait CallGate: Send + Sync + std::fmt::Debug {
    /// Whether a guest call may start now.
    fn may_start(&self) -> bool;
    /// Cancelled when every call in flight must stop.
    fn stopped(&self) -> &CancellationToken;
    /// Once calls are stopped: until when the guest may still be told so
    /// (`shutdown(lease-lost)`, interrupted then); `None`: not at all.
    fn lost_call_until(&self) -> Option<tokio::time::Instant>;
}

/// What to do once a batch is poisoned (failed `max_attempts` times, or `fatal`).
#[derive(Debug, Clone)]
pub enum OnPoison {
    /// Keep retrying at the capped back-off.
    Block,
    /// Write it to the dead-letter directory, then report it done.
    DeadLetter(DeadLetterWriter),
    /// Report it as given up (for `shoal replay`, whose input file stays intact).
    GiveUp,
}

impl OnPoison {
    /// The action for a configured policy.
    pub fn from_policy(policy: &PoisonPolicy) -> Self {
        match policy {
            PoisonPolicy::Block => OnPoison::Block,
            PoisonPolicy::DeadLetter { dir } => OnPoison::DeadLetter(DeadLetterWriter::new(dir)),
        }
    }
}

/// One failed attempt, classified.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The guest trapped (the instance was discarded).
    Trap(GuestTrap),
    /// The guest returned an error.
    Guest(GuestError),
    /// The host could not build an instance (sandbox set-up).
    Setup(String),
}

impl Failure {
    /// Short classification, e.g. `trap panic`, `guest error retry`, `setup`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Trap(t) => format!("trap {}", t.kind),
            Failure::Guest(GuestError::Retry(_)) => "guest error retry".into(),
            Failure::Guest(GuestError::Fatal(_)) => "guest error fatal".into(),
            Failure::Setup(_) => "setup".into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Trap(t) => &t.message,
            Failure::Guest(GuestError::Retry(m) | GuestError::Fatal(m)) => m,
            Failure::Setup(m) => m,
        }
    }

    fn is_fatal(&self) -> bool {
        matches!(self, Failure::Guest(GuestError::Fatal(_)))
    }

    /// The same failure, its message saying which call it happened in.
    pub fn during(self, call: &str) -> Failure {
        match self {
            Failure::Trap(trap) => Failure::Trap(GuestTrap {
                message: format!("in {call}: {}", trap.message),
                ..trap
            }),
            Failure::Guest(GuestError::Retry(m)) => {
                Failure::Guest(GuestError::Retry(format!("in {call}: {m}")))
            }
            Failure::Guest(GuestError::Fatal(m)) => {
                Failure::Guest(GuestError::Fatal(format!("in {call}: {m}")))
            }
            Failure::Setup(m) => Failure::Setup(format!("in {call}: {m}")),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

/// How a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The guest processed it and returned this directive.
    Processed(CheckpointDirective),
    /// It was written to this dead-letter file; the shard moves past it.
    DeadLettered(PathBuf),
    /// Poisoned and given up (replay only).
    GaveUp,
}

/// The story of one batch.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// How it ended.
    pub disposition: Disposition,
    /// Attempts made (1 = first try succeeded).
    pub attempts: u32,
    /// Classification of each failed attempt, in order (at most the first 32).
    pub failures: Vec<Failure>,
    /// Plugin generation of the last attempt.
    pub generation: u64,
    /// Serial of the instance that made the last attempt, if one was built.
    pub instance_serial: Option<u64>,
    /// Guest time of the last attempt.
    pub guest_time: Duration,
    /// Fuel of the last attempt (with metering on).
    pub fuel: Option<u64>,
    /// Wall time including retries and back-off.
    pub elapsed: Duration,
}

/// The caller cancelled while the batch was still pending (not processed, not
/// dead-lettered): it must not be checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled before the batch was processed")]
pub struct Cancelled;

const MAX_RECORDED_FAILURES: usize = 32;

/// Processes the batches of one shard through the current plugin generation.
pub struct ShardProcessor {
    engine: PluginEngine,
    plugins: watch::Receiver<Arc<Plugin>>,
    current: Arc<Plugin>,
    /// Only ever accessed through `&mut self` (`Mutex::get_mut`, no locking): the mutex
    /// just makes the processor `Sync`, as a wasmtime `Store` is not, so futures that
    /// borrow it across an await can run on any thread.
    instance: std::sync::Mutex<Option<ProcessorInstance>>,
    config: Arc<InstanceConfig>,
    guest_settings: Arc<[(String, String)]>,
    failure: FailurePolicy,
    on_poison: OnPoison,
    instances_built: u64,
    /// The live instance's memory when it was built (after `initialize`): recycling only
    /// ever returns what batches added on top of it.
    fresh_memory_bytes: usize,
    /// What every guest call is bounded by (the lease); none for `shoal replay`.
    gate: Option<Arc<dyn CallGate>>,
    /// `shard{stream, shard, generation}`: every event of this shard's delivery is in it.
    span: tracing::Span,
}

impl std::fmt::Debug for ShardProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardProcessor")
            .field("shard", &self.config.shard.shard_id)
            .field("generation", &self.current.generation())
            .finish_non_exhaustive()
    }
}

impl ShardProcessor {
    /// A processor for one shard that follows the published plugin generation.
    pub fn new(
        engine: PluginEngine,
        mut plugins: watch::Receiver<Arc<Plugin>>,
        config: InstanceConfig,
        guest_settings: &[(String, String)],
        failure: FailurePolicy,
        on_poison: OnPoison,
    ) -> Self {
        let current = Arc::clone(&plugins.borrow_and_update());
        let span = tracing::info_span!(
            "shard",
            stream = %config.shard.stream_name,
            shard = %config.shard.shard_id,
            generation = current.generation()
        );
        Self {
            engine,
            plugins,
            current,
            instance: std::sync::Mutex::new(None),
            config: Arc::new(config),
            guest_settings: guest_settings.into(),
            failure,
            on_poison,
            instances_built: 0,
            fresh_memory_bytes: 0,
            gate: None,
            span,
        }
    }

    /// Bound every guest call (`initialize`, `process`, `shutdown`, and the start code)
    /// by `gate`: none starts unless the gate allows it, and each is interrupted when the
    /// gate stops (the lease was lost or fenced): nothing of it may be checkpointed, and
    /// another worker may soon own the shard. Shutdown does not stop calls: the batch
    /// finishes.
    pub fn bound_by(&mut self, gate: Arc<dyn CallGate>) {
        self.gate = Some(gate);
    }

    /// Whether a guest call may start now.
    fn may_call(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g.may_start())
    }

    /// The token that interrupts a call in flight, if calls are bounded.
    fn stop_token(&self) -> Option<CancellationToken> {
        self.gate.as_ref().map(|g| g.stopped().clone())
    }

    /// Instances built so far (first build plus one per trap or generation switch).
    pub fn instances_built(&self) -> u64 {
        self.instances_built
    }

    /// The generation in use.
    pub fn generation(&self) -> u64 {
        self.current.generation()
    }

    fn live_instance(&mut self) -> &mut Option<ProcessorInstance> {
        self.instance.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn shard_id(&self) -> &str {
        &self.config.shard.shard_id
    }

    /// Deliver one batch until it is processed, dead-lettered or given up.
    ///
    /// Cancellation is observed only while backing off between attempts: an attempt in
    /// progress always finishes (bounded by the call deadline), so the caller can
    /// checkpoint what the guest did.
    pub async fn process(
        &mut self,
        batch: Arc<Batch>,
        cancel: &CancellationToken,
    ) -> Result<BatchReport, Cancelled> {
        let span = self.span.clone();
        self.deliver(batch, cancel).instrument(span).await
    }

    /// Stop using the guest: call its `shutdown(reason)` if an instance is live, then
    /// drop it. The failure if the guest trapped there (or the call could not run), so
    /// the caller does not record a shard end the guest may not have flushed. With no
    /// live instance there is nothing to flush: `Ok`.
    pub async fn shutdown(&mut self, reason: ShutdownReason) -> Result<(), Failure> {
        let span = self.span.clone();
        self.shutdown_instance(reason).instrument(span).await
    }

    /// Every record of the shard was delivered: call `shutdown(shard-end)`, on a fresh
    /// instance of the latest generation if none is live (it was recycled, trapped, or
    /// no batch came at all), so the guest is always told before `SHARD_END` is written.
    /// The failure if it could not be told: building the instance failed, or the call
    /// trapped.
    pub async fn end_shard(&mut self) -> Result<(), Failure> {
        let span = self.span.clone();
        async {
            self.adopt_latest_generation().await;
            if self.live_instance().is_none() {
                if !self.may_call() {
                    return Err(Failure::Trap(abandoned_before_start()));
                }
                let instance = self.build_instance().await?;
                *self.live_instance() = Some(instance);
            }
            self.shutdown_instance(ShutdownReason::ShardEnd).await
        }
        .instrument(span)
        .await
    }

    /// The lease was lost: tell a live instance with `shutdown(lease-lost)` only while
    /// the gate still allows it (before the lease's fence, when no peer can process the
    /// shard yet), and interrupt the call at that moment; otherwise drop the instance
    /// without a call. `true` if the guest was told.
    pub async fn shutdown_after_loss(&mut self) -> bool {
        let until = self.gate.as_ref().and_then(|g| g.lost_call_until());
        let Some(instance) = self.live_instance().take() else {
            return false;
        };
        let span = self.span.clone();
        let Some(until) = until else {
            tracing::info!(parent: &span, "lease lost past its fence: the instance is dropped without shutdown(lease-lost)");
            return false;
        };
        let window = CancellationToken::new();
        let closing = window.clone();
        let _closer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            closing.cancel();
        }));
        self.call_shutdown(instance, ShutdownReason::LeaseLost, Some(window))
            .instrument(span)
            .await
            .is_ok()
    }

    /// After a batch: if the live instance's memory grew above the configured
    /// `recycle_above` (and above what it had when built), call its `shutdown(requested)`
    /// and drop it, so its memory returns to the system; the next batch builds a fresh
    /// instance. A WebAssembly memory never shrinks, so this is the only way back down
    /// after one large batch. Returns the memory the instance held, if it was recycled.
    pub async fn recycle_if_grown(&mut self) -> Option<usize> {
        let threshold = self.config.limits.recycle_above_bytes?;
        let fresh = self.fresh_memory_bytes;
        let grown = self.live_instance().as_ref()?.peak_memory_bytes();
        if grown <= threshold || grown <= fresh {
            return None;
        }
        let span = self.span.clone();
        async {
            tracing::info!(
                memory_bytes = grown,
                recycle_above = threshold,
                "instance memory grew to {} MiB, above plugin.limits.recycle_above ({} MiB): replacing it with a fresh instance",
                grown >> 20,
                threshold >> 20
            );
            // A trap in `shutdown` is logged there; the instance is dropped either way.
            let _ = self.shutdown_instance(ShutdownReason::Requested).await;
            metrics().instances_recycled.inc();
        }
        .instrument(span)
        .await;
        Some(grown)
    }

    /// Whether `attempts` consecutive failures of one step poison it (the policy's
    /// `max_attempts`, as for a batch).
    pub fn poisoned_after(&self, attempts: u32) -> bool {
        attempts >= self.failure.max_attempts
    }

    /// What the poison policy does with what is poisoned.
    pub fn on_poison(&self) -> &OnPoison {
        &self.on_poison
    }

    /// The back-off before retry `attempts` (1-based) of a failed step.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        backoff::jittered(
            attempts,
            self.failure.backoff_initial,
            self.failure.backoff_max,
        )
    }

    /// Write records that `failure` poisoned outside a batch delivery (what a failed
    /// `shutdown(shard-end)` may not have flushed) to the dead-letter directory. `None`
    /// when the policy is not `dead-letter`, or the write failed (logged): the caller
    /// keeps the records and tries again.
    pub async fn dead_letter(
        &self,
        batch: Arc<Batch>,
        failure: &Failure,
        attempts: u32,
    ) -> Option<PathBuf> {
        let OnPoison::DeadLetter(writer) = self.on_poison.clone() else {
            return None;
        };
        dead_letter(self.labels(), writer, batch, failure, attempts)
            .instrument(self.span.clone())
            .await
    }

    async fn deliver(
        &mut self,
        batch: Arc<Batch>,
        cancel: &CancellationToken,
    ) -> Result<BatchReport, Cancelled> {
        let started = Instant::now();
        let mut failures = Vec::new();
        let mut consecutive: u32 = 0;
        let mut announced_poison = false;
        let mut counted_poison = false;
        loop {
            self.adopt_latest_generation().await;
            let generation = self.current.generation();
            match self.attempt(Arc::clone(&batch)).await {
                Ok((directive, stats, serial)) => {
                    if consecutive > 0 {
                        tracing::info!(
                            attempts = consecutive + 1,
                            "batch processed after {consecutive} failed attempt(s)"
                        );
                    }
                    return Ok(BatchReport {
                        disposition: Disposition::Processed(directive),
                        attempts: consecutive + 1,
                        failures,
                        generation,
                        instance_serial: Some(serial),
                        guest_time: stats.elapsed,
                        fuel: stats.fuel,
                        elapsed: started.elapsed(),
                    });
                }
                Err((Failure::Trap(trap), _)) if trap.kind == TrapKind::Abandoned => {
                    count_trap(trap.kind);
                    tracing::info!("{trap}");
                    return Err(Cancelled);
                }
                Err((failure, serial)) => {
                    consecutive += 1;
                    self.log_failure(&failure, consecutive, batch.records.len());
                    let poisoned = failure.is_fatal() || consecutive >= self.failure.max_attempts;
                    if failures.len() < MAX_RECORDED_FAILURES {
                        failures.push(failure.clone());
                    }
                    if poisoned && !counted_poison {
                        counted_poison = true;
                        metrics().batches_poisoned.inc();
                    }
                    if poisoned {
                        let report = |disposition| BatchReport {
                            disposition,
                            attempts: consecutive,
                            failures: failures.clone(),
                            generation,
                            instance_serial: serial,
                            guest_time: Duration::ZERO,
                            fuel: None,
                            elapsed: started.elapsed(),
                        };
                        // Cloned so no borrow of `self` is held across the await below.
                        match self.on_poison.clone() {
                            OnPoison::GiveUp => return Ok(report(Disposition::GaveUp)),
                            OnPoison::DeadLetter(writer) => {
                                let written = dead_letter(
                                    self.labels(),
                                    writer,
                                    Arc::clone(&batch),
                                    &failure,
                                    consecutive,
                                )
                                .await;
                                if let Some(file) = written {
                                    return Ok(report(Disposition::DeadLettered(file)));
                                }
                                // Not written (logged): keep the batch and retry; nothing is lost.
                            }
                            OnPoison::Block => {
                                if !announced_poison {
                                    announced_poison = true;
                                    tracing::error!(
                                        attempts = consecutive,
                                        "batch poisoned ({failure}); policy `block`: retrying until it succeeds or a new plugin generation fixes it"
                                    );
                                }
                            }
                        }
                    }
                    let delay = backoff::jittered(
                        consecutive,
                        self.failure.backoff_initial,
                        self.failure.backoff_max,
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                        // A new generation may be the fix: retry with it at once.
                        _ = changed_or_pending(&mut self.plugins) => {}
                    }
                    metrics().batch_retries.inc();
                }
            }
        }
    }

    async fn shutdown_instance(&mut self, reason: ShutdownReason) -> Result<(), Failure> {
        let Some(instance) = self.live_instance().take() else {
            return Ok(());
        };
        if !self.may_call() {
            tracing::info!(%reason, "lease lost or fenced: the instance is dropped without shutdown({reason})");
            return Err(Failure::Trap(abandoned_before_start()));
        }
        let stop = self.stop_token();
        self.call_shutdown(instance, reason, stop).await
    }

    /// Call `shutdown(reason)` on `instance`, interrupted when `stop` is cancelled; the
    /// instance is dropped afterwards.
    async fn call_shutdown(
        &self,
        mut instance: ProcessorInstance,
        reason: ShutdownReason,
        stop: Option<CancellationToken>,
    ) -> Result<(), Failure> {
        let shard = self.shard_id().to_string();
        let generation = self.current.generation();
        match in_span_blocking(move || instance.shutdown_unless(reason, stop.as_ref())).await {
            Ok(CallOutcome::Trap(trap)) => {
                tracing::warn!(%reason, "guest trapped in shutdown: {trap}");
                Err(Failure::Trap(trap))
            }
            // `shutdown` returns nothing: ok or a trap.
            Ok(CallOutcome::Ok(()) | CallOutcome::GuestError(_)) => {
                tracing::debug!(%reason, "guest shut down");
                Ok(())
            }
            Err(e) => {
                tracing::error!(shard, generation, "guest shutdown task failed: {e}");
                Err(Failure::Setup(format!("guest shutdown task failed: {e}")))
            }
        }
    }

    /// At a batch boundary: if a newer generation was published, shut the old instance
    /// down (`requested`) and switch.
    async fn adopt_latest_generation(&mut self) {
        // Compare generations rather than trusting `has_changed`: the back-off select
        // may already have marked the new value seen.
        let next = Arc::clone(&self.plugins.borrow_and_update());
        if next.generation() == self.current.generation() {
            return;
        }
        // A trap here is logged; the new generation starts from a fresh instance anyway.
        let _ = self.shutdown_instance(ShutdownReason::Requested).await;
        self.span.record("generation", next.generation());
        tracing::info!(
            old_generation = self.current.generation(),
            new_generation = next.generation(),
            "shard switched plugin generation {} → {}",
            self.current.generation(),
            next.generation()
        );
        self.current = next;
    }

    /// One attempt: build an instance if needed, call `process`, keep the instance unless
    /// it trapped.
    async fn attempt(
        &mut self,
        batch: Arc<Batch>,
    ) -> Result<(CheckpointDirective, CallStats, u64), (Failure, Option<u64>)> {
        if !self.may_call() {
            return Err((Failure::Trap(abandoned_before_start()), None));
        }
        let instance = match self.live_instance().take() {
            Some(instance) => instance,
            None => self.build_instance().await.map_err(|f| (f, None))?,
        };
        let serial = instance.serial();
        let stop = self.stop_token();
        let joined = in_span_blocking(move || {
            let mut instance = instance;
            let outcome = instance.process_unless(&batch, stop.as_ref());
            (instance, outcome)
        })
        .await;
        let (instance, outcome) = joined.map_err(|e| {
            (
                Failure::Setup(format!("guest call task failed: {e}")),
                Some(serial),
            )
        })?;
        let stats = instance.last_call();
        metrics()
            .guest_call_seconds
            .observe(stats.elapsed.as_secs_f64());
        match outcome {
            CallOutcome::Ok(directive) => {
                *self.live_instance() = Some(instance);
                Ok((directive, stats, serial))
            }
            CallOutcome::GuestError(e) => {
                *self.live_instance() = Some(instance);
                Err((Failure::Guest(e), Some(serial)))
            }
            CallOutcome::Trap(trap) => {
                // The store is poisoned: dropping the instance frees its pool slot; the
                // next attempt builds a fresh one from the same InstancePre.
                drop(instance);
                Err((Failure::Trap(trap), Some(serial)))
            }
        }
    }

    async fn build_instance(&mut self) -> Result<ProcessorInstance, Failure> {
        let engine = self.engine.clone();
        let plugin = Arc::clone(&self.current);
        let config = Arc::clone(&self.config);
        let settings = Arc::clone(&self.guest_settings);
        let stop = self.stop_token();
        let built = in_span_blocking(move || {
            let mut instance =
                ProcessorInstance::new_unless(&engine, &plugin, &config, stop.as_ref()).map_err(
                    |e| match e {
                        crate::plugin::instance::InstantiateError::Trap { trap, .. } => {
                            Failure::Trap(trap)
                        }
                        other => Failure::Setup(other.to_string()),
                    },
                )?;
            match instance.initialize_unless(&settings, stop.as_ref()) {
                CallOutcome::Ok(()) => Ok(instance),
                CallOutcome::GuestError(e) => Err(Failure::Guest(e)),
                CallOutcome::Trap(t) => Err(Failure::Trap(t)),
            }
        })
        .await
        .map_err(|e| Failure::Setup(format!("instance build task failed: {e}")))?;
        if let Ok(instance) = &built {
            self.instances_built += 1;
            self.fresh_memory_bytes = instance.peak_memory_bytes();
        }
        built
    }

    fn log_failure(&self, failure: &Failure, attempt: u32, records: usize) {
        let error_kind = match failure {
            Failure::Trap(trap) => {
                count_trap(trap.kind);
                None
            }
            Failure::Guest(GuestError::Retry(_)) => Some("retry"),
            Failure::Guest(GuestError::Fatal(_)) => Some("fatal"),
            Failure::Setup(_) => None,
        };
        if let Some(kind) = error_kind {
            metrics()
                .guest_errors
                .get_or_create(&KindLabel { kind })
                .inc();
        }
        match failure {
            Failure::Trap(trap) => tracing::error!(
                attempt,
                records,
                trap = trap.kind.label(),
                "guest trapped ({}): {}; instance discarded, will rebuild{}",
                trap.kind,
                trap.message,
                trap.backtrace
                    .as_deref()
                    .map(|b| format!("\nguest backtrace:\n{b}"))
                    .unwrap_or_default()
            ),
            Failure::Guest(e) => {
                tracing::warn!(attempt, records, "{e}")
            }
            Failure::Setup(m) => {
                tracing::error!(attempt, "cannot build instance: {m}")
            }
        }
    }

    fn labels(&self) -> Labels {
        Labels {
            shard: self.shard_id().to_string(),
            generation: self.current.generation(),
            digest: self.current.digest().to_string(),
        }
    }
}

/// Who a dead letter is about, owned so it can cross an await.
struct Labels {
    shard: String,
    generation: u64,
    digest: String,
}

/// Write a poisoned batch to the dead-letter file; `None` (logged) if that failed, in
/// which case the caller keeps the batch and retries it: nothing is lost.
async fn dead_letter(
    labels: Labels,
    writer: DeadLetterWriter,
    batch: Arc<Batch>,
    failure: &Failure,
    attempts: u32,
) -> Option<PathBuf> {
    let Labels {
        shard,
        generation,
        digest,
    } = labels;
    let kind = failure.kind();
    let message = failure.message().to_string();
    let shard_for_write = shard.clone();
    let result = tokio::task::spawn_blocking(move || {
        let reason = DeadLetterReason {
            kind: &kind,
            message: &message,
            attempts,
            generation,
            plugin_digest: &digest,
            at_ms: now_ms(),
        };
        writer.write(&shard_for_write, &batch, &reason)
    })
    .await;
    match result {
        Ok(Ok(file)) => {
            metrics().batches_dead_lettered.inc();
            tracing::warn!(
                attempts, file = %file.display(),
                "batch dead-lettered ({failure}); moving past it"
            );
            Some(file)
        }
        Ok(Err(e)) => {
            tracing::error!("cannot dead-letter the batch, will retry it: {e:#}");
            None
        }
        Err(e) => {
            tracing::error!("dead-letter task failed, will retry the batch: {e}");
            None
        }
    }
}

/// The trap of a call that was never started because its lease was lost or fenced.
fn abandoned_before_start() -> GuestTrap {
    crate::plugin::outcome::classify_trap(&wasmtime::Error::new(
        crate::plugin::outcome::CallAbandoned,
    ))
}

/// Count a trap by kind (`shoal_guest_traps_total`).
fn count_trap(kind: TrapKind) {
    metrics()
        .guest_traps
        .get_or_create(&KindLabel { kind: kind.label() })
        .inc();
}

/// Run a guest call on a blocking thread inside the caller's span, so what the guest
/// logs (and what the call reports) carries the worker, stream, shard and generation.
fn in_span_blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(call))
}

/// Resolves when a new value is published; never, once the sender is gone.
async fn changed_or_pending(rx: &mut watch::Receiver<Arc<Plugin>>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
