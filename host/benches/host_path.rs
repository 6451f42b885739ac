//! Host-path benchmark (one command: `cargo bench -p shoal --bench host_path`): what shoal
//! itself spends draining a Kinesis backlog through the AWS SDK into a trivial guest.
//!
//! A kinesalite stream of `SHOAL_HOST_PATH_SHARDS` shards (default 2) is filled once with
//! `SHOAL_HOST_PATH_RECORDS` records (default 100,000) of 1 KiB (JSON padded to
//! `SHOAL_RETRIEVAL_RECORD_BYTES`, default 1,024). Then every variant — this build's
//! `shoal` ("now") and, when `SHOAL_HOST_PATH_BASELINE=<path of another shoal binary>` is
//! set, that binary ("before") — drains it from `TRIM_HORIZON` as a fresh application, with
//! shoal's defaults (10,000 records per GetRecords, the default read-ahead), SQLite leases
//! (so the lease table costs no SDK calls) and the `checksum` guest (FNV-1a over every byte,
//! checkpoint every batch). Variants are interleaved, the order rotated each round,
//! `SHOAL_HOST_PATH_ROUNDS` rounds (default 3). A run is done when every shard's checkpoint
//! in the SQLite lease table is the shard's last sequence number; then it gets SIGTERM.
//!
//! Measured per run, from /proc every 20 ms: the process's CPU (user + system) to the end of
//! the drain, peak USS (`Private_Clean + Private_Dirty` of `smaps_rollup`) and VmHWM (the
//! kernel's resident high-water mark, shared library pages included), and the emulator's CPU.
//! After the drain the process idles 2 s and its USS is read again (what it keeps at rest).
//! `SHOAL_HOST_PATH_RECYCLE_ABOVE=<size>` adds a variant of this build with
//! `[plugin.limits] recycle_above = "<size>"`.
//! CPU per 100k records is also stated as the saturated shards (2 MB/s of 1 KiB records,
//! 2,000 records/s) one core keeps up with.
//!
//! `SHOAL_HOST_PATH_PERF_DIR=<dir>` attaches `perf record -e cpu-clock -g` to every run
//! (`<dir>/<variant>-r<round>.data`; `SHOAL_HOST_PATH_PERF_CALL_GRAPH=dwarf` for callers in
//! a build without frame pointers); the figures of such a run carry perf's overhead. Give a
//! binary with symbols (`cargo build --profile profiling`) as the baseline to read them.
//! Kinesalite is started through `tests/emulators.sh` if it is not answering (DynamoDB Local
//! too: the stream fixture checks both), and only what the benchmark started is stopped.

#[allow(dead_code)]
#[path = "../../tests/runtime/emulators.rs"]
mod emulators;
#[allow(dead_code)]
#[path = "../../tests/runtime/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "retrieval/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "support/proc_stats.rs"]
mod proc_stats;
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "e2e/tree.rs"]
mod tree;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use emulators::{AwsStream, Emulators, Kinesis};
use fixtures::{plugin_path, repo_root};
use harness::{EmulatorGuard, emulator_cpu_seconds, median, prefill, put_client, settle};

/// Kinesis' read limit per shard, in records of 1 KiB a second (2 MB/s).
const SATURATED_SHARD_RECORDS_PER_S: f64 = 2000.0;
/// How often the process is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How often the lease table is read for the checkpoints.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a drained process idles before its resting memory is read.
const SETTLE_AFTER_DRAIN: Duration = Duration::from_secs(2);
/// Longest a drain may take.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A shoal binary under test.
struct Variant {
    name: &'static str,
    binary: PathBuf,
    /// `[plugin.limits]` lines added to the config.
    limits: String,
}

fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    if let Some(before) = std::env::var_os("SHOAL_HOST_PATH_BASELINE") {
        // `cargo bench` runs in `host/`: a relative path is taken from the repository root.
        let binary = repo_root().join(before);
        assert!(
            binary.is_file(),
            "SHOAL_HOST_PATH_BASELINE={} is not a file",
            binary.display()
        );
        out.push(Variant {
            name: "before",
            binary,
            limits: String::new(),
        });
    }
    let now = PathBuf::from(env!("CARGO_BIN_EXE_shoal"));
    out.push(Variant {
        name: "now",
        binary: now.clone(),
        limits: String::new(),
    });
    if let Ok(size) = std::env::var("SHOAL_HOST_PATH_RECYCLE_ABOVE") {
        out.push(Variant {
            name: "now-recycle",
            binary: now,
            limits: format!("recycle_above = \"{size}\"\n"),
        });
    }
    out
}

/// What one drain measured.
#[derive(Debug, Clone)]
struct Run {
    variant: &'static str,
    round: usize,
    /// Spawn → every shard checkpointed at its last record.
    drain: Duration,
    /// Spawn → the first checkpoint.
    first_checkpoint: Duration,
    /// CPU seconds to the end of the drain.
    cpu_s: f64,
    /// CPU seconds from the first checkpoint to the end of the drain.
    cpu_after_first_s: f64,
    /// Largest USS seen.
    peak_uss: u64,
    /// VmHWM at the end of the drain.
    hwm: u64,
    /// USS once the drained process has idled for `SETTLE_AFTER_DRAIN`.
    settled_uss: u64,
    /// The emulator's CPU seconds over the run.
    emulator_cpu_s: f64,
}

