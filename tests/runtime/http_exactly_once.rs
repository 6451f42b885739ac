//! Effectively once into an HTTP endpoint that stores each `Idempotency-Key` once, across
//! what a user meets: SIGKILLs mid-batch, a lease moving to a survivor and back, a slow
//! endpoint, a 503 window and a stall, while records keep arriving (so reads at the tip
//! return batches of any size, and a re-read after a crash returns them differently). With
//! `consumer.stable_batches` the batch a killed worker was delivering is delivered again
//! with the same first and last record, so its key is the same and the endpoint absorbs
//! it. Real processes, the Rust `http-sink`, Kinesis and DynamoDB on the emulators.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, shard_id};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::fixtures::plugin_path;
use crate::http_server::{HttpServer, Mode};

const SHARDS: usize = 4;
const PER_SHARD: usize = 5000;
const LEASE: Duration = Duration::from_millis(3000);
/// Records put per shard each time the test polls.
const TRICKLE: usize = 25;
/// The endpoint answers after 150 ms: a worker spends most of its time delivering, so a
/// kill finds a batch in flight, and a batch read at the tip holds what arrived meanwhile.
const SLOW: Mode = Mode::Slow(Duration::from_millis(150));

/// What an endpoint that stores each key once keeps of what reached it. A request it
/// stalled on counts as stored (it may have been, with only the answer lost), which is
/// the stricter reading.
#[derive(Debug, Default)]
struct KeyedStore {
    /// Per shard, the data of each stored record, in storage order.
    by_shard: BTreeMap<String, Vec<String>>,
    /// Requests carrying a key already stored: absorbed.
    absorbed: usize,
    /// Records stored under two different keys: what the key failed to catch.
    stored_twice: usize,
    /// Requests that were stored.
    stored_requests: usize,
}

fn keyed_store(server: &HttpServer) -> KeyedStore {
    let mut store = KeyedStore::default();
    let mut keys = HashSet::new();
    let mut positions = HashSet::new();
    for request in server.received() {
        if !((200..300).contains(&request.answered) || request.answered == 0) {
            continue;
        }
        let key = request
            .header("idempotency-key")
            .expect("every http-sink request has an Idempotency-Key")
            .to_string();
        if !keys.insert(key) {
            store.absorbed += 1;
            continue;
        }
        store.stored_requests += 1;
        for record in request.posted_records() {
            if positions.insert((record.shard_id.clone(), record.position)) {
                store
                    .by_shard
                    .entry(record.shard_id)
                    .or_default()
                    .push(record.data);
            } else {
                store.stored_twice += 1;
            }
        }
    }
    store
}

fn stored_total(server: &HttpServer) -> usize {
    keyed_store(server).by_shard.values().map(Vec::len).sum()
}

#[test]
fn with_stable_batches_an_endpoint_keyed_by_batch_stores_every_record_once_across_kills_stalls_and_lease_moves()
 {
    let _one_at_a_time = exclusive();
    let server = HttpServer::start(SLOW);
    let mut c = Cluster::aws(&Emulators::new(Kinesis::Mock), SHARDS, LEASE);
    c.set_plugin(
        &plugin_path("http_sink"),
        &format!("url = \"{}\"\ntimeout_ms = \"2000\"", server.url("/ingest")),
    );
    c.set_sandbox(&format!("http = [\"http://{}\"]", server.addr));
    let stable = "stable_batches = true";

    // Records keep arriving while the workers read: TRICKLE per shard per poll.
    let mut produced = 0;
    let mut trickle = move |c: &Cluster| {
        if produced < PER_SHARD {
            let count = TRICKLE.min(PER_SHARD - produced);
            for s in 0..SHARDS {
                c.produce(s, produced, count);
            }
            produced += count;
        }
        produced
    };
    let all = SHARDS * PER_SHARD;
    let started = Instant::now();
    c.start_with("w1", stable);
    c.start_with("w2", stable);
    c.wait_for(
        "the first records at the endpoint",
        Duration::from_secs(180),
        |c| {
            trickle(c);
            stored_total(&server) >= 1500
        },
    );

    // w1 dies mid-batch; its leases expire and move to w2.
    c.kill("w1");
    c.wait_for("w2 to hold every lease", Duration::from_secs(60), |c| {
        trickle(c);
        c.owners().get("w2") == Some(&SHARDS)
    });

    // A 503 window, then w1 comes back and takes leases over (hand-offs).
    server.set_mode(Mode::Unavailable);
    let until = Instant::now() + Duration::from_secs(3);
    c.wait_for("the 503 window", Duration::from_secs(30), |c| {
        trickle(c);
        Instant::now() >= until
    });
    server.set_mode(SLOW);
    c.start_with("w1", stable);
    c.wait_for("w1 to hold leases again", Duration::from_secs(60), |c| {
        trickle(c);
        c.owners().get("w1").is_some_and(|n| *n > 0)
    });

    // A stall: requests are read and never answered (the sink gives up after 2 s and
    // retries), then w2 dies mid-batch and comes back.
    server.set_mode(Mode::Stall);
    let until = Instant::now() + Duration::from_secs(8);
    c.wait_for("the stall", Duration::from_secs(30), |c| {
        trickle(c);
        Instant::now() >= until
    });
    server.set_mode(SLOW);
    let before_kill = stored_total(&server);
    c.wait_for(
        "more records after the stall",
        Duration::from_secs(60),
        |c| {
            trickle(c);
            stored_total(&server) >= before_kill + 1000
        },
    );
    c.kill("w2");
    c.wait_for("w1 to hold every lease", Duration::from_secs(60), |c| {
        trickle(c);
        c.owners().get("w1") == Some(&SHARDS)
    });
    c.start_with("w2", stable);

    c.wait_for(
        "every record at the endpoint",
        Duration::from_secs(300),
        |c| trickle(c) == PER_SHARD && stored_total(&server) >= all,
    );
    // Give re-deliveries a moment to show up as stored twice if any were.
    std::thread::sleep(Duration::from_secs(2));
    let store = keyed_store(&server);
    let logs = format!("{}\n{}", c.log("w1"), c.log("w2"));
    let recuts = logs.matches("cut the recorded batch again").count();
    let reshaped = logs
        .lines()
        .filter(|l| l.contains("cut the recorded batch again") && l.contains("reshaped=true"))
        .count();
    eprintln!(
        "{all} records in {:.0?}: {} requests stored, {} absorbed by key, {} records stored twice; {recuts} recorded batches cut again, {reshaped} of them reshaped",
        started.elapsed(),
        store.stored_requests,
        store.absorbed,
        store.stored_twice
    );
    assert_eq!(store.stored_twice, 0, "records stored under two keys");
    for s in 0..SHARDS {
        let expected: Vec<String> = (0..PER_SHARD).map(|n| format!("{s}-{n}")).collect();
        assert_eq!(
            store.by_shard.get(&shard_id(s)),
            Some(&expected),
            "{}: stored records, in order",
            shard_id(s)
        );
    }
    assert!(
        store.absorbed > 0,
        "no batch was delivered again, so this run proved nothing"
    );
    assert!(
        reshaped > 0,
        "no re-delivered batch had come back from the reads in another shape ({recuts} cut again), so this run proved nothing"
    );
}

