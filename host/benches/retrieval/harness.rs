//! What the retrieval benchmark needs around `shoal run`: the emulators (started if they
//! are not answering, and only those stopped), a `shoal run` process with the `archive`
//! guest and its per-batch log, a paced producer, and the readers of what the guest wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::emulators::{self, AwsStream};
use crate::fixtures::{plugin_path, repo_root};
use crate::proc_stats;

/// Bytes of every record's data, unless `SHOAL_RETRIEVAL_RECORD_BYTES` says otherwise.
pub const RECORD_BYTES: usize = 1024;

/// The record size in use.
pub fn record_bytes() -> usize {
    std::env::var("SHOAL_RETRIEVAL_RECORD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RECORD_BYTES)
}

/// Microseconds since the epoch (the wall clock the guest's `end_ms` is read from).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The emulators this benchmark uses, started by it if they were not answering.
pub struct EmulatorGuard {
    started: Vec<&'static str>,
}

impl EmulatorGuard {
    fn script() -> PathBuf {
        repo_root().join("tests/emulators.sh")
    }

    /// Start those of `names` that are not answering; they are stopped on drop.
    pub fn ensure(names: &[&'static str]) -> Self {
        let started: Vec<&'static str> = names
            .iter()
            .copied()
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
            eprintln!("retrieval: starting {}", started.join(", "));
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

/// CPU seconds an emulator started by `tests/emulators.sh` has used (NaN when its pid
/// file is missing).
pub fn emulator_cpu_seconds(name: &str) -> f64 {
    let dir = std::env::var_os("SHOAL_EMULATORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/emulators"));
    std::fs::read_to_string(dir.join(format!("pids/{name}.pid")))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .and_then(proc_stats::cpu_seconds)
        .unwrap_or(f64::NAN)
}

/// A Kinesis client for the producer: no retries (a timed-out PutRecords retried would
/// queue the same records again in an emulator that is already behind, and kinesis-mock
/// serves even requests whose client has gone) and a long attempt timeout.
pub fn put_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .build(),
    )
}

/// Wait (at most `limit`) until an emulator has used under a fifth of a core for a
/// second, so one run's backlog does not spill into the next.
pub fn settle(name: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let before = emulator_cpu_seconds(name);
        std::thread::sleep(Duration::from_secs(1));
        let used = emulator_cpu_seconds(name) - before;
        if used.is_nan() || used < 0.2 {
            return;
        }
    }
    eprintln!("retrieval: {name} still busy after {limit:?}; going on");
}

/// How records reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// `retrieval = "polling"`, `read_ahead_records = 0`, `read_ahead_bytes = 0`.
    Serial,
    /// `retrieval = "polling"` with the default read-ahead.
    Prefetch,
    /// `retrieval = "fan-out"`.
    FanOut,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Serial => "polling, serial",
            Mode::Prefetch => "polling, prefetch",
            Mode::FanOut => "fan-out",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Mode::Serial => "serial",
            Mode::Prefetch => "prefetch",
            Mode::FanOut => "fanout",
        }
    }

    /// Its `[consumer]` lines.
    fn consumer_toml(self) -> &'static str {
        match self {
            Mode::Serial => {
                "retrieval = \"polling\"\nread_ahead_records = 0\nread_ahead_bytes = 0\n"
            }
            Mode::Prefetch => "retrieval = \"polling\"\n",
            Mode::FanOut => "retrieval = \"fan-out\"\n",
        }
    }
}

/// One `shoal run` with the `archive` guest writing `<dir>/archive/<shard>.jsonl` and, per
/// batch, a line of `<dir>/archive/batches-bench.jsonl`.
pub struct Shoal {
    child: Option<Child>,
    dir: PathBuf,
    /// The application name, which names the run's files in `SHOAL_RETRIEVAL_LOGS`.
    label: String,
    /// Wall clock at spawn, ms since the epoch.
    pub spawned_ms: f64,
}