/// Every shard's checkpoint in the SQLite lease table (absent while the table is not there).
fn checkpoints(db: &Path, application: &str) -> BTreeMap<String, String> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return BTreeMap::new();
    };
    let _ = conn.busy_timeout(Duration::from_millis(200));
    let Ok(mut query) =
        conn.prepare("SELECT lease_key, checkpoint FROM leases WHERE application = ?1")
    else {
        return BTreeMap::new();
    };
    query
        .query_map([application], |row| Ok((row.get(0)?, row.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// Is every shard of `last` checkpointed exactly at its last sequence number?
fn drained(seen: &BTreeMap<String, String>, last: &BTreeMap<String, String>) -> bool {
    last.iter()
        .all(|(shard, seq)| seen.get(shard).is_some_and(|c| c == seq))
}

/// Is this checkpoint a sequence number (not `TRIM_HORIZON` or another sentinel)?
fn is_sequence(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn config(
    dir: &Path,
    application: &str,
    stream: &AwsStream,
    kinesis: &str,
    limits: &str,
) -> PathBuf {
    let path = dir.join("shoal.toml");
    std::fs::write(
        &path,
        format!(
            r#"[consumer]
application = "{application}"
worker_id = "bench"
initial_position = "TRIM_HORIZON"

[source]
kind = "kinesis"
stream_name = "{stream}"
region = "us-east-1"
endpoint = "{kinesis}"

[leases]
kind = "sqlite"
path = "leases.db"

[plugin]
path = "{plugin}"
watch = false

[plugin.limits]
{limits}"#,
            stream = stream.name,
            plugin = plugin_path("checksum").display(),
        ),
    )
    .expect("write the config");
    path
}

fn spawn(binary: &Path, dir: &Path, config: &Path) -> Child {
    let log = std::fs::File::create(dir.join("shoal.log")).expect("log file");
    Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .current_dir(dir)
        .env(
            "SHOAL_CACHE_DIR",
            repo_root().join("target/shoal-bench-cache"),
        )
        .env("RUST_LOG", "info")
        .envs(emulators::TEST_CREDENTIALS.iter().copied())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

fn log_tail(dir: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(dir.join("shoal.log")).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// SIGTERM, then wait (SIGKILL after 60 s); a failed exit fails the benchmark.
fn stop(mut child: Child, dir: &Path) {
    tree::signal_group(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                status.success(),
                "shoal exited with {status}:\n{}",
                log_tail(dir, 30)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "shoal did not exit 60 s after SIGTERM:\n{}",
                log_tail(dir, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `perf record` attached to `pid`, if asked for.
fn attach_perf(pid: u32, out: Option<PathBuf>) -> Option<Child> {
    let out = out?;
    // Release builds have no frame pointers: `SHOAL_HOST_PATH_PERF_CALL_GRAPH=dwarf` unwinds
    // with the binary's unwind tables instead (bigger files, real callers).
    let call_graph =
        std::env::var("SHOAL_HOST_PATH_PERF_CALL_GRAPH").unwrap_or_else(|_| "fp".into());
    Some(
        Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "--call-graph",
                &call_graph,
                "-o",
            ])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf record (SHOAL_HOST_PATH_PERF_DIR is set: is perf installed?)"),
    )
}

fn detach_perf(perf: Option<Child>) {
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
}

fn drain_once(
    variant: &Variant,
    round: usize,
    stream: &AwsStream,
    kinesis: &str,
    last: &BTreeMap<String, String>,
) -> Run {
    let application = format!("host-path-{}-r{round}", variant.name);
    let dir = repo_root().join("target/host-path/runs").join(&application);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("run dir");
    let config = config(&dir, &application, stream, kinesis, &variant.limits);
    let db = dir.join("leases.db");
    let emulator_before = emulator_cpu_seconds("kinesalite");
    let started = Instant::now();
    let child = spawn(&variant.binary, &dir, &config);
    let pid = child.id();
    let perf = attach_perf(
        pid,
        std::env::var_os("SHOAL_HOST_PATH_PERF_DIR")
            .map(|d| PathBuf::from(d).join(format!("{}-r{round}.data", variant.name))),
    );
    let mut peak_uss = 0;
    let mut first: Option<(Duration, f64)> = None;
    let mut last_check = Instant::now() - CHECK_EVERY;
    let mut child = child;
    let (drain, cpu_s, hwm) = loop {
        let sample = tree::sample(pid);
        peak_uss = peak_uss.max(sample.uss);
        if last_check.elapsed() >= CHECK_EVERY {
            last_check = Instant::now();
            let seen = checkpoints(&db, &application);
            if first.is_none() && seen.values().any(|c| is_sequence(c)) {
                first = Some((started.elapsed(), sample.cpu_s));
            }
            if drained(&seen, last) {
                break (started.elapsed(), sample.cpu_s, sample.hwm);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{application}: shoal exited ({status}) before the drain ended:\n{}",
                log_tail(&dir, 30)
            );
        }
        assert!(
            started.elapsed() < DRAIN_LIMIT,
            "{application}: not drained after {DRAIN_LIMIT:?}; checkpoints {:?}, wanted {last:?}:\n{}",
            checkpoints(&db, &application),
            log_tail(&dir, 30)
        );
        std::thread::sleep(SAMPLE_EVERY);
    };
    detach_perf(perf);
    let emulator_cpu_s = emulator_cpu_seconds("kinesalite") - emulator_before;
    std::thread::sleep(SETTLE_AFTER_DRAIN);
    let settled_uss = tree::sample(pid).uss;
    stop(child, &dir);
    let (first_checkpoint, cpu_at_first) = first.expect("a checkpoint was seen before the drain");
    Run {
        variant: variant.name,
        round,
        drain,
        first_checkpoint,
        cpu_s,
        cpu_after_first_s: cpu_s - cpu_at_first,
        peak_uss,
        hwm,
        settled_uss,
        emulator_cpu_s,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let records = env_usize("SHOAL_HOST_PATH_RECORDS", 100_000);
    let shards = env_usize("SHOAL_HOST_PATH_SHARDS", 2);
    let rounds = env_usize("SHOAL_HOST_PATH_ROUNDS", 3);
    let variants = variants();
    let _guard = EmulatorGuard::ensure(&["kinesalite", "dynamodb-local"]);
    // Built before anything is timed.
    let _ = plugin_path("checksum");
    let emulators = Emulators::new(Kinesis::Kinesalite);
    let kinesis = emulators.kinesis_endpoint().to_string();
    let stream = emulators.create_stream(shards);
    eprintln!("host_path: filling {} with {records} records", stream.name);
    let (fill, last) = prefill(&stream, &put_client(&kinesis), "host-path", records, 4);
    assert_eq!(last.len(), shards, "every shard got records");
    eprintln!("host_path: filled in {fill:?}");
    let mut runs = Vec::new();
    for round in 0..rounds {
        for i in 0..variants.len() {
            let variant = &variants[(i + round) % variants.len()];
            settle("kinesalite", Duration::from_secs(30));
            let run = drain_once(variant, round, &stream, &kinesis, &last);
            eprintln!("host_path: {run:?}");
            runs.push(run);
        }
    }
    harness::clean_up(&stream, &[]);
    report(&runs, &variants, records, shards, rounds, fill);
}

fn report(
    runs: &[Run],
    variants: &[Variant],
    records: usize,
    shards: usize,
    rounds: usize,
    fill: Duration,
) {
    let per_100k = 100_000.0 / records as f64;
    println!("## Host path: draining {records} records of 1 KiB through the Kinesis SDK\n");
    let knobs: String = ["SHOAL_HOST_PATH_BASELINE", "SHOAL_HOST_PATH_RECYCLE_ABOVE"]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| format!("{name}={v} ")))
        .collect();
    println!("- **Command:** `{knobs}cargo bench -p shoal --bench host_path`");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "- **Date / machine:** {}; {}; load average at the end {}",
        report::today(),
        report::machine(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "- **Setup:** kinesalite, {shards} shards filled with {records} records in {:.1} s; \
         shoal defaults (10,000 records per GetRecords, default read-ahead), SQLite leases, \
         `checksum` guest; {rounds} rounds, variants interleaved; medians (range).\n",
        fill.as_secs_f64()
    );
    println!(
        "| variant | CPU-s per 100k, whole run | CPU-s to the first checkpoint | \
         saturated shards per core | spawn → drained | peak USS | peak VmHWM | USS 2 s after the drain | kinesalite CPU-s per 100k |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for variant in variants {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.variant == variant.name).collect();
        let col = |f: &dyn Fn(&Run) -> f64| -> (f64, f64, f64) {
            let values: Vec<f64> = mine.iter().map(|r| f(r)).collect();
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (median(values), lo, hi)
        };
        let cpu = col(&|r| r.cpu_s * per_100k);
        let startup = col(&|r| r.cpu_s - r.cpu_after_first_s);
        let drain = col(&|r| r.drain.as_secs_f64());
        let uss = col(&|r| mib(r.peak_uss));
        let hwm = col(&|r| mib(r.hwm));
        let settled = col(&|r| mib(r.settled_uss));
        let emu = col(&|r| r.emulator_cpu_s * per_100k);
        let shards_per_core = 100_000.0 / cpu.0 / SATURATED_SHARD_RECORDS_PER_S;
        println!(
            "| {} | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | {:.0} | {:.1} s ({:.1}–{:.1}) | \
             {:.0} MiB ({:.0}–{:.0}) | {:.0} MiB ({:.0}–{:.0}) | {:.0} MiB ({:.0}–{:.0}) | {:.2} |",
            variant.name,
            cpu.0,
            cpu.1,
            cpu.2,
            startup.0,
            startup.1,
            startup.2,
            shards_per_core,
            drain.0,
            drain.1,
            drain.2,
            uss.0,
            uss.1,
            uss.2,
            hwm.0,
            hwm.1,
            hwm.2,
            settled.0,
            settled.1,
            settled.2,
            emu.0,
        );
    }
    println!();
    for run in runs {
        println!(
            "- {} round {}: first checkpoint {:.2} s, drained {:.2} s, CPU {:.2} s ({:.2} after the first checkpoint), USS {:.0} MiB, VmHWM {:.0} MiB, USS after {:?} idle {:.0} MiB",
            run.variant,
            run.round,
            run.first_checkpoint.as_secs_f64(),
            run.drain.as_secs_f64(),
            run.cpu_s,
            run.cpu_after_first_s,
            mib(run.peak_uss),
            mib(run.hwm),
            SETTLE_AFTER_DRAIN,
            mib(run.settled_uss)
        );
    }
}
