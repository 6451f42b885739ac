//! Outbound-HTTP benchmark (one command: `cargo bench -p shoal --bench http_sink`).
//!
//! 1. Guest vs native POSTs: the Rust `http-sink` guest (`plugins/http-sink`, built here
//!    with `cargo build --release --target wasm32-wasip2`) called through
//!    `ProcessorInstance::process` with `http://127.0.0.1:<port>` granted, against the
//!    host itself building the identical JSON document and headers and POSTing them with
//!    hyper 1 (http1 client over a tokio `TcpStream`, one connection per request, as
//!    shoal's sender in `host/src/plugin/http.rs` does). Both go to the same small
//!    HTTP/1.1 server in this process (a few `std::net` threads, keep-alive,
//!    content-length bodies, `200 ok`). Records of 100 B and 1 KiB in batches of 100 and
//!    500, ≥ 100k records per variant per round, guest and native interleaved over several
//!    rounds, medians. Reported: records/s, requests/s, CPU-seconds per 100k records of the
//!    whole process, of the server's threads alone and of the rest, guest ÷ native, and
//!    the time the host takes to build one document (the native variant without HTTP).
//! 2. The allow-list check: `EgressGrants::http_request` per call for an allowed and a
//!    refused request against 1, 10 and 100 entries (names, `*.domain`, ranges), beside the
//!    per-request time of the guest.
//!
//! `SHOAL_HTTP_SINK_ROUNDS` (default 5) sets the rounds. Prints a Markdown report.

#[path = "support/batches.rs"]
mod batches;
use batches::make_batch;

#[path = "support/guest_plugins.rs"]
mod guest_plugins;
use guest_plugins::guest_plugin;

#[allow(dead_code)]
#[path = "support/proc_stats.rs"]
mod proc_stats;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use shoal::config::{EngineSettings, LimitSettings, SandboxSettings};
use shoal::egress::{EgressGrants, HttpDecision, Scheme, parse_http};
use shoal::plugin::bindings::{Batch, FencingToken, KinesisRecord, ShardInfo};
use shoal::plugin::{CallOutcome, InstanceConfig, PluginEngine, ProcessorInstance};

/// Records per variant per round (at least).
const MIN_RECORDS: usize = 100_000;
/// Threads of the local server, each serving one connection at a time.
const SERVER_THREADS: usize = 4;
/// The path both variants post to.
const PATH: &str = "/ingest";
/// The guest's `timeout_ms` and the native client's timeouts.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Calls per allow-list measurement.
const CHECK_CALLS: u32 = 2_000_000;
const STREAM: &str = "bench";
const SHARD: &str = "shardId-000000000000";

fn rounds() -> usize {
    std::env::var("SHOAL_HTTP_SINK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(5)
}

// ---------------------------------------------------------------------------------------
// The local HTTP/1.1 server.

/// One request as the server read it (kept only while capturing).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Captured {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    capture: AtomicBool,
    captured: Mutex<Vec<Captured>>,
    /// `/proc/<pid>/task/<tid>` of each server thread.
    threads: Mutex<Vec<PathBuf>>,
}

