//! The chaos soak: three `shoal run` processes share one stream of 8 shards (kinesalite
//! behind a fault-injecting proxy, leases in a DynamoDB Local of the soak's own whose
//! data survives a restart) while a producer writes records with unique ids and the soak
//! splits and merges shards, SIGKILLs, SIGTERMs and restarts workers, traps 1 % of
//! batches, hot-swaps the plugin twice and restarts DynamoDB. The checker then proves
//! every id archived (0 lost), explains every duplicate by a worker that restarted from
//! an earlier checkpoint, checks that no checkpoint moved backwards and that order per
//! partition key held, and prints one summary line.
//!
//! Short variant: part of `tests/run.sh` (20,000 records). Long run:
//! `SHOAL_SOAK_RECORDS=200000 bash tests/soak.sh`.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal::lease::dynamo::DynamoLeaseStore;
use shoal::lease::{Checkpoint, LeaseStore, compare_sequence_numbers};

use crate::cluster::Cluster;
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::fault_proxy::{Fault, FaultProxy};
use crate::fixtures::{plugin_path, repo_root};

const SHARDS: usize = 8;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const KEYS: usize = 64;
const LEASE: Duration = Duration::from_millis(3000);
/// The cluster's `max_records`: the most an in-flight batch can hold.
const MAX_RECORDS: usize = 100;

/// A DynamoDB Local of the soak's own, persisting to a directory so a restart keeps the
/// lease table.
struct PersistentDynamo {
    port: u16,
    data: tempfile::TempDir,
    process: Option<Child>,
}

impl PersistentDynamo {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut dynamo = Self {
            port,
            data: tempfile::tempdir().expect("tempdir"),
            process: None,
        };
        dynamo.launch();
        dynamo
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let dir = std::env::var_os("SHOAL_EMULATORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/emulators"))
            .join("dynamodb-local");
        assert!(
            dir.join("DynamoDBLocal.jar").is_file(),
            "DynamoDB Local is not installed in {}: run `bash tests/emulators.sh install` (tests/run.sh does)",
            dir.display()
        );
        let child = Command::new("java")
            .current_dir(&dir)
            .args([
                "-Djava.library.path=./DynamoDBLocal_lib",
                "-jar",
                "DynamoDBLocal.jar",
                "-sharedDb",
                "-disableTelemetry",
            ])
            .arg("-dbPath")
            .arg(self.data.path())
            .args(["-port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start DynamoDB Local (java)");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "DynamoDB Local did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for PersistentDynamo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// About one Kinesis call in a hundred faulted.
fn soak_faults(n: u64) -> Fault {
    match n % 100 {
        17 => Fault::Throttle,
        53 => Fault::ServerError,
        89 => Fault::Drop,
        _ => Fault::Forward,
    }
}

/// The plugin file with an extra custom section: the same code, a new generation.
fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"shoal-soak-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

fn swap_plugin(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).expect("write plugin");
    std::fs::rename(&tmp, path).expect("swap plugin");
}

/// Checkpoints seen per shard over the run, in order, and any that moved backwards.
#[derive(Default)]
struct CheckpointHistory {
    last: HashMap<String, Checkpoint>,
    backwards: Vec<String>,
    observations: usize,
}

fn rank(c: &Checkpoint) -> u8 {
    match c {
        Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp => 0,
        Checkpoint::Sequence { .. } => 1,
        Checkpoint::ShardEnd => 2,
    }
}

fn moved_back(before: &Checkpoint, after: &Checkpoint) -> bool {
    match (before, after) {
        (
            Checkpoint::Sequence {
                sequence: a,
                sub_sequence: sa,
            },
            Checkpoint::Sequence {
                sequence: b,
                sub_sequence: sb,
            },
        ) => compare_sequence_numbers(b, a).then(sb.cmp(sa)).is_lt(),
        _ => rank(after) < rank(before),
    }
}

