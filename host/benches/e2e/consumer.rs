//! The three consumers the end-to-end benchmark compares, as worker processes: how each is
//! configured and started (in a process group of its own), stopped, killed, and how its
//! output is checked (the json-count totals must add up to the records read).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::emulators;
use crate::tree;

/// Records per GetRecords, the same for all three consumers. 1000, not shoal's default of
/// 10 000: the Java KCL's SDK always speaks HTTP/2, so it reads kinesis-mock over h2c, and
/// there a GetRecords answer of 10 000 × 1 KiB (about 10 MB) never arrived (no response in
/// 60 s, then the connection was dropped), while 1000 works.
pub const MAX_RECORDS: u32 = 1000;
/// Sleep between reads once a shard is caught up (shoal's default), for all three.
pub const IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(500);
/// shoal's `lease_duration` (its default) and, in the failover scenario, KCL's
/// `failoverTimeMillis` (its default).
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// The KCL's `failoverTimeMillis` in the throughput runs, as tuned in
/// kcl/kcl.properties.template (run.sh's default): lease discovery runs every twice this,
/// so the KCL default of 10 s would add up to 20 s to its start.
pub const KCL_TUNED_FAILOVER: Duration = Duration::from_secs(3);

/// A consumer under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// The Java KCL 3.x MultiLangDaemon with the amazon_kclpy processor kcl/json_count.py.
    Kcl,
    /// `shoal run` with examples/processors/python/json_count.py (componentize-py).
    ShoalPython,
    /// `shoal run` with the Rust guest plugins/json-count.
    ShoalRust,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Kcl, Variant::ShoalPython, Variant::ShoalRust];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Kcl => "KCL 3.1.3 MultiLangDaemon + Python (amazon_kclpy)",
            Variant::ShoalPython => "shoal + Python guest (componentize-py)",
            Variant::ShoalRust => "shoal + Rust guest",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Variant::Kcl => "KCL",
            Variant::ShoalPython => "shoal-python",
            Variant::ShoalRust => "shoal-rust",
        }
    }
}

/// What the workers are built from and where they connect.
pub struct Setup {
    pub kinesis_endpoint: String,
    pub dynamodb_endpoint: String,
    pub rust_guest: PathBuf,
    pub python_guest: PathBuf,
    /// The venv made by kcl/setup.sh.
    pub kcl_home: PathBuf,
    pub kcl_dir: PathBuf,
    pub shoal_cache: PathBuf,
}

/// One worker's identity and timing settings.
pub struct Spec<'a> {
    pub stream: &'a str,
    /// The application: shoal's and the KCL's lease table.
    pub app: &'a str,
    pub worker_id: &'a str,
    /// Where the worker's config and logs go.
    pub dir: &'a Path,
    /// KCL only: `failoverTimeMillis`.
    pub kcl_failover: Duration,
    /// KCL only: `leaseAssignmentIntervalMillis`, or `None` for KCL's default
    /// (2 × failoverTimeMillis).
    pub kcl_assign_interval: Option<Duration>,
}

/// A running worker: a process group led by `shoal run` or by the KCL's JVM.
pub struct Worker {
    pub variant: Variant,
    child: Child,
    log: PathBuf,
    counts: PathBuf,
}

impl Worker {
    pub fn spawn(variant: Variant, setup: &Setup, spec: &Spec) -> Worker {
        std::fs::create_dir_all(spec.dir).expect("worker dir");
        let log = spec.dir.join(format!("{}.log", spec.worker_id));
        let counts = spec.dir.join(format!("{}.counts.jsonl", spec.worker_id));
        let log_file = std::fs::File::create(&log).expect("worker log");
        let mut command = match variant {
            Variant::Kcl => {
                let mut c = Command::new("bash");
                c.arg(setup.kcl_dir.join("run.sh"))
                    .env("KCL_STREAM", spec.stream)
                    .env("KCL_APP", spec.app)
                    .env("KCL_WORKER_ID", spec.worker_id)
                    .env("KCL_HOME", &setup.kcl_home)
                    .env("KCL_WORKDIR", spec.dir.join(spec.worker_id))
                    .env("KINESIS_ENDPOINT", &setup.kinesis_endpoint)
                    .env("DYNAMODB_ENDPOINT", &setup.dynamodb_endpoint)
                    .env("JSON_COUNT_OUT", &counts)
                    .env("KCL_MAX_RECORDS", MAX_RECORDS.to_string())
                    .env(
                        "KCL_IDLE_MS",
                        IDLE_TIME_BETWEEN_READS.as_millis().to_string(),
                    )
                    .env("KCL_FAILOVER_MS", spec.kcl_failover.as_millis().to_string())
                    .env(
                        "KCL_ASSIGN_MS",
                        spec.kcl_assign_interval
                            .map_or("default".to_string(), |d| d.as_millis().to_string()),
                    );
                c
            }
            Variant::ShoalPython | Variant::ShoalRust => {
                let plugin = if variant == Variant::ShoalPython {
                    &setup.python_guest
                } else {
                    &setup.rust_guest
                };
                let config = spec.dir.join(format!("{}.toml", spec.worker_id));
                std::fs::write(&config, shoal_config(setup, spec, plugin)).expect("config");
                let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
                c.args(["run", "--config"])
                    .arg(&config)
                    .env("SHOAL_CACHE_DIR", &setup.shoal_cache)
                    .env("RUST_LOG", "info");
                c
            }
        };
        let child = command
            .envs(emulators::TEST_CREDENTIALS.iter().copied())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {variant:?}: {e}"));
        Worker {
            variant,
            child,
            log,
            counts,
        }
    }

