//! Validated runtime settings: what the rest of shoal reads, with every default applied,
//! every path absolute and every value checked. Built only by `config::load`/`defaults`.

use std::path::PathBuf;
use std::time::Duration;

pub use super::file::DirMode;

/// Everything a shoal process is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The per-process WebAssembly engine.
    pub engine: EngineSettings,
    /// The processor plugin, if the config names one.
    pub plugin: Option<PluginSettings>,
    /// The consumer (source, leases, worker behaviour), if configured.
    pub consumer: Option<ConsumerSettings>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`None`: not served).
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// Everything `shoal run` needs besides the plugin.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Application name.
    pub application: String,
    /// This worker's id.
    pub worker_id: String,
    /// Where new root shards start.
    pub initial_position: InitialPosition,
    /// Records per fetch.
    pub max_records: usize,
    /// Idle sleep when caught up.
    pub idle_time_between_reads: Duration,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Lease cap for this worker.
    pub max_leases_per_worker: Option<usize>,
    /// Shard sync period.
    pub shard_sync_interval: Duration,
    /// Checkpoint coalescing interval.
    pub checkpoint_interval: Duration,
    /// Deliver empty batches.
    pub deliver_empty_batches: bool,
    /// Record batch extents with the lease; re-deliver with the same boundaries.
    pub stable_batches: bool,
    /// How records are retrieved.
    pub retrieval: RetrievalSettings,
    /// Records read ahead of the guest per shard at most (0: none).
    pub read_ahead_records: usize,
    /// Bytes read ahead of the guest per shard at most (0: none).
    pub read_ahead_bytes: usize,
    /// Graceful shutdown limit.
    pub shutdown_timeout: Duration,
    /// The source.
    pub source: SourceSettings,
    /// The lease store.
    pub leases: LeaseStoreSettings,
}

/// How records are retrieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrievalSettings {
    /// GetRecords.
    Polling,
    /// Enhanced fan-out (SubscribeToShard) through the consumer of this name.
    FanOut {
        /// The registered stream consumer's name.
        consumer_name: String,
    },
}

/// Where new root shards start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialPosition {
    /// The oldest record.
    TrimHorizon,
    /// New records only.
    Latest,
    /// Records from this time on (ms since the epoch).
    AtTimestamp(i64),
}

/// The record source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    /// Amazon Kinesis (or an emulator).
    Kinesis {
        /// Stream name.
        stream_name: Option<String>,
        /// Stream ARN.
        stream_arn: Option<String>,
        /// Region override.
        region: Option<String>,
        /// Endpoint override.
        endpoint: Option<String>,
    },
    /// A directory of JSON-lines shard files.
    Local {
        /// The directory (absolute).
        directory: PathBuf,
        /// Stream name shown to guests.
        stream_name: String,
    },
}

/// The lease store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStoreSettings {
    /// Amazon DynamoDB (or DynamoDB Local), KCL 2.x schema.
    DynamoDb {
        /// Table name.
        table: String,
        /// Region override.
        region: Option<String>,
        /// Endpoint override.
        endpoint: Option<String>,
    },
    /// An SQLite file shared by the processes of one machine.
    Sqlite {
        /// The database file (absolute).
        path: PathBuf,
    },
}

/// Per-process engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instance slots reserved by the pooling allocator.
    pub max_instances: u32,
    /// Whether to use the pooling allocator.
    pub pooling: bool,
    /// Compiled-artifact cache directory (`None` disables caching).
    pub cache_dir: Option<PathBuf>,
    /// Meter guest instructions (reported, not enforced).
    pub fuel_metering: bool,
    /// The per-memory cap, needed up front to size pool slots.
    pub memory_bytes: usize,
}

/// The processor plugin and how it runs.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Absolute path of the component file.
    pub path: PathBuf,
    /// Hot-swap on file change.
    pub watch: bool,
    /// Quiet period before a reload.
    pub reload_debounce: Duration,
    /// Passed to `initialize`, in key order.
    pub guest_settings: Vec<(String, String)>,
    /// Granted capabilities.
    pub sandbox: SandboxSettings,
    /// Resource limits.
    pub limits: LimitSettings,
    /// Retries and the poison policy.
    pub failure: FailurePolicy,
}

/// Capabilities granted to every instance. The defaults grant nothing: no files, no
/// environment variables, no outbound HTTP, no sockets, no name lookup, no stdin; stdout
/// and stderr go to the host log; clocks and random numbers are the WASI defaults.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    /// Environment variables visible to the guest (already resolved).
    pub env: Vec<(String, String)>,
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Outbound HTTP, TCP and UDP destinations.
    pub egress: crate::egress::EgressGrants,
}

