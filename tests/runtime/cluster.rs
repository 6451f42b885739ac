//! A test cluster: real `shoal run` processes sharing a lease store, consuming a stream,
//! archiving every record with the `archive` plugin so tests can see what was processed.
//! Backends: the local file source + SQLite, or Kinesis + DynamoDB emulators.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal::lease::dynamo::DynamoLeaseStore;
use shoal::lease::sqlite::SqliteLeaseStore;
use shoal::lease::{Lease, LeaseStore};

use crate::emulators::{AwsStream, Emulators};
use crate::fixtures::{plugin_path, repo_root};
use crate::watchdog::Watchdog;

/// One test's stream, lease store, archive and worker processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub lease_duration: Duration,
    workers: BTreeMap<String, Child>,
    backend: Backend,
    /// The plugin file workers load (default: the built `archive`).
    plugin: Option<PathBuf>,
    /// Extra `[plugin.settings]` lines.
    plugin_settings: String,
    /// Extra `[plugin.sandbox]` lines.
    sandbox: String,
    /// `[plugin.failure]` lines (none: the defaults).
    failure: String,
    /// `[plugin.limits]` lines (none: the defaults).
    limits: String,
    /// `[metrics] address` of the workers started from now on.
    metrics: Option<String>,
    /// `consumer.retrieval` of the workers started from now on (none: the default).
    retrieval: Option<&'static str>,
    /// Ends the test process if this test hangs.
    watchdog: Watchdog,
}

enum Backend {
    /// Local file source and SQLite leases.
    Local,
    /// A Kinesis stream and a DynamoDB lease table on the emulators.
    Aws {
        stream: AwsStream,
        /// The Kinesis endpoint shoal is given (the emulator, or a fault proxy before it).
        kinesis_endpoint: String,
        /// The DynamoDB endpoint shoal is given (likewise).
        dynamodb_endpoint: String,
    },
}

/// An archived record: (sequence number, data).
pub type Archived = (String, String);

