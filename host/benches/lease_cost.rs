//! What the lease protocol costs in DynamoDB capacity units (one command: `cargo bench -p
//! shoal --bench lease_cost`), measured on DynamoDB Local, which reports
//! `ConsumedCapacity` like DynamoDB does.
//!
//! For every (shards, workers) case: a fresh lease table with one KCL 2.x-shaped lease
//! per shard (a 56-digit checkpoint, the hash-key range, no parents), then `workers`
//! [`LeaseCoordinator`]s in this process, each with its own [`DynamoLeaseStore`] and SDK
//! client, ticking the way the scheduler does (a tick, then the next one a third of the
//! lease duration after it ended) while every held lease renews itself on its own task.
//! Workers start one after another, each with `max_leases` = ceil(shards / workers), so
//! the first tick of each takes its share (the balanced target, which `max_leases` then
//! leaves unchanged: in steady state the protocol is the one `shoal run` runs). Once
//! every lease is held and the split is balanced, one tick to settle, then a window in
//! which the capacity units DynamoDB reported are read from the process's Prometheus
//! registry (`shoal_lease_capacity_units`, by operation), the lease-store calls by
//! operation and outcome, the HTTP requests by DynamoDB API (an SDK interceptor), every
//! worker's tick rate, and the CPU of DynamoDB Local and of this process; after it, one
//! consistent Scan read apart gives the exact units per scan. No records are processed,
//! so no checkpoints happen in the window: after it, up to 50 checkpoints are written to
//! measure one checkpoint's units, and the model adds them per shard per checkpoint
//! interval. A case during which DynamoDB Local was restarted (its pid changed) is run
//! again. Last, a scan probe: a table of 10,000 owned leases scanned consistently and
//! eventually consistently, to check the model where the full protocol does not fit on a
//! small machine (10,000 renewals per 3.3 s is ~3,000 writes/s).
//!
//! Every case runs twice, back to back: `before` (a consistent Scan by every worker on
//! every tick, as shoal did) and `now` (the shipped protocol: eventually consistent
//! scans, idle workers scanning every T · max(1, W / 16)).
//!
//! Prints Markdown: the measured table, the fitted cost model (checked against every
//! case), and the model at 10,000 shards × 100 workers in units per second and dollars
//! per month at DynamoDB on-demand prices, before and now, next to KCL 2.x and KCL 3.x.
//! The full default run takes about 13 minutes.
//!
//! Environment: `SHOAL_LEASE_COST_SHARDS` (default `100,1000,4000`),
//! `SHOAL_LEASE_COST_WORKERS` (default `1,4,16`), `SHOAL_LEASE_COST_EXTRA` (more
//! `NxW` cases, default `1000x64`), `SHOAL_LEASE_COST_DESIGNS` (default `before,now`),
//! `SHOAL_LEASE_COST_WINDOW_SECS`
//! (default 30, rounded to a whole number of ticks), `SHOAL_LEASE_COST_LEASE_MS`
//! (default 10000, KCL's failover time), `SHOAL_LEASE_COST_SCAN_PROBE` (leases in the
//! scan probe, default 10000, 0: none), `DYNAMODB_ENDPOINT` (default
//! `http://127.0.0.1:8000`; when unset, DynamoDB Local is started through
//! `tests/emulators.sh` if it is not answering, and stopped only if this benchmark
//! started it). With `SHOAL_EMULATORS_DIR` set, DynamoDB Local's CPU is read from that
//! folder's pid file whatever the endpoint, so a private instance can be measured:
//! `DYNAMODB_PORT=8001 SHOAL_EMULATORS_DIR=/tmp/ddb bash tests/emulators.sh start
//! dynamodb-local`, then `DYNAMODB_ENDPOINT=http://127.0.0.1:8001
//! SHOAL_EMULATORS_DIR=/tmp/ddb cargo bench -p shoal --bench lease_cost`.

#[allow(dead_code)]
#[path = "support/proc_stats.rs"]
mod proc_stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use shoal::lease::coordinator::{
    CoordinatorSettings, HeldLease, IDLE_SCANS_PER_TICK, LeaseCoordinator,
};
use shoal::lease::dynamo::DynamoLeaseStore;
use shoal::lease::metered::MeteredLeaseStore;
use shoal::lease::{Checkpoint, Lease, LeaseStore};
use shoal::telemetry::health::{Health, HealthWindows};
use shoal::telemetry::metrics::{CallLabels, KindLabel, OperationLabel, metrics};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The operation labels of `shoal_lease_capacity_units` (and of the lease-store calls).
const OPERATIONS: [&str; 10] = [
    "list",
    "get",
    "create",
    "renew",
    "take",
    "checkpoint",
    "release",
    "request_handoff",
    "set_child_shards",
    "delete",
];
/// Those whose units are read units; the others are writes.
const READS: [&str; 2] = ["list", "get"];
const OUTCOMES: [&str; 5] = ["ok", "conflict", "not_found", "error", "fatal"];

/// DynamoDB on-demand, us-east-1, since the price cut of 1 November 2024: dollars per
/// million read request units and per million write request units.
const PRICE_RRU: f64 = 0.125;
const PRICE_WRU: f64 = 0.625;
/// AWS bills a month as 730 hours.
const SECONDS_PER_MONTH: f64 = 730.0 * 3600.0;
/// shoal's default `shard_sync_interval` (±50 % jitter; every worker runs it, and each
/// run scans the lease table once, consistently).
const SHARD_SYNC_SECS: f64 = 60.0;
/// Checkpoints written in the probe after the window.
const CHECKPOINT_PROBE: usize = 50;

/// The scan schedule a case runs with: the protocol as shipped, and as it was before
/// scans became eventually consistent and idle workers began to skip them, side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    /// A consistent Scan by every worker on every tick.
    Before,
    /// What `shoal run` does: eventually consistent scans; an idle worker among W scans
    /// every T · max(1, W / 16).
    Now,
}