/// What the run is pointed at.
pub struct Target<'a> {
    pub stream: &'a AwsStream,
    pub kinesis_endpoint: &'a str,
    pub table: &'a str,
    /// `consumer.application`, also the fan-out consumer's name.
    pub application: &'a str,
}

impl Shoal {
    /// Spawn `shoal run` in `dir`; the guest sleeps `sleep_ms` at the start of each batch.
    pub fn spawn(
        dir: &Path,
        target: &Target<'_>,
        mode: Mode,
        max_records: Option<usize>,
        sleep_ms: u64,
    ) -> Self {
        std::fs::create_dir_all(dir.join("archive")).expect("archive dir");
        let config = dir.join("shoal.toml");
        std::fs::write(
            &config,
            format!(
                r#"[consumer]
application = "{application}"
worker_id = "bench"
{max_records}{mode}
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
watch = false

[plugin.settings]
dir = "/archive"
worker = "bench"
sleep_ms = {sleep_ms}

[plugin.sandbox]
dirs = [{{ host = "archive", guest = "/archive", mode = "read-write" }}]
"#,
                application = target.application,
                mode = mode.consumer_toml(),
                max_records = max_records
                    .map(|n| format!("max_records = {n}\n"))
                    .unwrap_or_default(),
                stream = target.stream.name,
                kinesis = target.kinesis_endpoint,
                table = target.table,
                dynamodb = target.stream.dynamodb_endpoint,
                plugin = plugin_path("archive").display(),
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("shoal.log")).expect("log");
        let spawned_ms = now_us() as f64 / 1000.0;
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
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
            .expect("spawn shoal");
        Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            label: target.application.to_string(),
            spawned_ms,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        proc_stats::cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("shoal.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The batches the guest has logged so far.
    pub fn batches(&self) -> Vec<BatchLine> {
        read_batches(&self.dir.join("archive/batches-bench.jsonl"))
    }

    /// Wait until the guest has processed at least `records` records.
    pub fn wait_for_records(&mut self, records: usize, timeout: Duration) -> Result<(), String> {
        self.wait_until(records, timeout, |batches| {
            batches.iter().map(|b| b.records).sum::<usize>() >= records
        })
    }

    /// Wait until the guest has processed each shard's record `last` (a shard → sequence
    /// number map).
    pub fn wait_for_last(
        &mut self,
        last: &BTreeMap<String, String>,
        records: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_until(records, timeout, |batches| {
            last.iter()
                .all(|(shard, seq)| batches.iter().any(|b| &b.shard == shard && &b.last == seq))
        })
    }

    /// Wait until `done` holds for the batch log; `records` is for the messages.
    fn wait_until(
        &mut self,
        records: usize,
        timeout: Duration,
        done: impl Fn(&[BatchLine]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let batches = self.batches();
            if done(&batches) {
                return Ok(());
            }
            let done: usize = batches.iter().map(|b| b.records).sum();
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "shoal exited ({status}) after {done} of {records} records:\n{}",
                    self.log_tail(40)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{done} of {records} records processed after {timeout:?}:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after 60 s).
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("exit {status}:\n{}", self.log_tail(20)))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no exit 60 s after SIGTERM:\n{}",
                    self.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every archived record: (shard, sequence number, arrival ms, data).
    pub fn archived(&self) -> Vec<Archived> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.dir.join("archive")) else {
            return out;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shardId-"))
            })
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("archive file");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("archive line");
                out.push(Archived {
                    shard: v["shard_id"].as_str().unwrap_or_default().to_string(),
                    sequence_number: v["sequence_number"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    arrival_ms: v["approximate_arrival_ms"].as_i64().unwrap_or(0),
                    data: BASE64
                        .decode(v["data_base64"].as_str().unwrap_or_default())
                        .expect("base64"),
                });
            }
        }
        out
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Keep the run's log and batch log where the caller asked.
        if let Some(logs) = std::env::var_os("SHOAL_RETRIEVAL_LOGS").map(PathBuf::from) {
            let _ = std::fs::create_dir_all(&logs);
            for (from, to) in [
                ("shoal.log", format!("{}.log", self.label)),
                (
                    "archive/batches-bench.jsonl",
                    format!("{}.batches.jsonl", self.label),
                ),
            ] {
                let _ = std::fs::copy(self.dir.join(from), logs.join(to));
            }
        }
    }
}

