//! A processor delivers a stream into a real database over a granted TCP connection, in
//! Rust (`std::net`), Python (its `socket` module) and JavaScript (`wasi:sockets`
//! directly): every record reaches Redis
//! exactly once per sequence number across a SIGKILL and restart of shoal (at-least-once
//! delivery into an idempotent sink), and a database that is down for a while stalls the
//! shards, which then drain, losing nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{Cluster, shard_id};
use crate::fixtures::plugin_path;
use crate::redis::RedisServer;

const LEASE: Duration = Duration::from_millis(2000);
/// How long the first records may take: a worker compiles the component on first use
/// (the Python ones take 15 to 30 s, more while other tests compile theirs).
const FIRST_RECORDS: Duration = Duration::from_secs(180);

/// A local cluster whose plugin is the Redis sink at `plugin`, granted exactly the
/// server's address.
fn redis_cluster(redis: &RedisServer, plugin: &Path, shards: usize) -> Cluster {
    let mut c = Cluster::local(shards, LEASE);
    c.set_plugin(plugin, &format!("address = \"{}\"", redis.address()));
    c.set_sandbox(&format!("tcp = [\"{}\"]", redis.address()));
    c
}

/// The record keys shard `s` delivered, in first-delivery order (the local source's stream
/// is named `local`).
fn delivered(redis: &RedisServer, s: usize) -> Vec<String> {
    redis.list(&format!("shoal:local:{}:delivered", shard_id(s)))
}

/// Every shard delivered exactly `0..per_shard`, once each, in order, with the right data.
fn assert_exactly_once_in_order(redis: &RedisServer, shards: usize, per_shard: usize) {
    for s in 0..shards {
        let keys = delivered(redis, s);
        assert_eq!(keys.len(), per_shard, "{}: delivered keys", shard_id(s));
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            unique.len(),
            per_shard,
            "{}: a key was delivered twice",
            shard_id(s)
        );
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(
                redis.get(key).as_deref(),
                Some(format!("{s}-{n}").as_str()),
                "{key}: record {n} of {} out of order or wrong",
                shard_id(s)
            );
        }
    }
}

fn python_redis_sink() -> PathBuf {
    crate::conformance::build_component("python", "redis-sink")
}

#[test]
fn rust_records_reach_redis_exactly_once_across_a_sigkill_and_restart() {
    exactly_once_across_a_sigkill_and_restart(&plugin_path("redis_sink"));
}

#[test]
fn python_records_reach_redis_exactly_once_across_a_sigkill_and_restart() {
    exactly_once_across_a_sigkill_and_restart(&python_redis_sink());
}

#[test]
fn javascript_records_reach_redis_exactly_once_across_a_sigkill_and_restart() {
    exactly_once_across_a_sigkill_and_restart(&crate::conformance::build_component(
        "javascript",
        "redis-sink",
    ));
}

#[test]
fn javascript_a_database_that_is_down_stalls_the_shards_then_they_drain_losing_nothing() {
    down_then_back(&crate::conformance::build_component(
        "javascript",
        "redis-sink",
    ));
}

#[test]
fn rust_a_database_that_is_down_stalls_the_shards_then_they_drain_losing_nothing() {
    down_then_back(&plugin_path("redis_sink"));
}

#[test]
fn python_a_database_that_is_down_stalls_the_shards_then_they_drain_losing_nothing() {
    down_then_back(&python_redis_sink());
}

fn exactly_once_across_a_sigkill_and_restart(plugin: &Path) {
    let redis = RedisServer::start();
    let mut c = redis_cluster(&redis, plugin, 2);
    for s in 0..2 {
        c.produce(s, 0, 500);
    }
    // Checkpoint rarely, so the kill leaves delivered but uncheckpointed batches behind.
    c.start_with("w1", "checkpoint_interval = \"1h\"");
    c.wait_for("the first records in redis", FIRST_RECORDS, |_| {
        (0..2).all(|s| delivered(&redis, s).len() >= 500)
    });
    c.kill("w1");
    for s in 0..2 {
        c.produce(s, 500, 500);
    }
    c.start("w1");
    c.wait_for("every record in redis", Duration::from_secs(120), |_| {
        (0..2).all(|s| delivered(&redis, s).len() >= 1000)
    });
    // Give re-deliveries a moment to show up as duplicates if the sink let them through.
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once_in_order(&redis, 2, 1000);
    assert!(
        c.log("w1").contains("shoal consumer starting"),
        "the restarted worker ran"
    );
}

fn down_then_back(plugin: &Path) {
    let mut redis = RedisServer::start();
    let mut c = redis_cluster(&redis, plugin, 2);
    for s in 0..2 {
        c.produce(s, 0, 200);
    }
    c.start("w1");
    c.wait_for("the first records in redis", FIRST_RECORDS, |_| {
        (0..2).all(|s| delivered(&redis, s).len() >= 200)
    });
    redis.stop();
    for s in 0..2 {
        c.produce(s, 200, 300);
    }
    c.wait_for(
        "the sink to report the refused connection",
        Duration::from_secs(30),
        |c| c.log("w1").contains("retry") && c.log("w1").contains("redis at"),
    );
    redis.restart();
    c.wait_for("every record in redis", Duration::from_secs(120), |_| {
        (0..2).all(|s| delivered(&redis, s).len() >= 500)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once_in_order(&redis, 2, 500);
}