struct LocalServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl LocalServer {
    fn start(threads: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the local server");
        let addr = listener.local_addr().expect("server address");
        let shared = Arc::new(Shared::default());
        for _ in 0..threads {
            let listener = listener.try_clone().expect("clone the listener");
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared));
        }
        while lock(&shared.threads).len() < threads {
            std::thread::sleep(Duration::from_millis(1));
        }
        Self { addr, shared }
    }

    fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// CPU seconds the server's threads have used so far.
    fn cpu_seconds(&self) -> f64 {
        lock(&self.shared.threads)
            .iter()
            .map(|t| thread_cpu_seconds(t))
            .sum()
    }

    /// The requests read while `f` runs.
    fn capture(&self, f: impl FnOnce()) -> Vec<Captured> {
        self.shared.capture.store(true, Ordering::SeqCst);
        f();
        self.shared.capture.store(false, Ordering::SeqCst);
        std::mem::take(&mut *lock(&self.shared.captured))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread's CPU seconds: `schedstat` (ns) or, without it, `stat` (clock ticks).
fn thread_cpu_seconds(task: &Path) -> f64 {
    let precise = std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(ns) = precise {
        return ns / 1e9;
    }
    std::fs::read_to_string(task.join("stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(") ")?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks / 100.0)
}

fn accept_loop(listener: &TcpListener, shared: &Shared) {
    let task = std::fs::read_link("/proc/thread-self")
        .map(|t| Path::new("/proc").join(t))
        .unwrap_or_default();
    lock(&shared.threads).push(task);
    for stream in listener.incoming().flatten() {
        serve(stream, shared);
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Keep-alive: answer every request on the connection until the client closes it.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 << 10, read_half);
    let mut writer = stream;
    let mut body = Vec::new();
    while let Some((request_line, headers)) = read_head(&mut reader) {
        let Some(length) = content_length(&headers) else {
            eprintln!("local server: a request without content-length: {request_line}");
            return;
        };
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        shared.requests.fetch_add(1, Ordering::SeqCst);
        if shared.capture.load(Ordering::SeqCst) {
            lock(&shared.captured).push(Captured {
                request_line,
                headers,
                body: body.clone(),
            });
        }
        if writer.write_all(OK).is_err() {
            return;
        }
    }
}

type Head = (String, Vec<(String, String)>);

/// The request line and headers (names lowercase); `None` at the end of the connection.
fn read_head(reader: &mut impl BufRead) -> Option<Head> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some((request_line.trim_end().to_string(), headers));
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// The body length; `None` for a chunked body, which this server does not read.
fn content_length(headers: &[(String, String)]) -> Option<usize> {
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return None;
    }
    Some(
        headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
    )
}

// ---------------------------------------------------------------------------------------
// Variant A: the guest.

fn engine(cache: &Path) -> PluginEngine {
    PluginEngine::new(&EngineSettings {
        max_instances: 8,
        pooling: true,
        cache_dir: Some(cache.to_path_buf()),
        fuel_metering: false,
        memory_bytes: 256 << 20,
    })
    .expect("engine")
}

fn shard() -> ShardInfo {
    ShardInfo {
        stream_name: STREAM.into(),
        shard_id: SHARD.into(),
    }
}

fn guest_instance(engine: &PluginEngine, wasm: &Path, server: SocketAddr) -> ProcessorInstance {
    let mut sandbox = SandboxSettings::default();
    sandbox.egress.http = vec![parse_http(&format!("http://{server}"), false).expect("grant")];
    let config = InstanceConfig {
        shard: shard(),
        sandbox,
        limits: LimitSettings {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(60),
            recycle_above_bytes: None,
            ..LimitSettings::default()
        },
        fencing: FencingToken::unleased(),
    };
    let plugin = Arc::new(engine.load_file(wasm, 1).expect("load http_sink.wasm"));
    let mut instance = ProcessorInstance::new(engine, &plugin, &config).expect("instance");
    let settings = [
        ("url".to_string(), format!("http://{server}{PATH}")),
        ("timeout_ms".to_string(), TIMEOUT.as_millis().to_string()),
    ];
    match instance.initialize(&settings) {
        CallOutcome::Ok(()) => instance,
        other => panic!("http-sink initialize failed: {other:?}"),
    }
}

fn guest_post(instance: &mut ProcessorInstance, batch: &Batch) {
    match instance.process(batch) {
        CallOutcome::Ok(_) => {}
        other => panic!("http-sink process failed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Variant B: the same POST from the host.

/// The document and idempotency key `plugins/http-sink` builds for `batch`.
fn document(shard: &ShardInfo, batch: &Batch) -> (Vec<u8>, String) {
    let position = |r: &KinesisRecord| format!("{}.{}", r.sequence_number, r.sub_sequence_number);
    let (first, last) = match (batch.records.first(), batch.records.last()) {
        (Some(f), Some(l)) => (position(f), position(l)),
        _ => panic!("an empty batch"),
    };
    let key = format!("{}/{}/{first}-{last}", shard.stream_name, shard.shard_id);
    let records: Vec<serde_json::Value> = batch
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "sequence_number": r.sequence_number,
                "sub_sequence_number": r.sub_sequence_number,
                "partition_key": r.partition_key,
                "approximate_arrival_ms": r.approximate_arrival_ms,
                "data_base64": BASE64.encode(&r.data),
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "stream": shard.stream_name,
        "shard_id": shard.shard_id,
        "first": first,
        "last": last,
        "records": records,
    }))
    .expect("encode the batch");
    (body, key)
}

fn native_post(server: SocketAddr, shard: &ShardInfo, batch: &Batch) {
    let (body, key) = document(shard, batch);
    // The runtime the guest's requests run on (wasmtime-wasi's), entered the same way.
    let status = wasmtime_wasi::runtime::in_tokio(send(server, body, key))
        .unwrap_or_else(|e| panic!("native POST failed: {e}"));
    assert!(
        (200..300).contains(&status),
        "native POST answered {status}"
    );
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: timed out"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// One POST on a new connection, as shoal's sender makes it (connect, `set_nodelay`,
/// hyper http1 handshake, request with the path only, body read whole).
async fn send(server: SocketAddr, body: Vec<u8>, key: String) -> Result<u16, String> {
    let tcp = within("connect", tokio::net::TcpStream::connect(server)).await?;
    let _ = tcp.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut sender, connection) =
        within("handshake", hyper::client::conn::http1::handshake(io)).await?;
    // Dropped when done: the connection closes once the response is read.
    tokio::spawn(connection);
    let request = http::Request::post(PATH)
        .header(http::header::HOST, server.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = within("response", sender.send_request(request)).await?;
    let status = response.status().as_u16();
    within("response body", response.into_body().collect()).await?;
    Ok(status)
}

// ---------------------------------------------------------------------------------------
// Measurement.

/// One variant's run: `posts` calls of `post`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    server_cpu: f64,
}

fn measure(server: &LocalServer, posts: usize, mut post: impl FnMut()) -> Sample {
    let pid = std::process::id();
    let cpu = || proc_stats::cpu_seconds(pid).expect("/proc/self/stat");
    let (cpu0, server0, requests0) = (cpu(), server.cpu_seconds(), server.requests());
    let start = Instant::now();
    for _ in 0..posts {
        post();
    }
    let wall = start.elapsed().as_secs_f64();
    let sample = Sample {
        wall,
        cpu: cpu() - cpu0,
        server_cpu: server.cpu_seconds() - server0,
    };
    assert_eq!(
        server.requests() - requests0,
        posts as u64,
        "every POST reached the server once"
    );
    sample
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Medians over the rounds of one variant in one cell.
#[derive(Debug, Clone, Copy)]
struct Figures {
    records_per_s: f64,
    requests_per_s: f64,
    /// CPU-s per 100k records: whole process, server threads, the rest.
    cpu: f64,
    server_cpu: f64,
    client_cpu: f64,
}

fn figures(samples: &[Sample], records: usize, requests: usize) -> Figures {
    let per_100k = 100_000.0 / records as f64;
    let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Figures {
        records_per_s: m(&|s| records as f64 / s.wall),
        requests_per_s: m(&|s| requests as f64 / s.wall),
        cpu: m(&|s| s.cpu * per_100k),
        server_cpu: m(&|s| s.server_cpu * per_100k),
        client_cpu: m(&|s| (s.cpu - s.server_cpu) * per_100k),
    }
}

/// Both variants must send the same request: same body, same headers.
fn check_identical(server: &LocalServer, guest: &mut ProcessorInstance, batch: &Batch) -> usize {
    let from_guest = server.capture(|| guest_post(guest, batch));
    let from_host = server.capture(|| native_post(server.addr, &shard(), batch));
    let (Some(g), Some(n)) = (from_guest.first(), from_host.first()) else {
        panic!("the server captured no request");
    };
    assert_eq!(g.request_line, n.request_line, "request lines differ");
    let sorted = |c: &Captured| {
        let mut h = c.headers.clone();
        h.sort();
        h
    };
    assert_eq!(sorted(g), sorted(n), "headers differ");
    assert!(g.body == n.body, "bodies differ");
    g.body.len()
}

struct Cell {
    size: usize,
    batch: usize,
    body_bytes: usize,
    guest: Figures,
    native: Figures,
    /// µs the host spends building one document (the native variant's share without HTTP).
    encode_us: f64,
}

/// Median µs per [`document`] call for `batch`, over 3 runs of `calls`.
fn encode_us(batch: &Batch, calls: usize) -> f64 {
    let shard = shard();
    let runs = (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(document(&shard, black_box(batch)));
            }
            start.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    median(runs)
}

fn run_cell(
    server: &LocalServer,
    guest: &mut ProcessorInstance,
    size: usize,
    batch_size: usize,
) -> Cell {
    let batch = make_batch(batch_size, size);
    let body_bytes = check_identical(server, guest, &batch);
    let posts = MIN_RECORDS.div_ceil(batch_size);
    let (mut g, mut n) = (Vec::new(), Vec::new());
    let shard = shard();
    for round in 0..rounds() {
        let mut guest_run = || g.push(measure(server, posts, || guest_post(guest, &batch)));
        let mut native_run = || {
            n.push(measure(server, posts, || {
                native_post(server.addr, &shard, &batch)
            }))
        };
        // Alternate which goes first.
        if round % 2 == 0 {
            guest_run();
            native_run();
        } else {
            native_run();
            guest_run();
        }
    }
    let records = posts * batch_size;
    Cell {
        size,
        batch: batch_size,
        body_bytes,
        guest: figures(&g, records, posts),
        native: figures(&n, records, posts),
        encode_us: encode_us(&batch, posts),
    }
}

fn print_cells(cells: &[Cell]) {
    println!(
        "## Guest `http-sink` vs the same POSTs from the host (hyper 1, a connection per request)\n"
    );
    println!(
        "CPU-s per 100k records: the whole process (guest or client + the local server), the server's \
         threads alone, and the rest (the variant's own cost).\n"
    );
    println!(
        "| record | batch | body | variant | records/s | requests/s | µs per request | CPU-s / 100k (process) | server | without server |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for c in cells {
        for (name, f) in [("guest", &c.guest), ("native", &c.native)] {
            println!(
                "| {} B | {} | {:.0} KiB | {name} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} |",
                c.size,
                c.batch,
                c.body_bytes as f64 / 1024.0,
                f.records_per_s,
                f.requests_per_s,
                1e6 / f.requests_per_s,
                f.cpu,
                f.server_cpu,
                f.client_cpu
            );
        }
    }
    println!();
    println!(
        "| record | batch | records/s guest ÷ native | CPU per 100k guest ÷ native (process) | (without server) | native: JSON document µs per request |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for c in cells {
        println!(
            "| {} B | {} | {:.2} | {:.2} | {:.2} | {:.0} |",
            c.size,
            c.batch,
            c.guest.records_per_s / c.native.records_per_s,
            c.guest.cpu / c.native.cpu,
            c.guest.client_cpu / c.native.client_cpu,
            c.encode_us
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// The allow-list check.

/// `entries` grants, all `http` on port 8080 (so every entry is examined): names,
/// `*.domain` wildcards and /16 ranges, then the one that grants the request.
fn grant_list(entries: usize) -> EgressGrants {
    let mut texts: Vec<String> = (0..entries.saturating_sub(1))
        .map(|i| match i % 3 {
            0 => format!("http://svc{i}.example.com:8080"),
            1 => format!("http://*.zone{i}.example.net:8080"),
            _ => format!("http://10.{i}.0.0/16:8080"),
        })
        .collect();
    texts.push("http://127.0.0.1:8080".into());
    EgressGrants {
        http: texts
            .iter()
            .map(|t| parse_http(t, false).expect("grant"))
            .collect(),
        ..EgressGrants::default()
    }
}

/// Median ns per `http_request` call over 3 runs.
fn ns_per_check(grants: &EgressGrants, host: &str) -> f64 {
    let runs = (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CHECK_CALLS {
                black_box(grants.http_request(
                    black_box(Scheme::Http),
                    black_box(host),
                    black_box(8080),
                ));
            }
            start.elapsed().as_nanos() as f64 / f64::from(CHECK_CALLS)
        })
        .collect();
    median(runs)
}

fn allow_list(guest_request_us: f64, cheapest: &str) {
    println!("## Allow-list check: `EgressGrants::http_request` per call\n");
    println!(
        "{} calls per run, median of 3 runs. Beside it: the share of the guest's cheapest request in the \
         table above ({cheapest}, {guest_request_us:.0} µs).\n",
        CHECK_CALLS
    );
    println!("| entries | request | decision | ns per call | share of a guest request |");
    println!("|---:|---|---|---:|---:|");
    for entries in [1usize, 10, 100] {
        let grants = grant_list(entries);
        for (host, expected) in [("127.0.0.1", "allowed"), ("192.0.2.7", "refused")] {
            let decision = match grants.http_request(Scheme::Http, host, 8080) {
                HttpDecision::Allowed => "allowed",
                HttpDecision::Resolve(_) => "resolve, then check the address",
                HttpDecision::Refused(_) => "refused",
            };
            assert_eq!(decision, expected, "{host} with {entries} entries");
            let ns = ns_per_check(&grants, host);
            println!(
                "| {entries} | `http://{host}:8080` | {decision} | {ns:.0} | {:.4} % |",
                ns / (guest_request_us * 1e3) * 100.0
            );
        }
    }
    println!();
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let started = Instant::now();
    let wasm = guest_plugin("http_sink");
    let cache = tempfile::tempdir().expect("cache dir");
    let engine = engine(cache.path());
    let server = LocalServer::start(SERVER_THREADS);
    let mut guest = guest_instance(&engine, &wasm, server.addr);
    println!("# shoal outbound-HTTP benchmark\n");
    println!(
        "Machine: {} cores, {}. Guest: `plugins/http-sink` ({} bytes). Server: {SERVER_THREADS} threads on {}. \
         Rounds per cell: {} (median), ≥ {MIN_RECORDS} records per variant per round.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        std::fs::metadata(&wasm).map_or(0, |m| m.len()),
        server.addr,
        rounds()
    );
    let mut cells = Vec::new();
    for size in [100usize, 1024] {
        for batch in [100usize, 500] {
            cells.push(run_cell(&server, &mut guest, size, batch));
        }
    }
    print_cells(&cells);
    let cheapest = cells
        .iter()
        .max_by(|a, b| a.guest.requests_per_s.total_cmp(&b.guest.requests_per_s))
        .expect("cells");
    allow_list(
        1e6 / cheapest.guest.requests_per_s,
        &format!("{} × {} B", cheapest.batch, cheapest.size),
    );
    println!(
        "Wall time of the benchmark: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
}
