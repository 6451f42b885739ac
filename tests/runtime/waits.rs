//! A guest waiting in a host call is bounded by its deadline like a computing one: a
//! sleep, a TCP read from a server that never answers and a file the OS cannot finish
//! opening (a FIFO with no writer) each end in a deadline trap, and the shard's next
//! instance runs normally. A lost lease abandons a waiting guest at once, and interrupts
//! a computing one within an epoch tick.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::config::{DirGrant, DirMode, LimitSettings, SandboxSettings};
use shoal::delivery::OnPoison;
use shoal::delivery::dead_letter::DeadLetterWriter;
use shoal::egress::parse_socket;
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::{CallOutcome, ProcessorInstance, TrapKind};

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
    let gate = TestGate::new();
    shard.bound_by(gate.clone());
    let lost = gate.token();
    let losing = Arc::clone(&gate);
    let lost_at = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        losing.lose(None);
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

/// A shard processor running `misbehave` with `settings`, a 120 s deadline (far beyond
/// anything these tests wait for), `/out` granted read-write, and its calls bounded by
/// a [`TestGate`].
fn gated_misbehave(
    shard_id: &str,
    settings: &[(&str, &str)],
    out: &std::path::Path,
) -> (shoal::delivery::ShardProcessor, Arc<TestGate>) {
    let engine = engine();
    let limits = LimitSettings {
        deadline: Duration::from_secs(120),
        recycle_above_bytes: None,
        ..test_limits()
    };
    let sandbox = SandboxSettings {
        dirs: vec![DirGrant {
            host: out.to_path_buf(),
            guest: "/out".into(),
            mode: DirMode::ReadWrite,
        }],
        ..SandboxSettings::default()
    };
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut shard = processor(
        &engine,
        load(&engine, "misbehave"),
        instance_config(shard_id, sandbox, limits),
        &settings,
        fast_failure(1),
        OnPoison::Block,
    );
    let gate = TestGate::new();
    shard.bound_by(gate.clone());
    (shard, gate)
}

/// Lose the gate's lease `after` from now.
fn lose_after(gate: &Arc<TestGate>, after: Duration) -> tokio::task::JoinHandle<Instant> {
    let gate = Arc::clone(gate);
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        gate.lose(None);
        Instant::now()
    })
}

/// `initialize` is a guest call like `process`: a guest waiting (or computing) in it
/// when the lease is lost is stopped at once, not at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_a_guest_waiting_or_computing_in_initialize() {
    for action in ["sleep:600000", "loop"] {
        let out = tempfile::tempdir().expect("tempdir");
        let (mut shard, gate) =
            gated_misbehave("shardId-init", &[("on_initialize", action)], out.path());
        let lost_at = lose_after(&gate, Duration::from_millis(500));
        let result = shard.process(batch(1, &["a"]), &gate.token()).await;
        let after_loss = Instant::now().duration_since(lost_at.await.expect("joined"));
        assert!(
            result.is_err(),
            "{action}: cancelled, not processed: {result:?}"
        );
        assert!(
            after_loss < Duration::from_secs(1),
            "{action}: initialize ran on for {after_loss:?} after the loss"
        );
    }
}

/// Every `shutdown` is bounded by the lease too: `requested` (a hot swap, a recycled
/// instance, a shutdown) and `shard-end` stop when it is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_a_guest_waiting_or_computing_in_shutdown() {
    for action in ["sleep:600000", "loop"] {
        for reason in [
            shoal::plugin::bindings::ShutdownReason::Requested,
            shoal::plugin::bindings::ShutdownReason::ShardEnd,
        ] {
            let out = tempfile::tempdir().expect("tempdir");
            let (mut shard, gate) =
                gated_misbehave("shardId-down", &[("on_shutdown", action)], out.path());
            let report = shard.process(batch(1, &["a"]), &gate.token()).await;
            assert!(report.is_ok(), "{report:?}");
            let lost_at = lose_after(&gate, Duration::from_millis(500));
            let result = shard.shutdown(reason).await;
            let after_loss = Instant::now().duration_since(lost_at.await.expect("joined"));
            assert!(
                result.is_err(),
                "{action} {reason}: interrupted: {result:?}"
            );
            assert!(
                after_loss < Duration::from_secs(1),
                "{action} {reason}: shutdown ran on for {after_loss:?} after the loss"
            );
        }
    }
}