#[test]
fn chaos_soak() {
    let _one_at_a_time = exclusive();
    let records: usize = std::env::var("SHOAL_SOAK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let started = Instant::now();
    let mut dynamo = PersistentDynamo::start();
    let emulators = Emulators::with_dynamodb(Kinesis::Kinesalite, &dynamo.endpoint());
    let mut c = Cluster::aws(&emulators, SHARDS, LEASE);
    let proxy = FaultProxy::start(
        c.stream_endpoint(),
        &["GetRecords", "GetShardIterator", "ListShards"],
        soak_faults,
    );
    c.set_kinesis_endpoint(&proxy.endpoint);
    let plugin = c.path("archive.wasm");
    let original = std::fs::read(plugin_path("archive")).expect("archive plugin");
    std::fs::write(&plugin, &original).expect("copy plugin");
    c.set_plugin(&plugin, "trap_per_mille = \"10\"");
    // Checkpoint once a second, as a production config would: a kill then leaves
    // processed but un-checkpointed records behind, which must come back (duplicates,
    // each explained below).
    const WORKER_CONFIG: &str = "checkpoint_interval = \"1s\"";
    for w in WORKERS {
        c.start_with(w, WORKER_CONFIG);
    }

    // Watch the lease table for checkpoints moving backwards (through the DynamoDB
    // restart: failed reads are skipped).
    let history = Arc::new(Mutex::new(CheckpointHistory::default()));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (history, watching) = (Arc::clone(&history), Arc::clone(&watching));
        let (client, table) = (c.stream().dynamodb.clone(), c.stream().table.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        std::thread::spawn(move || {
            let store = DynamoLeaseStore::with_client(client, &table);
            while watching.load(Ordering::Relaxed) {
                if let Ok(Ok(leases)) = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), store.list()).await
                }) {
                    let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                    h.observations += 1;
                    for lease in leases {
                        if let Some(before) = h.last.get(&lease.key)
                            && moved_back(before, &lease.checkpoint)
                        {
                            let note = format!("{}: {before} -> {}", lease.key, lease.checkpoint);
                            h.backwards.push(note);
                        }
                        h.last.insert(lease.key.clone(), lease.checkpoint);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    // Produce in 20 steps; the chaos happens between them.
    let mut events: Vec<String> = Vec::new();
    let steps = 20;
    let per_step = records.div_ceil(steps);
    let mut produced = 0;
    let mut victim = WORKERS[0];
    for step in 0..steps {
        let batch: Vec<(String, String)> = (produced..(produced + per_step).min(records))
            .map(|n| (format!("pk{}", n % KEYS), n.to_string()))
            .collect();
        produced += batch.len();
        c.stream().put_by_key(batch);
        let stream = c.stream();
        match step {
            3 => {
                let first = stream
                    .shards()
                    .into_iter()
                    .find(|s| !s.closed)
                    .expect("an open shard");
                stream.split(&first.shard_id);
                events.push(format!("split {}", first.shard_id));
            }
            5 => {
                victim = WORKERS[fastrand::usize(..WORKERS.len())];
                c.kill(victim);
                events.push(format!("SIGKILL {victim}"));
            }
            6 => c.start_with(victim, WORKER_CONFIG),
            7 => {
                swap_plugin(&plugin, &variant(&original, "1"));
                events.push("hot swap 1".into());
            }
            9 => {
                dynamo.restart();
                events.push("DynamoDB restart".into());
            }
            11 => {
                let mut open: Vec<_> = stream.shards().into_iter().filter(|s| !s.closed).collect();
                open.sort_by_key(|s| s.starting_hash_key);
                let pair = open
                    .windows(2)
                    .find(|w| w[0].ending_hash_key + 1 == w[1].starting_hash_key)
                    .map(|w| (w[0].shard_id.clone(), w[1].shard_id.clone()))
                    .expect("two adjacent open shards");
                stream.merge(&pair.0, &pair.1);
                events.push(format!("merge {} + {}", pair.0, pair.1));
            }
            13 => {
                victim = WORKERS[fastrand::usize(..WORKERS.len())];
                c.kill(victim);
                events.push(format!("SIGKILL {victim}"));
            }
            14 => c.start_with(victim, WORKER_CONFIG),
            15 => {
                swap_plugin(&plugin, &variant(&original, "2"));
                events.push("hot swap 2".into());
            }
            17 => {
                assert!(
                    c.terminate("w1"),
                    "w1 exits cleanly on SIGTERM\n{}",
                    c.log("w1")
                );
                events.push("SIGTERM w1".into());
                c.start_with("w1", WORKER_CONFIG);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "soak: produced {records} records; events: {}",
        events.join(", ")
    );

    let timeout = Duration::from_secs(120 + records as u64 / 200);
    c.wait_for("every record archived", timeout, |c| {
        let distinct: HashSet<String> = c
            .archived()
            .values()
            .flatten()
            .map(|(_, d)| d.clone())
            .collect();
        distinct.len() == records
    });
    for w in WORKERS {
        assert!(c.terminate(w), "{w} exits cleanly\n{}", c.log(w));
    }
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.join();

    // --- The checker.
    let archived = c.archived();
    let mut seen: HashSet<usize> = HashSet::new();
    let mut lines = 0;
    for rows in archived.values() {
        for (_, d) in rows {
            seen.insert(d.parse().expect("numeric id"));
            lines += 1;
        }
    }
    let lost: Vec<usize> = (0..records).filter(|n| !seen.contains(n)).collect();
    let duplicates = lines - seen.len();

    // Each re-delivery run starts right after a checkpoint some worker started from.
    let mut starts: HashMap<String, Vec<String>> = HashMap::new();
    for w in WORKERS {
        for line in c
            .log(w)
            .lines()
            .filter(|l| l.contains("shard worker starting"))
        {
            let shard = line
                .split("shard=")
                .nth(1)
                .and_then(|r| r.split(['}', ' ']).next())
                .unwrap_or_default();
            let checkpoint = line
                .split("checkpoint=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or_default();
            starts
                .entry(shard.to_string())
                .or_default()
                .push(checkpoint.to_string());
        }
    }
    // Lease losses per shard: a worker that loses a lease stops at once without
    // checkpointing, but a guest call already running finishes (its result is never
    // checkpointed), so one in-flight batch per loss may land after the next owner's.
    let mut losses: HashMap<String, usize> = HashMap::new();
    for w in WORKERS {
        for line in c
            .log(w)
            .lines()
            .filter(|l| l.contains("shard worker stopped: lease lost"))
        {
            let shard = line
                .split("shard=")
                .nth(1)
                .and_then(|r| r.split(['}', ' ']).next())
                .unwrap_or_default();
            *losses
                .entry(shard.trim_matches('"').to_string())
                .or_default() += 1;
        }
    }
    let (mut restarts, mut in_flight) = (0, 0);
    for (shard, rows) in &archived {
        let mut distinct: Vec<&String> = rows
            .iter()
            .map(|(s, _)| s)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        distinct.sort_by(|a, b| compare_sequence_numbers(a, b));
        let predecessor: HashMap<&String, String> = distinct
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    *s,
                    if i == 0 {
                        "TRIM_HORIZON".to_string()
                    } else {
                        distinct[i - 1].clone()
                    },
                )
            })
            .collect();
        // Split the file into runs of consecutive records; a run that starts at or
        // before the furthest record already seen is a re-delivery.
        let mut runs: Vec<(&String, usize, bool)> = Vec::new(); // (first seq, length, re-delivery)
        let mut furthest: Option<&String> = None;
        let mut previous: Option<&String> = None;
        for (seq, _) in rows {
            let continuing = previous.is_some_and(|p| *p == predecessor[seq]);
            let seen_before = furthest.is_some_and(|f| compare_sequence_numbers(seq, f).is_le());
            match runs.last_mut() {
                Some(run) if continuing => run.1 += 1,
                _ => runs.push((seq, 1, seen_before)),
            }
            if !seen_before {
                furthest = Some(seq);
            }
            previous = Some(seq);
        }
        let mut losses_left = losses.get(shard).copied().unwrap_or(0);
        for (first, length, _) in runs.iter().filter(|r| r.2) {
            let from = &predecessor[first];
            if starts
                .get(shard)
                .is_some_and(|s| s.iter().any(|c| c == from))
            {
                restarts += 1;
            } else if losses_left > 0 && *length <= MAX_RECORDS {
                losses_left -= 1;
                in_flight += 1;
            } else {
                let mentions: Vec<String> = WORKERS
                    .iter()
                    .flat_map(|w| {
                        c.log(w)
                            .lines()
                            .filter(|l| l.contains(shard.as_str()))
                            .map(|l| format!("{w}: {l}"))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                panic!(
                    "{shard}: {length} records from {first} were processed again, but no worker started from checkpoint {from} \
                     and no lease loss explains an in-flight batch; starts: {:?}\n{}",
                    starts.get(shard),
                    mentions.join("\n")
                );
            }
        }
    }
    let replays = restarts + in_flight;

    // Order per partition key: increasing within each shard, parents before children.
    let shards = c.stream().shards();
    let per_key = |shard: &str, key: usize| -> Vec<usize> {
        let mut firsts = HashSet::new();
        archived
            .get(shard)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|(_, d)| d.parse::<usize>().ok())
            .filter(|n| n % KEYS == key && firsts.insert(*n))
            .collect()
    };
    let mut order_violations = Vec::new();
    for key in 0..KEYS {
        for s in &shards {
            let ns = per_key(&s.shard_id, key);
            if !ns.windows(2).all(|w| w[0] < w[1]) {
                order_violations.push(format!("pk{key} in {}", s.shard_id));
            }
            for parent in &s.parents {
                if let (Some(last), Some(first)) = (per_key(parent, key).iter().max(), ns.first())
                    && last > first
                {
                    order_violations.push(format!(
                        "pk{key}: parent {parent} n={last} after child {} n={first}",
                        s.shard_id
                    ));
                }
            }
        }
    }

    let history = history.lock().unwrap_or_else(|p| p.into_inner());
    let traps = WORKERS
        .iter()
        .map(|w| c.log(w).matches("chaos: injected trap").count())
        .sum::<usize>();
    let generations = WORKERS
        .iter()
        .map(|w| c.log(w).matches("plugin reloaded: generation").count())
        .sum::<usize>();
    let checkpoint_rewinds = history.backwards.len();
    println!(
        "soak: {records} records over {} shards ({} after resharding), {} lost, {duplicates} duplicates in {replays} re-deliveries (all explained: {restarts} restarts from a checkpoint, {in_flight} batches in flight at a lease loss), \
         checkpoints moved backwards {checkpoint_rewinds} times ({} lease-table reads), per-key order violations {}, traps {traps}, plugin reloads {generations}, \
         kinesis faults [{}], events [{}], {:.0} s",
        SHARDS,
        shards.len(),
        lost.len(),
        history.observations,
        order_violations.len(),
        proxy.summary(),
        events.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        history.observations >= 10,
        "the lease-table watch read the table only {} times: the checkpoint check proves nothing",
        history.observations
    );
    assert!(
        lost.is_empty(),
        "lost {} ids, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        history.backwards.is_empty(),
        "checkpoints moved backwards: {:?}",
        history.backwards
    );
    assert!(
        order_violations.is_empty(),
        "order violations: {order_violations:?}"
    );
}
