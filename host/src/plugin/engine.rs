//! The per-process engine: one wasmtime `Engine` (epoch interruption, pooling allocator),
//! one `Linker` with WASI and shoal's imports, the epoch ticker, and plugin loading
//! (compile or load from cache, then validate against the world).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{Processor, ProcessorPre};
use super::cache::{ArtifactCache, ArtifactSource, content_digest};
use super::host::HostState;
use super::inspect::{Inspection, explain_compile_error};
use super::limits::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use super::plugin::{Plugin, PluginLoadError};
use crate::config::EngineSettings;

/// How often the epoch advances; per-call deadlines are whole ticks of this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The per-process WebAssembly engine. Cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<ArtifactCache>,
    settings: EngineSettings,
    /// Keeps the ticker thread's stop signal alive for as long as any clone exists.
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Build the engine, linker and epoch ticker.
    pub fn new(settings: &EngineSettings) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(settings.fuel_metering);
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64));
        config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
        config.parallel_compilation(true);
        if settings.pooling {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                settings,
            )));
        }
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e:#}"))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        // Async WASI: a host call the guest waits in is a future that a call's deadline
        // (or a lease loss) can drop, where the sync flavour would block its thread.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI HTTP: {e:#}"))?;
        super::name_lookup::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link shoal's name lookup: {e:#}"))?;
        super::guard_wasi::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link shoal's WASI limits: {e:#}"))?;
        super::guard_http::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link shoal's WASI HTTP limits: {e:#}"))?;
        Processor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("cannot link shoal imports: {e:#}"))?;

        let cache = match &settings.cache_dir {
            Some(dir) => match ArtifactCache::open(dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!("plugin artifact cache disabled: {e:#}");
                    None
                }
            },
            None => None,
        };
        let ticker = EpochTicker::start(&engine);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache,
            settings: settings.clone(),
            _ticker: Arc::new(ticker),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Engine settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Epoch ticks for a per-call deadline. The deadline counts from the current epoch,
    /// which may be about to advance, so one tick is added: a guest always gets at least
    /// its full deadline, and at most one tick more.
    pub fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let ticks = deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Read, compile (or load from cache) and validate a plugin file. Blocking: call it
    /// from `spawn_blocking` or a plain thread, never on the async runtime.
    pub fn load_file(&self, path: &Path, generation: u64) -> Result<Plugin, PluginLoadError> {
        let bytes = std::fs::read(path).map_err(|source| PluginLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(path, &bytes, generation)
    }

    /// Compile (or load from cache) and validate component bytes. Blocking.
    pub fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        generation: u64,
    ) -> Result<Plugin, PluginLoadError> {
        let started = Instant::now();
        check_is_component(path, bytes)?;
        let digest = content_digest(bytes);
        let (component, source) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &digest, bytes),
            None => wasmtime::component::Component::new(&self.engine, bytes)
                .map(|c| (c, ArtifactSource::Compiled)),
        }
        .map_err(|e| PluginLoadError::Compile {
            path: path.to_path_buf(),
            reason: explain_compile_error(&format!("{e:#}")),
        })?;

        let explain = |raw: String| {
            let plain = Inspection::of(&self.engine, &component).with_link_error(&raw);
            format!("{} [wasmtime: {raw}]", plain.summary())
        };
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| PluginLoadError::Imports {
                    path: path.to_path_buf(),
                    reason: explain(format!("{e:#}")),
                })?;
        let pre = ProcessorPre::new(instance_pre).map_err(|e| PluginLoadError::Exports {
            path: path.to_path_buf(),
            reason: explain(format!("{e:#}")),
        })?;
        Ok(Plugin::new(
            generation,
            path.to_path_buf(),
            digest,
            bytes.len(),
            pre,
            source,
            started.elapsed(),
        ))
    }
}

impl PluginEngine {
    /// Compile a component file and say how it fits the world, import by import and
    /// export by export. Errors only when it cannot be read, is no component or does not
    /// compile; a misfit is reported in the inspection's problems.
    pub fn inspect_file(&self, path: &Path) -> Result<Inspection, PluginLoadError> {
        let bytes = std::fs::read(path).map_err(|source| PluginLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        check_is_component(path, &bytes)?;
        let component = wasmtime::component::Component::new(&self.engine, &bytes).map_err(|e| {
            PluginLoadError::Compile {
                path: path.to_path_buf(),
                reason: explain_compile_error(&format!("{e:#}")),
            }
        })?;
        let inspection = Inspection::of(&self.engine, &component);
        let linked = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{e:#}"))
            .and_then(|pre| ProcessorPre::new(pre).map_err(|e| format!("{e:#}")));
        Ok(match linked {
            Ok(_) => inspection,
            Err(raw) => inspection.with_link_error(&raw),
        })
    }
}

/// Fail early, in plain words, on files that are not components at all.
fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), PluginLoadError> {
    let not = |reason: &str| PluginLoadError::NotAComponent {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not(
            "the file does not start with the WebAssembly magic bytes (is it a .wasm file?)",
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(not(
            "it is a core WebAssembly module, not a component: build for wasm32-wasip2, or wrap it with `wasm-tools component new` and a WASI adapter",
        )),
        _ => Err(not(
            "unknown WebAssembly binary version (built by a newer or older toolchain?)",
        )),
    }
}

fn pooling_config(settings: &EngineSettings) -> PoolingAllocationConfig {
    let instances = settings.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances);
    // The same counts the limiter holds every instance to, pooling or not.
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES as u32);
    pool.max_memories_per_component(MAX_MEMORIES as u32);
    pool.max_tables_per_component(MAX_TABLES as u32);
    // Most components need a few core instances and one or two memories; interpreter
    // guests need more (a QuickJS component: 9 core instances). Core-instance slots are
    // only bookkeeping, so budget them generously; memories reserve address space, so
    // budget those by the average.
    pool.total_core_instances(instances.saturating_mul(16));
    pool.total_memories(instances.saturating_mul(2));
    pool.total_tables(instances.saturating_mul(8));
    // Every instance runs its calls on its own async stack (a fiber).
    pool.total_stacks(instances);
    pool.max_memory_size(settings.memory_bytes);
    pool.table_elements(MAX_TABLE_ELEMENTS);
    pool.max_memories_per_module(2);
    pool.max_tables_per_module(8);
    pool
}

/// A thread that advances the engine's epoch every `EPOCH_TICK` so per-call deadlines
/// fire. It holds only a weak reference and exits when the engine is dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let weak = engine.weak();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("shoal-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the epoch ticker; guest deadlines will not fire: {e}");
        }
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
