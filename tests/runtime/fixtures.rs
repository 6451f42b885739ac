//! Shared test fixtures: building the guest plugins, engines, batches and processors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shoal::config::{EngineSettings, FailurePolicy, LimitSettings, PoisonPolicy, SandboxSettings};
use shoal::delivery::{CallGate, OnPoison, ShardProcessor};
use shoal::plugin::bindings::{Batch, FencingToken, KinesisRecord, ShardInfo};
use shoal::plugin::{InstanceConfig, Plugin, PluginEngine};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Path of a built guest plugin (`archive`, `json_count`, `misbehave`, `checksum`),
/// building the plugins workspace once per test process. A plugin that is still
/// missing afterwards fails the test with its path: nothing is skipped.
pub fn plugin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repo_root().join("plugins/Cargo.toml"))
            .status()
            .expect("cannot run cargo to build the guest plugins");
        assert!(status.success(), "building the guest plugins failed (is the wasm32-wasip2 target installed? run tests/run.sh)");
    });
    let path = repo_root().join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        path.is_file(),
        "guest plugin fixture missing after build: {}",
        path.display()
    );
    path
}

/// An engine sized for tests: a small pool, and a cache shared by the whole test run so
/// each plugin compiles once.
pub fn engine() -> PluginEngine {
    engine_with(|_| {})
}

/// An engine with adjusted settings.
pub fn engine_with(adjust: impl FnOnce(&mut EngineSettings)) -> PluginEngine {
    let mut settings = EngineSettings {
        max_instances: 16,
        pooling: true,
        cache_dir: Some(repo_root().join("target/shoal-test-cache")),
        fuel_metering: false,
        memory_bytes: 64 << 20,
    };
    adjust(&mut settings);
    PluginEngine::new(&settings).expect("engine")
}

/// Load a plugin as generation `generation`.
pub fn load(engine: &PluginEngine, name: &str) -> Arc<Plugin> {
    Arc::new(
        engine
            .load_file(&plugin_path(name), 1)
            .expect("plugin loads"),
    )
}

/// A record whose data is `text`.
pub fn record(seq: u64, text: &str) -> KinesisRecord {
    KinesisRecord {
        partition_key: format!("pk-{}", seq % 7),
        sequence_number: format!("{seq:020}"),
        sub_sequence_number: 0,
        approximate_arrival_ms: 1_700_000_000_000 + seq as i64,
        explicit_hash_key: None,
        data: text.as_bytes().to_vec(),
    }
}

/// A batch of records with the given texts, numbered from `first_seq`.
pub fn batch(first_seq: u64, texts: &[&str]) -> Arc<Batch> {
    Arc::new(Batch {
        records: texts
            .iter()
            .enumerate()
            .map(|(i, t)| record(first_seq + i as u64, t))
            .collect(),
        millis_behind_latest: 0,
    })
}

/// Instance config for one shard with the given sandbox and limits.
pub fn instance_config(
    shard: &str,
    sandbox: SandboxSettings,
    limits: LimitSettings,
) -> InstanceConfig {
    InstanceConfig {
        shard: ShardInfo {
            stream_name: "test-stream".into(),
            shard_id: shard.into(),
        },
        sandbox,
        limits,
        fencing: FencingToken::unleased(),
    }
}

/// Short limits so deadline tests finish quickly.
pub fn test_limits() -> LimitSettings {
    LimitSettings {
        memory_bytes: 32 << 20,
        deadline: Duration::from_millis(300),
        recycle_above_bytes: None,
        ..LimitSettings::default()
    }
}

/// A fast failure policy.
pub fn fast_failure(max_attempts: u32) -> FailurePolicy {
    FailurePolicy {
        max_attempts,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        poison: PoisonPolicy::Block,
    }
}

/// A shard processor over a fixed plugin (no reloads).
pub fn processor(
    engine: &PluginEngine,
    plugin: Arc<Plugin>,
    config: InstanceConfig,
    settings: &[(String, String)],
    failure: FailurePolicy,
    on_poison: OnPoison,
) -> ShardProcessor {
    // The sender is dropped at once: the processor keeps the one generation.
    let (_tx, rx) = tokio::sync::watch::channel(plugin);
    ShardProcessor::new(engine.clone(), rx, config, settings, failure, on_poison)
}

/// A shard processor running `misbehave` with no grants and the short test limits.
pub fn misbehave_shard(
    engine: &PluginEngine,
    shard: &str,
    settings: &[(String, String)],
    max_attempts: u32,
    on_poison: OnPoison,
) -> ShardProcessor {
    processor(
        engine,
        load(engine, "misbehave"),
        instance_config(shard, SandboxSettings::default(), test_limits()),
        settings,
        fast_failure(max_attempts),
        on_poison,
    )
}

/// The tests' Python, with aws-kinesis-agg and prometheus-client (`tests/run.sh` installs
/// it into `target/toolchains/test-python` and names it in `SHOAL_TEST_PYTHON`).
pub fn test_python() -> PathBuf {
    let python = std::env::var_os("SHOAL_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/toolchains/test-python/bin/python"));
    assert!(
        python.exists(),
        "no test Python (with aws-kinesis-agg and prometheus-client) at {}: run `bash tests/run.sh`, which installs it",
        python.display()
    );
    python
}

/// A stand-in for a shard's lease as a [`CallGate`]: open until `lose` (calls stop, none
/// starts), with a window after the loss in which `shutdown(lease-lost)` may still run.
#[derive(Debug)]
pub struct TestGate {
    lost: tokio_util::sync::CancellationToken,
    lost_window: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl TestGate {
    /// An open gate; after a loss the guest may be told until `lost_window` is over.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            lost: tokio_util::sync::CancellationToken::new(),
            lost_window: std::sync::Mutex::new(None),
        })
    }

    /// The lease is lost: the guest may still be told until `until` (`None`: not at all).
    pub fn lose(&self, until: Option<tokio::time::Instant>) {
        *self.lost_window.lock().expect("gate") = until;
        self.lost.cancel();
    }

    /// The token cancelled at the loss.
    pub fn token(&self) -> tokio_util::sync::CancellationToken {
        self.lost.clone()
    }
}

impl CallGate for TestGate {
    fn may_start(&self) -> bool {
        !self.lost.is_cancelled()
    }

    fn stopped(&self) -> &tokio_util::sync::CancellationToken {
        &self.lost
    }

    fn lost_call_until(&self) -> Option<tokio::time::Instant> {
        *self.lost_window.lock().expect("gate")
    }
}
