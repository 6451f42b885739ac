//! Lease safety while DynamoDB misbehaves: three `shoal run` processes share a stream
//! whose lease table is reached through the fault proxy, which answers some requests
//! late (longer than a third of the lease), never answers some, fails others with 500s
//! and throttling, and applies some writes but answers them with a 500. The `archive`
//! plugin logs every batch it writes, and every `shutdown` call in which it flushes (300
//! ms each), with the worker, shard and wall-clock start and end; the checker proves from
//! those logs that no two workers ever ran a guest call for one shard at overlapping
//! times, and from the archive that no record was lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, assert_complete_in_order};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::fault_proxy::{Fault, FaultProxy};

const SHARDS: usize = 4;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const LEASE: Duration = Duration::from_millis(3000);
const STEPS: usize = 12;
const PER_STEP: usize = 150;

/// Per 100 lease-table requests: 2 answered after 1.5 s (half the lease: longer than
/// the 1 s renewal period), 1 never answered, 2 with a 500, 2 throttled, and 3 applied
/// by DynamoDB but answered with a 500 (a renewal or checkpoint that landed while its
/// worker was told it failed).
fn dynamodb_faults(n: u64) -> Fault {
    match n % 100 {
        3 | 41 => Fault::Delay(Duration::from_millis(1500)),
        17 => Fault::Hang,
        29 | 73 => Fault::ServerError,
        55 | 88 => Fault::Throttle,
        11 | 47 | 94 => Fault::ApplyThenFail,
        _ => Fault::Forward,
    }
}

/// One batch as the guest logged it.
#[derive(Debug, Clone)]
struct BatchSpan {
    worker: String,
    start_ms: u64,
    end_ms: u64,
    first: String,
    last: String,
}

/// Every logged batch, per shard, sorted by start.
fn batch_spans(c: &Cluster) -> BTreeMap<String, Vec<BatchSpan>> {
    let mut spans: BTreeMap<String, Vec<BatchSpan>> = BTreeMap::new();
    for worker in WORKERS {
        let path = c.path(&format!("archive/batches-{worker}.jsonl"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // a worker that never processed a batch writes no log
        };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line:?}", path.display()));
            let field = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {line}"))
                    .to_string()
            };
            let number = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
            spans.entry(field("shard")).or_default().push(BatchSpan {
                worker: field("worker"),
                start_ms: number("start_ms"),
                end_ms: number("end_ms"),
                first: field("first"),
                last: field("last"),
            });
        }
    }
    for list in spans.values_mut() {
        list.sort_by_key(|s| (s.start_ms, s.end_ms));
    }
    spans
}

