//! End-to-end benchmark on the emulators (one command: `cargo bench -p shoal --bench e2e`;
//! it starts kinesalite and DynamoDB Local through `tests/emulators.sh` when they are not
//! answering, and stops only those it started).
//!
//! A kinesalite stream of `SHOAL_E2E_SHARDS` shards (default 2) is filled with
//! `SHOAL_E2E_RECORDS` records (default 100,000) of 1 KiB JSON. Then, one after another
//! and `SHOAL_E2E_ROUNDS` times (default 3, order rotated each round), each consumer reads
//! the whole stream from TRIM_HORIZON into a new DynamoDB Local lease table, checkpointing
//! every batch:
//! - shoal (`shoal run`) with the `archive` and with the `json-count` guest plugin;
//! - the baseline: a MultiLangDaemon-shaped daemon (host/benches/e2e/multilang.rs: same
//!   SDK, batch size and pacing, shoal's lease store) feeding one Python child per shard
//!   JSON lines with base64 data (host/benches/e2e/multilang_child.py), doing the same
//!   archive or count.
//!
//! Measured per run: time from process start to the first checkpoint and to every shard
//! checkpointed at its last record, records/s over that time, CPU seconds of the consumer
//! (with its children), peak resident memory (each process's high-water mark, summed
//! over the family), and the CPU the two emulators spent meanwhile. Each run's output is
//! checked (archive: every record once; json-count: the shutdown counts add up). Prints
//! Markdown with the medians.

#[allow(dead_code)]
#[path = "../../../tests/runtime/emulators.rs"]
mod emulators;
#[allow(dead_code)]
#[path = "../../../tests/runtime/fixtures.rs"]
mod fixtures;
mod multilang;
#[allow(dead_code)]
#[path = "../support/proc_stats.rs"]
mod proc_stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use emulators::{AwsStream, Emulators, Kinesis};
use fixtures::{plugin_path, repo_root};

/// Batch size and idle pacing, the same for both consumers (shoal's defaults).
const MAX_RECORDS: i32 = 10_000;
const IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(500);
const RECORD_BYTES: usize = 1024;
const EVENT_TYPES: [&str; 4] = ["view", "click", "search", "purchase"];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Consumer {
    Shoal,
    MultiLang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    Archive,
    JsonCount,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Archive => "archive",
            Work::JsonCount => "json-count",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    first_checkpoint_s: f64,
    drained_s: f64,
    cpu_s: f64,
    /// The part of `cpu_s` spent in child processes.
    children_cpu_s: f64,
    peak_rss: u64,
    emulators_cpu_s: Option<f64>,
}

/// The emulators this benchmark uses, started by it if they were not answering.
struct EmulatorGuard {
    started: Vec<&'static str>,
}

