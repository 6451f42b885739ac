//! Per-language benchmark of the example processors (one command:
//! `cargo bench -p shoal --bench languages`): builds each `examples/processors/<lang>/`
//! with its `build.sh`, then measures through the host, side by side in one run:
//! component size, first load (compile) time, instance build time (instantiate +
//! `initialize`), and records/s of the `filter` processor over batches of 1,000 JSON
//! records of 1 KiB. Prints a Markdown table for docs/PLUGINS.md.
//!
//! `SHOAL_BENCH_LANGS=rust,python` limits the languages.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::config::{EngineSettings, LimitSettings, SandboxSettings};
use shoal::plugin::bindings::{Batch, FencingToken, KinesisRecord, ShardInfo};
use shoal::plugin::{CallOutcome, InstanceConfig, PluginEngine, ProcessorInstance};

const LANGS: [&str; 5] = ["rust", "c", "go", "python", "javascript"];
const BATCH: usize = 1_000;
const RECORD_BYTES: usize = 1024;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Run the language's build script; returns the component and the build's wall time.
fn build(lang: &str) -> Option<(PathBuf, Duration)> {
    let dir = repo_root().join("examples/processors").join(lang);
    if !dir.join("build.sh").is_file() {
        return None;
    }
    let start = Instant::now();
    let status = std::process::Command::new("bash")
        .arg(dir.join("build.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run build.sh");
    assert!(status.success(), "{lang}: build.sh failed");
    Some((dir.join("build/filter.wasm"), start.elapsed()))
}

fn config() -> InstanceConfig {
    InstanceConfig {
        shard: ShardInfo {
            stream_name: "bench".into(),
            shard_id: "shardId-000000000000".into(),
        },
        sandbox: SandboxSettings::default(),
        limits: LimitSettings {
            memory_bytes: 512 << 20,
            deadline: Duration::from_secs(120),
            recycle_above_bytes: None,
            ..LimitSettings::default()
        },
        fencing: FencingToken::unleased(),
    }
}

/// 1 KiB JSON objects, half of them matching the filter.
fn json_batch() -> Batch {
    Batch {
        records: (0..BATCH)
            .map(|i| {
                let kind = if i % 2 == 0 { "purchase" } else { "view" };
                let head = format!(
                    "{{\"type\":\"{kind}\",\"amount\":{},\"user\":\"u{i}\",\"pad\":\"",
                    i % 100
                );
                let pad = "x".repeat(RECORD_BYTES - head.len() - 2);
                KinesisRecord {
                    partition_key: format!("pk-{}", i % 64),
                    sequence_number: format!("{:056}", 49_000_000 + i),
                    sub_sequence_number: 0,
                    approximate_arrival_ms: 1_700_000_000_000,
                    explicit_hash_key: None,
                    data: format!("{head}{pad}\"}}").into_bytes(),
                }
            })
            .collect(),
        millis_behind_latest: 0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let only = std::env::var("SHOAL_BENCH_LANGS").ok();
    let cache = tempfile::tempdir().expect("cache dir");
    let engine = PluginEngine::new(&EngineSettings {
        max_instances: 16,
        pooling: true,
        cache_dir: Some(cache.path().to_path_buf()),
        fuel_metering: false,
        memory_bytes: 512 << 20,
    })
    .expect("engine");
    let settings = [
        ("field".to_string(), "type".to_string()),
        ("value".to_string(), "purchase".to_string()),
    ];
    let batch = json_batch();
    println!(
        "| language | component | build.sh this run | first load (compile) | instance build | records/s (1 KiB JSON, batches of 1,000) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for lang in LANGS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|l| l == lang))
        {
            continue;
        }
        let Some((wasm, build_time)) = build(lang) else {
            eprintln!("{lang}: no examples/processors/{lang}/build.sh; skipped");
            continue;
        };
        let size = std::fs::metadata(&wasm).expect("component").len();
        let start = Instant::now();
        let plugin = Arc::new(engine.load_file(&wasm, 1).expect("load"));
        let load = start.elapsed();
        let cfg = config();
        let mut builds = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            let mut instance = ProcessorInstance::new(&engine, &plugin, &cfg).expect("instance");
            assert!(matches!(
                instance.initialize(&settings),
                CallOutcome::Ok(())
            ));
            builds.push(start.elapsed().as_secs_f64() * 1e6);
        }
        let mut instance = ProcessorInstance::new(&engine, &plugin, &cfg).expect("instance");
        assert!(matches!(
            instance.initialize(&settings),
            CallOutcome::Ok(())
        ));
        // Calibrate: about two seconds per round, at least one batch.
        let start = Instant::now();
        assert!(
            matches!(instance.process(&batch), CallOutcome::Ok(_)),
            "{lang}: process failed"
        );
        let calls = ((2.0 / start.elapsed().as_secs_f64()) as usize).clamp(1, 2_000);
        let mut rates = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            for _ in 0..calls {
                match instance.process(&batch) {
                    CallOutcome::Ok(_) => {}
                    other => panic!("{lang}: {other:?}"),
                }
            }
            rates.push((calls * BATCH) as f64 / start.elapsed().as_secs_f64());
        }
        println!(
            "| {lang} | {:.1} MB | {:.1} s | {:.2} s | {:.0} µs | {:.0} |",
            size as f64 / 1e6,
            build_time.as_secs_f64(),
            load.as_secs_f64(),
            median(builds),
            median(rates)
        );
    }
}
