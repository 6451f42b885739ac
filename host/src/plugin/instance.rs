//! One processor instance per shard: a `Store` plus bindings, built from a plugin's
//! `InstancePre`. Every guest call sets the deadline, calls, and hands the result to
//! `outcome::classify`.
//!
//! A call is bounded twice: the epoch deadline traps running wasm (each tick consults the
//! call's [`CallBudget`], which also interrupts a computing guest whose lease was lost),
//! and the same deadline (plus [`WAIT_GRACE`]) on the wall clock abandons a call whose
//! guest is waiting in a WASI host call, which no epoch can interrupt. Calls are `call_async` futures driven on
//! the caller's (blocking) thread, so dropping one at the deadline is how a wait ends; the
//! store is then unusable and the call reports a deadline trap, like any other trap.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::{
    Batch, CheckpointDirective, FencingToken, ProcessError, Processor, ShardInfo, ShutdownReason,
};
use super::call_budget::CallBudget;
use super::engine::PluginEngine;
use super::host::HostState;
use super::limits::{InstanceLimiter, MAX_TABLE_ELEMENTS};
use super::outbound::Outbound;
use tokio_util::sync::CancellationToken;

use super::budget::HostBudget;
use super::guest_log::{GuestLog, LogTags};
use super::outcome::{
    CallAbandoned, CallOutcome, GuestTrap, WaitedPastDeadline, classify, classify_trap,
};
use super::plugin::Plugin;
use super::sandbox::wasi_context;
use crate::config::{LimitSettings, SandboxSettings};

/// Fuel granted per call when metering is on: effectively unlimited (metering only).
const FUEL_PER_CALL: u64 = u64::MAX / 4;

/// How much longer than its deadline a waiting call runs before it is abandoned: the epoch
/// deadline (one tick of slack) reports a computing guest first.
pub const WAIT_GRACE: Duration = Duration::from_millis(100);

/// Process-wide serial numbers, so logs and tests can tell instances apart.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// What an instance needs besides its plugin: who it serves and what it may use.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The shard served.
    pub shard: ShardInfo,
    /// Granted capabilities.
    pub sandbox: SandboxSettings,
    /// Limits.
    pub limits: LimitSettings,
    /// The lease holding the instance's calls run under (the guest's `lease-token`).
    pub fencing: FencingToken,
}

/// Measurements of the last guest call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Wall time of the call.
    pub elapsed: Duration,
    /// Fuel consumed (instructions, roughly), when metering is on.
    pub fuel: Option<u64>,
}

/// A live guest instance serving one shard.
pub struct ProcessorInstance {
    store: Store<HostState>,
    bindings: Processor,
    plugin: Arc<Plugin>,
    shard: ShardInfo,
    deadline_ticks: u64,
    deadline: Duration,
    fuel_metering: bool,
    serial: u64,
    last_call: CallStats,
    /// Cancelled when the call in progress returns (a fresh token per call).
    call: CancellationToken,
}

impl std::fmt::Debug for ProcessorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorInstance")
            .field("shard", &self.shard.shard_id)
            .field("generation", &self.plugin.generation())
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Why an instance could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    /// The host could not set up the sandbox (e.g. a granted directory vanished).
    #[error("cannot set up the sandbox for shard {shard}: {reason}")]
    Sandbox {
        /// The shard.
        shard: String,
        /// Why.
        reason: String,
    },
    /// The guest trapped while instantiating (start function, data segment over the cap).
    #[error("plugin trapped while instantiating for shard {shard}: {trap}")]
    Trap {
        /// The shard.
        shard: String,
        /// The classified trap.
        trap: GuestTrap,
    },
}

impl ProcessorInstance {
    /// Instantiate `plugin` for one shard. Blocking (runs guest start code).
    pub fn new(
        engine: &PluginEngine,
        plugin: &Arc<Plugin>,
        config: &InstanceConfig,
    ) -> Result<Self, InstantiateError> {
        Self::new_unless(engine, plugin, config, None)
    }

