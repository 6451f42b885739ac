//! The end of a shard is checkpointed only once the processor's `shutdown(shard-end)`
//! succeeded, and a failure there follows the poison policy: the records the processor
//! had not acknowledged are delivered again, then (`dead-letter`) written to the
//! dead-letter directory before `SHARD_END`, or (`block`) delivered again until it
//! succeeds, the children waiting. Real `shoal run` processes on the local source.

use std::time::Duration;

use shoal::lease::Checkpoint;

use crate::cluster::{Cluster, complete_lines, shard_id};
use crate::fixtures::plugin_path;

const LEASE: Duration = Duration::from_millis(2000);

/// A parent shard of 150 records, closed, whose last batch (records 100–149, with
/// `max_records` 100) the archive answers `none`, and whose `shutdown(shard-end)` traps;
/// a child shard of 20 records. Retries and the poison policy as `failure` says.
fn closed_parent_with_a_failing_shard_end(failure: &str) -> Cluster {
    let mut cluster = Cluster::local(2, LEASE);
    std::fs::write(
        cluster.path(&format!("stream/{}.parents", shard_id(1))),
        format!("{}\n", shard_id(0)),
    )
    .expect("parents");
    cluster.produce(0, 0, 150);
    cluster.produce(1, 0, 20);
    std::fs::write(cluster.path(&format!("stream/{}.closed", shard_id(0))), "").expect("close");
    cluster.set_plugin(
        &plugin_path("archive"),
        "none_record = \"0-149\"\ntrap_at_shard_end = true\n",
    );
    cluster.set_failure(failure);
    cluster
}

/// How often the archive holds `data` for `shard`.
fn times_archived(cluster: &Cluster, shard: usize, data: &str) -> usize {
    cluster
        .archived()
        .get(&shard_id(shard))
        .map_or(0, |records| {
            records.iter().filter(|(_, d)| d == data).count()
        })
}

fn parent_checkpoint(cluster: &Cluster) -> Checkpoint {
    cluster
        .leases()
        .into_iter()
        .find(|l| l.key == shard_id(0))
        .expect("the parent's lease")
        .checkpoint
}

#[test]
fn a_failing_shard_end_is_dead_lettered_then_ended_and_the_children_start() {
    let mut cluster = closed_parent_with_a_failing_shard_end(
        "max_attempts = 2\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"\npoison = \"dead-letter\"\ndead_letter_dir = \"dead\"\n",
    );
    cluster.start("w1");
    cluster.wait_for(
        "the child shard's last record",
        Duration::from_secs(90),
        |c| times_archived(c, 1, "1-19") > 0,
    );
    assert_eq!(parent_checkpoint(&cluster), Checkpoint::ShardEnd);

    // Records 0–99 were acknowledged (`batch-end`) and delivered once; 100–149 were not,
    // so each of the two failed attempts had them; then they were dead-lettered, in order.
    assert_eq!(times_archived(&cluster, 0, "0-99"), 1);
    assert_eq!(times_archived(&cluster, 0, "0-100"), 2);
    assert_eq!(times_archived(&cluster, 0, "0-149"), 2);
    let dead = std::fs::read_to_string(cluster.path(&format!("dead/{}.jsonl", shard_id(0))))
        .expect("the parent's dead-letter file");
    let lines: Vec<serde_json::Value> = complete_lines(&dead)
        .map(|l| serde_json::from_str(l).expect("a dead-letter line is JSON"))
        .collect();
    let data: Vec<String> = lines
        .iter()
        .map(|l| crate::cluster::base64_decode(l["data_base64"].as_str().expect("data")))
        .collect();
    let expected: Vec<String> = (100..150).map(|n| format!("0-{n}")).collect();
    assert_eq!(
        data, expected,
        "the unacknowledged records, once each, in order"
    );
    for line in &lines {
        let reason = &line["dead_letter"];
        assert_eq!(reason["kind"], "trap panic", "{line}");
        assert_eq!(reason["attempts"], 2, "{line}");
        let message = reason["message"].as_str().expect("message");
        assert!(
            message.starts_with("in shutdown(shard-end): ") && message.contains("unreachable"),
            "{message}"
        );
    }
    let log = cluster.log("w1");
    assert!(log.contains("shard end poisoned"), "{log}");
    assert!(cluster.terminate("w1"), "a clean exit after SIGTERM");
}

