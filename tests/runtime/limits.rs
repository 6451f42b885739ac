//! Limits hold: the memory cap (a typed error naming the limit), the per-call deadline
//! (re-armed for every call), fuel metering (reported, not enforced), both allocators,
//! and the compiled-artifact cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::config::{LimitSettings, SandboxSettings};
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::cache::ArtifactSource;
use shoal::plugin::{CallOutcome, PluginLoadError, ProcessorInstance, TrapKind};

use crate::fixtures::*;

fn instance_with(engine: &shoal::plugin::PluginEngine, limits: LimitSettings) -> ProcessorInstance {
    let plugin = load(engine, "misbehave");
    let mut instance = ProcessorInstance::new(
        engine,
        &plugin,
        &instance_config("shardId-limits", SandboxSettings::default(), limits),
    )
    .expect("instance");
    assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
    instance
}

#[test]
fn the_memory_cap_holds_and_names_the_limit() {
    let engine = engine();
    for cap in [16usize << 20, 48 << 20] {
        let mut instance = instance_with(
            &engine,
            LimitSettings {
                memory_bytes: cap,
                deadline: Duration::from_secs(5),
                recycle_above_bytes: None,
                ..LimitSettings::default()
            },
        );
        match instance.process(&batch(1, &["misbehave:oom"])) {
            CallOutcome::Trap(trap) => {
                assert_eq!(trap.kind, TrapKind::MemoryCapExceeded, "{trap}");
                assert!(
                    trap.message.contains(&format!("limit is {cap} bytes")),
                    "{}",
                    trap.message
                );
            }
            other => panic!("expected the memory cap to trap, got {other:?}"),
        }
        assert!(
            instance.peak_memory_bytes() <= cap,
            "peak {} over cap {cap}",
            instance.peak_memory_bytes()
        );
        assert!(
            instance.peak_memory_bytes() > cap / 2,
            "the guest did allocate up to the cap"
        );
    }
}

#[test]
fn the_deadline_stops_a_spinning_guest_and_is_rearmed_per_call() {
    let engine = engine();
    let deadline = Duration::from_millis(300);
    let mut instance = instance_with(
        &engine,
        LimitSettings {
            memory_bytes: 32 << 20,
            deadline,
            recycle_above_bytes: None,
            ..LimitSettings::default()
        },
    );
    // Three calls of ~150 ms each: each fits its own deadline, though together they do not.
    for n in 0..3 {
        let outcome = instance.process(&batch(n, &["misbehave:slow:150"]));
        assert!(
            matches!(outcome, CallOutcome::Ok(CheckpointDirective::BatchEnd)),
            "call {n}: {outcome:?}"
        );
    }
    let started = Instant::now();
    match instance.process(&batch(9, &["misbehave:loop"])) {
        CallOutcome::Trap(trap) => assert_eq!(trap.kind, TrapKind::DeadlineExceeded, "{trap}"),
        other => panic!("expected a deadline trap, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= deadline, "stopped before its deadline: {took:?}");
    // A generous bound: this checks the interrupt happened at all, not its precision.
    assert!(
        took < deadline * 20,
        "the deadline did not stop the guest in time: {took:?}"
    );
    // A trapped instance is poisoned; the runtime never reuses it.
    assert!(matches!(
        instance.process(&batch(10, &["x"])),
        CallOutcome::Trap(_)
    ));
}

#[test]
fn fuel_is_reported_not_enforced() {
    let engine = engine_with(|s| s.fuel_metering = true);
    let mut instance = instance_with(&engine, test_limits());
    let small = batch(1, &["a"]);
    let large = batch(1, &vec!["a record of some length"; 500]);
    assert!(matches!(instance.process(&small), CallOutcome::Ok(_)));
    let small_fuel = instance.last_call().fuel.expect("metered");
    assert!(matches!(instance.process(&large), CallOutcome::Ok(_)));
    let large_fuel = instance.last_call().fuel.expect("metered");
    assert!(
        small_fuel > 0 && large_fuel > small_fuel,
        "small {small_fuel}, large {large_fuel}"
    );

    let mut unmetered = instance_with(&engine_with(|s| s.fuel_metering = false), test_limits());
    assert!(matches!(unmetered.process(&small), CallOutcome::Ok(_)));
    assert_eq!(unmetered.last_call().fuel, None);
}

#[test]
fn instances_work_with_and_without_the_pooling_allocator() {
    for pooling in [true, false] {
        let engine = engine_with(|s| s.pooling = pooling);
        let mut instances: Vec<_> = (0..4)
            .map(|_| instance_with(&engine, test_limits()))
            .collect();
        for instance in &mut instances {
            assert!(
                matches!(instance.process(&batch(1, &["x"])), CallOutcome::Ok(_)),
                "pooling={pooling}"
            );
        }
    }
}

#[test]
fn the_pool_limits_live_instances_and_frees_slots_on_drop() {
    let engine = engine_with(|s| s.max_instances = 2);
    let a = instance_with(&engine, test_limits());
    let _b = instance_with(&engine, test_limits());
    let plugin = load(&engine, "misbehave");
    let config = instance_config("shardId-pool", SandboxSettings::default(), test_limits());
    assert!(
        ProcessorInstance::new(&engine, &plugin, &config).is_err(),
        "a third instance must not fit a pool of 2"
    );
    drop(a);
    assert!(
        ProcessorInstance::new(&engine, &plugin, &config).is_ok(),
        "a dropped instance frees its slot"
    );
}

#[test]
fn compiled_plugins_are_cached_and_a_bad_cache_entry_is_recompiled() {
    let parent = tempfile::tempdir().expect("tempdir");
    let cache = parent.path().join("cache");
    let engine = engine_with(|s| s.cache_dir = Some(cache.clone()));
    let path = plugin_path("checksum");
    let first = engine.load_file(&path, 1).expect("loads");
    assert_eq!(first.source(), ArtifactSource::Compiled);
    let second = engine.load_file(&path, 2).expect("loads");
    assert_eq!(second.source(), ArtifactSource::Cached);
    assert_eq!(first.digest(), second.digest());
    for entry in std::fs::read_dir(&cache).expect("dir") {
        std::fs::write(entry.expect("entry").path(), b"not a compiled artifact").expect("corrupt");
    }
    let third = engine.load_file(&path, 3).expect("still loads");
    assert_eq!(third.source(), ArtifactSource::Compiled);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "a cache dir shoal creates is private, mode {mode:o}"
        );
    }
}

