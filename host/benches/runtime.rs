//! Plugin-runtime benchmark (one command: `cargo bench -p shoal --bench runtime`).
//!
//! 1. Throughput: records/s and MB/s of the `checksum` guest (FNV-1a over every record)
//!    against the same logic as a native Rust closure, for 100 B and 1 KiB records in
//!    batches of 1, 100, 1,000 and 10,000. Guest and native run alternately, several
//!    rounds, median reported: the ratio is what matters on a shared machine.
//! 2. Instance build time (instantiate + initialize) with and without pooling.
//! 3. Hot-swap latency: file replaced → new generation published → a shard's next batch
//!    runs on it; for a new file (compile) and a file seen before (artifact cache).
//!
//! Prints a Markdown report to stdout.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::config::{EngineSettings, FailurePolicy, LimitSettings, SandboxSettings};
use shoal::delivery::{OnPoison, ShardProcessor};
use shoal::plugin::bindings::{Batch, FencingToken, ShardInfo};
use shoal::plugin::reload::{ReloadOptions, spawn_reloader};
use shoal::plugin::{CallOutcome, InstanceConfig, PluginEngine, ProcessorInstance};
use tokio_util::sync::CancellationToken;

#[path = "support/batches.rs"]
mod batches;
use batches::make_batch;

#[path = "support/guest_plugins.rs"]
mod guest_plugins;
use guest_plugins::guest_plugin;

const ROUNDS: usize = 5;

fn engine(pooling: bool, cache: &Path) -> PluginEngine {
    PluginEngine::new(&EngineSettings {
        max_instances: 64,
        pooling,
        cache_dir: Some(cache.to_path_buf()),
        fuel_metering: false,
        memory_bytes: 256 << 20,
    })
    .expect("engine")
}

fn config() -> InstanceConfig {
    InstanceConfig {
        shard: ShardInfo {
            stream_name: "bench".into(),
            shard_id: "shardId-000000000000".into(),
        },
        sandbox: SandboxSettings::default(),
        limits: LimitSettings {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(60),
            recycle_above_bytes: None,
            ..LimitSettings::default()
        },
        fencing: FencingToken::unleased(),
    }
}