    /// The process group (= the leader's pid: `shoal`, or the JVM run.sh exec's).
    pub fn pgid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "---- {} ({}) ----\n{text}",
            self.log.display(),
            self.variant.short()
        )
    }

    /// Fail the bench, with the log, when the worker has exited on its own.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            self.kill();
            panic!("{:?} exited with {status}:\n{}", self.variant, self.log());
        }
    }

    /// SIGTERM, a clean exit within 60 s (shoal: status 0; the JVM: 143, its shutdown hook
    /// having let the processors checkpoint), then SIGKILL to whatever is left of the group.
    pub fn stop(&mut self) {
        tree::signal_group(self.pgid(), "TERM");
        let status = self.wait(Duration::from_secs(60));
        self.kill();
        let clean = status.is_some_and(|s| {
            s.success() || (self.variant == Variant::Kcl && s.code() == Some(143))
        });
        assert!(
            clean,
            "{:?}: {} after SIGTERM:\n{}",
            self.variant,
            status.map_or("no exit in 60 s".to_string(), |s| s.to_string()),
            self.log()
        );
    }

    /// SIGKILL the whole group (the JVM and its Python processors) and wait until it is gone.
    pub fn kill(&mut self) {
        tree::signal_group(self.pgid(), "KILL");
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tree::members(self.pgid()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After `stop`: the json-count totals the processors reported add up to `total`, with
    /// nothing skipped, over `shards` shards.
    pub fn check_counts(&self, shards: usize, total: usize) {
        let counted = match self.variant {
            Variant::Kcl => self.kcl_counts(),
            Variant::ShoalPython | Variant::ShoalRust => self.shoal_counts(),
        };
        assert_eq!(
            counted.len(),
            shards,
            "{:?}: final counts for {} shards, expected {shards}: {counted:?}\n{}",
            self.variant,
            counted.len(),
            self.log()
        );
        let seen: usize = counted.values().map(|c| c.seen).sum();
        let by_type: usize = counted.values().map(|c| c.by_type).sum();
        let skipped: usize = counted.values().map(|c| c.skipped).sum();
        assert!(
            seen == total && by_type == total && skipped == 0,
            "{:?}: counted {seen} records ({by_type} by type, {skipped} skipped), expected \
             {total}: {counted:?}\n{}",
            self.variant,
            self.log()
        );
    }

    /// shoal: the guest's `<shard> counts by type (shutdown): k=n ... | N records, S skipped
    /// as not JSON` lines (the Rust and the Python guest log the same words).
    fn shoal_counts(&self) -> BTreeMap<String, Counted> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in log.lines() {
            let Some(at) = line.find(" counts by type (shutdown): ") else {
                continue;
            };
            let shard = line[..at]
                .rsplit(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap_or_default()
                .to_string();
            let rest = &line[at + " counts by type (shutdown): ".len()..];
            let Some((counts, tail)) = rest.split_once(" | ") else {
                continue;
            };
            let mut words = tail.split_whitespace();
            let seen = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let skipped = words.nth(1).and_then(|w| w.parse().ok()).unwrap_or(0);
            let by_type = counts
                .split_whitespace()
                .filter_map(|kv| kv.rsplit_once('=')?.1.parse::<usize>().ok())
                .sum();
            out.insert(
                shard,
                Counted {
                    seen,
                    by_type,
                    skipped,
                },
            );
        }
        out
    }

    /// KCL: the latest line per shard that kcl/json_count.py appended to $JSON_COUNT_OUT.
    fn kcl_counts(&self) -> BTreeMap<String, Counted> {
        let text = std::fs::read_to_string(&self.counts).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", self.counts.display()));
            let field = |name: &str| v.get(name).and_then(serde_json::Value::as_u64);
            let by_type = v
                .get("counts")
                .and_then(serde_json::Value::as_object)
                .map_or(0, |m| {
                    m.values().filter_map(serde_json::Value::as_u64).sum()
                });
            out.insert(
                v.get("shard_id")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                Counted {
                    seen: field("seen").unwrap_or(0) as usize,
                    by_type: by_type as usize,
                    skipped: field("skipped").unwrap_or(0) as usize,
                },
            );
        }
        out
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A panicking bench must not leave JVMs or shoal processes behind.
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        } else {
            tree::signal_group(self.pgid(), "KILL");
        }
    }
}

/// One shard's final json-count report.
#[derive(Debug, Clone, Copy)]
struct Counted {
    seen: usize,
    by_type: usize,
    skipped: usize,
}

fn shoal_config(setup: &Setup, spec: &Spec, plugin: &Path) -> String {
    format!(
        r#"[consumer]
application = "{app}"
worker_id = "{worker}"
max_records = {MAX_RECORDS}
idle_time_between_reads = "{idle}ms"
lease_duration = "{lease}s"

[source]
kind = "kinesis"
stream_name = "{stream}"
region = "us-east-1"
endpoint = "{kinesis}"

[leases]
kind = "dynamodb"
table = "{app}"
region = "us-east-1"
endpoint = "{dynamodb}"

[plugin]
path = "{plugin}"

[plugin.settings]
field = "type"
"#,
        app = spec.app,
        worker = spec.worker_id,
        idle = IDLE_TIME_BETWEEN_READS.as_millis(),
        lease = LEASE_DURATION.as_secs(),
        stream = spec.stream,
        kinesis = setup.kinesis_endpoint,
        dynamodb = setup.dynamodb_endpoint,
        plugin = plugin.display(),
    )
}
