//! A guest waiting in a host call is bounded by its deadline like a computing one: a
//! sleep, a TCP read from a server that never answers and a file the OS cannot finish
//! opening (a FIFO with no writer) each end in a deadline trap, and the shard's next
//! instance runs normally. A lost lease abandons a waiting guest at once, and interrupts
//! a computing one within an epoch tick.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use shoal::config::{DirGrant, DirMode, LimitSettings, SandboxSettings};
use shoal::delivery::OnPoison;
use shoal::delivery::dead_letter::DeadLetterWriter;
use shoal::egress::parse_socket;
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::{CallOutcome, ProcessorInstance, TrapKind};

use tokio_util::sync::CancellationToken;

use crate::fixtures::*;

/// Run `marker` in a fresh instance (deadline 300 ms) and expect a deadline trap that
/// says the guest was waiting; then check a new instance processes a batch.
fn expect_abandoned_wait(sandbox: SandboxSettings, marker: &str) {
    let engine = engine();
    let plugin = load(&engine, "misbehave");
    let config = instance_config("shardId-waits", sandbox, test_limits());
    let mut instance = ProcessorInstance::new(&engine, &plugin, &config).expect("instance");
    assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
    let started = Instant::now();
    match instance.process(&batch(1, &[marker])) {
        CallOutcome::Trap(trap) => {
            assert_eq!(trap.kind, TrapKind::DeadlineExceeded, "{marker}: {trap}");
            assert!(
                trap.message.contains("still waiting in a host call"),
                "{marker}: {trap}"
            );
        }
        other => panic!("{marker}: expected a deadline trap, got {other:?}"),
    }
    // Generous: the point is that the call ended at all, not how fast.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{marker}: the call took {:?}",
        started.elapsed()
    );
    drop(instance);
    let mut next = ProcessorInstance::new(&engine, &plugin, &config).expect("next instance");
    assert!(matches!(next.initialize(&[]), CallOutcome::Ok(())));
    assert!(
        matches!(
            next.process(&batch(2, &["after"])),
            CallOutcome::Ok(CheckpointDirective::BatchEnd)
        ),
        "{marker}: the next instance processes normally"
    );
}

#[test]
fn a_sleeping_guest_is_stopped_at_its_deadline() {
    expect_abandoned_wait(SandboxSettings::default(), "misbehave:sleep:5000");
}

#[test]
fn a_guest_reading_from_a_silent_server_is_stopped_at_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut sandbox = SandboxSettings::default();
    sandbox.egress.tcp = vec![parse_socket(&addr.to_string(), false).expect("grant")];
    // The kernel completes the connection from the backlog; nobody ever writes to it.
    expect_abandoned_wait(sandbox, &format!("probe:stall:{addr}"));
    drop(listener);
}

#[test]
fn a_guest_opening_a_fifo_with_no_writer_is_stopped_at_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let sandbox = SandboxSettings {
        dirs: vec![DirGrant {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
            mode: DirMode::ReadOnly,
        }],
        ..SandboxSettings::default()
    };
    expect_abandoned_wait(sandbox, "probe:file:/data/fifo");
    // The OS cannot abort the open: it holds one blocking-pool thread until a writer
    // comes. Be that writer, so the thread is released.
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO for writing");
    drop(writer);
}

/// Run `marker` (deadline 120 s) on a shard whose lease is lost 500 ms in: the call must
/// end as cancelled within a second of the loss, and nothing be dead-lettered (another
/// worker owns the shard). Returns how long after the loss the call ended.
async fn lose_the_lease_during(shard_id: &str, marker: &str) -> Duration {
    let engine = engine();
    let dead = tempfile::tempdir().expect("tempdir");
    let limits = LimitSettings {
        deadline: Duration::from_secs(120),
        recycle_above_bytes: None,
        ..test_limits()
    };
    let mut shard = processor(
        &engine,
        load(&engine, "misbehave"),
        instance_config(shard_id, SandboxSettings::default(), limits),
        &[],
        fast_failure(1),
        OnPoison::DeadLetter(DeadLetterWriter::new(dead.path())),
    );
    let lost = CancellationToken::new();
    shard.abandon_calls_when(lost.clone());
    let losing = lost.clone();
    let lost_at = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        losing.cancel();
        Instant::now()
    });
    let result = shard.process(batch(1, &[marker]), &lost).await;
    let ended = Instant::now();
    let lost_at = lost_at.await.expect("joined");
    assert!(
        result.is_err(),
        "{marker}: a call stopped on lease loss ends the delivery as cancelled: {result:?}"
    );
    assert!(
        !dead.path().join(format!("{shard_id}.jsonl")).exists(),
        "{marker}: a batch stopped on lease loss is not poisoned: another worker owns the shard"
    );
    ended.duration_since(lost_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_abandons_a_waiting_guest_at_once_and_retries_nothing() {
    let after_loss = lose_the_lease_during("shardId-abandon", "misbehave:sleep:600000").await;
    assert!(
        after_loss < Duration::from_secs(1),
        "the waiting guest waited on for {after_loss:?} after the lease was lost"
    );
}

/// A guest that computes (no host call to drop) is interrupted at the next epoch tick when
/// the lease is lost, not at its deadline: the lease argument counts on the holder
/// stopping within its self-fence margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_interrupts_a_computing_guest_within_a_tick() {
    // One tick is 10 ms; a second leaves room for a loaded machine, and is still far from
    // the 120 s deadline an uninterrupted loop would run to.
    let after_loss = lose_the_lease_during("shardId-spin-lost", "misbehave:loop").await;
    assert!(
        after_loss < Duration::from_secs(1),
        "the computing guest ran on for {after_loss:?} after the lease was lost"
    );
}
