//! The config file exactly as serde reads it: every field optional where a default exists,
//! unknown keys rejected, values still unvalidated (see `settings` for the checked form).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[engine]`: the per-process WebAssembly engine.
    #[serde(default)]
    pub engine: EngineFile,
    /// `[plugin]`: the processor component and its sandbox.
    pub plugin: Option<PluginFile>,
    /// `[consumer]`: application, worker, positions, pacing, leases timing.
    pub consumer: Option<ConsumerFile>,
    /// `[source]`: where records come from.
    pub source: Option<SourceFile>,
    /// `[leases]`: where leases and checkpoints live.
    pub leases: Option<LeasesFile>,
    /// `[metrics]`: the operator's HTTP endpoint (metrics, health, readiness).
    pub metrics: Option<MetricsFile>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// `host:port` to serve `/metrics`, `/healthz` and `/readyz` on.
    pub address: Spanned<String>,
}

/// `[consumer]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerFile {
    /// Application name: the lease table (DynamoDB) or partition (SQLite).
    pub application: Spanned<String>,
    /// This worker's id (default: host name + pid + random suffix).
    pub worker_id: Option<String>,
    /// `TRIM_HORIZON` (default), `LATEST` or `AT_TIMESTAMP`.
    pub initial_position: Option<Spanned<String>>,
    /// RFC 3339 time, with `AT_TIMESTAMP`.
    pub initial_timestamp: Option<Spanned<String>>,
    /// Records per GetRecords call (1 to 10,000; default 10,000).
    pub max_records: Option<Spanned<u32>>,
    /// Sleep when caught up and a fetch returned nothing (default 500 ms).
    #[serde(default, with = "humantime_serde::option")]
    pub idle_time_between_reads: Option<Duration>,
    /// Lease duration (default 10 s); renewals every third of it.
    #[serde(default, with = "humantime_serde::option")]
    pub lease_duration: Option<Duration>,
    /// Most leases this worker takes (default: no limit).
    pub max_leases_per_worker: Option<Spanned<u32>>,
    /// Shard sync period, ±50 % jitter (default 60 s).
    #[serde(default, with = "humantime_serde::option")]
    pub shard_sync_interval: Option<Duration>,
    /// Coalesce checkpoint writes (default 0: every directive).
    #[serde(default, with = "humantime_serde::option")]
    pub checkpoint_interval: Option<Duration>,
    /// Deliver empty batches to the guest (default false).
    pub deliver_empty_batches: Option<bool>,
    /// Record each batch's extent with the lease and re-deliver it with the same
    /// boundaries after a crash or lease move (default false).
    pub stable_batches: Option<Spanned<bool>>,
    /// `polling` (default) or `fan-out` (enhanced fan-out, Kinesis only).
    pub retrieval: Option<Spanned<String>>,
    /// The enhanced fan-out consumer's name (default: the application name).
    pub consumer_name: Option<Spanned<String>>,
    /// Records a shard may read ahead of its guest (default 10,000; 0: none).
    pub read_ahead_records: Option<Spanned<u32>>,
    /// Bytes a shard may read ahead of its guest (default "8MiB"; 0: none).
    pub read_ahead_bytes: Option<Spanned<toml::Value>>,
    /// Longest a graceful shutdown may take (default 30 s).
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_timeout: Option<Duration>,
}

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// `kinesis` or `local`.
    pub kind: Spanned<String>,
    /// Stream name (Kinesis; for `local`, the name shown to guests).
    pub stream_name: Option<Spanned<String>>,
    /// Stream ARN (Kinesis; instead of or with `stream_name`).
    pub stream_arn: Option<String>,
    /// Directory of `<shard-id>.jsonl` files (`local`).
    pub directory: Option<Spanned<String>>,
    /// AWS region (default: the SDK's default chain).
    pub region: Option<String>,
    /// Endpoint override, e.g. `http://127.0.0.1:4568`.
    pub endpoint: Option<String>,
}

/// `[leases]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesFile {
    /// `dynamodb` or `sqlite`.
    pub kind: Spanned<String>,
    /// SQLite database file (`sqlite`).
    pub path: Option<Spanned<String>>,
    /// DynamoDB table name (default: the application name).
    pub table: Option<String>,
    /// AWS region (default: the SDK's default chain).
    pub region: Option<String>,
    /// Endpoint override, e.g. `http://127.0.0.1:8000`.
    pub endpoint: Option<String>,
}