/// Compiled code is loaded only from what this user alone can have written: a
/// group-writable cache directory disables the cache (it is not chmod'ed), and a
/// group-writable entry is compiled afresh instead of loaded.
#[cfg(unix)]
#[test]
fn a_cache_others_can_write_to_is_never_loaded_from() {
    use std::os::unix::fs::PermissionsExt;
    let set_mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let path = plugin_path("checksum");

    let shared = tempfile::tempdir().expect("tempdir");
    set_mode(shared.path(), 0o770);
    let engine = engine_with(|s| s.cache_dir = Some(shared.path().to_path_buf()));
    for generation in 1..=2 {
        let plugin = engine.load_file(&path, generation).expect("loads");
        assert_eq!(plugin.source(), ArtifactSource::Compiled);
    }
    let mode = std::fs::metadata(shared.path())
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o770,
        "left as the operator set it, not chmod'ed"
    );
    assert_eq!(
        std::fs::read_dir(shared.path()).expect("dir").count(),
        0,
        "nothing written"
    );

    let private = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(|s| s.cache_dir = Some(private.path().to_path_buf()));
    assert_eq!(
        engine.load_file(&path, 1).expect("loads").source(),
        ArtifactSource::Compiled
    );
    assert_eq!(
        engine.load_file(&path, 2).expect("loads").source(),
        ArtifactSource::Cached
    );
    for entry in std::fs::read_dir(private.path()).expect("dir") {
        set_mode(&entry.expect("entry").path(), 0o666);
    }
    assert_eq!(
        engine.load_file(&path, 3).expect("loads").source(),
        ArtifactSource::Compiled,
        "a world-writable entry is not deserialized"
    );
    assert_eq!(
        engine.load_file(&path, 4).expect("loads").source(),
        ArtifactSource::Cached
    );
}

#[test]
fn files_that_are_not_processor_components_are_rejected_with_the_reason() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let err = engine.load_file(&core, 1).expect_err("core module");
    assert!(
        matches!(err, PluginLoadError::NotAComponent { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );

    let text = dir.path().join("text.wasm");
    std::fs::write(&text, b"hello").expect("write");
    assert!(
        engine
            .load_file(&text, 1)
            .expect_err("text")
            .to_string()
            .contains("magic bytes")
    );

    let good = std::fs::read(plugin_path("checksum")).expect("read");
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &good[..good.len() / 2]).expect("write");
    let err = engine.load_file(&truncated, 1).expect_err("truncated");
    assert!(matches!(err, PluginLoadError::Compile { .. }), "{err}");

    let missing = dir.path().join("missing.wasm");
    assert!(matches!(
        engine.load_file(&missing, 1),
        Err(PluginLoadError::Read { .. })
    ));
}