/// Once the lease is lost no guest call starts: no `initialize` for a new instance, no
/// `process`, no `shutdown(requested)` or `shutdown(shard-end)`; `shutdown(lease-lost)`
/// only inside the window the lease still allows, and never after an interrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_fence_no_guest_call_starts() {
    let out = tempfile::tempdir().expect("tempdir");
    let calls = out.path().join("calls");
    let settings = [
        ("on_initialize", "append:/out/calls"),
        ("on_shutdown", "append:/out/calls"),
    ];
    let read = || std::fs::read_to_string(&calls).unwrap_or_default();

    // Lost before anything ran: nothing at all.
    let (mut shard, gate) = gated_misbehave("shardId-fenced", &settings, out.path());
    gate.lose(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
    assert!(
        shard
            .process(batch(1, &["a"]), &gate.token())
            .await
            .is_err()
    );
    assert!(shard.end_shard().await.is_err());
    assert_eq!(shard.instances_built(), 0, "no instance was built");
    assert_eq!(read(), "", "no call reached the guest");

    // A live instance, then the loss: shutdown(requested) and shard-end are refused;
    // with a window left, the guest is told the lease was lost.
    let (mut shard, gate) = gated_misbehave("shardId-fenced", &settings, out.path());
    assert!(shard.process(batch(1, &["a"]), &gate.token()).await.is_ok());
    assert_eq!(read(), "initialize\n");
    gate.lose(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
    assert!(shard.shutdown_after_loss().await, "told within the window");
    assert_eq!(read(), "initialize\nshutdown(ShutdownReason::LeaseLost)\n");

    let (mut shard, gate) = gated_misbehave("shardId-fenced", &settings, out.path());
    std::fs::remove_file(&calls).expect("reset");
    assert!(shard.process(batch(1, &["a"]), &gate.token()).await.is_ok());
    gate.lose(None);
    assert!(
        shard
            .shutdown(shoal::plugin::bindings::ShutdownReason::Requested)
            .await
            .is_err()
    );
    assert!(
        !shard.shutdown_after_loss().await,
        "no instance left, no window"
    );
    assert_eq!(read(), "initialize\n", "nothing after the loss");

    // No window left (past the fence, or interrupted): the instance is dropped untold.
    let (mut shard, gate) = gated_misbehave("shardId-fenced", &settings, out.path());
    std::fs::remove_file(&calls).expect("reset");
    assert!(shard.process(batch(1, &["a"]), &gate.token()).await.is_ok());
    gate.lose(None);
    assert!(!shard.shutdown_after_loss().await);
    assert_eq!(read(), "initialize\n");
}

/// `shutdown(lease-lost)` is interrupted when the window closes (the lease's fence),
/// however long the guest would flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_after_a_loss_is_interrupted_at_the_fence() {
    for action in ["sleep:600000", "loop"] {
        let out = tempfile::tempdir().expect("tempdir");
        let (mut shard, gate) =
            gated_misbehave("shardId-window", &[("on_shutdown", action)], out.path());
        assert!(shard.process(batch(1, &["a"]), &gate.token()).await.is_ok());
        let fence = tokio::time::Instant::now() + Duration::from_millis(500);
        gate.lose(Some(fence));
        let told = shard.shutdown_after_loss().await;
        let past_fence = tokio::time::Instant::now().duration_since(fence);
        assert!(!told, "{action}: interrupted, so not told to the end");
        assert!(
            past_fence < Duration::from_secs(1),
            "{action}: shutdown(lease-lost) ran {past_fence:?} past the fence"
        );
    }
}