/// Pairs of batches of one shard by different workers whose times overlap.
fn overlaps(spans: &BTreeMap<String, Vec<BatchSpan>>) -> Vec<String> {
    let mut found = Vec::new();
    for (shard, list) in spans {
        for (i, a) in list.iter().enumerate() {
            for b in list[i + 1..].iter().take_while(|b| b.start_ms < a.end_ms) {
                if b.worker != a.worker {
                    found.push(format!(
                        "{shard}: {} [{}..{} ms, {}..{}] and {} [{}..{} ms, {}..{}]",
                        a.worker,
                        a.start_ms,
                        a.end_ms,
                        a.first,
                        a.last,
                        b.worker,
                        b.start_ms,
                        b.end_ms,
                        b.first,
                        b.last
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn the_checker_finds_an_overlap_when_there_is_one() {
    let span = |worker: &str, start_ms, end_ms| BatchSpan {
        worker: worker.into(),
        start_ms,
        end_ms,
        first: "1".into(),
        last: "2".into(),
    };
    let mut spans = BTreeMap::new();
    spans.insert(
        "s".to_string(),
        vec![span("w1", 0, 10), span("w1", 10, 20), span("w2", 20, 30)],
    );
    assert!(
        overlaps(&spans).is_empty(),
        "back to back is not an overlap"
    );
    spans.insert("s".to_string(), vec![span("w1", 0, 10), span("w2", 9, 30)]);
    assert_eq!(overlaps(&spans).len(), 1);
    spans.insert(
        "s".to_string(),
        vec![span("w1", 0, 100), span("w1", 100, 120), span("w2", 5, 6)],
    );
    let mut sorted = spans.clone();
    for list in sorted.values_mut() {
        list.sort_by_key(|s| (s.start_ms, s.end_ms));
    }
    assert_eq!(
        overlaps(&sorted).len(),
        1,
        "a batch inside another worker's"
    );
}

#[test]
fn no_two_workers_process_one_shard_at_once_while_dynamodb_is_slow_hung_and_failing() {
    let _one_at_a_time = exclusive();
    let started = Instant::now();
    let emulators = Emulators::new(Kinesis::Kinesalite);
    let mut c = Cluster::aws(&emulators, SHARDS, LEASE);
    let dynamodb = c.stream().dynamodb_endpoint.clone();
    let proxy = FaultProxy::start(
        &dynamodb,
        &[
            "UpdateItem",
            "Scan",
            "GetItem",
            "PutItem",
            "Query",
            "DeleteItem",
        ],
        dynamodb_faults,
    );
    c.set_dynamodb_endpoint(&proxy.endpoint);
    for w in WORKERS {
        c.set_plugin(
            &crate::fixtures::plugin_path("archive"),
            &format!("worker = \"{w}\"\nshutdown_sleep_ms = 300"),
        );
        c.start_with(w, "checkpoint_interval = \"500ms\"");
    }
    for step in 0..STEPS {
        for s in 0..SHARDS {
            c.produce(s, step * PER_STEP, PER_STEP);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let per_shard = STEPS * PER_STEP;
    c.wait_for("every record archived", Duration::from_secs(240), |c| {
        c.has_last_records(SHARDS, per_shard)
    });
    for w in WORKERS {
        c.terminate(w);
    }

    let duplicates = assert_complete_in_order(&c.archived(), SHARDS, per_shard);
    let spans = batch_spans(&c);
    let batches: usize = spans.values().map(Vec::len).sum();
    let workers_seen: std::collections::BTreeSet<&str> = spans
        .values()
        .flatten()
        .map(|s| s.worker.as_str())
        .collect();
    let lease_changes: usize = WORKERS
        .iter()
        .map(|w| c.log(w).matches("took lease").count())
        .sum();
    let found = overlaps(&spans);
    let shutdown_spans: usize = spans.values().flatten().filter(|s| s.first == "-").count();
    eprintln!(
        "lease faults: {} records over {SHARDS} shards, 0 lost, {duplicates} duplicates, {batches} guest calls ({shutdown_spans} of them flushing shutdowns) by {} workers, {lease_changes} lease takes, overlaps {}; dynamodb faults [{}], {:.0} s",
        SHARDS * per_shard,
        workers_seen.len(),
        found.len(),
        proxy.summary(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        proxy.counts.hung.load(std::sync::atomic::Ordering::Relaxed) > 0
            && proxy
                .counts
                .delayed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
        "the faults were injected: {}",
        proxy.summary()
    );
    assert!(
        proxy
            .counts
            .applied_then_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "writes were applied and answered with an error: {}",
        proxy.summary()
    );
    assert!(
        shutdown_spans >= SHARDS,
        "the guest flushed in shutdown at least once per shard: {shutdown_spans}"
    );
    assert!(
        batches >= SHARDS * STEPS / 2,
        "too few batches logged to prove anything: {batches}"
    );
    assert!(
        workers_seen.len() >= 2,
        "the shards were shared: {workers_seen:?}"
    );
    assert!(
        found.is_empty(),
        "two workers processed one shard at once:\n{}",
        found.join("\n")
    );
}

/// A `ResourceNotFound` alone does not end a shard: when the stream itself is deleted, the
/// listing says so and the consumer stops with a clear error and a non-zero exit, having
/// checkpointed SHARD_END nowhere.
#[test]
fn a_deleted_stream_stops_the_consumer_with_a_clear_error() {
    let _one_at_a_time = exclusive();
    let emulators = Emulators::new(Kinesis::Mock);
    let mut c = Cluster::aws(&emulators, 1, LEASE);
    c.produce(0, 0, 50);
    c.start("w1");
    c.wait_for("the records archived", Duration::from_secs(90), |c| {
        c.has_last_records(1, 50)
    });
    let stream = c.stream();
    stream
        .block_on(
            stream
                .kinesis
                .delete_stream()
                .stream_name(&stream.name)
                .send(),
        )
        .expect("delete the stream");
    let status = c.wait_exit("w1", Duration::from_secs(90));
    let log = c.log("w1");
    assert!(!status.success(), "exited {status}\n{log}");
    assert!(
        log.contains("not found") && log.contains("stopping the consumer"),
        "the reason is logged:\n{log}"
    );
    assert!(
        c.leases()
            .iter()
            .all(|l| l.checkpoint != shoal::lease::Checkpoint::ShardEnd),
        "no shard was ended by the deletion: {:?}",
        c.leases()
    );
}

/// Batches slower than the lease (4 s against 3 s) are legal: a worker joining asks for a
/// lease and must not take it while its owner is still in a batch. The owner hands the
/// lease over at its batch boundary (the asker waits `lease_duration` + the deadline
/// before stealing, and even a stolen lease is processed only once its owner must have
/// fenced itself), so the batch logs show no overlap and nothing is lost.
#[test]
fn batches_slower_than_the_lease_are_handed_over_without_overlap() {
    let _one_at_a_time = exclusive();
    const SLOW_SHARDS: usize = 2;
    let mut c = Cluster::local(SLOW_SHARDS, LEASE);
    for s in 0..SLOW_SHARDS {
        c.produce(s, 0, 40);
    }
    let settings = |w: &str| format!("worker = \"{w}\"\nsleep_ms = \"4000\"");
    c.set_plugin(&crate::fixtures::plugin_path("archive"), &settings("w1"));
    c.start_with("w1", "max_records = 10");
    c.wait_for("w1 to hold both leases", Duration::from_secs(60), |c| {
        c.owners().get("w1") == Some(&SLOW_SHARDS)
    });
    c.set_plugin(&crate::fixtures::plugin_path("archive"), &settings("w2"));
    c.start_with("w2", "max_records = 10");
    c.wait_for("a 1/1 split", Duration::from_secs(60), |c| {
        let o = c.owners();
        o.get("w1") == Some(&1) && o.get("w2") == Some(&1)
    });
    c.wait_for("every record archived", Duration::from_secs(120), |c| {
        c.has_last_records(SLOW_SHARDS, 40)
    });
    for w in ["w1", "w2"] {
        c.terminate(w);
    }
    assert_complete_in_order(&c.archived(), SLOW_SHARDS, 40);
    let spans = batch_spans(&c);
    let by_w2 = spans
        .values()
        .flatten()
        .filter(|s| s.worker == "w2")
        .count();
    assert!(by_w2 > 0, "w2 processed the lease it was handed: {spans:?}");
    let found = overlaps(&spans);
    assert!(
        found.is_empty(),
        "two workers processed one shard at once:\n{}",
        found.join("\n")
    );
}