impl Design {
    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "before" => Some(Self::Before),
            "now" => Some(Self::Now),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::Now => "now",
        }
    }

    fn consistent_scans(self) -> bool {
        self == Self::Before
    }

    fn idle_scans_per_tick(self) -> usize {
        match self {
            Self::Before => usize::MAX,
            Self::Now => IDLE_SCANS_PER_TICK,
        }
    }

    /// Read units of one of this design's scans, per unit of a consistent one.
    fn scan_share(self, eventual: f64) -> f64 {
        if self.consistent_scans() {
            1.0
        } else {
            eventual
        }
    }

    /// Idle scan period over the tick, among `workers`.
    fn idle_ticks(self, workers: usize) -> f64 {
        (workers as f64 / self.idle_scans_per_tick() as f64).max(1.0)
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn list_env(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect::<Vec<usize>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

/// DynamoDB Local, started through `tests/emulators.sh` if it was not answering (and
/// then stopped at the end; an emulator someone else started is left alone).
struct EmulatorGuard {
    started: bool,
}

impl EmulatorGuard {
    const NAME: &'static str = "dynamodb-local";

    fn script() -> PathBuf {
        repo_root().join("tests/emulators.sh")
    }

    fn ensure() -> Self {
        let answering = Command::new("bash")
            .arg(Self::script())
            .args(["status", Self::NAME])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !answering {
            let status = Command::new("bash")
                .arg(Self::script())
                .args(["start", Self::NAME])
                .stdout(Stdio::null())
                .status()
                .expect("run tests/emulators.sh");
            assert!(
                status.success(),
                "tests/emulators.sh start dynamodb-local failed"
            );
        }
        Self {
            started: !answering,
        }
    }

    /// Its pid, when `tests/emulators.sh` started it (now or earlier).
    fn pid() -> Option<u32> {
        let dir = std::env::var_os("SHOAL_EMULATORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/emulators"));
        let pid: u32 = std::fs::read_to_string(dir.join(format!("pids/{}.pid", Self::NAME)))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        proc_stats::cpu_seconds(pid).map(|_| pid)
    }
}

impl Drop for EmulatorGuard {
    fn drop(&mut self) {
        if self.started {
            let _ = Command::new("bash")
                .arg(Self::script())
                .args(["stop", Self::NAME])
                .status();
        }
    }
}

/// HTTP requests sent, by DynamoDB API (every attempt, retries included).
#[derive(Debug, Default)]
struct ApiCounts(Mutex<BTreeMap<String, u64>>);

impl ApiCounts {
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Clone)]
struct CountRequests(Arc<ApiCounts>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let api = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_string();
        *self
            .0
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(api)
            .or_default() += 1;
        Ok(())
    }
}

/// A client of its own (its own connection pool), counting its requests into `api`.
async fn client(endpoint: &str, api: &Arc<ApiCounts>) -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "lease_cost"))
        .endpoint_url(endpoint)
        .timeout_config(shoal::aws::timeouts())
        .load()
        .await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(CountRequests(Arc::clone(api)))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A KCL 2.x-shaped lease: `shardId-%012d`, a 56-digit sequence-number checkpoint, the
/// shard's slice of the 128-bit hash-key space.
fn lease_for(i: usize, shards: usize) -> Lease {
    let mut lease = Lease::new(&format!("shardId-{i:012}"), sequence(i, 1));
    let step = u128::MAX / shards as u128;
    let start = step * i as u128;
    let end = if i + 1 == shards {
        u128::MAX
    } else {
        step * (i as u128 + 1) - 1
    };
    lease.starting_hash_key = Some(start.to_string());
    lease.ending_hash_key = Some(end.to_string());
    lease
}

/// A realistic (56-digit) sequence number.
fn sequence(shard: usize, n: usize) -> Checkpoint {
    Checkpoint::Sequence {
        sequence: format!("4959033827149025660855969253{shard:014}{n:014}"),
        sub_sequence: 0,
    }
}

/// A worker id shaped like shoal's default (`<host>-<pid>-<6 hex digits>`), with an
/// EC2-like host name so item sizes do not depend on this machine's name.
fn worker_id(i: usize) -> String {
    format!(
        "ip-10-0-{}-{}-{}-{:06x}",
        i / 250,
        i % 250 + 1,
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}

/// DynamoDB's item size: attribute names plus values (a number: about one byte per two
/// significant digits, plus one).
fn item_bytes(lease: &Lease, owner: &str) -> usize {
    let string = |name: &str, value: &str| name.len() + value.len();
    let number = |name: &str, value: u64| name.len() + value.to_string().len().div_ceil(2) + 1;
    let mut size = string("leaseKey", &lease.key)
        + string("leaseOwner", owner)
        + number("leaseCounter", 100)
        + string("checkpoint", lease.checkpoint.as_attribute())
        + number("checkpointSubSequenceNumber", 0)
        + number("ownerSwitchesSinceCheckpoint", 0);
    if let Some(h) = &lease.starting_hash_key {
        size += string("startingHashKey", h);
    }
    if let Some(h) = &lease.ending_hash_key {
        size += string("endingHashKey", h);
    }
    size
}

/// Per-worker tick statistics, written by its loop.
#[derive(Debug, Default)]
struct TickStats {
    ticks: AtomicU64,
    nanos: AtomicU64,
    max_nanos: AtomicU64,
    failures: AtomicU64,
    handoffs: AtomicU64,
}

impl TickStats {
    fn record(&self, took: Duration, ok: bool) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.ticks.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The scheduler's loop (`consumer.rs`): a tick, then the next a tick period after it
/// ended. A hand-off request is honoured at once (the shard worker would finish its
/// batch, checkpoint and release; none is processing here). The first tick has run.
async fn worker_loop(
    mut coordinator: LeaseCoordinator,
    store: Arc<dyn LeaseStore>,
    stats: Arc<TickStats>,
    stop: CancellationToken,
) {
    let tick = coordinator.settings().tick();
    let mut next = Instant::now() + tick;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let ok = coordinator.tick().await.is_ok();
        stats.record(started.elapsed(), ok);
        next = Instant::now() + tick;
        for held in coordinator.held() {
            if held.handoff().is_cancelled() && !held.is_released() {
                stats.handoffs.fetch_add(1, Ordering::Relaxed);
                let _ = held.release(store.as_ref()).await;
                coordinator.forget(held.key());
            }
        }
    }
    for held in coordinator.held() {
        held.lost().cancel();
    }
}

/// Everything counted, at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    units: BTreeMap<&'static str, f64>,
    calls: BTreeMap<(&'static str, &'static str), u64>,
    api: BTreeMap<String, u64>,
    lost: u64,
    ddb_cpu: Option<f64>,
    own_cpu: Option<f64>,
}