/// A shard processor running `misbehave` (logging its lifecycle) with `recycle_above`.
fn recycling_shard(
    engine: &shoal::plugin::PluginEngine,
    shard: &str,
    recycle_above: Option<usize>,
) -> shoal::delivery::ShardProcessor {
    let limits = LimitSettings {
        recycle_above_bytes: recycle_above,
        ..test_limits()
    };
    processor(
        engine,
        load(engine, "misbehave"),
        instance_config(shard, SandboxSettings::default(), limits),
        &[("log_lifecycle".into(), "yes".into())],
        fast_failure(1),
        shoal::delivery::OnPoison::Block,
    )
}

fn serial_of(report: &shoal::delivery::BatchReport) -> u64 {
    assert!(
        matches!(
            report.disposition,
            shoal::delivery::Disposition::Processed(_)
        ),
        "{:?}",
        report.disposition
    );
    report.instance_serial.expect("processed on an instance")
}

/// WebAssembly memories never shrink: with `recycle_above`, an instance that a batch grew
/// past it is shut down (`requested`) after that batch and the next batch gets a fresh
/// one; an instance that did not grow keeps serving, and so does any instance without the
/// setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_grown_past_recycle_above_is_replaced_after_the_batch() {
    crate::guest_log::install();
    let engine = engine();
    let cancel = tokio_util::sync::CancellationToken::new();
    let shard_id = "shardId-recycle";
    let mut shard = recycling_shard(&engine, shard_id, Some(8 << 20));

    let small = shard
        .process(batch(1, &["a", "b"]), &cancel)
        .await
        .expect("not cancelled");
    assert_eq!(shard.recycle_if_grown().await, None, "no growth: kept");
    let grown = shard
        .process(batch(10, &["misbehave:grow:12", "c"]), &cancel)
        .await
        .expect("not cancelled");
    assert_eq!(
        serial_of(&small),
        serial_of(&grown),
        "the same instance until now"
    );
    let held = shard
        .recycle_if_grown()
        .await
        .expect("grown past 8 MiB: recycled");
    assert!(held > 12 << 20, "it held the 12 MiB it grew by: {held}");
    assert_eq!(
        shard.instances_built(),
        1,
        "the fresh instance waits for a batch"
    );
    let after = shard
        .process(batch(20, &["d"]), &cancel)
        .await
        .expect("not cancelled");
    assert_ne!(serial_of(&after), serial_of(&grown), "a fresh instance");
    assert_eq!(shard.instances_built(), 2);
    assert_eq!(
        shard.recycle_if_grown().await,
        None,
        "the fresh one is small"
    );
    let lifecycle: Vec<String> = crate::guest_log::of(shard_id)
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(lifecycle.len(), 3, "{lifecycle:?}");
    assert_eq!(lifecycle[0], "initialize");
    assert!(
        lifecycle[1].starts_with("shutdown(") && lifecycle[1].contains("Requested"),
        "{lifecycle:?}"
    );
    assert_eq!(lifecycle[2], "initialize");

    // Without the setting, the grown instance keeps its memory and serves on.
    let mut kept = recycling_shard(&engine, "shardId-recycle-off", None);
    kept.process(batch(1, &["misbehave:grow:12"]), &cancel)
        .await
        .expect("not cancelled");
    assert_eq!(kept.recycle_if_grown().await, None);
    // A threshold below what a fresh instance starts with recycles nothing that batches
    // did not add: the instance did not grow, so it is kept.
    let mut low = recycling_shard(&engine, "shardId-recycle-low", Some(1 << 20));
    low.process(batch(1, &["e"]), &cancel)
        .await
        .expect("not cancelled");
    assert_eq!(low.recycle_if_grown().await, None);
    low.process(batch(2, &["misbehave:grow:4"]), &cancel)
        .await
        .expect("not cancelled");
    assert!(low.recycle_if_grown().await.is_some(), "grew: recycled");
}

/// `shoal replay` of the hand-written component with four memories (each `process` grows
/// three of them by `pages` 64 KiB pages), under a 32 MiB cap, with or without the
/// pooling allocator: its stdout.
fn replay_many_memories(pages: u32, pooling: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = include_str!("components/many_memories.wat").replace("PAGES", &pages.to_string());
    let wasm = wat::parse_str(&text).expect("the component text parses");
    let plugin = dir.path().join("many_memories.wasm");
    std::fs::write(&plugin, wasm).expect("component");
    let config = dir.path().join("replay.toml");
    std::fs::write(
        &config,
        format!("[engine]\npooling = {pooling}\n[plugin]\npath = \"ignored.wasm\"\n[plugin.limits]\nmemory = \"32MiB\"\ndeadline = \"5s\"\n[plugin.failure]\nmax_attempts = 1\n"),
    )
    .expect("config");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"partition_key\":\"k\",\"data\":\"one\"}\n").expect("input");
    // `SHOAL_HOSTILE_BINARY` runs it against another build, as the hostile suite.
    let binary = std::env::var_os("SHOAL_HOSTILE_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_shoal").into());
    let out = std::process::Command::new(binary)
        .env(
            "SHOAL_CACHE_DIR",
            repo_root().join("target/shoal-test-cache"),
        )
        .args(["replay", "--plugin"])
        .arg(&plugin)
        .arg("--input")
        .arg(&input)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run shoal replay");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
}

