//! Fencing reaches the sink: a worker frozen (SIGSTOP) while its writes to Redis are
//! delayed in the network loses its lease to a peer; when the delayed writes arrive,
//! after the peer has written, the sink refuses every one of them by the lease token the
//! host gives each instance (`lease-token`). The Redis sinks in Rust, Python and
//! JavaScript, against a real Redis, with Kinesis and DynamoDB on the emulators.

use std::path::Path;
use std::time::Duration;

use crate::cluster::{Cluster, shard_id};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::fixtures::plugin_path;
use crate::holding_relay::HoldingRelay;
use crate::redis::RedisServer;

const LEASE: Duration = Duration::from_millis(3000);
/// A worker compiles the component on first use (the Python and JavaScript ones take
/// tens of seconds on a loaded 2-core machine).
const FIRST_RECORDS: Duration = Duration::from_secs(180);
/// How every write of the sinks starts on the wire: `EVAL <script> 3 ...` as RESP.
const WRITE: &[u8] = b"*9\r\n$4\r\nEVAL\r\n";

#[test]
fn rust_late_writes_from_a_paused_worker_are_refused_by_the_lease_token() {
    late_writes_are_refused(&plugin_path("redis_sink"));
}

#[test]
fn python_late_writes_from_a_paused_worker_are_refused_by_the_lease_token() {
    late_writes_are_refused(&crate::conformance::build_component("python", "redis-sink"));
}

#[test]
fn javascript_late_writes_from_a_paused_worker_are_refused_by_the_lease_token() {
    late_writes_are_refused(&crate::conformance::build_component(
        "javascript",
        "redis-sink",
    ));
}

/// Complete writes in what a client sent.
fn writes(bytes: &[u8]) -> usize {
    bytes.windows(WRITE.len()).filter(|w| *w == WRITE).count()
}

fn late_writes_are_refused(plugin: &Path) {
    let _one_at_a_time = exclusive();
    let redis = RedisServer::start();
    let relay = HoldingRelay::start(&redis.address());
    let mut c = Cluster::aws(&Emulators::new(Kinesis::Mock), 1, LEASE);
    let base = format!("shoal:{}:{}", c.stream().name, shard_id(0));
    let delivered = |redis: &RedisServer| redis.list(&format!("{base}:delivered"));
    let fence = |redis: &RedisServer, field: &str| {
        redis
            .cli(&["HGET", &format!("{base}:fence"), field])
            .unwrap_or_default()
    };
    let number = |text: String| text.parse::<u64>().unwrap_or(0);

    // Worker a reaches Redis through the relay.
    c.set_plugin(plugin, &format!("address = \"{}\"", relay.address()));
    c.set_sandbox(&format!("tcp = [\"{}\"]", relay.address()));
    c.produce(0, 0, 200);
    c.start("a");
    c.wait_for("a's first records in redis", FIRST_RECORDS, |_| {
        delivered(&redis).len() >= 200
    });
    let a_epoch = number(fence(&redis, "epoch"));
    assert!(a_epoch > 0, "a wrote without a lease epoch");
    assert_eq!(fence(&redis, "owner"), "a");

    // a's next batch is held in the network, and a freezes.
    relay.hold();
    c.produce(0, 200, 100);
    c.wait_for(
        "a's next writes held in the network",
        Duration::from_secs(60),
        |_| writes(&relay.held()) > 0,
    );
    c.pause("a");

    // b takes the lease once a's has run out, and delivers the rest.
    c.set_plugin(plugin, &format!("address = \"{}\"", redis.address()));
    c.set_sandbox(&format!("tcp = [\"{}\"]", redis.address()));
    c.start("b");
    c.wait_for("b to deliver every record", FIRST_RECORDS, |_| {
        delivered(&redis).len() >= 300
    });
    let b_epoch = number(fence(&redis, "epoch"));
    assert!(b_epoch > a_epoch, "b's epoch {b_epoch} after a's {a_epoch}");
    assert_eq!(fence(&redis, "owner"), "b");
    assert_eq!(
        fence(&redis, "refused"),
        "",
        "nothing refused before a's writes arrive"
    );

    // a's writes arrive now, after b's: every one is refused.
    let held = writes(&relay.held());
    relay.release();
    c.wait_for("a's late writes refused", Duration::from_secs(30), |_| {
        number(fence(&redis, "refused")) >= held as u64
    });
    c.resume("a");
    c.wait_for("a to see its lease lost", Duration::from_secs(30), |c| {
        c.log("a").contains("lease lost")
    });
    std::thread::sleep(Duration::from_secs(2));

    let keys = delivered(&redis);
    assert_eq!(keys.len(), 300, "delivered keys");
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            redis.get(key).as_deref(),
            Some(format!("0-{n}").as_str()),
            "{key}: record {n} out of order or wrong"
        );
    }
    assert_eq!(
        number(fence(&redis, "epoch")),
        b_epoch,
        "the fence moved back"
    );
    assert_eq!(fence(&redis, "owner"), "b");
    let refused = number(fence(&redis, "refused"));
    assert!(
        refused >= held as u64,
        "{refused} writes refused, {held} were held"
    );
    eprintln!(
        "a (epoch {a_epoch}): {held} writes held in the network, {refused} refused after b (epoch {b_epoch})"
    );
}