impl EmulatorGuard {
    const NAMES: [&'static str; 2] = ["kinesalite", "dynamodb-local"];

    fn script() -> PathBuf {
        repo_root().join("tests/emulators.sh")
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
        if !started.is_empty() {
            let status = Command::new("bash")
                .arg(Self::script())
                .arg("start")
                .args(&started)
                .stdout(Stdio::null())
                .status()
                .expect("run tests/emulators.sh");
            assert!(status.success(), "tests/emulators.sh start failed");
        }
        Self { started }
    }

    /// Pid of an emulator started by tests/emulators.sh (now or earlier), to measure it.
    fn pid(name: &str) -> Option<u32> {
        let dir = std::env::var_os("SHOAL_EMULATORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/emulators"));
        std::fs::read_to_string(dir.join(format!("pids/{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn cpu_seconds() -> Option<f64> {
        Self::NAMES
            .iter()
            .map(|n| Self::pid(n).and_then(proc_stats::cpu_seconds))
            .sum()
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
fn event(shard: usize, n: usize) -> String {
    let head = format!(
        r#"{{"type":"{}","id":"{shard}-{n}","user":"u{}","payload":""#,
        EVENT_TYPES[n % EVENT_TYPES.len()],
        n % 1000
    );
    let pad = RECORD_BYTES - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Fill every shard; returns each shard's last sequence number.
fn prefill(stream: &AwsStream, shards: usize, records: usize) -> BTreeMap<String, String> {
    let per_shard = records / shards;
    let mut last = BTreeMap::new();
    for s in 0..shards {
        let shard = format!("shardId-{s:012}");
        let mut sequence = String::new();
        for chunk in (0..per_shard).collect::<Vec<_>>().chunks(5_000) {
            let batch = chunk
                .iter()
                .map(|&n| (format!("pk{}", n % 64), event(s, n)))
                .collect();
            sequence = stream
                .put_to_shard(&shard, batch)
                .pop()
                .expect("sequence numbers");
        }
        last.insert(shard, sequence);
    }
    last
}

/// `checkpoint` attribute of every lease in `table` (empty while the table is missing).
fn checkpoints(stream: &AwsStream, table: &str) -> BTreeMap<String, String> {
    stream.block_on(async {
        let Ok(page) = stream
            .dynamodb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .send()
            .await
        else {
            return BTreeMap::new();
        };
        page.items()
            .iter()
            .filter_map(|item| {
                Some((
                    item.get("leaseKey")?.as_s().ok()?.clone(),
                    item.get("checkpoint")?.as_s().ok()?.clone(),
                ))
            })
            .collect()
    })
}

struct Run<'a> {
    stream: &'a AwsStream,
    kinesis_endpoint: &'a str,
    last: &'a BTreeMap<String, String>,
    dir: PathBuf,
    table: String,
}

impl Run<'_> {
    fn spawn(&self, consumer: Consumer, work: Work) -> Child {
        let archive = self.dir.join("archive");
        std::fs::create_dir_all(&archive).expect("archive dir");
        let log = std::fs::File::create(self.dir.join("consumer.log")).expect("log");
        match consumer {
            Consumer::Shoal => {
                let config = self.dir.join("shoal.toml");
                let (plugin, settings) = match work {
                    Work::Archive => (
                        plugin_path("archive"),
                        "[plugin.settings]\ndir = \"/archive\"\n\n[plugin.sandbox]\n\
                         dirs = [{ host = \"archive\", guest = \"/archive\", mode = \"read-write\" }]\n",
                    ),
                    Work::JsonCount => (
                        plugin_path("json_count"),
                        "[plugin.settings]\nfield = \"type\"\n",
                    ),
                };
                std::fs::write(
                    &config,
                    format!(
                        r#"[consumer]
application = "e2e"
worker_id = "shoal"
max_records = {MAX_RECORDS}
idle_time_between_reads = "{idle}ms"

[source]
kind = "kinesis"
stream_name = "{stream}"
region = "us-east-1"
endpoint = "{kinesis}"

[leases]
kind = "dynamodb"
table = "{table}"
region = "us-east-1"
endpoint = "{dynamodb}"

[plugin]
path = "{plugin}"

{settings}"#,
                        idle = IDLE_TIME_BETWEEN_READS.as_millis(),
                        stream = self.stream.name,
                        kinesis = self.kinesis_endpoint,
                        table = self.table,
                        dynamodb = self.stream.dynamodb_endpoint,
                        plugin = plugin.display(),
                    ),
                )
                .expect("config");
                Command::new(env!("CARGO_BIN_EXE_shoal"))
                    .args(["run", "--config"])
                    .arg(&config)
                    .env(
                        "SHOAL_CACHE_DIR",
                        repo_root().join("target/shoal-bench-cache"),
                    )
                    .env("RUST_LOG", "info")
                    .envs(emulators::TEST_CREDENTIALS.iter().copied())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn shoal")
            }
            Consumer::MultiLang => {
                let mut child = vec![
                    "python3".to_string(),
                    repo_root()
                        .join("host/benches/e2e/multilang_child.py")
                        .display()
                        .to_string(),
                    work.name().to_string(),
                ];
                if work == Work::Archive {
                    child.push(archive.display().to_string());
                }
                let args = multilang::DaemonArgs {
                    stream: self.stream.name.clone(),
                    table: self.table.clone(),
                    kinesis_endpoint: self.kinesis_endpoint.to_string(),
                    dynamodb_endpoint: self.stream.dynamodb_endpoint.clone(),
                    child,
                    max_records: MAX_RECORDS,
                    idle_time_between_reads: IDLE_TIME_BETWEEN_READS,
                };
                Command::new(std::env::current_exe().expect("bench binary"))
                    .envs(args.to_env())
                    .envs(emulators::TEST_CREDENTIALS.iter().copied())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn the multilang daemon")
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("consumer.log")).unwrap_or_default()
    }

    /// Run one consumer until every shard is checkpointed at its last record, then stop it
    /// gracefully and check its output.
    fn measure(&self, consumer: Consumer, work: Work, total: usize) -> Measured {
        let emulators_before = EmulatorGuard::cpu_seconds();
        let started = Instant::now();
        let mut child = self.spawn(consumer, work);
        let pid = child.id();
        let mut first = None;
        let deadline = started + Duration::from_secs(600);
        let (drained, (cpu, children_cpu_s, peak_rss)) = loop {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("{consumer:?} exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{consumer:?} did not finish in 10 minutes:\n{}",
                self.log()
            );
            let now = checkpoints(self.stream, &self.table);
            if first.is_none()
                && now
                    .values()
                    .any(|c| c.starts_with(|ch: char| ch.is_ascii_digit()))
            {
                first = Some(started.elapsed());
            }
            if self
                .last
                .iter()
                .all(|(shard, last)| now.get(shard) == Some(last))
            {
                let drained = started.elapsed();
                let family = proc_stats::family(pid);
                let cpu: f64 = family
                    .iter()
                    .filter_map(|&p| proc_stats::cpu_seconds(p))
                    .sum();
                let own = proc_stats::cpu_seconds(pid).unwrap_or(cpu);
                // Each process's own high-water mark, summed: exact for shoal's single
                // process, an upper bound for the daemon and its children.
                let peak_rss = family
                    .iter()
                    .filter_map(|&p| proc_stats::peak_rss_bytes(p))
                    .sum();
                break (drained, (cpu, cpu - own, peak_rss));
            }
        };
        let emulators_cpu_s = emulators_before
            .zip(EmulatorGuard::cpu_seconds())
            .map(|(before, after)| after - before);
        terminate(&mut child, &self.log());
        self.check_output(work, total);
        Measured {
            first_checkpoint_s: first.unwrap_or(drained).as_secs_f64(),
            drained_s: drained.as_secs_f64(),
            cpu_s: cpu,
            children_cpu_s,
            peak_rss,
            emulators_cpu_s,
        }
    }

    /// The same processing happened: every record archived once, or counted.
    fn check_output(&self, work: Work, total: usize) {
        match work {
            Work::Archive => {
                let mut lines = 0;
                for entry in std::fs::read_dir(self.dir.join("archive")).expect("archive") {
                    let text = std::fs::read_to_string(entry.expect("entry").path())
                        .expect("archive file");
                    lines += text.lines().count();
                }
                assert_eq!(lines, total, "archived lines");
            }
            Work::JsonCount => {
                let log = self.log();
                let counted: usize = log
                    .lines()
                    .filter(|l| l.contains("counts by type (shutdown)"))
                    .filter_map(|l| {
                        l.split(" | ")
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .parse::<usize>()
                            .ok()
                    })
                    .sum();
                assert_eq!(counted, total, "records counted at shutdown:\n{log}");
            }
        }
    }
}

/// SIGTERM and wait for a clean exit.
fn terminate(child: &mut Child, log: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit {status}:\n{log}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os(multilang::ROLE_VAR).is_some() {
        std::process::exit(multilang::main());
    }
    let shards = env_or("SHOAL_E2E_SHARDS", 2);
    let records = env_or("SHOAL_E2E_RECORDS", 100_000) / shards * shards;
    let rounds = env_or("SHOAL_E2E_ROUNDS", 3).max(1);
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "the baseline needs python3 on PATH"
    );
    // Build the plugins before anything is timed.
    let _ = plugin_path("archive");

    let _emulators = EmulatorGuard::ensure();
    let emulators = Emulators::new(Kinesis::Kinesalite);
    let stream = emulators.create_stream(shards);
    let filling = Instant::now();
    let last = prefill(&stream, shards, records);
    eprintln!(
        "e2e: {records} records of {RECORD_BYTES} B in {shards} shards of {} ({:.1} s to put)",
        stream.name,
        filling.elapsed().as_secs_f64()
    );

    let variants = [
        (Consumer::Shoal, Work::Archive),
        (Consumer::MultiLang, Work::Archive),
        (Consumer::Shoal, Work::JsonCount),
        (Consumer::MultiLang, Work::JsonCount),
    ];
    let mut results: BTreeMap<(Consumer, Work), Vec<Measured>> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..variants.len() {
            let (consumer, work) = variants[(i + round) % variants.len()];
            let dir = tempfile::tempdir().expect("tempdir");
            let run = Run {
                stream: &stream,
                kinesis_endpoint: emulators.kinesis_endpoint(),
                last: &last,
                dir: dir.path().to_path_buf(),
                table: format!("{}-{round}-{i}", stream.name),
            };
            let m = run.measure(consumer, work, records);
            eprintln!(
                "e2e: round {} {consumer:?} {}: first checkpoint {:.2} s, drained {:.2} s, \
                 {:.2} CPU-s ({:.2} in children), peak RSS {} MiB, emulators {:.2} CPU-s",
                round + 1,
                work.name(),
                m.first_checkpoint_s,
                m.drained_s,
                m.cpu_s,
                m.children_cpu_s,
                m.peak_rss >> 20,
                m.emulators_cpu_s.unwrap_or(f64::NAN)
            );
            results.entry((consumer, work)).or_default().push(m);
        }
    }
    report(&results, shards, records, rounds);
}

fn report(
    results: &BTreeMap<(Consumer, Work), Vec<Measured>>,
    shards: usize,
    records: usize,
    rounds: usize,
) {
    let per_100k = |cpu: f64| cpu / records as f64 * 1e5;
    println!(
        "## End to end: {records} records of 1 KiB on {shards} kinesalite shards, \
         DynamoDB Local leases (median of {rounds} runs)\n"
    );
    println!(
        "| consumer | processing | records/s | start → first checkpoint | start → all checkpointed \
         | consumer CPU-s per 100k records | peak RSS | emulators' CPU-s per 100k records |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut cpu_of = BTreeMap::new();
    for ((consumer, work), runs) in results {
        let drained = median(runs.iter().map(|m| m.drained_s).collect());
        let cpu = median(runs.iter().map(|m| m.cpu_s).collect());
        let children = median(runs.iter().map(|m| m.children_cpu_s).collect());
        cpu_of.insert((*consumer, *work), (cpu, children));
        let emulators = runs
            .iter()
            .map(|m| m.emulators_cpu_s)
            .collect::<Option<Vec<_>>>()
            .map_or("–".to_string(), |v| format!("{:.2}", per_100k(median(v))));
        println!(
            "| {} | {} | {:.0} | {:.2} s | {:.2} s | {:.2} | {:.0} MiB | {emulators} |",
            match consumer {
                Consumer::Shoal => "shoal (wasm guest, Rust)",
                Consumer::MultiLang => "MultiLangDaemon-shaped pipe (Python child per shard)",
            },
            work.name(),
            records as f64 / drained,
            median(runs.iter().map(|m| m.first_checkpoint_s).collect()),
            drained,
            per_100k(cpu),
            median(runs.iter().map(|m| m.peak_rss as f64).collect()) / f64::from(1 << 20),
        );
    }
    println!();
    for work in [Work::Archive, Work::JsonCount] {
        if let (Some((shoal, _)), Some((pipe, children))) = (
            cpu_of.get(&(Consumer::Shoal, work)),
            cpu_of.get(&(Consumer::MultiLang, work)),
        ) {
            println!(
                "- {}: the pipe baseline used {:.1}× the CPU of shoal ({:.0} % of it in the \
                 Python children, {:.0} % in the daemon).",
                work.name(),
                pipe / shoal,
                children / pipe * 100.0,
                (pipe - children) / pipe * 100.0
            );
        }
    }
}