/// Finding: the memory cap was per memory. A component gets as many memories as its core
/// modules define (four with pooling, wasmtime's 10,000 without), and each was capped on
/// its own, so three memories of 12.5 MiB passed a 32 MiB cap together. Now the cap holds
/// for the sum of all memories (and tables) of the instance, pooling or not, and the same
/// component within the cap runs.
#[test]
fn the_memory_cap_holds_for_every_memory_of_a_component_together() {
    for pooling in [true, false] {
        let over = replay_many_memories(200, pooling);
        assert!(
            over.contains("trap memory-cap-exceeded")
                && over.contains("in all memories and tables, limit is 33554432 bytes"),
            "pooling {pooling}: three memories of 12.5 MiB under a 32 MiB cap:\n{over}"
        );
        let within = replay_many_memories(100, pooling);
        assert!(
            within.contains(": ok batch-end"),
            "pooling {pooling}: three memories of 6.25 MiB under a 32 MiB cap:\n{within}"
        );
    }
}

/// The one file in a cache directory.
fn only_entry(dir: &std::path::Path) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

/// Finding: cache paths were checked by path, then opened by path again, so whoever can
/// rename a parent of the cache could swap in another directory between the check and
/// the read, and have another plugin's native code loaded under this plugin's name. Now
/// the directory is opened once and every entry read relative to that handle, without
/// following links: a directory put in its place later, holding another plugin's valid
/// artifact under this plugin's entry name, is never read, and an entry that is a
/// symlink is compiled afresh.
#[test]
fn the_cache_reads_entries_only_through_the_directory_it_opened() {
    let parent = tempfile::tempdir().expect("tempdir");
    let cache = parent.path().join("cache");
    let engine = engine_with(|s| s.cache_dir = Some(cache.clone()));
    let checksum = plugin_path("checksum");
    assert_eq!(
        engine.load_file(&checksum, 1).expect("loads").source(),
        ArtifactSource::Compiled
    );
    let entry = only_entry(&cache);

    // Another plugin's artifact, valid for this engine, compiled into a cache of its own.
    let other_cache = parent.path().join("other");
    let other = engine_with(|s| s.cache_dir = Some(other_cache.clone()));
    other
        .load_file(&plugin_path("misbehave"), 1)
        .expect("loads");
    let planted = only_entry(&other_cache);

    // The cache directory is moved away, and a private directory takes its path with the
    // other artifact under checksum's entry name.
    std::fs::rename(&cache, parent.path().join("moved")).expect("rename");
    std::fs::create_dir(&cache).expect("mkdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    std::fs::copy(&planted, cache.join(entry.file_name().expect("name"))).expect("plant");

    let plugin = Arc::new(engine.load_file(&checksum, 2).expect("loads"));
    assert_eq!(
        plugin.source(),
        ArtifactSource::Cached,
        "read from the directory the engine opened (now moved)"
    );
    // It is checksum's code that runs: misbehave would fail this record.
    let mut instance = ProcessorInstance::new(
        &engine,
        &plugin,
        &instance_config("shardId-cache", SandboxSettings::default(), test_limits()),
    )
    .expect("instance");
    assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
    assert!(
        matches!(
            instance.process(&batch(1, &["misbehave:fatal"])),
            CallOutcome::Ok(_)
        ),
        "the planted artifact was loaded"
    );

    // An entry that is a symlink (here, to a valid artifact) is not followed.
    let fresh_parent = tempfile::tempdir().expect("tempdir");
    let fresh = fresh_parent.path().join("cache");
    let engine = engine_with(|s| s.cache_dir = Some(fresh.clone()));
    engine.load_file(&checksum, 1).expect("loads");
    let entry = only_entry(&fresh);
    let target = fresh_parent.path().join("artifact");
    std::fs::rename(&entry, &target).expect("move");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &entry).expect("symlink");
    assert_eq!(
        engine.load_file(&checksum, 2).expect("loads").source(),
        ArtifactSource::Compiled,
        "a symlinked entry is not loaded"
    );
}
