//! At the shutdown timeout the guest calls still running are interrupted first, and a
//! lease is released only once its calls have returned: a real `shoal run` whose guest
//! spins in `shutdown(requested)` after a slow last batch is stopped at the timeout (the
//! call ends `abandoned`, not at its own deadline), its batch checkpointed and its lease
//! released for a peer. Local source and SQLite.

use std::io::Write;
use std::time::{Duration, Instant};

use shoal::lease::Checkpoint;

use crate::cluster::{Cluster, shard_id};
use crate::fixtures::plugin_path;

#[test]
fn at_the_shutdown_timeout_a_spinning_shutdown_call_is_interrupted_then_the_lease_released() {
    let mut c = Cluster::local(1, Duration::from_millis(2000));
    c.set_plugin(&plugin_path("misbehave"), "on_shutdown = \"loop\"");
    // A batch may take 4 s, and so may `shutdown`; the whole shutdown 5 s: a 3 s batch
    // followed by a spinning `shutdown` runs into the timeout before its own deadline.
    c.set_limits("deadline = \"4s\"");
    c.produce(0, 0, 10);
    c.start_with("w1", "shutdown_timeout = \"5s\"");
    let lease = |c: &Cluster| c.leases().into_iter().find(|l| l.key == shard_id(0));
    let at = |line: u64| Checkpoint::Sequence {
        sequence: format!("{line:020}"),
        sub_sequence: 0,
    };
    c.wait_for(
        "the first records checkpointed",
        Duration::from_secs(120),
        |c| lease(c).is_some_and(|l| l.checkpoint == at(10)),
    );

    // One slow batch: a marker the guest logs, then 3 s of computing.
    let mut shard = std::fs::OpenOptions::new()
        .append(true)
        .open(c.path(&format!("stream/{}.jsonl", shard_id(0))))
        .expect("open shard");
    shard
        .write_all(
            b"{\"partition_key\":\"pk\",\"data\":\"misbehave:log:slow batch started\"}\n\
              {\"partition_key\":\"pk\",\"data\":\"misbehave:slow:3000\"}\n",
        )
        .expect("append");
    drop(shard);
    c.wait_for("the slow batch to start", Duration::from_secs(30), |c| {
        c.log("w1").contains("slow batch started")
    });

    let asked = Instant::now();
    assert!(c.terminate("w1"), "w1 exits cleanly\n{}", c.log("w1"));
    let took = asked.elapsed();
    let log = c.log("w1");
    eprintln!("SIGTERM to exit: {took:.1?}");
    assert!(log.contains("shutdown timeout reached"), "{log}");
    assert!(
        log.contains("guest trapped in shutdown: trap abandoned"),
        "the spinning shutdown call was interrupted at the timeout, not left to its deadline\n{log}"
    );
    assert!(
        !log.contains("leaving the lease to expire"),
        "the call returned, so the lease is released\n{log}"
    );
    let lease = lease(&c).expect("the lease");
    assert_eq!(lease.owner, None, "released");
    assert_eq!(
        lease.checkpoint,
        at(12),
        "the slow batch finished and was checkpointed"
    );
}