/// A host directory the guest may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Absolute host path (exists, is a directory).
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
    /// Access mode.
    pub mode: DirMode,
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Cap on each linear memory, bytes.
    pub memory_bytes: usize,
    /// Longest one guest call may run.
    pub deadline: Duration,
    /// Replace an instance whose linear memory grew above this many bytes (and above what
    /// it had when built) with a fresh one after the batch, returning the memory; `None`:
    /// an instance keeps its memory (and its state) for as long as it serves the shard.
    pub recycle_above_bytes: Option<usize>,
    /// What one instance may make the host hold: resource-table entries, streams, HTTP
    /// headers, bodies and requests in flight, directory listings, log line buffers.
    pub host_memory_bytes: usize,
    /// OS descriptors one instance may hold: files and directories, sockets, HTTP
    /// connections.
    pub descriptors: usize,
    /// Guest log lines per second (the `log` import, stdout, stderr, refusal warnings).
    pub log_rate: u32,
    /// Guest log lines at once before the rate applies.
    pub log_burst: u32,
}

/// What happens when a batch fails.
#[derive(Debug, Clone)]
pub struct FailurePolicy {
    /// Consecutive failed attempts at one batch before `poison` applies (≥ 1).
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Cap on the retry delay.
    pub backoff_max: Duration,
    /// The poison policy.
    pub poison: PoisonPolicy,
}

/// The poison policy for a batch that failed `max_attempts` times in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoisonPolicy {
    /// Keep retrying at the capped back-off: the shard stalls visibly until the plugin
    /// is fixed (hot swap) or the failure clears. Nothing moves past the batch.
    Block,
    /// Append the batch, with the reason, to `<dir>/<shard-id>.jsonl` and move on.
    DeadLetter {
        /// Absolute directory (created at start-up).
        dir: PathBuf,
    },
}

/// Defaults, in one place so the docs and the code agree.
pub mod defaults {
    use std::time::Duration;

    /// Pool slots: 1,000 shards plus hot-swap headroom.
    pub const MAX_INSTANCES: u32 = 1024;
    /// 256 MiB per linear memory: enough for interpreter guests (Python, JS).
    pub const MEMORY_BYTES: usize = 256 << 20;
    /// A batch of 10,000 records through a slow guest still fits.
    pub const DEADLINE: Duration = Duration::from_secs(10);
    /// Attempts before the poison policy.
    pub const MAX_ATTEMPTS: u32 = 5;
    /// First retry delay.
    pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
    /// Retry delay cap.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// Debounce for plugin file events.
    pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);
    /// GetRecords limit per call.
    pub const MAX_RECORDS: usize = 10_000;
    /// Idle sleep when caught up.
    pub const IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(500);
    /// KCL's default failover time.
    pub const LEASE_DURATION: Duration = Duration::from_secs(10);
    /// Shard sync period.
    pub const SHARD_SYNC_INTERVAL: Duration = Duration::from_secs(60);
    /// Graceful shutdown limit.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Records a shard reads ahead of its guest: one full GetRecords.
    pub const READ_AHEAD_RECORDS: usize = 10_000;
    /// Bytes a shard reads ahead of its guest.
    pub const READ_AHEAD_BYTES: usize = 8 << 20;
    /// Host memory one instance may make the host hold: room for a few dozen requests in
    /// flight or open streams.
    pub const HOST_MEMORY_BYTES: usize = 16 << 20;
    /// The least `host_memory` accepted: the log line buffers and remembered lookups
    /// every instance has take about half of it.
    pub const MIN_HOST_MEMORY_BYTES: usize = 1 << 20;
    /// OS descriptors one instance may hold.
    pub const DESCRIPTORS: usize = 32;
    /// The most `descriptors` accepted.
    pub const MAX_DESCRIPTORS: usize = 4096;
    /// Guest log lines per second, per instance.
    pub const LOG_RATE: u32 = 100;
    /// Guest log lines at once, per instance.
    pub const LOG_BURST: u32 = 1000;
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: defaults::MAX_INSTANCES,
            pooling: true,
            cache_dir: default_cache_dir(),
            fuel_metering: false,
            memory_bytes: defaults::MEMORY_BYTES,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            memory_bytes: defaults::MEMORY_BYTES,
            deadline: defaults::DEADLINE,
            recycle_above_bytes: None,
            host_memory_bytes: defaults::HOST_MEMORY_BYTES,
            descriptors: defaults::DESCRIPTORS,
            log_rate: defaults::LOG_RATE,
            log_burst: defaults::LOG_BURST,
        }
    }
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_attempts: defaults::MAX_ATTEMPTS,
            backoff_initial: defaults::BACKOFF_INITIAL,
            backoff_max: defaults::BACKOFF_MAX,
            poison: PoisonPolicy::Block,
        }
    }
}

impl PluginSettings {
    /// Settings for running `path` with every default (nothing granted).
    pub fn for_path(path: PathBuf) -> Self {
        Self {
            path,
            watch: true,
            reload_debounce: defaults::RELOAD_DEBOUNCE,
            guest_settings: Vec::new(),
            sandbox: SandboxSettings::default(),
            limits: LimitSettings::default(),
            failure: FailurePolicy::default(),
        }
    }
}

/// `$SHOAL_CACHE_DIR`, else `$XDG_CACHE_HOME/shoal`, else `~/.cache/shoal`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SHOAL_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(xdg).join("shoal"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/shoal"))
}

/// `<host name>-<pid>-<random>`: unique per process, readable in the lease table.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "shoal".to_string());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}