impl Cluster {
    pub fn local(shards: usize, lease_duration: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["stream", "archive", "state", "logs"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        for s in 0..shards {
            std::fs::write(dir.path().join(format!("stream/{}.jsonl", shard_id(s))), "")
                .expect("shard file");
        }
        Self {
            dir,
            lease_duration,
            workers: BTreeMap::new(),
            backend: Backend::Local,
            plugin: None,
            plugin_settings: String::new(),
            sandbox: String::new(),
            failure: String::new(),
            limits: String::new(),
            metrics: None,
            retrieval: None,
            watchdog: Watchdog::arm(crate::watchdog::LIMIT),
        }
    }

    /// A cluster on a new Kinesis stream of `shards` shards (on `emulators`' Kinesis) with
    /// a new DynamoDB lease table.
    pub fn aws(emulators: &Emulators, shards: usize, lease_duration: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["archive", "logs"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let stream = emulators.create_stream(shards);
        let kinesis_endpoint = emulators.kinesis_endpoint().to_string();
        let dynamodb_endpoint = stream.dynamodb_endpoint.clone();
        Self {
            dir,
            lease_duration,
            workers: BTreeMap::new(),
            backend: Backend::Aws {
                stream,
                kinesis_endpoint,
                dynamodb_endpoint,
            },
            plugin: None,
            plugin_settings: String::new(),
            sandbox: String::new(),
            failure: String::new(),
            limits: String::new(),
            metrics: None,
            retrieval: None,
            watchdog: Watchdog::arm(crate::watchdog::LIMIT),
        }
    }

    /// Workers started from now on retrieve records this way (`"polling"`, `"fan-out"`).
    pub fn set_retrieval(&mut self, retrieval: &'static str) {
        self.retrieval = Some(retrieval);
    }

    /// Workers started from now on grant their plugin these extra `[plugin.sandbox]` lines.
    pub fn set_sandbox(&mut self, lines: &str) {
        self.sandbox = lines.to_string();
    }

    /// Workers started from now on use these `[plugin.failure]` lines (retries and the
    /// poison policy); a relative `dead_letter_dir` is under the cluster's directory.
    pub fn set_failure(&mut self, lines: &str) {
        self.failure = lines.to_string();
    }

    /// Workers started from now on use these `[plugin.limits]` lines.
    pub fn set_limits(&mut self, lines: &str) {
        self.limits = lines.to_string();
    }

    /// Workers started from now on serve `/metrics`, `/healthz` and `/readyz` on
    /// `address` (one worker at a time can use an address).
    pub fn set_metrics(&mut self, address: &str) {
        self.metrics = Some(address.to_string());
    }

    /// Workers started from now on load `path` (watched for hot swaps) with these extra
    /// `[plugin.settings]` lines.
    pub fn set_plugin(&mut self, path: &std::path::Path, settings: &str) {
        self.plugin = Some(path.to_path_buf());
        self.plugin_settings = settings.to_string();
    }

    /// Point the workers started from now on at another Kinesis endpoint (a fault proxy).
    pub fn set_kinesis_endpoint(&mut self, endpoint: &str) {
        match &mut self.backend {
            Backend::Aws {
                kinesis_endpoint, ..
            } => *kinesis_endpoint = endpoint.to_string(),
            Backend::Local => panic!("a local cluster has no Kinesis endpoint"),
        }
    }

    /// Point the workers started from now on at another DynamoDB endpoint (a fault proxy).
    pub fn set_dynamodb_endpoint(&mut self, endpoint: &str) {
        match &mut self.backend {
            Backend::Aws {
                dynamodb_endpoint, ..
            } => *dynamodb_endpoint = endpoint.to_string(),
            Backend::Local => panic!("a local cluster has no DynamoDB endpoint"),
        }
    }

    /// The Kinesis emulator's endpoint (AWS clusters only).
    pub fn stream_endpoint(&self) -> &str {
        match &self.backend {
            Backend::Aws {
                kinesis_endpoint, ..
            } => kinesis_endpoint,
            Backend::Local => panic!("a local cluster has no Kinesis endpoint"),
        }
    }

    /// The Kinesis stream (AWS clusters only).
    pub fn stream(&self) -> &AwsStream {
        match &self.backend {
            Backend::Aws { stream, .. } => stream,
            Backend::Local => panic!("a local cluster has no Kinesis stream"),
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Append `count` records with unique ids `"<shard>-<n>"` to a shard.
    pub fn produce(&self, shard: usize, from: usize, count: usize) {
        self.watchdog.step(format!("producing to shard {shard}"));
        use std::io::Write;
        if let Backend::Aws { stream, .. } = &self.backend {
            let records = (from..from + count)
                .map(|n| (format!("pk{}", n % 16), format!("{shard}-{n}")))
                .collect();
            let _ = stream.put_to_shard(&shard_id(shard), records);
            return;
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(&format!("stream/{}.jsonl", shard_id(shard))))
            .expect("open shard");
        let mut text = String::new();
        for n in from..from + count {
            text.push_str(&format!(
                "{{\"partition_key\":\"pk{}\",\"data\":\"{}-{n}\"}}\n",
                n % 16,
                shard
            ));
        }
        f.write_all(text.as_bytes()).expect("append");
    }

    /// Write the config file `worker` would be started with (extra `[consumer]` lines).
    pub fn config(&self, worker: &str, extra: &str) -> PathBuf {
        let path = self.path(&format!("{worker}.toml"));
        let text = format!(
            r#"[engine]
max_instances = 64

[consumer]
application = "test"
worker_id = "{worker}"
lease_duration = "{lease}ms"
{max_records}idle_time_between_reads = "100ms"
shard_sync_interval = "2s"
{retrieval}{extra}

{backend}

[plugin]
path = "{plugin}"

[plugin.settings]
dir = "/archive"
{plugin_settings}

[plugin.sandbox]
dirs = [{{ host = "archive", guest = "/archive", mode = "read-write" }}]
{sandbox}
{failure}
{limits}
{metrics}
"#,
            lease = self.lease_duration.as_millis(),
            plugin = self
                .plugin
                .clone()
                .unwrap_or_else(|| plugin_path("archive"))
                .display(),
            plugin_settings = self.plugin_settings,
            sandbox = self.sandbox,
            metrics = self
                .metrics
                .as_ref()
                .map(|a| format!("[metrics]\naddress = \"{a}\"\n"))
                .unwrap_or_default(),
            failure = if self.failure.is_empty() {
                String::new()
            } else {
                format!("[plugin.failure]\n{}", self.failure)
            },
            limits = if self.limits.is_empty() {
                String::new()
            } else {
                format!("[plugin.limits]\n{}", self.limits)
            },
            backend = self.backend_config(),
            retrieval = self
                .retrieval
                .map(|r| format!("retrieval = \"{r}\"\n"))
                .unwrap_or_default(),
            max_records = if extra.contains("max_records") {
                ""
            } else {
                "max_records = 100\n"
            },
        );
        std::fs::write(&path, text).expect("config");
        path
    }

    fn backend_config(&self) -> String {
        match &self.backend {
            Backend::Local => r#"[source]
kind = "local"
directory = "stream"

[leases]
kind = "sqlite"
path = "state/leases.db""#
                .to_string(),
            Backend::Aws {
                stream,
                kinesis_endpoint,
                dynamodb_endpoint,
            } => format!(
                r#"[source]
kind = "kinesis"
stream_name = "{name}"
region = "us-east-1"
endpoint = "{kinesis_endpoint}"

[leases]
kind = "dynamodb"
table = "{table}"
region = "us-east-1"
endpoint = "{dynamodb}""#,
                name = stream.name,
                table = stream.table,
                dynamodb = dynamodb_endpoint,
            ),
        }
    }

    /// Start a worker process.
    pub fn start(&mut self, worker: &str) {
        self.start_with(worker, "");
    }

    /// Start a worker with extra `[consumer]` lines.
    pub fn start_with(&mut self, worker: &str, extra: &str) {
        self.start_with_args(worker, extra, &[]);
    }

    /// Start a worker with extra `[consumer]` lines and extra `shoal` arguments (before
    /// `run`, e.g. `--log-format json`).
    pub fn start_with_args(&mut self, worker: &str, extra: &str, args: &[&str]) {
        let config = self.config(worker, extra);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("logs/{worker}.log")))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .args(["run", "--config"])
            .arg(&config)
            .env(
                "SHOAL_CACHE_DIR",
                repo_root().join("target/shoal-test-cache"),
            )
            .env("RUST_LOG", "info")
            .envs(crate::emulators::TEST_CREDENTIALS.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shoal");
        self.watchdog.add_pid(child.id());
        self.workers.insert(worker.to_string(), child);
    }

    /// SIGKILL a worker.
    pub fn kill(&mut self, worker: &str) {
        let mut child = self.workers.remove(worker).expect("worker");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// SIGSTOP a worker: the process freezes mid-whatever (a long GC pause, a VM
    /// suspended) until `resume`.
    pub fn pause(&mut self, worker: &str) {
        self.signal(worker, "-STOP");
    }

    /// SIGCONT a worker `pause` froze.
    pub fn resume(&mut self, worker: &str) {
        self.signal(worker, "-CONT");
    }

    fn signal(&mut self, worker: &str, signal: &str) {
        let pid = self.workers.get(worker).expect("worker").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {worker} ({pid}) failed");
    }

    /// SIGTERM a worker and wait for it to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, worker: &str) -> bool {
        self.watchdog.step(format!("terminating {worker}"));
        self.signal(worker, "-TERM");
        let mut child = self.workers.remove(worker).expect("worker");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "{worker} did not exit after SIGTERM\n{}",
                self.log(worker)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for a worker to exit on its own; its exit status.
    pub fn wait_exit(&mut self, worker: &str, timeout: Duration) -> std::process::ExitStatus {
        self.watchdog.step(format!("waiting for {worker} to exit"));
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.workers.get_mut(worker).expect("worker");
            if let Some(status) = child.try_wait().expect("wait") {
                self.workers.remove(worker);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{worker} still running after {timeout:?}\n{}",
                tail(&self.log(worker), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self, worker: &str) -> String {
        std::fs::read_to_string(self.path(&format!("logs/{worker}.log"))).unwrap_or_default()
    }

    /// Every archived record, per shard, in file order (batch logs skipped). The files are live: a line the
    /// guest is still writing (no newline yet) is not read; every complete line must be
    /// a whole record.
    pub fn archived(&self) -> BTreeMap<String, Vec<Archived>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(self.path("archive")).expect("archive dir") {
            let path = entry.expect("entry").path();
            let shard = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("name")
                .to_string();
            if shard.starts_with("batches-")
                || path.extension().and_then(|e| e.to_str()) != Some("jsonl")
            {
                continue; // the archive plugin's batch and shutdown logs, not records
            }
            let text = std::fs::read_to_string(&path).expect("read archive");
            let records = complete_lines(&text)
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| {
                        panic!("{}: archive line is not JSON ({e}): {l:?}", path.display())
                    });
                    let data = base64_decode(v["data_base64"].as_str().expect("data"));
                    (
                        v["sequence_number"].as_str().expect("seq").to_string(),
                        data,
                    )
                })
                .collect();
            out.insert(shard, records);
        }
        out
    }

    /// Every shard `0..shards` has archived its record `<shard>-(per_shard - 1)`.
    pub fn has_last_records(&self, shards: usize, per_shard: usize) -> bool {
        let archived = self.archived();
        (0..shards).all(|s| {
            let last = format!("{s}-{}", per_shard - 1);
            archived
                .get(&shard_id(s))
                .is_some_and(|r| r.iter().any(|(_, d)| *d == last))
        })
    }

    /// The leases as stored now (none before the first worker created them).
    pub fn leases(&self) -> Vec<Lease> {
        // Before the first worker created the table (or file) there are no leases; any
        // other failure to read them fails the test rather than passing for "none".
        let not_created = |e: &shoal::lease::LeaseError| {
            let text = e.to_string();
            text.contains("no such table") || text.contains("ResourceNotFound")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = match &self.backend {
                Backend::Local => {
                    let path = self.path("state/leases.db");
                    if !path.exists() {
                        return Vec::new();
                    }
                    let store = SqliteLeaseStore::open(&path, "test").expect("open store");
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("rt");
                    runtime.block_on(store.list())
                }
                Backend::Aws { stream, .. } => {
                    let store =
                        DynamoLeaseStore::with_client(stream.dynamodb.clone(), &stream.table);
                    stream.block_on(store.list())
                }
            };
            match listed {
                Ok(leases) => return leases,
                Err(e) if not_created(&e) => return Vec::new(),
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot list the leases: {e}"),
            }
        }
    }

    /// Leases per owner (unowned leases under "").
    pub fn owners(&self) -> BTreeMap<String, usize> {
        let mut owners = BTreeMap::new();
        for lease in self.leases() {
            *owners.entry(lease.owner.unwrap_or_default()).or_default() += 1;
        }
        owners
    }

    /// Poll `check` until it holds or `timeout` passes; returns the time it took.
    /// A worker that exits on its own fails the wait at once, with its log.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> bool,
    ) -> Duration {
        self.watchdog.step(format!("waiting for {what}"));
        let started = Instant::now();
        loop {
            if check(self) {
                return started.elapsed();
            }
            let exited = self
                .workers
                .iter_mut()
                .find_map(|(w, child)| Some((w.clone(), child.try_wait().ok()??)));
            if let Some((worker, status)) = exited {
                panic!(
                    "worker {worker} exited ({status}) while waiting for {what}:\n{}",
                    tail(&self.log(&worker), 40)
                );
            }
            if started.elapsed() > timeout {
                let logs: Vec<String> = self
                    .workers
                    .keys()
                    .map(|w| format!("--- {w}\n{}", tail(&self.log(w), 30)))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; owners {:?}\n{}",
                    self.owners(),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn shard_id(n: usize) -> String {
    format!("shardId-{n:012}")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn base64_decode(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
    )
    .expect("utf8")
}

/// Assert each shard's archive holds exactly the ids `<shard>-0 .. <shard>-(n-1)` at least
/// once, first occurrences in order; returns the number of duplicate lines.
pub fn assert_complete_in_order(
    archived: &BTreeMap<String, Vec<Archived>>,
    shards: usize,
    per_shard: usize,
) -> usize {
    let mut duplicates = 0;
    for s in 0..shards {
        let records = archived.get(&shard_id(s)).map(Vec::as_slice).unwrap_or(&[]);
        let mut seen = std::collections::HashSet::new();
        let mut first_order = Vec::new();
        for (seq, data) in records {
            if seen.insert(data.clone()) {
                first_order.push((seq.clone(), data.clone()));
            } else {
                duplicates += 1;
            }
        }
        let expected: Vec<String> = (0..per_shard).map(|n| format!("{s}-{n}")).collect();
        let got: Vec<String> = first_order.iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "shard {s}: {} distinct records archived, expected {}",
            got.len(),
            expected.len()
        );
        assert_eq!(got, expected, "shard {s}: records missing or out of order");
        // Sequence numbers of first occurrences strictly increase.
        assert!(
            first_order
                .windows(2)
                .all(|w| shoal::lease::compare_sequence_numbers(&w[0].0, &w[1].0).is_lt())
        );
    }
    duplicates
}

/// The lines of `text` that end with a newline: a live file's unterminated last line is
/// still being written.
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    text.rfind('\n').map_or("", |i| &text[..=i]).lines()
}
