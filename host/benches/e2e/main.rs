//! End-to-end benchmark of shoal against the real Java KCL 3.x MultiLangDaemon on local
//! emulators (one command: `cargo bench -p shoal --bench e2e`; it starts kinesis-mock and
//! DynamoDB Local through `tests/emulators.sh` when they are not answering, at the ports
//! that script reads — KINESIS_MOCK_PORT, DYNAMODB_PORT, SHOAL_EMULATORS_DIR — and stops
//! only those it started).
//!
//! A kinesis-mock stream of 2 shards is filled with `SHOAL_E2E_RECORDS` records (default
//! 20,000) of 1 KiB JSON. Then, `SHOAL_E2E_ROUNDS` times (default 3, order rotated each
//! round), each consumer reads the whole stream from TRIM_HORIZON as a fresh application
//! (a new DynamoDB Local lease table), doing json-count (parse each record as JSON, count by
//! `type`, checkpoint after every batch of at most 1000 records, 500 ms idle time):
//! - the Java KCL 3.1.3 MultiLangDaemon with the amazon_kclpy processor kcl/json_count.py
//!   (installed by kcl/setup.sh, started by kcl/run.sh);
//! - shoal with the same processor in Python (examples/processors/python/json_count.py,
//!   built by that directory's build.sh with componentize-py);
//! - shoal with the Rust guest plugins/json-count.
//!
//! Measured per run (see consumer.rs and tree.rs): start → first checkpoint (the first
//! batch processed) and → every shard checkpointed at its last record, the drain rate in
//! between, CPU seconds of the consumer's whole process tree (over the run, and from the
//! first checkpoint on), peak USS and summed VmHWM of the tree (sampled every ~100 ms),
//! and the emulators' CPU. Each run's json-count totals must add up to the records put.
//! Then the crash-failover scenario (failover.rs) runs for each consumer kind. Prints
//! Markdown with the medians; progress and the runs' details go to stderr.

#[allow(dead_code)]
#[path = "../../../tests/runtime/emulators.rs"]
mod emulators;
#[allow(dead_code)]
#[path = "../../../tests/runtime/fixtures.rs"]
mod fixtures;

mod consumer;
mod failover;
mod leases;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use consumer::{
    IDLE_TIME_BETWEEN_READS, KCL_TUNED_FAILOVER, LEASE_DURATION, MAX_RECORDS, Setup, Spec, Variant,
    Worker,
};
use emulators::{AwsStream, Emulators, Kinesis};
use failover::{Failover, Victim};
use fixtures::{plugin_path, repo_root};

const SHARDS: usize = 2;
const RECORD_BYTES: usize = 1024;
const EVENT_TYPES: [&str; 4] = ["view", "click", "search", "purchase"];
/// How long one consumer may take to drain the stream before the bench fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// The KCL's start-up timing properties as tuned in kcl/kcl.properties.template (run.sh's
/// defaults); the report lists them.
const KCL_TUNED_ASSIGN_INTERVAL: Duration = Duration::from_secs(1);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one throughput run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    first_s: f64,
    drained_s: f64,
    /// Records already checkpointed when the first checkpoint was seen.
    first_done: usize,
    cpu_s: f64,
    cpu_at_first_s: f64,
    peak_uss: u64,
    peak_hwm: u64,
    emulators_cpu_s: Option<f64>,
}

/// kinesis-mock and DynamoDB Local, started through tests/emulators.sh if not answering.
struct EmulatorGuard {
    started: Vec<&'static str>,
    kinesis: String,
    dynamodb: String,
}

impl EmulatorGuard {
    const NAMES: [&'static str; 2] = ["kinesis-mock", "dynamodb-local"];

    fn script() -> PathBuf {
        repo_root().join("tests/emulators.sh")
    }

    fn dir() -> PathBuf {
        std::env::var_os("SHOAL_EMULATORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/emulators"))
    }