/// One archived record.
pub struct Archived {
    pub shard: String,
    pub sequence_number: String,
    pub arrival_ms: i64,
    pub data: Vec<u8>,
}

/// One line of the `archive` guest's batch log.
#[derive(Debug, Clone)]
pub struct BatchLine {
    pub shard: String,
    /// Guest wall clock when `process` was entered / when the batch was written and
    /// flushed, ms since the epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub first: String,
    pub last: String,
    pub records: usize,
}

fn read_batches(path: &Path) -> Vec<BatchLine> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        // The last line may be half written while the guest runs.
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| BatchLine {
            shard: v["shard"].as_str().unwrap_or_default().to_string(),
            start_ms: v["start_ms"].as_u64().unwrap_or(0),
            end_ms: v["end_ms"].as_u64().unwrap_or(0),
            first: v["first"].as_str().unwrap_or_default().to_string(),
            last: v["last"].as_str().unwrap_or_default().to_string(),
            records: v["records"].as_u64().unwrap_or(0) as usize,
        })
        .collect()
}

/// A JSON record of exactly [`record_bytes`] bytes (or just its fields, if more) carrying its phase, number and the
/// producer's send time.
pub fn record(phase: &str, n: usize, sent_us: u64) -> Vec<u8> {
    let head = format!(r#"{{"phase":"{phase}","n":{n},"sent_us":{sent_us},"pad":""#);
    let pad = record_bytes().saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

/// The `(phase, n, sent_us)` of a record made by [`record`].
pub fn parse_record(data: &[u8]) -> Option<(String, usize, u64)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some((
        v["phase"].as_str()?.to_string(),
        v["n"].as_u64()? as usize,
        v["sent_us"].as_u64()?,
    ))
}

/// What the paced producer did.
#[derive(Debug, Default)]
pub struct Produced {
    /// Records the service accepted.
    pub records: usize,
    /// Records it refused (never retried: they are simply not measured).
    pub failed: usize,
    /// PutRecords calls that failed as a whole.
    pub failed_calls: usize,
    /// Duration of each PutRecords call, ms.
    pub call_ms: Vec<f64>,
    /// The schedule's length, s.
    pub elapsed_s: f64,
    /// Ticks skipped because `max_in_flight` calls were still out a tick after they were
    /// due (the emulator did not keep up with the rate).
    pub skipped_ticks: usize,
    /// The first failed call's error.
    pub first_error: Option<String>,
}

/// Put `per_tick` records every `tick` for `duration`, each PutRecords call stamped with
/// its send time; up to `max_in_flight` calls out at once, so a slow answer does not slow
/// the schedule (until that many are out).
pub fn produce_steady(
    stream: &AwsStream,
    client: &aws_sdk_kinesis::Client,
    per_tick: usize,
    tick: Duration,
    duration: Duration,
    max_in_flight: usize,
) -> Produced {
    let ticks = (duration.as_secs_f64() / tick.as_secs_f64()).round() as usize;
    let client = client.clone();
    let name = stream.name.clone();
    stream.block_on(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
        let start = tokio::time::Instant::now();
        let mut skipped_ticks = 0;
        let mut calls = Vec::with_capacity(ticks);
        for t in 0..ticks {
            let due = start + tick * t as u32;
            tokio::time::sleep_until(due).await;
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("semaphore");
            if tokio::time::Instant::now() > due + tick {
                // Keep to the schedule: what could not be sent in time is not sent.
                skipped_ticks += 1;
                continue;
            }
            let sent_us = now_us();
            let entries: Vec<PutRecordsRequestEntry> = (0..per_tick)
                .map(|i| {
                    let n = t * per_tick + i;
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("pk{}", n % 64))
                        .data(Blob::new(record("steady", n, sent_us)))
                        .build()
                        .expect("entry")
                })
                .collect();
            let client = client.clone();
            let name = name.clone();
            calls.push(tokio::spawn(async move {
                let _permit = permit;
                let sent = Instant::now();
                let out = client
                    .put_records()
                    .stream_name(name)
                    .set_records(Some(entries))
                    .send()
                    .await;
                let took = sent.elapsed();
                (
                    out.map(|o| o.failed_record_count().unwrap_or(0) as usize)
                        .map_err(|e| format!("{e:?}")),
                    took,
                )
            }));
        }
        let mut produced = Produced {
            skipped_ticks,
            ..Produced::default()
        };
        for call in calls {
            let (failed, took) = call.await.expect("put task");
            produced.call_ms.push(took.as_secs_f64() * 1000.0);
            match failed {
                Ok(failed) => {
                    produced.failed += failed;
                    produced.records += per_tick - failed;
                }
                Err(e) => {
                    produced.failed_calls += 1;
                    produced.failed += per_tick;
                    produced.first_error.get_or_insert(e);
                }
            }
        }
        // The schedule's length: the rate achieved is what the emulator accepted in it.
        produced.elapsed_s = duration.as_secs_f64();
        produced
    })
}

