//! A processor delivers a stream into a real HTTP endpoint over granted `wasi:http`: in
//! Rust, Python and JavaScript, every record reaches the endpoint exactly once per
//! sequence number across a SIGKILL and restart of shoal (at-least-once delivery into an
//! endpoint that stores each record once), and an endpoint that is down for a while
//! stalls the shards, which then drain, losing nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{Cluster, shard_id};
use crate::fixtures::plugin_path;
use crate::http_server::{HttpServer, Mode, PostedRecord};

const LEASE: Duration = Duration::from_millis(2000);
/// How long the first records may take: a worker compiles the component on first use
/// (the Python ones take 15 to 30 s, more while other tests compile theirs).
const FIRST_RECORDS: Duration = Duration::from_secs(180);

/// A local cluster whose plugin is the `http-sink` at `plugin`, granted exactly the
/// server's origin.
fn http_cluster(server: &HttpServer, plugin: &Path, shards: usize) -> Cluster {
    let mut c = Cluster::local(shards, LEASE);
    c.set_plugin(
        plugin,
        &format!("url = \"{}\"\ntimeout_ms = \"2000\"", server.url("/ingest")),
    );
    c.set_sandbox(&format!("http = [\"http://{}\"]", server.addr));
    c
}

/// What the endpoint stored, as an endpoint that keys records by shard and position
/// would: per shard, the data of each position in first-delivery order; and how many
/// deliveries it absorbed as repeats.
fn stored(server: &HttpServer) -> (BTreeMap<String, Vec<(String, String)>>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut by_shard: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut repeats = 0;
    for PostedRecord {
        shard_id,
        position,
        data,
    } in server.accepted_records()
    {
        if seen.insert((shard_id.clone(), position.clone())) {
            by_shard.entry(shard_id).or_default().push((position, data));
        } else {
            repeats += 1;
        }
    }
    (by_shard, repeats)
}

fn stored_count(server: &HttpServer, s: usize) -> usize {
    stored(server).0.get(&shard_id(s)).map_or(0, Vec::len)
}

/// Every shard's records `0..per_shard` were stored, once each, in order, with the
/// right data. Returns the repeats the endpoint absorbed.
fn assert_stored_once_in_order(server: &HttpServer, shards: usize, per_shard: usize) -> usize {
    let (by_shard, repeats) = stored(server);
    for s in 0..shards {
        let records = by_shard.get(&shard_id(s)).map_or(&[][..], Vec::as_slice);
        let data: Vec<&str> = records.iter().map(|(_, d)| d.as_str()).collect();
        let expected: Vec<String> = (0..per_shard).map(|n| format!("{s}-{n}")).collect();
        assert_eq!(data, expected, "{}: stored records", shard_id(s));
    }
    repeats
}

fn exactly_once_across_a_sigkill_and_restart(plugin: PathBuf) {
    let server = HttpServer::start(Mode::Ok);
    let mut c = http_cluster(&server, &plugin, 2);
    for s in 0..2 {
        c.produce(s, 0, 300);
    }
    // Checkpoint rarely, so the kill leaves delivered but uncheckpointed batches behind.
    c.start_with("w1", "checkpoint_interval = \"1h\"");
    c.wait_for("the first records at the endpoint", FIRST_RECORDS, |_| {
        (0..2).all(|s| stored_count(&server, s) >= 300)
    });
    c.kill("w1");
    for s in 0..2 {
        c.produce(s, 300, 300);
    }
    c.start("w1");
    c.wait_for(
        "every record at the endpoint",
        Duration::from_secs(120),
        |_| (0..2).all(|s| stored_count(&server, s) >= 600),
    );
    // Give re-deliveries a moment to show up as extra records if there were any.
    std::thread::sleep(Duration::from_millis(500));
    let repeats = assert_stored_once_in_order(&server, 2, 600);
    assert!(
        repeats > 0,
        "the kill left no uncheckpointed batch to deliver again, so this run proved nothing"
    );
}

#[test]
fn rust_http_sink_delivers_exactly_once_across_a_sigkill_and_restart() {
    exactly_once_across_a_sigkill_and_restart(plugin_path("http_sink"));
}

#[test]
fn python_http_sink_delivers_exactly_once_across_a_sigkill_and_restart() {
    exactly_once_across_a_sigkill_and_restart(crate::conformance::build_component(
        "python",
        "http-sink",
    ));
}

#[test]
fn javascript_http_sink_delivers_exactly_once_across_a_sigkill_and_restart() {
    exactly_once_across_a_sigkill_and_restart(crate::conformance::build_component(
        "javascript",
        "http-sink",
    ));
}

#[test]
fn an_endpoint_that_is_down_stalls_the_shards_then_they_drain_losing_nothing() {
    let mut server = HttpServer::start(Mode::Ok);
    let mut c = http_cluster(&server, &plugin_path("http_sink"), 2);
    for s in 0..2 {
        c.produce(s, 0, 200);
    }
    c.start("w1");
    c.wait_for("the first records at the endpoint", FIRST_RECORDS, |_| {
        (0..2).all(|s| stored_count(&server, s) >= 200)
    });
    server.stop();
    for s in 0..2 {
        c.produce(s, 200, 300);
    }
    c.wait_for(
        "the sink to report the refused connection",
        Duration::from_secs(30),
        |c| c.log("w1").contains("retry") && c.log("w1").contains("ConnectionRefused"),
    );
    assert_eq!(
        (0..2).map(|s| stored_count(&server, s)).sum::<usize>(),
        400,
        "nothing was stored while the endpoint was down"
    );
    server.restart();
    c.wait_for(
        "every record at the endpoint",
        Duration::from_secs(120),
        |_| (0..2).all(|s| stored_count(&server, s) >= 500),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_stored_once_in_order(&server, 2, 500);
}
