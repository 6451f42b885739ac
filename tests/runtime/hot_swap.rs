//! Hot swap under a continuous stream of batches: every batch is processed exactly once
//! by exactly one generation; a file that is not a valid processor is rejected while the
//! running generation keeps going; SIGHUP forces a reload.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::config::{DirGrant, DirMode, SandboxSettings};
use shoal::delivery::{Disposition, OnPoison, ShardProcessor};
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::reload::{ReloadOptions, ReloadStatus, spawn_reloader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fixtures::*;

/// The same component with a custom section appended: identical behaviour, a
/// different content hash (so a new generation).
fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"shoal-test-variant";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Replace the file the way an editor does: write a temp file, rename over.
fn atomic_replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("wasm.tmp~");
    std::fs::write(&tmp, bytes).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn wait_status(
    status: &mut watch::Receiver<ReloadStatus>,
    what: &str,
    ok: impl Fn(&ReloadStatus) -> bool,
) -> ReloadStatus {
    let waited = tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| ok(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(s)) => s,
        _ => panic!(
            "timed out waiting for {what}; last status {:?}",
            status.borrow()
        ),
    }
}

#[derive(Debug, Clone)]
struct Seen {
    shard: usize,
    first_seq: u64,
    generation: u64,
}

async fn wait_until_each_shard_ran(seen: &Arc<Mutex<Vec<Seen>>>, shards: usize, generation: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let count = {
            let seen = seen.lock().expect("lock");
            (0..shards)
                .filter(|s| {
                    seen.iter()
                        .any(|r| r.shard == *s && r.generation == generation)
                })
                .count()
        };
        if count == shards {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards did not reach generation {generation}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_processes_every_batch_exactly_once_by_one_generation() {
    const SHARDS: usize = 2;
    const RECORDS_PER_BATCH: u64 = 5;
    let work = tempfile::tempdir().expect("tempdir");
    let plugin_file = work.path().join("processor.wasm");
    let archive_dir = work.path().join("archive");
    std::fs::create_dir(&archive_dir).expect("mkdir");
    let original = std::fs::read(plugin_path("archive")).expect("read archive.wasm");
    std::fs::write(&plugin_file, &original).expect("install");

    let engine = engine();
    let initial = Arc::new(engine.load_file(&plugin_file, 1).expect("loads"));
    let cancel = CancellationToken::new();
    let (updates, _handle, reloader) = spawn_reloader(
        engine.clone(),
        initial,
        ReloadOptions {
            debounce: Duration::from_millis(100),
            watch_file: true,
            on_sighup: false,
        },
        cancel.clone(),
    )
    .expect("reloader");

    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for shard in 0..SHARDS {
        let sandbox = SandboxSettings {
            env: vec![],
            dirs: vec![DirGrant {
                host: archive_dir.clone(),
                guest: "/archive".into(),
                mode: DirMode::ReadWrite,
            }],
            ..SandboxSettings::default()
        };
        let mut processor = ShardProcessor::new(
            engine.clone(),
            updates.plugin.clone(),
            instance_config(&format!("shardId-{shard:012}"), sandbox, test_limits()),
            &[],
            fast_failure(3),
            OnPoison::Block,
        );
        let seen = Arc::clone(&seen);
        let stop = stop.clone();
        let never = CancellationToken::new();
        workers.push(tokio::spawn(async move {
            let mut seq = 1u64;
            let mut batches = 0u64;
            while !stop.is_cancelled() {
                let texts: Vec<String> = (0..RECORDS_PER_BATCH)
                    .map(|i| format!("shard {shard} record {}", seq + i))
                    .collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let report = processor
                    .process(batch(seq, &refs), &never)
                    .await
                    .expect("never cancelled");
                assert_eq!(
                    report.disposition,
                    Disposition::Processed(CheckpointDirective::BatchEnd),
                    "{report:?}"
                );
                assert_eq!(
                    report.attempts, 1,
                    "a swap must never fail or repeat a batch: {report:?}"
                );
                seen.lock().expect("lock").push(Seen {
                    shard,
                    first_seq: seq,
                    generation: report.generation,
                });
                seq += RECORDS_PER_BATCH;
                batches += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            processor
                .shutdown(shoal::plugin::bindings::ShutdownReason::Requested)
                .await
                .expect("shutdown");
            (seq - 1, batches)
        }));
    }

    let mut status = updates.status.clone();
    wait_until_each_shard_ran(&seen, SHARDS, 1).await;
    // 1. `cp` over the file (truncate and write in place).
    std::fs::write(&plugin_file, variant(&original, "2")).expect("cp over");
    wait_status(&mut status, "generation 2", |s| s.generation == 2).await;
    wait_until_each_shard_ran(&seen, SHARDS, 2).await;
    // 2. An editor's atomic rename.
    atomic_replace(&plugin_file, &variant(&original, "3"));
    wait_status(&mut status, "generation 3", |s| s.generation == 3).await;
    wait_until_each_shard_ran(&seen, SHARDS, 3).await;
    // 3. Invalid files are rejected; generation 3 keeps running.
    atomic_replace(&plugin_file, b"\0asm\x01\0\0\0");
    let s = wait_status(&mut status, "the core module to be rejected", |s| {
        s.rejected >= 1
    })
    .await;
    assert_eq!(s.generation, 3);
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("not a component"),
        "{s:?}"
    );
    atomic_replace(&plugin_file, &original[..original.len() / 3]);
    let s = wait_status(&mut status, "the truncated file to be rejected", |s| {
        s.rejected >= 2
    })
    .await;
    assert_eq!(s.generation, 3);
    let processed_before = seen.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_rejection: Vec<Seen> = seen.lock().expect("lock")[processed_before..].to_vec();
    assert!(
        !after_rejection.is_empty(),
        "shards kept processing after the rejections"
    );
    assert!(
        after_rejection.iter().all(|r| r.generation == 3),
        "{after_rejection:?}"
    );
    // 4. A good file again.
    atomic_replace(&plugin_file, &variant(&original, "4"));
    wait_status(&mut status, "generation 4", |s| s.generation == 4).await;
    wait_until_each_shard_ran(&seen, SHARDS, 4).await;

    stop.cancel();
    let mut last_seq = Vec::new();
    for worker in workers {
        last_seq.push(worker.await.expect("worker"));
    }
    cancel.cancel();
    reloader.await.expect("reloader");

    let seen = seen.lock().expect("lock").clone();
    for (shard, (last, batches)) in last_seq.into_iter().enumerate() {
        let reports: Vec<&Seen> = seen.iter().filter(|r| r.shard == shard).collect();
        // Generations only move forward, one batch boundary at a time.
        assert!(
            reports
                .windows(2)
                .all(|w| w[0].generation <= w[1].generation),
            "shard {shard}: {reports:?}"
        );
        assert!(
            reports
                .windows(2)
                .all(|w| w[1].first_seq == w[0].first_seq + RECORDS_PER_BATCH)
        );
        // The archive holds each record exactly once, in order.
        let file = archive_dir.join(format!("shardId-{shard:012}.jsonl"));
        let text = std::fs::read_to_string(&file).expect("archive file");
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["sequence_number"]
                    .as_str()
                    .expect("seq")
                    .parse()
                    .expect("number")
            })
            .collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "shard {shard}: every record exactly once, in order"
        );
        assert_eq!(reports.len() as u64, batches);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_forces_a_reload() {
    let work = tempfile::tempdir().expect("tempdir");
    let plugin_file = work.path().join("processor.wasm");
    std::fs::copy(plugin_path("checksum"), &plugin_file).expect("install");
    let engine = engine();
    let initial = Arc::new(engine.load_file(&plugin_file, 1).expect("loads"));
    let cancel = CancellationToken::new();
    let (updates, _handle, reloader) = spawn_reloader(
        engine,
        initial,
        ReloadOptions {
            debounce: Duration::from_millis(50),
            watch_file: false,
            on_sighup: true,
        },
        cancel.clone(),
    )
    .expect("reloader");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut status = updates.status.clone();
    wait_status(&mut status, "the forced reload", |s| s.generation == 2).await;
    assert_eq!(updates.plugin.borrow().generation(), 2);
    cancel.cancel();
    reloader.await.expect("reloader");
}