/// Put `records` records of `phase` numbered from 0, spread over the stream by partition
/// key, `in_flight` PutRecords calls of 500 at once; returns how long it took and each
/// shard's last sequence number.
pub fn prefill(
    stream: &AwsStream,
    client: &aws_sdk_kinesis::Client,
    phase: &str,
    records: usize,
    in_flight: usize,
) -> (Duration, BTreeMap<String, String>) {
    let client = client.clone();
    let name = stream.name.clone();
    let phase = phase.to_string();
    let started = Instant::now();
    let last = stream.block_on(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
        let mut calls = Vec::new();
        for chunk in (0..records).collect::<Vec<_>>().chunks(500) {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("semaphore");
            let sent_us = now_us();
            let entries: Vec<PutRecordsRequestEntry> = chunk
                .iter()
                .map(|&n| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("pk{n}"))
                        .data(Blob::new(record(&phase, n, sent_us)))
                        .build()
                        .expect("entry")
                })
                .collect();
            let client = client.clone();
            let name = name.clone();
            calls.push(tokio::spawn(async move {
                let _permit = permit;
                let out = client
                    .put_records()
                    .stream_name(name)
                    .set_records(Some(entries))
                    .send()
                    .await
                    .expect("PutRecords");
                // The emulators never throttle: a refused record is a harness problem.
                assert_eq!(
                    out.failed_record_count(),
                    Some(0),
                    "PutRecords partially failed"
                );
                out.records()
                    .iter()
                    .map(|r| {
                        (
                            r.shard_id().unwrap_or_default().to_string(),
                            r.sequence_number().unwrap_or_default().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for call in calls {
            for (shard, sequence) in call.await.expect("put task") {
                let newest = last.entry(shard).or_default();
                if sequence_order(&sequence, newest).is_gt() {
                    *newest = sequence;
                }
            }
        }
        last
    });
    (started.elapsed(), last)
}

/// Sequence numbers are decimal strings of up to 128 bits: compare by length, then text.
pub fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Delete the stream (with its registered consumers) and the given lease tables; a
/// failure is only reported.
pub fn clean_up(stream: &AwsStream, tables: &[String]) {
    stream.block_on(async {
        if let Err(e) = stream
            .kinesis
            .delete_stream()
            .stream_name(&stream.name)
            .enforce_consumer_deletion(true)
            .send()
            .await
        {
            eprintln!("retrieval: cannot delete stream {}: {e}", stream.name);
        }
        for table in tables {
            if let Err(e) = stream
                .dynamodb
                .delete_table()
                .table_name(table)
                .send()
                .await
            {
                eprintln!("retrieval: cannot delete table {table}: {e}");
            }
        }
    });
}

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of some values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}