    /// [`Self::new`], the start code abandoned if `abandon` is cancelled (the lease was
    /// lost), as [`Self::process_unless`] abandons a call.
    pub fn new_unless(
        engine: &PluginEngine,
        plugin: &Arc<Plugin>,
        config: &InstanceConfig,
        abandon: Option<&CancellationToken>,
    ) -> Result<Self, InstantiateError> {
        let tags = LogTags {
            stream: Arc::from(config.shard.stream_name.as_str()),
            shard: Arc::from(config.shard.shard_id.as_str()),
            generation: plugin.generation(),
        };
        let limits = &config.limits;
        let log = Arc::new(GuestLog::new(tags, limits.log_rate, limits.log_burst));
        let outbound = Outbound::new(&config.sandbox.egress, &log);
        let wasi = wasi_context(&config.sandbox, &outbound, &log).map_err(|e| {
            InstantiateError::Sandbox {
                shard: config.shard.shard_id.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        let limiter = InstanceLimiter::new(limits.memory_bytes, MAX_TABLE_ELEMENTS);
        let budget = HostBudget::new(limits.host_memory_bytes, limits.descriptors);
        let mut store = Store::new(
            engine.engine(),
            HostState::new(
                wasi,
                limiter,
                budget,
                outbound,
                limits.deadline,
                log,
                config.fencing.clone(),
            ),
        );
        store.limiter(|state| &mut state.limiter);
        let deadline_ticks = engine.deadline_ticks(config.limits.deadline);
        // Every tick asks the call's budget: deadline spent, lease lost, or run on.
        store.epoch_deadline_callback(|mut store| store.data_mut().call_budget.tick());
        store.data_mut().call_budget = CallBudget::new(deadline_ticks, abandon.cloned());
        store.set_epoch_deadline(1);
        let fuel_metering = engine.settings().fuel_metering;
        if fuel_metering {
            store
                .set_fuel(FUEL_PER_CALL)
                .map_err(|e| InstantiateError::Sandbox {
                    shard: config.shard.shard_id.clone(),
                    reason: format!("cannot set fuel: {e}"),
                })?;
        }
        let deadline = config.limits.deadline;
        // Start code runs as a call of its own: what it starts ends with it.
        let start = CancellationToken::new();
        store.data_mut().begin_call(start.clone());
        let instantiated = wasmtime_wasi::runtime::in_tokio(bounded(
            deadline,
            abandon,
            plugin.pre().instantiate_async(&mut store),
        ));
        start.cancel();
        let bindings = instantiated.map_err(|e| InstantiateError::Trap {
            shard: config.shard.shard_id.clone(),
            trap: classify_trap(&e),
        })?;
        Ok(Self {
            store,
            bindings,
            plugin: Arc::clone(plugin),
            shard: config.shard.clone(),
            deadline_ticks,
            deadline,
            fuel_metering,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            last_call: CallStats::default(),
            call: CancellationToken::new(),
        })
    }

    /// The generation this instance runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// A process-unique number for this instance.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The most all linear memories and tables of this instance have held together.
    pub fn peak_memory_bytes(&self) -> usize {
        self.store.data().limiter.peak_memory_bytes()
    }

    /// Measurements of the last call.
    pub fn last_call(&self) -> CallStats {
        self.last_call
    }

    /// Call `initialize` with the plugin settings. Blocking: call it from a blocking
    /// thread (`spawn_blocking`) or a plain thread, never on the async runtime.
    pub fn initialize(&mut self, settings: &[(String, String)]) -> CallOutcome<()> {
        self.initialize_unless(settings, None)
    }

    /// [`Self::initialize`], abandoned if `abandon` is cancelled, as
    /// [`Self::process_unless`].
    pub fn initialize_unless(
        &mut self,
        settings: &[(String, String)],
        abandon: Option<&CancellationToken>,
    ) -> CallOutcome<()> {
        let started = self.arm(abandon);
        let call = self
            .bindings
            .call_initialize(&mut self.store, &self.shard, settings);
        let result = wasmtime_wasi::runtime::in_tokio(bounded(self.deadline, abandon, call));
        self.finish(started, result)
    }

    /// Call `process` on one batch. Blocking, like [`Self::initialize`].
    pub fn process(&mut self, batch: &Batch) -> CallOutcome<CheckpointDirective> {
        self.process_unless(batch, None)
    }

    /// Call `process`, abandoning the call if `abandon` is cancelled: a guest waiting in a
    /// host call is dropped at once, a computing guest is interrupted at the next epoch
    /// tick. An abandoned call is a [`super::TrapKind::Abandoned`] trap: the instance is
    /// unusable.
    pub fn process_unless(
        &mut self,
        batch: &Batch,
        abandon: Option<&CancellationToken>,
    ) -> CallOutcome<CheckpointDirective> {
        let started = self.arm(abandon);
        let call = self
            .bindings
            .call_process(&mut self.store, &self.shard, batch);
        let result = wasmtime_wasi::runtime::in_tokio(bounded(self.deadline, abandon, call));
        self.finish(started, result)
    }

    /// Call `shutdown`. It returns nothing, so the outcome is ok or a trap. Blocking.
    pub fn shutdown(&mut self, reason: ShutdownReason) -> CallOutcome<()> {
        self.shutdown_unless(reason, None)
    }

    /// [`Self::shutdown`], abandoned if `abandon` is cancelled, as
    /// [`Self::process_unless`].
    pub fn shutdown_unless(
        &mut self,
        reason: ShutdownReason,
        abandon: Option<&CancellationToken>,
    ) -> CallOutcome<()> {
        let started = self.arm(abandon);
        let call = self
            .bindings
            .call_shutdown(&mut self.store, &self.shard, reason);
        let result = wasmtime_wasi::runtime::in_tokio(bounded(self.deadline, abandon, call));
        self.finish(started, result.map(Ok))
    }

    /// Before every call: a fresh budget (the deadline's ticks, and what may abandon the
    /// call), the epoch deadline one tick ahead (it is relative to the current epoch),
    /// and the fuel; returns the start time.
    fn arm(&mut self, abandon: Option<&CancellationToken>) -> Instant {
        let state = self.store.data_mut();
        state.call_budget = CallBudget::new(self.deadline_ticks, abandon.cloned());
        state.begin_call(self.call.clone());
        self.store.set_epoch_deadline(1);
        if self.fuel_metering {
            // Cannot fail: metering is on for this engine.
            let _ = self.store.set_fuel(FUEL_PER_CALL);
        }
        Instant::now()
    }

    /// After every call: measure, then classify (the one place outcomes are decided).
    fn finish<T>(
        &mut self,
        started: Instant,
        result: wasmtime::Result<Result<T, ProcessError>>,
    ) -> CallOutcome<T> {
        // Outbound I/O the call started ends with it; the next call gets a new token.
        let ended = std::mem::take(&mut self.call);
        ended.cancel();
        self.store.data().guest_log().flush_suppressed();
        let fuel = self
            .fuel_metering
            .then(|| FUEL_PER_CALL - self.store.get_fuel().unwrap_or(FUEL_PER_CALL));
        self.last_call = CallStats {
            elapsed: started.elapsed(),
            fuel,
        };
        classify(result)
    }
}

/// Run `call` until it finishes or its deadline (plus [`WAIT_GRACE`]) passes on the wall
/// clock; a call still waiting then is dropped and reported as [`WaitedPastDeadline`].
/// If `abandon` is cancelled first, the call is dropped as [`CallAbandoned`]; if it is
/// cancelled already, the call never starts.
async fn bounded<T>(
    deadline: Duration,
    abandon: Option<&CancellationToken>,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let timed = tokio::time::timeout(deadline.saturating_add(WAIT_GRACE), call);
    let abandoned = async {
        match abandon {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = abandoned => Err(wasmtime::Error::new(CallAbandoned)),
        finished = timed => match finished {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::new(WaitedPastDeadline { deadline })),
        },
    }
}