/// A worker's count of successful lease-store requests of `operation`.
fn lease_writes(metrics: &str, operation: &str) -> u64 {
    let label = format!("operation=\"{operation}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("shoal_lease_store_requests_total{"))
        .filter(|l| l.contains(&label) && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Requests the endpoint answered 200.
fn answered(server: &HttpServer) -> u64 {
    server
        .received()
        .iter()
        .filter(|r| r.answered == 200)
        .count() as u64
}

/// What stable batches cost in lease writes, on DynamoDB: exactly one extent write per
/// batch, which carries the previous batch's checkpoint whenever the next batch comes
/// within a second (always, while a backlog is read at 5 reads a second); a checkpoint is
/// written on its own only when none does. Counted by the worker's own `/metrics` and the
/// endpoint's requests, one shard, one worker; the figures at the tip are printed, not
/// asserted (they depend on how records arrive).
#[test]
fn stable_batches_write_each_batch_extent_once_and_the_checkpoint_with_it_when_behind() {
    let _one_at_a_time = exclusive();
    let server = HttpServer::start(Mode::Ok);
    let mut c = Cluster::aws(&Emulators::new(Kinesis::Mock), 1, LEASE);
    c.set_plugin(
        &plugin_path("http_sink"),
        &format!("url = \"{}\"", server.url("/ingest")),
    );
    c.set_sandbox(&format!("http = [\"http://{}\"]", server.addr));
    let address = crate::operate::free_address();
    c.set_metrics(&address);
    let scrape = || {
        crate::operate::get(&address, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };

    // Behind: 2,000 records waiting, read 100 at a time.
    c.produce(0, 0, 2000);
    c.start_with("w1", "stable_batches = true");
    c.wait_for(
        "the backlog at the endpoint",
        Duration::from_secs(180),
        |_| stored_total(&server) >= 2000,
    );
    std::thread::sleep(Duration::from_millis(500));
    let (extents_behind, checkpoints_behind) = {
        let m = scrape();
        (
            lease_writes(&m, "prepare_batch"),
            lease_writes(&m, "checkpoint"),
        )
    };
    let batches_behind = answered(&server);

    // At the tip: 10 records at a time, each read as soon as it arrives.
    let mut produced = 2000;
    c.wait_for(
        "the trickle at the endpoint",
        Duration::from_secs(180),
        |c| {
            if produced < 3000 {
                c.produce(0, produced, 10);
                produced += 10;
                std::thread::sleep(Duration::from_millis(150));
            }
            produced == 3000 && stored_total(&server) >= 3000
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let m = scrape();
    let extents_tip = lease_writes(&m, "prepare_batch") - extents_behind;
    let checkpoints_tip = lease_writes(&m, "checkpoint") - checkpoints_behind;
    let batches_tip = answered(&server) - batches_behind;
    eprintln!(
        "behind: {batches_behind} batches, {extents_behind} extent writes, {checkpoints_behind} checkpoint writes; \
         at the tip: {batches_tip} batches, {extents_tip} extent writes, {checkpoints_tip} checkpoint writes"
    );
    assert!(
        batches_behind >= 20 && batches_tip >= 50,
        "too few batches to count"
    );
    assert_eq!(extents_behind, batches_behind, "one extent write per batch");
    assert_eq!(extents_tip, batches_tip, "one extent write per batch");
    assert!(
        checkpoints_behind <= 2,
        "behind, the checkpoint rides with the next extent: {checkpoints_behind} written alone for {batches_behind} batches"
    );
    assert!(
        checkpoints_tip <= batches_tip,
        "at most one checkpoint of its own per batch"
    );
}