fn snapshot(api: &ApiCounts, ddb_pid: Option<u32>) -> Snapshot {
    let m = metrics();
    let units = OPERATIONS
        .iter()
        .map(|&operation| {
            let units = m
                .lease_capacity_units
                .get_or_create(&OperationLabel { operation })
                .get();
            (operation, units)
        })
        .collect();
    let calls = OPERATIONS
        .iter()
        .flat_map(|&operation| OUTCOMES.iter().map(move |&outcome| (operation, outcome)))
        .map(|(operation, outcome)| {
            let n = m
                .lease_store_requests
                .get_or_create(&CallLabels { operation, outcome })
                .get();
            ((operation, outcome), n)
        })
        .collect();
    let lost = ["refused", "fenced"]
        .iter()
        .map(|&kind| m.leases_lost.get_or_create(&KindLabel { kind }).get())
        .sum();
    Snapshot {
        at: Instant::now(),
        units,
        calls,
        api: api.snapshot(),
        lost,
        ddb_cpu: ddb_pid.and_then(proc_stats::cpu_seconds),
        own_cpu: proc_stats::cpu_seconds(std::process::id()),
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Default)]
struct Delta {
    secs: f64,
    units: BTreeMap<&'static str, f64>,
    calls: BTreeMap<(&'static str, &'static str), u64>,
    api: BTreeMap<String, u64>,
    lost: u64,
    ddb_cpu: Option<f64>,
    own_cpu: Option<f64>,
}

impl Delta {
    fn between(a: &Snapshot, b: &Snapshot) -> Self {
        Self {
            secs: b.at.duration_since(a.at).as_secs_f64(),
            units: b
                .units
                .iter()
                .map(|(k, v)| (*k, v - a.units.get(k).copied().unwrap_or(0.0)))
                .collect(),
            calls: b
                .calls
                .iter()
                .map(|(k, v)| (*k, v - a.calls.get(k).copied().unwrap_or(0)))
                .collect(),
            api: b
                .api
                .iter()
                .map(|(k, v)| (k.clone(), v - a.api.get(k).copied().unwrap_or(0)))
                .collect(),
            lost: b.lost - a.lost,
            ddb_cpu: b.ddb_cpu.zip(a.ddb_cpu).map(|(b, a)| b - a),
            own_cpu: b.own_cpu.zip(a.own_cpu).map(|(b, a)| b - a),
        }
    }

    fn units(&self, operation: &str) -> f64 {
        self.units.get(operation).copied().unwrap_or(0.0)
    }

    fn ok(&self, operation: &str) -> u64 {
        self.calls.get(&(operation, "ok")).copied().unwrap_or(0)
    }

    fn refused(&self, operation: &str) -> u64 {
        OUTCOMES[1..]
            .iter()
            .map(|o| self.calls.get(&(operation, *o)).copied().unwrap_or(0))
            .sum()
    }

    fn read_units(&self) -> f64 {
        READS.iter().map(|o| self.units(o)).sum()
    }

    fn write_units(&self) -> f64 {
        OPERATIONS
            .iter()
            .filter(|o| !READS.contains(o))
            .map(|o| self.units(o))
            .sum()
    }

    fn requests(&self) -> u64 {
        self.api.values().sum()
    }

    /// Units of `operation` per successful call.
    fn per_call(&self, operation: &str) -> f64 {
        let n = self.ok(operation);
        if n == 0 {
            f64::NAN
        } else {
            self.units(operation) / n as f64
        }
    }
}

/// One measured case.
#[derive(Debug)]
struct Case {
    design: Design,
    shards: usize,
    workers: usize,
    tick: Duration,
    item_bytes: usize,
    /// Seconds from the first worker's first tick until the split was balanced.
    balanced_after: Option<f64>,
    /// Fewest and most leases a worker held at the end of the window.
    spread: (usize, usize),
    /// RRU of one consistent Scan of the whole table in steady state, read apart from
    /// the window (the window's units per scan blur where multi-page scans straddle
    /// its edges).
    scan_rru: f64,
    /// RRU of one Scan as this design reads it (eventually consistent: half).
    design_scan_rru: f64,
    create: Delta,
    warm_up: Delta,
    window: Delta,
    probe: Delta,
    ticks: u64,
    tick_mean_ms: f64,
    tick_max_ms: f64,
    tick_failures: u64,
    handoffs: u64,
}

impl Case {
    fn secs(&self) -> f64 {
        self.window.secs
    }
    fn ticks_per_worker_s(&self) -> f64 {
        self.ticks as f64 / self.workers as f64 / self.secs()
    }
    /// Mean time from one tick's start to the next's, per worker.
    fn period(&self) -> f64 {
        if self.ticks == 0 {
            f64::NAN
        } else {
            self.workers as f64 * self.secs() / self.ticks as f64
        }
    }
    fn rru_per_scan(&self) -> f64 {
        self.scan_rru
    }
    fn nominal_renewals_s(&self) -> f64 {
        self.shards as f64 / self.tick.as_secs_f64()
    }
}

struct Worker {
    registry: Arc<Mutex<BTreeMap<String, Arc<HeldLease>>>>,
    store: Arc<dyn LeaseStore>,
    stats: Arc<TickStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn live(&self) -> Vec<Arc<HeldLease>> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|h| !h.lost().is_cancelled())
            .cloned()
            .collect()
    }
}