/// The native twin of the `checksum` guest.
fn fnv1a(mut hash: u64, data: &[u8]) -> u64 {
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn throughput(engine: &PluginEngine, wasm: &Path) {
    let plugin = Arc::new(engine.load_file(wasm, 1).expect("load"));
    let mut instance = ProcessorInstance::new(engine, &plugin, &config()).expect("instance");
    assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
    println!("## Throughput: `checksum` guest vs native closure (FNV-1a over every record)\n");
    println!(
        "| record | batch | guest records/s | guest MB/s | native records/s | native MB/s | guest ÷ native |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for size in [100usize, 1024] {
        for batch_size in [1usize, 100, 1_000, 10_000] {
            let batch = make_batch(batch_size, size);
            // Enough calls for ~50 MB per measurement (and at least 2,000 calls).
            let calls = ((50_000_000 / (size * batch_size)).max(1)).max(if batch_size == 1 {
                100_000
            } else {
                20
            });
            let mut guest = Vec::new();
            let mut native = Vec::new();
            for _ in 0..ROUNDS {
                let start = Instant::now();
                for _ in 0..calls {
                    match instance.process(&batch) {
                        CallOutcome::Ok(d) => {
                            black_box(d);
                        }
                        other => panic!("guest failed: {other:?}"),
                    }
                }
                guest.push((calls * batch_size) as f64 / start.elapsed().as_secs_f64());

                let mut state = 0xcbf2_9ce4_8422_2325u64;
                let mut native_process = |b: &Batch| {
                    for r in &b.records {
                        state = fnv1a(state, &r.data);
                    }
                };
                let start = Instant::now();
                for _ in 0..calls {
                    native_process(black_box(&batch));
                }
                black_box(state);
                native.push((calls * batch_size) as f64 / start.elapsed().as_secs_f64());
            }
            let (g, n) = (median(guest), median(native));
            let mb = |rps: f64| rps * size as f64 / 1e6;
            println!(
                "| {size} B | {batch_size} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                g,
                mb(g),
                n,
                mb(n),
                g / n
            );
        }
    }
    println!();
}

fn instance_build(cache: &Path, wasm: &Path) {
    println!("## Instance build (instantiate + `initialize`), from a loaded plugin\n");
    println!("| allocator | median µs | p99 µs |");
    println!("|---|---:|---:|");
    for pooling in [true, false] {
        let engine = engine(pooling, cache);
        let plugin = Arc::new(engine.load_file(wasm, 1).expect("load"));
        let cfg = config();
        let mut samples = Vec::new();
        for _ in 0..2_000 {
            let start = Instant::now();
            let mut instance = ProcessorInstance::new(&engine, &plugin, &cfg).expect("instance");
            assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
            samples.push(start.elapsed().as_secs_f64() * 1e6);
            drop(instance);
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let p99 = samples[samples.len() * 99 / 100];
        println!(
            "| {} | {:.1} | {:.1} |",
            if pooling { "pooling" } else { "on-demand" },
            median(samples.clone()),
            p99
        );
    }
    println!();
}

fn with_custom_section(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"shoal-bench-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

fn hot_swap(cache: &Path, wasm: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("processor.wasm");
        let original = std::fs::read(wasm).expect("read");
        std::fs::write(&file, &original).expect("write");
        let engine = engine(true, cache);
        let initial = Arc::new(engine.load_file(&file, 1).expect("load"));
        let cancel = CancellationToken::new();
        let debounce = Duration::from_millis(50);
        let (updates, _handle, _task) = spawn_reloader(
            engine.clone(),
            initial,
            ReloadOptions { debounce, watch_file: true, on_sighup: false },
            cancel.clone(),
        )
        .expect("reloader");
        let mut processor = ShardProcessor::new(
            engine.clone(),
            updates.plugin.clone(),
            config(),
            &[],
            FailurePolicy::default(),
            OnPoison::Block,
        );
        let batch = Arc::new(make_batch(100, 1024));
        let never = CancellationToken::new();
        let mut status = updates.status.clone();
        println!("## Hot swap: file replaced (atomic rename) → generation published → next batch on it\n");
        println!("Debounce {} ms; a shard processing 100 × 1 KiB batches back to back.\n", debounce.as_millis());
        println!("| swap | file → published ms | published → first batch on new generation ms | total ms |");
        println!("|---|---:|---:|---:|");
        let variants: Vec<(String, Vec<u8>)> = (1..=5)
            .map(|i| (format!("new file #{i} (compile)"), with_custom_section(&original, &i.to_string())))
            .chain((1..=5).map(|i| (format!("seen file #{i} (cache)"), with_custom_section(&original, &i.to_string()))))
            .collect();
        for (label, bytes) in variants {
            let target = status.borrow().generation + 1;
            let tmp = dir.path().join("processor.wasm.tmp");
            std::fs::write(&tmp, &bytes).expect("write");
            let written = Instant::now();
            std::fs::rename(&tmp, &file).expect("rename");
            // Keep processing while the reload happens, as a real shard would.
            let mut published_at = None;
            loop {
                let report = processor.process(Arc::clone(&batch), &never).await.expect("processed");
                if published_at.is_none() && status.borrow_and_update().generation >= target {
                    published_at = Some(written.elapsed());
                }
                if report.generation >= target {
                    let total = written.elapsed();
                    let published = published_at.unwrap_or(total);
                    println!(
                        "| {label} | {:.1} | {:.1} | {:.1} |",
                        published.as_secs_f64() * 1e3,
                        (total - published).as_secs_f64() * 1e3,
                        total.as_secs_f64() * 1e3
                    );
                    break;
                }
            }
        }
        println!();
        cancel.cancel();
    });
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let wasm = guest_plugin("checksum");
    let cache = tempfile::tempdir().expect("cache dir");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!("# shoal runtime benchmark\n");
    println!(
        "Machine: {} cores, {cpu}. Guest: `plugins/checksum` ({} bytes). Rounds per cell: {ROUNDS} (median).\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0)
    );
    let pooled = engine(true, cache.path());
    throughput(&pooled, &wasm);
    instance_build(cache.path(), &wasm);
    hot_swap(cache.path(), &wasm);
}