    fn ensure() -> Self {
        let started: Vec<&'static str> = Self::NAMES
            .into_iter()
            .filter(|name| {
                !Command::new("bash")
                    .arg(Self::script())
                    .args(["status", name])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .collect();
        // `start` reuses what answers and prints the endpoints of its ports either way.
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .args(Self::NAMES)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/emulators.sh");
        assert!(out.status.success(), "tests/emulators.sh start failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoint = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("tests/emulators.sh start printed no {key}"))
                .to_string()
        };
        Self {
            started,
            kinesis: endpoint("KINESIS_ENDPOINT"),
            dynamodb: endpoint("DYNAMODB_ENDPOINT"),
        }
    }

    /// Pid of an emulator started by tests/emulators.sh (now or earlier), to measure it.
    fn pid(name: &str) -> Option<u32> {
        std::fs::read_to_string(Self::dir().join(format!("pids/{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn cpu_seconds() -> Option<f64> {
        Self::NAMES
            .iter()
            .map(|n| Self::pid(n).map(|p| tree::sample(p).cpu_s))
            .sum()
    }

    /// The package an emulator was installed from (its `.installed` marker), if known.
    fn package(name: &str) -> String {
        std::fs::read_to_string(Self::dir().join(name).join(".installed"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "(not installed by tests/emulators.sh)".into())
    }
}

impl Drop for EmulatorGuard {
    fn drop(&mut self) {
        if !self.started.is_empty() {
            let _ = Command::new("bash")
                .arg(Self::script())
                .arg("stop")
                .args(&self.started)
                .status();
        }
    }
}

/// A 1 KiB JSON event with a unique id.
pub(crate) fn event(shard: usize, n: usize) -> String {
    let head = format!(
        r#"{{"type":"{}","id":"{shard}-{n}","user":"u{}","payload":""#,
        EVENT_TYPES[n % EVENT_TYPES.len()],
        n % 1000
    );
    let pad = RECORD_BYTES - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Where each shard's records are: sequence number → how many records of the shard are
/// done once it is checkpointed there.
struct Filled {
    done_at: BTreeMap<String, HashMap<String, usize>>,
    total: usize,
}

impl Filled {
    /// Fill every shard (PutRecords, 500 records a call: kinesis-mock ingests slowly).
    fn put(stream: &AwsStream, records: usize) -> Self {
        let per_shard = records / SHARDS;
        let mut done_at = BTreeMap::new();
        for s in 0..SHARDS {
            let shard = format!("shardId-{s:012}");
            let batch = (0..per_shard)
                .map(|n| (format!("pk{}", n % 64), event(s, n)))
                .collect();
            let seqs = stream.put_to_shard(&shard, batch);
            assert_eq!(seqs.len(), per_shard, "sequence numbers of {shard}");
            done_at.insert(
                shard,
                seqs.into_iter()
                    .enumerate()
                    .map(|(i, q)| (q, i + 1))
                    .collect(),
            );
        }
        Self {
            done_at,
            total: per_shard * SHARDS,
        }
    }

    /// Records done by the checkpoints in `table`.
    fn done(&self, stream: &AwsStream, table: &str) -> usize {
        let now = leases::scan(stream, table);
        self.done_at
            .iter()
            .map(|(shard, at)| {
                now.get(shard)
                    .and_then(|l| l.checkpoint.as_ref())
                    .and_then(|c| at.get(c))
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// One consumer from start until every record is checkpointed; then a graceful stop and
/// the output check.
fn measure(
    setup: &Setup,
    stream: &AwsStream,
    filled: &Filled,
    variant: Variant,
    app: &str,
) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulators_before = EmulatorGuard::cpu_seconds();
    let started = Instant::now();
    let mut worker = Worker::spawn(
        variant,
        setup,
        &Spec {
            stream: &stream.name,
            app,
            worker_id: "w1",
            dir: dir.path(),
            kcl_failover: KCL_TUNED_FAILOVER,
            kcl_assign_interval: Some(KCL_TUNED_ASSIGN_INTERVAL),
        },
    );
    let (mut peak_uss, mut peak_hwm) = (0, 0);
    let mut first: Option<(f64, usize, f64)> = None;
    let (drained_s, cpu_s) = loop {
        std::thread::sleep(Duration::from_millis(100));
        worker.assert_running();
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "{variant:?} did not drain the stream in {} s:\n{}",
            RUN_TIMEOUT.as_secs(),
            worker.log()
        );
        let sample = tree::sample(worker.pgid());
        peak_uss = peak_uss.max(sample.uss);
        peak_hwm = peak_hwm.max(sample.hwm);
        let done = filled.done(stream, app);
        if first.is_none() && done > 0 {
            first = Some((started.elapsed().as_secs_f64(), done, sample.cpu_s));
        }
        if done == filled.total {
            break (started.elapsed().as_secs_f64(), sample.cpu_s);
        }
    };
    let emulators_cpu_s = emulators_before
        .zip(EmulatorGuard::cpu_seconds())
        .map(|(before, after)| after - before);
    worker.stop();
    worker.check_counts(SHARDS, filled.total);
    let (first_s, first_done, cpu_at_first_s) = first.unwrap_or((drained_s, filled.total, cpu_s));
    Measured {
        first_s,
        drained_s,
        first_done,
        cpu_s,
        cpu_at_first_s,
        peak_uss,
        peak_hwm,
        emulators_cpu_s,
    }
}

/// Run a build/setup script; its last stdout line (if any) is returned.
fn run_script(script: &Path, what: &str) -> String {
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} ({}) failed:\n{stdout}",
        script.display()
    );
    stdout.lines().last().unwrap_or_default().to_string()
}

/// First line of a command's output (stdout, else stderr), or "?".
fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            Some(
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()?
                    .trim()
                    .to_string(),
            )
        })
        .unwrap_or_else(|| "?".into())
}

/// Versions of everything compared, for the report.
struct Versions {
    lines: Vec<String>,
}

impl Versions {
    fn collect(setup: &Setup, jars: &Path) -> Self {
        let jar = |prefix: &str| {
            std::fs::read_dir(jars)
                .ok()
                .and_then(|d| {
                    d.flatten().find_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let rest = name.strip_prefix(prefix)?.strip_suffix(".jar")?;
                        rest.starts_with(|c: char| c.is_ascii_digit())
                            .then(|| rest.to_string())
                    })
                })
                .unwrap_or_else(|| "?".into())
        };
        let kcl_python = setup.kcl_home.join("venv/bin/python3");
        let kclpy = Command::new(&kcl_python)
            .args([
                "-m",
                "pip",
                "show",
                "--disable-pip-version-check",
                "kclpy-ext",
            ])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
            })
            .unwrap_or_else(|| "?".into());
        let toolchain = repo_root().join("target/toolchains/python/bin");
        Self {
            lines: vec![
                format!(
                    "KCL: amazon-kinesis-client(-multilang) {} from PyPI kclpy-ext {kclpy} \
                     (amazon_kclpy), AWS SDK for Java v2 {}, Netty {}, on {}; its Python \
                     processors on {}",
                    jar("amazon-kinesis-client-"),
                    jar("kinesis-"),
                    jar("netty-codec-http2-"),
                    version_of(Path::new("java"), &["-version"]),
                    version_of(&kcl_python, &["--version"]),
                ),
                format!(
                    "shoal: {} (release build); Python guest built by {} (on {} from \
                     target/toolchains/python), Rust guest plugins/json-count (wasm32-wasip2, \
                     release)",
                    version_of(Path::new(env!("CARGO_BIN_EXE_shoal")), &["--version"]),
                    version_of(&toolchain.join("componentize-py"), &["--version"]),
                    version_of(&toolchain.join("python3"), &["--version"]),
                ),
                format!(
                    "emulators: kinesis-mock ({}, plain port; the KCL speaks h2c to it), \
                     DynamoDB Local ({})",
                    EmulatorGuard::package("kinesis-mock"),
                    EmulatorGuard::package("dynamodb-local"),
                ),
            ],
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let records = env_or("SHOAL_E2E_RECORDS", 20_000) / SHARDS * SHARDS;
    let rounds = env_or("SHOAL_E2E_ROUNDS", 3);
    let failover_runs = env_or("SHOAL_E2E_FAILOVER_RUNS", 1);

    // Build and install everything before anything is timed.
    let kcl_dir = repo_root().join("host/benches/e2e/kcl");
    let classpath = run_script(&kcl_dir.join("setup.sh"), "the KCL setup");
    let jars = PathBuf::from(classpath.trim_end_matches("/*"));
    run_script(
        &repo_root().join("examples/processors/python/build.sh"),
        "the Python guests' build",
    );
    let python_guest = repo_root().join("examples/processors/python/build/json-count.wasm");
    assert!(python_guest.is_file(), "missing {}", python_guest.display());
    let guard = EmulatorGuard::ensure();
    let setup = Setup {
        kinesis_endpoint: guard.kinesis.clone(),
        dynamodb_endpoint: guard.dynamodb.clone(),
        rust_guest: plugin_path("json_count"),
        python_guest,
        kcl_home: repo_root().join("target/kcl"),
        kcl_dir,
        shoal_cache: repo_root().join("target/shoal-bench-cache"),
    };
    let versions = Versions::collect(&setup, &jars);
    // SAFETY: no other thread exists yet (the emulators' runtime is built just below), so
    // nothing reads the environment concurrently. emulators.rs reads the Kinesis endpoint
    // from this variable; the bench's is the one tests/emulators.sh just reported.
    unsafe { std::env::set_var("KINESIS_ENDPOINT", &guard.kinesis) };
    let emulators = Emulators::with_dynamodb(Kinesis::Mock, &guard.dynamodb);

    let stream = emulators.create_stream(SHARDS);
    let filling = Instant::now();
    let filled = Filled::put(&stream, records);
    let fill_s = filling.elapsed().as_secs_f64();
    eprintln!(
        "e2e: {records} records of {RECORD_BYTES} B in {SHARDS} shards of {} ({fill_s:.1} s to put)",
        stream.name
    );

    let nonce = format!("{}-{:04x}", std::process::id(), fastrand::u16(..));
    // shoal compiles a component to native code at its first start and caches the result
    // (SHOAL_CACHE_DIR): one run of each shoal variant with an empty cache measures that
    // first start and leaves the cache warm for the rounds.
    let mut cold: BTreeMap<Variant, Measured> = BTreeMap::new();
    if rounds > 0 {
        let _ = std::fs::remove_dir_all(&setup.shoal_cache);
        for variant in [Variant::ShoalPython, Variant::ShoalRust] {
            let app = format!("e2e-{}-cold-{nonce}", variant.short());
            let m = measure(&setup, &stream, &filled, variant, &app);
            eprintln!(
                "e2e: {} with an empty compile cache: first checkpoint {:.2} s, drained {:.2} s, \
                 {:.2} CPU-s, peak USS {:.0} MiB",
                variant.short(),
                m.first_s,
                m.drained_s,
                m.cpu_s,
                mib(m.peak_uss)
            );
            cold.insert(variant, m);
        }
    }
    let mut results: BTreeMap<Variant, Vec<Measured>> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..Variant::ALL.len() {
            let variant = Variant::ALL[(i + round) % Variant::ALL.len()];
            let app = format!("e2e-{}-{round}-{nonce}", variant.short());
            let m = measure(&setup, &stream, &filled, variant, &app);
            eprintln!(
                "e2e: round {} {}: first checkpoint {:.2} s ({} records), drained {:.2} s, \
                 {:.2} CPU-s ({:.2} after the first checkpoint), peak USS {:.0} MiB, VmHWM sum \
                 {:.0} MiB, emulators {:.2} CPU-s",
                round + 1,
                variant.short(),
                m.first_s,
                m.first_done,
                m.drained_s,
                m.cpu_s,
                m.cpu_s - m.cpu_at_first_s,
                mib(m.peak_uss),
                mib(m.peak_hwm),
                m.emulators_cpu_s.unwrap_or(f64::NAN)
            );
            results.entry(variant).or_default().push(m);
        }
    }

    let mut failovers: BTreeMap<(Variant, Victim), Vec<Failover>> = BTreeMap::new();
    let cases = [
        (Variant::Kcl, Victim::KclNonLeader),
        (Variant::Kcl, Victim::KclLeader),
        (Variant::ShoalPython, Victim::First),
        (Variant::ShoalRust, Victim::First),
    ];
    for run in 0..failover_runs {
        for (i, (variant, victim)) in cases.into_iter().enumerate() {
            let f = failover::run(
                &emulators,
                &setup,
                variant,
                victim,
                &format!("{run}-{i}-{nonce}"),
            );
            eprintln!(
                "e2e: failover {} (killed {}): 1/1 split {:.1} s after start; survivor owns \
                 every lease {:.2} s after the kill, processed a record put after it at {:.2} s",
                variant.short(),
                victim.label(),
                f.split_s,
                f.owns_all_s,
                f.processed_s
            );
            failovers.entry((variant, victim)).or_default().push(f);
        }
    }
    report(
        &results, &cold, &failovers, &versions, records, rounds, fill_s,
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn report(
    results: &BTreeMap<Variant, Vec<Measured>>,
    cold: &BTreeMap<Variant, Measured>,
    failovers: &BTreeMap<(Variant, Victim), Vec<Failover>>,
    versions: &Versions,
    records: usize,
    rounds: usize,
    fill_s: f64,
) {
    println!(
        "## End to end: the Java KCL 3.x vs shoal, {records} records of 1 KiB JSON on \
         {SHARDS} kinesis-mock shards, DynamoDB Local leases (median of {rounds} rounds)\n"
    );
    let summary = throughput_table(results, records);
    if !cold.is_empty() {
        println!();
        let parts: Vec<String> = cold
            .iter()
            .map(|(v, m)| {
                format!(
                    "{} {:.1} s to the first record, {:.2} CPU-s for the whole run, peak USS \
                     {:.0} MiB",
                    v.short(),
                    m.first_s,
                    m.cpu_s,
                    mib(m.peak_uss)
                )
            })
            .collect();
        println!(
            "shoal compiles a component to native code at its first start on a machine and \
             caches it (SHOAL_CACHE_DIR); the rounds above ran with that cache warm, as every \
             later start does. Its first start, measured once before the rounds with an empty \
             cache: {}.",
            parts.join("; ")
        );
    }
    println!();
    compared(versions, records, fill_s);
    ratios(&summary);
    failover_table(failovers);
}

/// The throughput table; returns each variant's median (CPU per 100k whole run, CPU per
/// 100k from the first record, peak USS in MiB) for the ratios.
fn throughput_table(
    results: &BTreeMap<Variant, Vec<Measured>>,
    records: usize,
) -> BTreeMap<Variant, (f64, f64, f64)> {
    let mut summary = BTreeMap::new();
    if results.is_empty() {
        return summary;
    }
    println!(
        "| consumer | start → first record (first checkpoint) | start → all checkpointed | \
         drain records/s | CPU-s per 100k records, whole run | CPU-s per 100k, first record → \
         drained | peak USS | peak VmHWM sum (upper bound) | emulators' CPU-s per 100k |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (variant, runs) in results {
        let med = |f: &dyn Fn(&Measured) -> f64| median(runs.iter().map(f).collect());
        let drain = med(&|m| {
            let span = m.drained_s - m.first_s;
            if span > 0.0 && m.first_done < records {
                (records - m.first_done) as f64 / span
            } else {
                f64::NAN
            }
        });
        let cpu = med(&|m| m.cpu_s / records as f64 * 1e5);
        let steady = med(&|m| {
            let left = records.saturating_sub(m.first_done);
            if left == 0 {
                f64::NAN
            } else {
                (m.cpu_s - m.cpu_at_first_s) / left as f64 * 1e5
            }
        });
        let uss = med(&|m| mib(m.peak_uss));
        summary.insert(*variant, (cpu, steady, uss));
        let emulators = runs
            .iter()
            .map(|m| m.emulators_cpu_s.map(|c| c / records as f64 * 1e5))
            .collect::<Option<Vec<_>>>()
            .map_or("–".to_string(), |v| format!("{:.2}", median(v)));
        println!(
            "| {} | {:.1} s | {:.1} s | {} | {:.2} | {} | {uss:.0} MiB | {:.0} MiB | {emulators} |",
            variant.label(),
            med(&|m| m.first_s),
            med(&|m| m.drained_s),
            if drain.is_nan() {
                "–".to_string()
            } else {
                format!("{drain:.0}")
            },
            cpu,
            if steady.is_nan() {
                "–".to_string()
            } else {
                format!("{steady:.2}")
            },
            med(&|m| mib(m.peak_hwm)),
        );
    }
    summary
}

fn compared(versions: &Versions, records: usize, fill_s: f64) {
    println!("### What was compared\n");
    println!(
        "The same work on the same pre-filled stream ({records} records put with PutRecords, \
         500 a call, in {fill_s:.0} s): json-count — parse each record as JSON, count it by its \
         `type` field, checkpoint after every batch. Every consumer starts as a fresh \
         application (new lease table, TRIM_HORIZON), polls with at most {MAX_RECORDS} records \
         per GetRecords (the KCL's HTTP/2 reads of 10,000 × 1 KiB stall on kinesis-mock), \
         {} ms idle time between reads once caught up, and is stopped with SIGTERM after the \
         last checkpoint; its counts must add up to {records}. Variants are interleaved, the \
         order rotated each round.\n",
        IDLE_TIME_BETWEEN_READS.as_millis()
    );
    for line in &versions.lines {
        println!("- {line}");
    }
    println!(
        "- KCL properties that differ from KCL's defaults (kcl/kcl.properties.template, \
         kcl/run.sh): maxRecords = {MAX_RECORDS} [10000], idleTimeBetweenReadsInMillis = {} \
         [1000], failoverTimeMillis = {} [10000], leaseAssignmentIntervalMillis = {} [2 × \
         failover], workerMetricsReporterFreqInMillis = 1000 [30000], shardSyncIntervalMillis = \
         1000 [60000; it is also the time the first shard sync sleeps before start-up goes on], \
         parentShardPollIntervalMillis = 1000 [10000], shutdownGraceMillis = 5000 [0: SIGTERM \
         would not let the processors checkpoint], retrievalMode = POLLING, metricsLevel = NONE, \
         initialPositionInStream = TRIM_HORIZON. The first two match shoal; failoverTimeMillis \
         and leaseAssignmentIntervalMillis shorten start-up but also make the KCL renew its \
         leases every second and run lease assignment every second (more DynamoDB work than \
         its defaults); the rest only shorten start-up or allow a graceful stop.",
        IDLE_TIME_BETWEEN_READS.as_millis(),
        KCL_TUNED_FAILOVER.as_millis(),
        KCL_TUNED_ASSIGN_INTERVAL.as_millis(),
    );
    println!(
        "- shoal: its defaults except max_records = {MAX_RECORDS} (lease_duration = {} s).",
        LEASE_DURATION.as_secs()
    );
    println!(
        "- The KCL's start-up includes two waits in KCL's own code that no property changes: \
         with an empty lease table a worker first waits a random 1–30 s (so that one of several \
         workers creates the leases), and it waits 10 s for the lease table's \
         LeaseOwnerToLeaseKeyIndex, which DynamoDB Local does not report ACTIVE at the first \
         check. No leases were pre-created.\n"
    );
}

fn ratios(summary: &BTreeMap<Variant, (f64, f64, f64)>) {
    if summary.is_empty() {
        return;
    }
    let ratio = |a: Variant, b: Variant, pick: fn(&(f64, f64, f64)) -> f64| match (
        summary.get(&a),
        summary.get(&b),
    ) {
        (Some(x), Some(y)) if (pick(x) / pick(y)).is_finite() => {
            format!("{:.1}×", pick(x) / pick(y))
        }
        _ => "–".into(),
    };
    println!("### Ratios (KCL ÷ shoal, medians)\n");
    println!("| | CPU per 100k, whole run | CPU per 100k, first record → drained | peak USS |");
    println!("|---|---:|---:|---:|");
    for other in [Variant::ShoalPython, Variant::ShoalRust] {
        println!(
            "| KCL ÷ {} | {} | {} | {} |",
            other.short(),
            ratio(Variant::Kcl, other, |s| s.0),
            ratio(Variant::Kcl, other, |s| s.1),
            ratio(Variant::Kcl, other, |s| s.2),
        );
    }
    println!();
}

fn failover_table(failovers: &BTreeMap<(Variant, Victim), Vec<Failover>>) {
    if failovers.is_empty() {
        return;
    }
    println!(
        "### Crash failover: two workers of one kind, 1/1 split of 2 shards, SIGKILL of one \
         worker's process group\n"
    );
    println!(
        "shoal lease_duration = {0} s; KCL failoverTimeMillis = {0}000 and \
         leaseAssignmentIntervalMillis left at its default (2 × failover = {1} s), the other \
         start-up properties as above. KCL 3.x assigns leases from one leader worker (a \
         DynamoDB lock whose lease is 2 minutes, in KCL's code), so it is measured killing \
         either worker.\n",
        LEASE_DURATION.as_secs(),
        LEASE_DURATION.as_secs() * 2
    );
    println!(
        "| consumer | killed | runs | start → 1/1 split | kill → survivor owns every lease | \
         kill → record put after the kill processed |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for ((variant, victim), runs) in failovers {
        let med = |f: fn(&Failover) -> f64| median(runs.iter().map(f).collect());
        println!(
            "| {} | {} | {} | {:.1} s | {:.1} s | {:.1} s |",
            variant.label(),
            victim.label(),
            runs.len(),
            med(|f| f.split_s),
            med(|f| f.owns_all_s),
            med(|f| f.processed_s),
        );
    }
}