fn spread(workers: &[Worker]) -> (usize, usize, usize) {
    let counts: Vec<usize> = workers.iter().map(|w| w.live().len()).collect();
    (
        counts.iter().sum(),
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    )
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    endpoint: &str,
    design: Design,
    shards: usize,
    workers: usize,
    lease_duration: Duration,
    window: Duration,
    ddb_pid: Option<u32>,
) -> Case {
    let api = Arc::new(ApiCounts::default());
    let table = format!(
        "shoal-lease-cost-{}-{shards}x{workers}-{}-{:04x}",
        design.name(),
        std::process::id(),
        fastrand::u16(..)
    );
    let admin = DynamoLeaseStore::with_client(client(endpoint, &api).await, &table);
    admin.prepare().await.expect("create the lease table");

    let s0 = snapshot(&api, ddb_pid);
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..shards {
        if creating.len() >= 32 {
            creating.join_next().await;
        }
        let store = admin.clone();
        creating.spawn(async move {
            let lease = lease_for(i, shards);
            store
                .create_if_absent(&lease)
                .await
                .expect("create a lease");
        });
    }
    while creating.join_next().await.is_some() {}
    let s1 = snapshot(&api, ddb_pid);

    // Workers one after another: each first tick takes the worker's share.
    let target = shards.div_ceil(workers);
    let stop = CancellationToken::new();
    let health = Arc::new(Health::new(HealthWindows::for_consumer(
        lease_duration,
        Duration::from_secs(60),
    )));
    let started = Instant::now();
    // Past this, measure whatever state was reached (and say so): a store that cannot keep
    // up with N/T renewals never settles.
    let give_up = started + lease_duration * 6 + Duration::from_secs(60);
    let mut pool = Vec::with_capacity(workers);
    let mut sample_owner = String::new();
    for i in 0..workers {
        let dynamo = DynamoLeaseStore::with_client(client(endpoint, &api).await, &table)
            .with_consistent_scans(design.consistent_scans());
        let store: Arc<dyn LeaseStore> = Arc::new(MeteredLeaseStore::new(
            Arc::new(dynamo),
            Arc::clone(&health),
        ));
        let id = worker_id(i);
        if i == 0 {
            sample_owner = id.clone();
        }
        let mut settings = CoordinatorSettings::new(id, lease_duration);
        settings.max_leases = Some(target);
        settings.idle_scans_per_tick = design.idle_scans_per_tick();
        let mut coordinator = LeaseCoordinator::new(Arc::clone(&store), settings);
        let stats = Arc::new(TickStats::default());
        let tick_started = Instant::now();
        let ticked = match tokio::time::timeout_at(give_up, coordinator.tick()).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                eprintln!("lease_cost: worker {i}: first tick failed: {e}");
                false
            }
            Err(_) => {
                eprintln!("lease_cost: worker {i}: first tick still running at the deadline");
                false
            }
        };
        stats.record(tick_started.elapsed(), ticked);
        let registry = coordinator.held_registry();
        let task = tokio::spawn(worker_loop(
            coordinator,
            Arc::clone(&store),
            Arc::clone(&stats),
            stop.clone(),
        ));
        pool.push(Worker {
            registry,
            store,
            stats,
            task,
        });
    }
    let balanced_after = loop {
        let (held, least, most) = spread(&pool);
        if held == shards && most <= target {
            break Some(started.elapsed().as_secs_f64());
        }
        if Instant::now() >= give_up {
            eprintln!(
                "lease_cost: {shards}x{workers}: not balanced after {:.0} s ({held} held, {least}..{most} per worker); measuring anyway",
                started.elapsed().as_secs_f64()
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let s2 = snapshot(&api, ddb_pid);

    // One tick to settle, then the window: a whole number of idle scan periods (ticks
    // per scan, rounded up), since workers that started together scan in step and a
    // window cutting a period would catch a cluster of scans more or fewer.
    let ticks_per_scan = design.idle_ticks(workers).ceil();
    let window = (lease_duration / 3).mul_f64(
        ((window.as_secs_f64() / (lease_duration / 3).as_secs_f64()) / ticks_per_scan).ceil()
            * ticks_per_scan,
    );
    tokio::time::sleep(lease_duration / 3).await;
    for w in &pool {
        w.stats.max_nanos.store(0, Ordering::Relaxed);
    }
    let tick_counts = |pool: &[Worker]| -> (u64, u64, u64, u64) {
        pool.iter().fold((0, 0, 0, 0), |(t, n, f, h), w| {
            (
                t + w.stats.ticks.load(Ordering::Relaxed),
                n + w.stats.nanos.load(Ordering::Relaxed),
                f + w.stats.failures.load(Ordering::Relaxed),
                h + w.stats.handoffs.load(Ordering::Relaxed),
            )
        })
    };
    let (t0, n0, f0, h0) = tick_counts(&pool);
    let a = snapshot(&api, ddb_pid);
    tokio::time::sleep(window).await;
    let b = snapshot(&api, ddb_pid);
    let (t1, n1, f1, h1) = tick_counts(&pool);
    let max_nanos = pool
        .iter()
        .map(|w| w.stats.max_nanos.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let (_, least, most) = spread(&pool);
    let (scan_rru, _) = scan_units(admin.client(), &table, true).await;
    let design_scan_rru = if design.consistent_scans() {
        scan_rru
    } else {
        scan_units(admin.client(), &table, false).await.0
    };

    // Checkpoints: what one costs (none happen in the window: no records).
    let c0 = snapshot(&api, ddb_pid);
    let probe: Vec<Arc<HeldLease>> = pool[0].live().into_iter().take(CHECKPOINT_PROBE).collect();
    for (k, held) in probe.iter().enumerate() {
        let shard = held
            .key()
            .trim_start_matches("shardId-")
            .parse()
            .unwrap_or(k);
        if let Err(e) = held
            .checkpoint(pool[0].store.as_ref(), &sequence(shard, 2))
            .await
        {
            eprintln!("lease_cost: checkpoint {}: {e}", held.key());
        }
    }
    let c1 = snapshot(&api, ddb_pid);

    stop.cancel();
    for w in pool.iter_mut() {
        let _ = (&mut w.task).await;
        for held in w.live() {
            held.lost().cancel();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Err(e) = admin
        .client()
        .delete_table()
        .table_name(&table)
        .send()
        .await
    {
        eprintln!("lease_cost: cannot delete {table}: {e}");
    }

    let ticks = t1 - t0;
    Case {
        design,
        shards,
        workers,
        tick: lease_duration / 3,
        scan_rru,
        design_scan_rru,
        item_bytes: item_bytes(&lease_for(shards / 2, shards), &sample_owner),
        balanced_after,
        spread: (least, most),
        create: Delta::between(&s0, &s1),
        warm_up: Delta::between(&s1, &s2),
        window: Delta::between(&a, &b),
        probe: Delta::between(&c0, &c1),
        ticks,
        tick_mean_ms: if ticks == 0 {
            f64::NAN
        } else {
            (n1 - n0) as f64 / ticks as f64 / 1e6
        },
        tick_max_ms: max_nanos as f64 / 1e6,
        tick_failures: f1 - f0,
        handoffs: h1 - h0,
    }
}

/// One whole Scan of `table` (every page), consistent or not: the capacity units
/// DynamoDB reported, and the pages.
async fn scan_units(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    consistent: bool,
) -> (f64, usize) {
    let (mut units, mut pages) = (0.0, 0);
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(consistent)
            .set_exclusive_start_key(start.take())
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .expect("scan");
        pages += 1;
        units += out
            .consumed_capacity()
            .and_then(|c| c.capacity_units())
            .unwrap_or(0.0);
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    (units, pages)
}

/// Scans of one table of `shards` leases (each owned, as in steady state): units per
/// consistent scan through shoal's `list`, and per eventually consistent scan (the same
/// Scan without `ConsistentRead`), to check the model's s(N) and the factor ½ at the
/// extrapolated size, where the full protocol does not fit on this machine.
#[derive(Debug)]
struct ScanProbe {
    shards: usize,
    consistent: f64,
    eventual: f64,
    pages: f64,
    list_ms: f64,
}

async fn scan_probe(endpoint: &str, shards: usize) -> ScanProbe {
    const SCANS: usize = 3;
    let api = Arc::new(ApiCounts::default());
    let table = format!(
        "shoal-lease-cost-scan-{shards}-{}-{:04x}",
        std::process::id(),
        fastrand::u16(..)
    );
    // `list` through a store that scans consistently, as shoal did: the probe measures
    // both kinds of scan (the eventually consistent one below).
    let store = DynamoLeaseStore::with_client(client(endpoint, &api).await, &table)
        .with_consistent_scans(true);
    store.prepare().await.expect("create the lease table");
    let owners: Arc<Vec<String>> = Arc::new((0..100).map(worker_id).collect());
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..shards {
        if creating.len() >= 32 {
            creating.join_next().await;
        }
        let (store, owners) = (store.clone(), Arc::clone(&owners));
        creating.spawn(async move {
            let mut lease = lease_for(i, shards);
            lease.owner = Some(owners[i % owners.len()].clone());
            lease.counter = 1234;
            store
                .create_if_absent(&lease)
                .await
                .expect("create a lease");
        });
    }
    while creating.join_next().await.is_some() {}

    let units = || {
        metrics()
            .lease_capacity_units
            .get_or_create(&OperationLabel { operation: "list" })
            .get()
    };
    let before = units();
    let started = Instant::now();
    for _ in 0..SCANS {
        let leases = store.list().await.expect("scan");
        assert_eq!(leases.len(), shards);
    }
    let list_ms = started.elapsed().as_secs_f64() * 1e3 / SCANS as f64;
    let consistent = (units() - before) / SCANS as f64;

    let (mut eventual, mut pages) = (0.0, 0usize);
    for _ in 0..SCANS {
        let (units, n) = scan_units(store.client(), &table, false).await;
        eventual += units;
        pages += n;
    }
    if let Err(e) = store
        .client()
        .delete_table()
        .table_name(&table)
        .send()
        .await
    {
        eprintln!("lease_cost: cannot delete {table}: {e}");
    }
    ScanProbe {
        shards,
        consistent,
        eventual: eventual / SCANS as f64,
        pages: pages as f64 / SCANS as f64,
        list_ms,
    }
}

/// Least squares through the origin, `y = b x`.
fn fit(points: &[(f64, f64)]) -> f64 {
    let (sxy, sxx) = points
        .iter()
        .fold((0.0, 0.0), |(sxy, sxx), (x, y)| (sxy + x * y, sxx + x * x));
    if sxx == 0.0 { f64::NAN } else { sxy / sxx }
}

fn dollars(rru_s: f64, wru_s: f64) -> f64 {
    (rru_s * PRICE_RRU + wru_s * PRICE_WRU) * SECONDS_PER_MONTH / 1e6
}

fn pct(part: Option<f64>, secs: f64) -> String {
    part.map_or_else(|| "–".into(), |p| format!("{:.0} %", 100.0 * p / secs))
}

fn report(cases: &[Case], probe: Option<&ScanProbe>, lease: Duration, window: Duration) -> String {
    let mut out = String::new();
    let t = lease.as_secs_f64() / 3.0;
    let w = |out: &mut String, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(
        &mut out,
        format!(
            "## Lease table cost: DynamoDB units by operation (DynamoDB Local, lease duration {:.0} s, tick {:.2} s, window {:.1} s, lengthened to whole idle scan periods where they are longer than a tick)\n",
            lease.as_secs_f64(),
            t,
            window.as_secs_f64()
        ),
    );
    w(
        &mut out,
        "Measured in steady state (every lease held, split balanced; no records, so no checkpoints). \
         Units are DynamoDB's `ConsumedCapacity` as summed in `shoal_lease_capacity_units`; a Scan \
         request is one page. Nominal: ticks 1/T per worker, renewals N/T.\n"
            .into(),
    );
    w(
        &mut out,
        "| design | shards N | workers W | ticks/s per worker (nominal) | tick ms mean / max | Scan req/s | RRU per scan | scan RRU/s | renewals/s (nominal) | renew WRU/s | other units/s | **RRU/s** | **WRU/s** | requests/s | DDB Local CPU | bench CPU | lost / failed ticks / hand-offs |".into(),
    );
    w(
        &mut out,
        "|---|---:|---:|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|".into(),
    );
    for c in cases {
        let d = &c.window;
        let s = d.secs;
        let other = d.read_units() + d.write_units() - d.units("list") - d.units("renew");
        w(
            &mut out,
            format!(
                "| {} | {} | {} | {:.3} ({:.3}) | {:.0} / {:.0} | {:.2} | {:.1} | {:.1} | {:.0} ({:.0}) | {:.1} | {:.2} | **{:.1}** | **{:.1}** | {:.0} | {} | {} | {} / {} / {} |",
                c.design.name(),
                c.shards,
                c.workers,
                c.ticks_per_worker_s(),
                1.0 / t,
                c.tick_mean_ms,
                c.tick_max_ms,
                d.api.get("Scan").copied().unwrap_or(0) as f64 / s,
                c.design_scan_rru,
                d.units("list") / s,
                d.ok("renew") as f64 / s,
                c.nominal_renewals_s(),
                d.units("renew") / s,
                other / s,
                d.read_units() / s,
                d.write_units() / s,
                d.requests() as f64 / s,
                pct(d.ddb_cpu, s),
                pct(d.own_cpu, s),
                d.lost,
                c.tick_failures,
                c.handoffs,
            ),
        );
    }

    w(&mut out, "\nSetup and one-off costs, per case:\n".into());
    w(
        &mut out,
        "| design | N | W | item bytes (est.) | WRU per create | balanced after s | spread at end (min..max) | takes (refused) | WRU per take | WRU per checkpoint (n) |".into(),
    );
    w(
        &mut out,
        "|---|---:|---:|---:|---:|---:|---|---|---:|---|".into(),
    );
    for c in cases {
        w(
            &mut out,
            format!(
                "| {} | {} | {} | {} | {:.2} | {} | {}..{} | {} ({}) | {:.2} | {:.2} ({}) |",
                c.design.name(),
                c.shards,
                c.workers,
                c.item_bytes,
                c.create.units("create") / c.shards as f64,
                c.balanced_after
                    .map_or_else(|| "not balanced".into(), |b| format!("{b:.1}")),
                c.spread.0,
                c.spread.1,
                c.warm_up.ok("take"),
                c.warm_up.refused("take"),
                c.warm_up.per_call("take"),
                c.probe.per_call("checkpoint"),
                c.probe.ok("checkpoint"),
            ),
        );
    }

    // The model.
    let scans: Vec<(f64, f64)> = cases
        .iter()
        .filter(|c| c.rru_per_scan().is_finite())
        .map(|c| (c.shards as f64, c.rru_per_scan()))
        .collect();
    // A scan reads every item: the units are the table's bytes over 4 KB, rounded up
    // (per 1 MB page, which adds under one unit per page).
    let b = fit(&scans);
    let scan = |n: f64| (b * n).ceil();
    let renew_wru = {
        let (u, n) = cases.iter().fold((0.0, 0u64), |(u, n), c| {
            (u + c.window.units("renew"), n + c.window.ok("renew"))
        });
        if n == 0 { f64::NAN } else { u / n as f64 }
    };
    let checkpoint_wru = {
        let (u, n) = cases.iter().fold((0.0, 0u64), |(u, n), c| {
            (
                u + c.probe.units("checkpoint"),
                n + c.probe.ok("checkpoint"),
            )
        });
        if n == 0 { f64::NAN } else { u / n as f64 }
    };
    w(&mut out, "\n### Fitted model\n".into());
    w(
        &mut out,
        format!(
            "- RRU per consistent scan of N leases: s(N) = ⌈{b:.5} · N⌉ (least squares over the cases: {:.0} bytes per lease item ÷ 4 KB; pages of 1 MB, about {:.0} leases each)\n\
             - WRU per renewal: {renew_wru:.2}; per checkpoint: {checkpoint_wru:.2}; per take: 1 (a refused conditional write is billed too, 1 WRU, plus 1 RRU for shoal's re-read; the counter misses the refused write, its error carries no ConsumedCapacity)\n\
             - before: RRU/s = W · s(N) / P, with P the tick period (T = L/3 = {t:.2} s plus the tick's own duration: the scheduler waits T after a tick ends)\n\
             - now: RRU/s = W · e · s(N) / P_idle, e the eventually consistent share (½), P_idle = P · ⌈max(1, W / {IDLE_SCANS_PER_TICK}) · T / P⌉: the first tick at least T · max(1, W / {IDLE_SCANS_PER_TICK}) after the last scan; up to {IDLE_SCANS_PER_TICK} workers that is every tick, and a larger fleet's scans add up to about {IDLE_SCANS_PER_TICK} per T\n\
             - WRU/s = N · {renew_wru:.2} / T + N · {checkpoint_wru:.2} · c, with c the checkpoints per shard per second\n\
             - not exercised here (no Kinesis): every worker's shard sync, one more scan per {SHARD_SYNC_SECS:.0} s: + W · s(N) / {SHARD_SYNC_SECS:.0} (× e now)",
            b * 4096.0,
            1_048_576.0 / (b * 4096.0),
        ),
    );
    let mut ec = 0.5;
    if let Some(p) = probe {
        let fitted = scan(p.shards as f64);
        w(
            &mut out,
            format!(
                "- checked at N = {}: a consistent scan measured {:.1} RRU (s(N) predicts {fitted:.1}, {:+.1} %), in {:.1} pages and {:.0} ms on DynamoDB Local; the same Scan eventually consistent: {:.1} RRU ({:.3} of it)",
                p.shards,
                p.consistent,
                100.0 * (p.consistent - fitted) / fitted,
                p.pages,
                p.list_ms,
                p.eventual,
                p.eventual / p.consistent,
            ),
        );
        if p.consistent > 0.0 && p.eventual > 0.0 {
            ec = p.eventual / p.consistent;
        }
    }
    w(
        &mut out,
        "\nModel against the measurement (P measured per case):\n".into(),
    );
    w(
        &mut out,
        "| design | N | W | RRU/s measured | model | error | WRU/s measured | N/T | error |".into(),
    );
    w(
        &mut out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|".into(),
    );
    for c in cases {
        let s = c.window.secs;
        let (rm, wm) = (c.window.read_units() / s, c.window.write_units() / s);
        let p = c.period();
        let scan_period = p * (c.design.idle_ticks(c.workers) * t / p).ceil().max(1.0);
        let rp = c.workers as f64 * c.design.scan_share(ec) * scan(c.shards as f64) / scan_period;
        let wp = c.shards as f64 * renew_wru / t;
        w(
            &mut out,
            format!(
                "| {} | {} | {} | {rm:.1} | {rp:.1} | {:+.1} % | {wm:.1} | {wp:.1} | {:+.1} % |",
                c.design.name(),
                c.shards,
                c.workers,
                100.0 * (rm - rp) / rp,
                100.0 * (wm - wp) / wp
            ),
        );
    }

    // Extrapolation.
    let (n, workers) = (10_000.0_f64, 100.0_f64);
    let s = scan(n);
    let idle = Design::Now.idle_ticks(workers as usize) * t;
    w(
        &mut out,
        format!(
            "\n### 10,000 shards × 100 workers (model; nominal T = {t:.2} s; on-demand us-east-1 since 2024-11-01: ${PRICE_RRU} per million RRU, ${PRICE_WRU} per million WRU; month = 730 h)\n\n\
             s(10,000) = {s:.0} RRU per consistent scan ({:.0} KB read per scan); e = {ec:.3}; an idle worker among 100 scans every {idle:.1} s.\n",
            b * n * 4.0
        ),
    );
    w(
        &mut out,
        "| term | before: formula | RRU/s | WRU/s | $/month | now: formula | RRU/s | WRU/s | $/month |".into(),
    );
    w(
        &mut out,
        "|---|---|---:|---:|---:|---|---:|---:|---:|".into(),
    );
    let row = |out: &mut String, name: &str, before: (&str, f64, f64), now: (&str, f64, f64)| {
        w(
            out,
            format!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
                before.0,
                before.1,
                before.2,
                dollars(before.1, before.2),
                now.0,
                now.1,
                now.2,
                dollars(now.1, now.2)
            ),
        );
    };
    let tick_scans = workers * s / t;
    let sync_scans = workers * s / SHARD_SYNC_SECS;
    let idle_scans = workers * ec * s / idle;
    let renewals = n * renew_wru / t;
    row(
        &mut out,
        "tick scans",
        ("W · s(N) / T", tick_scans, 0.0),
        ("W · e · s(N) / (T · W/16)", idle_scans, 0.0),
    );
    row(
        &mut out,
        "shard-sync scans",
        ("W · s(N) / 60 s", sync_scans, 0.0),
        ("W · e · s(N) / 60 s", ec * sync_scans, 0.0),
    );
    row(
        &mut out,
        "renewals",
        ("N / T", 0.0, renewals),
        ("N / T", 0.0, renewals),
    );
    row(
        &mut out,
        "**lease protocol**",
        ("", tick_scans + sync_scans, renewals),
        ("", idle_scans + ec * sync_scans, renewals),
    );
    for (label, per_s) in [
        ("checkpoints, 1 per shard per minute", 1.0 / 60.0),
        ("checkpoints, 1 per shard per second", 1.0),
        (
            "checkpoints, every batch at the polling cap (5 per shard per second)",
            5.0,
        ),
    ] {
        let wru = n * checkpoint_wru * per_s;
        row(&mut out, label, ("N · c", 0.0, wru), ("N · c", 0.0, wru));
    }

    // Per shard: renewals cost the same whatever W; tick scans, per shard, cost per
    // worker up to 16 workers and then stay flat; shard-sync scans cost per worker.
    let per_shard_renewal = dollars(0.0, renew_wru / t);
    let per_shard_tick_scans = dollars(ec * b / t, 0.0);
    let per_shard_sync_scans = dollars(ec * b / SHARD_SYNC_SECS, 0.0);
    w(
        &mut out,
        format!(
            "\nNow, per shard and month: renewals ${per_shard_renewal:.3} (whatever W); tick scans ${per_shard_tick_scans:.4} × min(W, {IDLE_SCANS_PER_TICK}); shard-sync scans ${per_shard_sync_scans:.5} × W. \
             The scans cost more than the renewals from W = {:.0} workers on, at any N (before: from W = {:.0}).",
            ((per_shard_renewal - IDLE_SCANS_PER_TICK as f64 * per_shard_tick_scans)
                / per_shard_sync_scans)
                .max(0.0),
            per_shard_renewal / dollars(b * (1.0 / t + 1.0 / SHARD_SYNC_SECS), 0.0),
        ),
    );
    w(&mut out, "\nThe same 10,000 × 100 under other designs (lease protocol only, checkpoints excluded):\n".into());
    w(&mut out, "| design | RRU/s | WRU/s | $/month |".into());
    w(&mut out, "|---|---:|---:|---:|".into());
    let design = |out: &mut String, name: &str, r: f64, wr: f64| {
        w(
            out,
            format!("| {name} | {r:.0} | {wr:.0} | {:.0} |", dollars(r, wr)),
        );
    };
    let kcl_t = lease.as_secs_f64() / 3.0 - 0.025;
    let kcl_taker = 2.0 * (lease.as_secs_f64() + 0.025);
    design(
        &mut out,
        "shoal before: a consistent scan per worker per tick",
        tick_scans + sync_scans,
        renewals,
    );
    design(
        &mut out,
        "**shoal now**: eventually consistent scans; idle workers scan every T · max(1, W/16); hand-off requests read from each renewal's returned item",
        idle_scans + ec * sync_scans,
        renewals,
    );
    design(
        &mut out,
        "KCL 2.x: eventually consistent scan per worker every 2·(L+25 ms) = 20.05 s; renewals every L/3 − 25 ms",
        workers * s / 2.0 / kcl_taker,
        n * renew_wru / kcl_t,
    );
    // KCL 3.x: the leader scans (eventually consistent) every 2 L; each worker queries
    // its own keys on the KEYS_ONLY owner index every L − 25 ms (~70 bytes per key).
    let query = |keys: f64| ((keys * 70.0 / 4096.0).ceil() * 0.5).max(0.5);
    design(
        &mut out,
        "KCL 3.x: leader scan (EC) every 2 L, per-worker GSI query every ~L, renewals every L/3",
        s / 2.0 / (2.0 * lease.as_secs_f64())
            + workers * query(n / workers) / (lease.as_secs_f64() - 0.025),
        n * renew_wru / kcl_t + workers / 30.0,
    );
    design(
        &mut out,
        "not built: now + the shard sync reuses the coordinator's last scan",
        idle_scans,
        renewals,
    );
    design(
        &mut out,
        "now, lease duration 30 s (renewals and scans 3× rarer, failover ~3× slower)",
        (idle_scans + ec * sync_scans) / 3.0,
        renewals / 3.0,
    );
    design(
        &mut out,
        "not built: now + one heartbeat item per worker renewed every T instead of every lease (W/T writes; not KCL-compatible: a KCL worker would see the leases expire)",
        idle_scans + ec * sync_scans,
        workers / t,
    );
    out
}

fn main() {
    let shards = list_env("SHOAL_LEASE_COST_SHARDS", &[100, 1000, 4000]);
    let workers = list_env("SHOAL_LEASE_COST_WORKERS", &[1, 4, 16]);
    // Past 16 workers idle scans thin out: one larger fleet, where its store keeps up.
    let extra: Vec<(usize, usize)> = std::env::var("SHOAL_LEASE_COST_EXTRA")
        .unwrap_or_else(|_| "1000x64".into())
        .split(',')
        .filter_map(|c| {
            let (n, w) = c.trim().split_once('x')?;
            Some((n.parse().ok()?, w.parse().ok()?))
        })
        .collect();
    let designs: Vec<Design> = std::env::var("SHOAL_LEASE_COST_DESIGNS")
        .unwrap_or_else(|_| "before,now".into())
        .split(',')
        .map(|d| Design::parse(d).unwrap_or_else(|| panic!("unknown design {d:?}: before or now")))
        .collect();
    let lease = Duration::from_millis(env_or("SHOAL_LEASE_COST_LEASE_MS", 10_000).max(1_000));
    // A whole number of ticks: each held lease then renews the same number of times in
    // the window, wherever its renewals fall.
    let ticks = (env_or("SHOAL_LEASE_COST_WINDOW_SECS", 30) as f64 / (lease / 3).as_secs_f64())
        .round()
        .max(1.0);
    let window = (lease / 3).mul_f64(ticks);
    let (endpoint, _guard) = match std::env::var("DYNAMODB_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    {
        Some(e) => (e, None),
        None => (
            "http://127.0.0.1:8000".to_string(),
            Some(EmulatorGuard::ensure()),
        ),
    };
    // DynamoDB Local's CPU is read from the pid file of `tests/emulators.sh`: the default
    // endpoint, or another one started with its own `SHOAL_EMULATORS_DIR`.
    let measure_ddb = _guard.is_some() || std::env::var_os("SHOAL_EMULATORS_DIR").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = std::time::Instant::now();
    let mut cases = Vec::new();
    let grid = shards
        .iter()
        .flat_map(|&n| workers.iter().map(move |&w| (n, w)))
        .chain(extra);
    for (n, w) in grid {
        // Both designs back to back on each case, so the comparison shares conditions.
        for &design in &designs {
            eprintln!(
                "lease_cost: {} — {n} shards × {w} workers (at {:.0} s)",
                design.name(),
                started.elapsed().as_secs_f64()
            );
            // A shared emulator may be restarted by someone else mid-case: measure again.
            let mut attempt = 1;
            let case = loop {
                let pid = if measure_ddb {
                    EmulatorGuard::pid()
                } else {
                    None
                };
                let case = runtime.block_on(run_case(&endpoint, design, n, w, lease, window, pid));
                let restarted =
                    pid.is_some() && (case.window.ddb_cpu.is_none() || EmulatorGuard::pid() != pid);
                if !restarted || attempt == 3 {
                    break case;
                }
                eprintln!("lease_cost:   DynamoDB Local was restarted during the case: again");
                attempt += 1;
            };
            eprintln!(
                "lease_cost:   {:.1} RRU/s, {:.1} WRU/s, {:.3} ticks/s per worker, {:.0} ms per tick",
                case.window.read_units() / case.window.secs,
                case.window.write_units() / case.window.secs,
                case.ticks_per_worker_s(),
                case.tick_mean_ms
            );
            cases.push(case);
        }
    }
    let probe_shards = env_or("SHOAL_LEASE_COST_SCAN_PROBE", 10_000) as usize;
    let probe = (probe_shards > 0).then(|| {
        eprintln!("lease_cost: scan probe, {probe_shards} leases");
        runtime.block_on(scan_probe(&endpoint, probe_shards))
    });
    print!("{}", report(&cases, probe.as_ref(), lease, window));
    println!(
        "\n_Total run: {:.0} s; cores: {}._",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