/// `[engine]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    /// Instance slots to pre-reserve (shards owned at once, plus headroom for hot swap).
    pub max_instances: Option<Spanned<u32>>,
    /// Use wasmtime's pooling allocator (default true).
    pub pooling: Option<bool>,
    /// Where compiled plugins are cached; `false`-like empty string disables the cache.
    pub cache_dir: Option<Spanned<String>>,
    /// Count guest instructions per call (reported, never enforced). Costs ~18 % throughput.
    pub fuel_metering: Option<bool>,
}

/// `[plugin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// Path to the processor component (.wasm), relative to the config file.
    pub path: Spanned<String>,
    /// Watch the file and hot-swap new versions (default true).
    pub watch: Option<bool>,
    /// Quiet period after the last file event before a reload (default 250 ms).
    #[serde(default, with = "humantime_serde::option")]
    pub reload_debounce: Option<Duration>,
    /// Key/value pairs handed to the guest's `initialize`.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    /// `[plugin.sandbox]`: capabilities granted to the guest.
    #[serde(default)]
    pub sandbox: SandboxFile,
    /// `[plugin.limits]`: per-instance resource limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// `[plugin.failure]`: retries, back-off and the poison policy.
    #[serde(default)]
    pub failure: FailureFile,
}

/// `[plugin.sandbox]`: nothing is granted unless listed here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxFile {
    /// Host environment variables passed through by name.
    #[serde(default)]
    pub env_inherit: Vec<String>,
    /// Environment variables set to fixed values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host directories made visible to the guest.
    #[serde(default)]
    pub dirs: Vec<Spanned<DirFile>>,
    /// Outbound HTTP(S) destinations, `scheme://host[:port]`.
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
    /// Outbound TCP destinations, `host:port`.
    #[serde(default)]
    pub tcp: Vec<Spanned<String>>,
    /// UDP destinations, `host:port`.
    #[serde(default)]
    pub udp: Vec<Spanned<String>>,
    /// Accept a bare `*` host (or a range of every address) in `http`, `tcp` and `udp`
    /// (default false).
    pub allow_any_host: Option<bool>,
    /// Resolve any name an HTTP request asks for when an address entry could cover it,
    /// and judge it by its address (default false: only names an entry names are looked up).
    pub resolve_names_for_ranges: Option<bool>,
}

/// One `[[plugin.sandbox.dirs]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirFile {
    /// Host directory, relative to the config file.
    pub host: String,
    /// The path the guest sees (default: same as `host`'s final component under `/`).
    pub guest: Option<String>,
    /// `read-only` (default) or `read-write`.
    #[serde(default)]
    pub mode: DirMode,
    /// Create the host directory if it does not exist (default false).
    #[serde(default)]
    pub create: bool,
}

/// Access granted to a preopened directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    /// The guest can list and read files.
    #[default]
    ReadOnly,
    /// The guest can also create, write and delete files.
    ReadWrite,
}

/// `[plugin.limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Cap on each guest linear memory, e.g. "256MiB".
    pub memory: Option<Spanned<toml::Value>>,
    /// Longest a single guest call may run, e.g. "10s".
    #[serde(default, with = "humantime_serde::option")]
    pub deadline: Option<Duration>,
    /// Replace an instance whose memory grew above this after a batch, e.g. "64MiB".
    pub recycle_above: Option<Spanned<toml::Value>>,
    /// What one instance may make the host hold, e.g. "16MiB".
    pub host_memory: Option<Spanned<toml::Value>>,
    /// OS descriptors (files, sockets, HTTP connections) one instance may hold.
    pub descriptors: Option<Spanned<u32>>,
    /// Guest log lines per second, per instance.
    pub log_rate: Option<Spanned<u32>>,
    /// Guest log lines at once (the token bucket's size), per instance.
    pub log_burst: Option<Spanned<u32>>,
}

/// `[plugin.failure]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureFile {
    /// Consecutive failures of one batch before the poison policy applies.
    pub max_attempts: Option<Spanned<u32>>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_initial: Option<Duration>,
    /// Longest retry delay.
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_max: Option<Duration>,
    /// `block` (default) or `dead-letter`.
    pub poison: Option<Spanned<PoisonFile>>,
    /// Directory for dead-lettered batches (required with `dead-letter`).
    pub dead_letter_dir: Option<Spanned<String>>,
}

/// What to do with a batch that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoisonFile {
    /// Keep retrying (capped back-off) until it succeeds or the plugin is replaced.
    Block,
    /// Write the batch and the reason to the dead-letter directory and move on.
    DeadLetter,
}
