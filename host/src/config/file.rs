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
