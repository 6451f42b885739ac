//! Every guest fault kind is survived: classified, the instance rebuilt, the batch
//! retried with back-off, then the poison policy; the next batch runs on a fresh
//! instance; other shards keep running.

use std::sync::Arc;
use std::time::Duration;

use shoal::config::SandboxSettings;
use shoal::delivery::dead_letter::DeadLetterWriter;
use shoal::delivery::{Disposition, Failure, OnPoison};
use shoal::plugin::bindings::{CheckpointDirective, Position};
use shoal::plugin::{GuestError, TrapKind};
use tokio_util::sync::CancellationToken;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trap_kind_is_classified_dead_lettered_and_the_next_batch_runs_on_a_fresh_instance() {
    let engine = engine();
    let dead = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let mut shard = misbehave_shard(
        &engine,
        "shardId-faults",
        &[],
        2,
        OnPoison::DeadLetter(DeadLetterWriter::new(dead.path())),
    );

    let ok = shard
        .process(batch(1, &["hello"]), &cancel)
        .await
        .expect("not cancelled");
    assert_eq!(
        ok.disposition,
        Disposition::Processed(CheckpointDirective::BatchEnd)
    );
    let mut last_serial = ok.instance_serial.expect("instance");
    let mut seq = 10;
    for (marker, kind) in [
        ("misbehave:panic", TrapKind::Panic),
        ("misbehave:loop", TrapKind::DeadlineExceeded),
        ("misbehave:oom", TrapKind::MemoryCapExceeded),
        ("misbehave:stack", TrapKind::StackOverflow),
        ("misbehave:oob", TrapKind::OutOfBounds),
    ] {
        let built_before = shard.instances_built();
        let report = shard
            .process(batch(seq, &["before", marker]), &cancel)
            .await
            .expect("not cancelled");
        assert_eq!(report.attempts, 2, "{marker}: retried up to max_attempts");
        assert_eq!(report.failures.len(), 2, "{marker}");
        for failure in &report.failures {
            match failure {
                Failure::Trap(trap) => assert_eq!(trap.kind, kind, "{marker}: {trap}"),
                other => panic!("{marker}: expected a trap, got {other}"),
            }
        }
        let Disposition::DeadLettered(file) = &report.disposition else {
            panic!(
                "{marker}: expected dead-letter, got {:?}",
                report.disposition
            )
        };
        // The retry ran on a rebuilt instance.
        assert_eq!(
            shard.instances_built(),
            built_before + 1,
            "{marker}: the retry rebuilt the instance"
        );

        // The next batch is processed, on a fresh instance.
        let next = shard
            .process(batch(seq + 2, &["after"]), &cancel)
            .await
            .expect("not cancelled");
        assert_eq!(
            next.disposition,
            Disposition::Processed(CheckpointDirective::BatchEnd),
            "{marker}"
        );
        assert_eq!(next.attempts, 1);
        let serial = next.instance_serial.expect("instance");
        assert_ne!(
            serial, last_serial,
            "{marker}: next batch must run on a fresh instance"
        );
        last_serial = serial;

        let lines = std::fs::read_to_string(file).expect("dead-letter file");
        assert!(
            lines.contains(&format!("{:020}", seq + 1)),
            "{marker}: the poisoned batch is in {}",
            file.display()
        );
        seq += 10;
    }
    let dead_lines =
        std::fs::read_to_string(dead.path().join("shardId-faults.jsonl")).expect("file");
    assert_eq!(
        dead_lines.lines().count(),
        10,
        "5 batches of 2 records were dead-lettered"
    );
    let first: serde_json::Value =
        serde_json::from_str(dead_lines.lines().next().expect("line")).expect("json");
    assert_eq!(first["dead_letter"]["kind"], "trap panic");
    assert_eq!(first["dead_letter"]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_errors_retry_on_the_same_instance_and_fatal_goes_straight_to_the_poison_policy() {
    let engine = engine();
    let dead = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let mut shard = misbehave_shard(
        &engine,
        "shardId-errors",
        &[],
        3,
        OnPoison::DeadLetter(DeadLetterWriter::new(dead.path())),
    );
    let first = shard.process(batch(1, &["x"]), &cancel).await.expect("ok");
    let serial = first.instance_serial;

    let retry = shard
        .process(batch(2, &["misbehave:retry"]), &cancel)
        .await
        .expect("ok");
    assert_eq!(retry.attempts, 3);
    assert!(
        retry
            .failures
            .iter()
            .all(|f| matches!(f, Failure::Guest(GuestError::Retry(_))))
    );
    assert!(matches!(retry.disposition, Disposition::DeadLettered(_)));
    assert_eq!(
        retry.instance_serial, serial,
        "a guest error keeps the instance"
    );

    let fatal = shard
        .process(batch(3, &["misbehave:fatal"]), &cancel)
        .await
        .expect("ok");
    assert_eq!(fatal.attempts, 1, "fatal is poisoned at once");
    assert!(
        matches!(&fatal.failures[..], [Failure::Guest(GuestError::Fatal(m))] if m.contains("fatal marker"))
    );
    assert!(matches!(fatal.disposition, Disposition::DeadLettered(_)));
    assert_eq!(shard.instances_built(), 1, "no trap, no rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_come_back_as_the_guest_returned_them() {
    let engine = engine();
    let cancel = CancellationToken::new();
    let mut shard = misbehave_shard(&engine, "shardId-directives", &[], 1, OnPoison::GiveUp);
    let at = |seq: u64| Position {
        sequence_number: format!("{seq:020}"),
        sub_sequence_number: 0,
    };
    for (texts, expected) in [
        (vec!["a", "b"], CheckpointDirective::BatchEnd),
        (vec!["a", "misbehave:none"], CheckpointDirective::None),
        (
            vec!["a", "misbehave:at", "c"],
            CheckpointDirective::At(at(101)),
        ),
        (
            vec!["misbehave:rewind", "b"],
            CheckpointDirective::Rewind(at(100)),
        ),
    ] {
        let report = shard
            .process(batch(100, &texts), &cancel)
            .await
            .expect("ok");
        assert_eq!(
            report.disposition,
            Disposition::Processed(expected),
            "{texts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_keeps_retrying_until_cancelled_and_writes_nothing() {
    let engine = engine();
    let cancel = CancellationToken::new();
    let mut shard = misbehave_shard(&engine, "shardId-block", &[], 2, OnPoison::Block);
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.cancel();
    });
    let result = shard.process(batch(1, &["misbehave:panic"]), &cancel).await;
    assert!(
        result.is_err(),
        "a blocked batch ends only by cancellation: {result:?}"
    );
    assert!(
        shard.instances_built() >= 3,
        "kept retrying on rebuilt instances: {}",
        shard.instances_built()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_failures_follow_the_same_rules() {
    let engine = engine();
    let cancel = CancellationToken::new();
    for (mode, expect) in [
        ("retry", "guest error retry"),
        ("fatal", "guest error fatal"),
        ("panic", "trap panic"),
    ] {
        let mut shard = misbehave_shard(
            &engine,
            "shardId-init",
            &[("fail_initialize".to_string(), mode.to_string())],
            2,
            OnPoison::GiveUp,
        );
        let report = shard.process(batch(1, &["x"]), &cancel).await.expect("ok");
        assert_eq!(report.disposition, Disposition::GaveUp, "{mode}");
        assert_eq!(report.failures[0].kind(), expect, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_guest_does_not_stall_another_shard() {
    let engine = engine();
    let mut limits = test_limits();
    limits.deadline = Duration::from_secs(3);
    let plugin = load(&engine, "misbehave");
    let cancel = CancellationToken::new();
    let mut stuck = processor(
        &engine,
        Arc::clone(&plugin),
        instance_config("shardId-stuck", SandboxSettings::default(), limits),
        &[],
        fast_failure(1),
        OnPoison::GiveUp,
    );
    let mut healthy = processor(
        &engine,
        plugin,
        instance_config("shardId-healthy", SandboxSettings::default(), limits),
        &[],
        fast_failure(1),
        OnPoison::GiveUp,
    );
    let c = cancel.clone();
    let spinning =
        tokio::spawn(async move { stuck.process(batch(1, &["misbehave:loop"]), &c).await });
    // While the stuck shard spins for its 3 s deadline, the healthy one keeps working.
    let mut done = 0u64;
    while !spinning.is_finished() {
        let r = healthy
            .process(batch(10 + done, &["fine"]), &cancel)
            .await
            .expect("ok");
        assert!(matches!(r.disposition, Disposition::Processed(_)));
        done += 1;
    }
    let stuck_report = spinning.await.expect("joined").expect("not cancelled");
    assert!(
        matches!(&stuck_report.failures[..], [Failure::Trap(t)] if t.kind == TrapKind::DeadlineExceeded)
    );
    assert!(
        done >= 10,
        "the healthy shard processed only {done} batches while the other spun"
    );
}