#[test]
fn a_failing_shard_end_under_block_is_delivered_again_and_never_ended() {
    let mut cluster = closed_parent_with_a_failing_shard_end(
        "max_attempts = 2\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"\npoison = \"block\"\n",
    );
    cluster.start("w1");
    cluster.wait_for(
        "the unacknowledged records delivered a fourth time",
        Duration::from_secs(90),
        |c| times_archived(c, 0, "0-149") >= 4,
    );
    match parent_checkpoint(&cluster) {
        Checkpoint::Sequence { sequence, .. } => assert_eq!(
            sequence,
            shoal::source::local::LocalSource::sequence_of(100),
            "checkpointed through the last acknowledged record (0-99, line 100), never SHARD_END"
        ),
        other => panic!("the parent must stay at its last acknowledged record: {other}"),
    }
    assert_eq!(
        times_archived(&cluster, 0, "0-99"),
        1,
        "acknowledged records stay done"
    );
    assert_eq!(
        times_archived(&cluster, 1, "1-0"),
        0,
        "the child waits for its parent's SHARD_END"
    );
    let log = cluster.log("w1");
    assert_eq!(
        log.matches("policy `block`").count(),
        1,
        "the poisoned shard end is announced once:\n{log}"
    );
    assert!(!log.contains("dead-lettered"), "{log}");
    assert!(cluster.terminate("w1"), "a clean exit after SIGTERM");
}

/// The `shutdown` reasons the archive recorded for `shard`, in order.
fn shutdowns(cluster: &Cluster, shard: usize) -> Vec<String> {
    let text = std::fs::read_to_string(cluster.path("archive/shutdowns.log")).unwrap_or_default();
    complete_lines(&text)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a shutdown line is JSON"))
        .filter(|v| v["shard"] == shard_id(shard))
        .map(|v| v["reason"].as_str().expect("reason").to_string())
        .collect()
}

/// A worker that takes a closed shard whose checkpoint is its last record has no batch
/// to deliver and so no live instance: the guest is told `shutdown(shard-end)` anyway,
/// on a fresh instance, before `SHARD_END` is written (as KCL always calls
/// `shardEnded`).
#[test]
fn a_closed_shard_taken_at_its_last_record_still_tells_the_guest_shard_end() {
    let mut cluster = Cluster::local(1, LEASE);
    cluster.produce(0, 0, 50);
    cluster.set_plugin(&plugin_path("archive"), "record_shutdowns = true\n");
    cluster.start("w1");
    cluster.wait_for("the last record", Duration::from_secs(60), |c| {
        times_archived(c, 0, "0-49") > 0
    });
    assert!(cluster.terminate("w1"), "a clean exit after SIGTERM");
    assert!(
        matches!(parent_checkpoint(&cluster), Checkpoint::Sequence { .. }),
        "checkpointed at the last record"
    );
    assert_eq!(shutdowns(&cluster, 0), ["requested"]);

    std::fs::write(cluster.path(&format!("stream/{}.closed", shard_id(0))), "").expect("close");
    cluster.start("w1");
    cluster.wait_for("SHARD_END", Duration::from_secs(60), |c| {
        parent_checkpoint(c) == Checkpoint::ShardEnd
    });
    assert_eq!(
        shutdowns(&cluster, 0),
        ["requested", "shard-end"],
        "told before SHARD_END, with no batch delivered"
    );
    assert_eq!(
        times_archived(&cluster, 0, "0-49"),
        1,
        "nothing delivered again"
    );
    assert!(cluster.terminate("w1"), "a clean exit after SIGTERM");
}

/// A trapping `shutdown(shard-end)` with nothing left to deliver again is retried on a
/// fresh instance each time and follows the policy: under `block` the shard is never
/// ended (no attempt succeeds), the child waits.
#[test]
fn a_trapping_shard_end_with_nothing_to_redeliver_follows_block() {
    let mut cluster = Cluster::local(2, LEASE);
    std::fs::write(
        cluster.path(&format!("stream/{}.parents", shard_id(1))),
        format!("{}\n", shard_id(0)),
    )
    .expect("parents");
    cluster.produce(0, 0, 50);
    cluster.produce(1, 0, 5);
    std::fs::write(cluster.path(&format!("stream/{}.closed", shard_id(0))), "").expect("close");
    cluster.set_plugin(
        &plugin_path("archive"),
        "record_shutdowns = true\ntrap_at_shard_end = true\n",
    );
    cluster.set_failure(
        "max_attempts = 2\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"\npoison = \"block\"\n",
    );
    cluster.start("w1");
    cluster.wait_for("four shard-end attempts", Duration::from_secs(60), |c| {
        shutdowns(c, 0).iter().filter(|r| *r == "shard-end").count() >= 4
    });
    assert_ne!(
        parent_checkpoint(&cluster),
        Checkpoint::ShardEnd,
        "no attempt succeeded, so no SHARD_END"
    );
    assert_eq!(
        times_archived(&cluster, 0, "0-49"),
        1,
        "acknowledged records stay done"
    );
    assert_eq!(
        times_archived(&cluster, 1, "1-0"),
        0,
        "the child waits for its parent"
    );
    let log = cluster.log("w1");
    assert_eq!(
        log.matches("policy `block`").count(),
        1,
        "the poisoned shard end is announced once:\n{log}"
    );
    assert!(cluster.terminate("w1"), "a clean exit after SIGTERM");
}
