//! The processor conformance suite (docs/CONFORMANCE.md): the same batches through every
//! language's example processor, built from source by its `build.sh`, with identical
//! assertions on directives, error kinds, traps and fresh instances, capabilities and the
//! initialize/shutdown calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shoal::config::{DirGrant, DirMode, SandboxSettings};
use shoal::delivery::{BatchReport, Disposition, Failure, OnPoison, ShardProcessor};
use shoal::plugin::GuestError;
use shoal::plugin::bindings::{CheckpointDirective, FencingToken, Position, ShutdownReason};
use tokio_util::sync::CancellationToken;

use crate::fixtures::*;
use crate::guest_log::{self, GuestLine};

/// Build `examples/processors/<lang>/` with its own one command and return its `filter`
/// component; fails loudly.
pub fn build(lang: &str) -> PathBuf {
    build_component(lang, "filter")
}

/// Build `examples/processors/<lang>/` with its own one command and return the component
/// `build/<name>.wasm` it made; fails loudly.
pub fn build_component(lang: &str, name: &str) -> PathBuf {
    // Each language's build.sh builds all its components, and runs once per test process:
    // the sources do not change while the tests run, and some build.sh (JavaScript's)
    // rebuild every time.
    let mut built = build_lock();
    let dir = repo_root().join("examples/processors").join(lang);
    if !built.iter().any(|l| l == lang) {
        run_build(lang, &dir);
        built.push(lang.to_string());
    }
    let wasm = dir.join(format!("build/{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{lang}: build.sh did not produce {}",
        wasm.display()
    );
    wasm
}

/// One toolchain build at a time (the examples' and `shoal new` projects'): they are
/// CPU-heavy, some install packages into the shared `target/toolchains`, and two builds
/// of one language would write the same staging directories. Holds the languages whose
/// examples are built.
pub fn build_lock() -> std::sync::MutexGuard<'static, Vec<String>> {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    BUILT.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_build(lang: &str, dir: &std::path::Path) {
    let out = std::process::Command::new("bash")
        .arg(dir.join("build.sh"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}/build.sh: {e}", dir.display()));
    assert!(
        out.status.success(),
        "{lang}: build.sh failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim_end());
}

fn json(text: &str) -> String {
    text.replace('\'', "\"")
}

struct Subject {
    lang: &'static str,
    shard_id: String,
    shard: ShardProcessor,
    cancel: CancellationToken,
    next_seq: u64,
}

impl Subject {
    async fn run(&mut self, texts: &[&str]) -> BatchReport {
        let texts: Vec<String> = texts.iter().map(|t| json(t)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let first = self.next_seq;
        self.next_seq += refs.len() as u64 + 10;
        self.shard
            .process(batch(first, &refs), &self.cancel)
            .await
            .expect("not cancelled")
    }

    fn position(seq: u64) -> Position {
        Position {
            sequence_number: format!("{seq:020}"),
            sub_sequence_number: 0,
        }
    }

    fn log(&self) -> Vec<GuestLine> {
        guest_log::of(&self.shard_id)
    }

    fn last_line(&self) -> String {
        self.log()
            .last()
            .map(|l| l.message.clone())
            .unwrap_or_default()
    }

    fn assert_logged(&self, level: tracing::Level, message: &str) {
        let lines = self.log();
        assert!(
            lines
                .iter()
                .any(|l| l.level == level && l.message == message),
            "{}: expected the {level} line {message:?}; the guest logged:\n{lines:#?}",
            self.lang
        );
    }
}

/// The lease token every subject's instances run under: an epoch past 2^32 (no
/// truncation to 32 bits) and an owner that is not ASCII.
static LEASE_TOKEN: std::sync::LazyLock<FencingToken> = std::sync::LazyLock::new(|| FencingToken {
    epoch: (1 << 32) + 5,
    owner: "conformance-wörker".into(),
});

/// Start a shard of `lang`'s processor with a granted directory and env var (so denials
/// of the ungranted ones are meaningful) and the given settings.
fn subject(
    lang: &'static str,
    wasm: &std::path::Path,
    suffix: &str,
    settings: &[(&str, &str)],
    granted: &tempfile::TempDir,
) -> Subject {
    let engine = engine_with(|s| s.memory_bytes = 512 << 20);
    let plugin = Arc::new(
        engine
            .load_file(wasm, 1)
            .unwrap_or_else(|e| panic!("{lang}: {e}")),
    );
    let sandbox = SandboxSettings {
        env: vec![("SHOAL_GRANTED".into(), "yes".into())],
        dirs: vec![DirGrant {
            host: granted.path().to_path_buf(),
            guest: "/granted".into(),
            mode: DirMode::ReadOnly,
        }],
        ..SandboxSettings::default()
    };
    let mut limits = test_limits();
    limits.memory_bytes = 512 << 20;
    limits.deadline = std::time::Duration::from_secs(10);
    let shard_id = format!("shardId-conformance-{lang}-{suffix}");
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut config = instance_config(&shard_id, sandbox, limits);
    config.fencing = LEASE_TOKEN.clone();
    let shard = processor(
        &engine,
        plugin,
        config,
        &settings,
        fast_failure(1),
        OnPoison::GiveUp,
    );
    Subject {
        lang,
        shard_id,
        shard,
        cancel: CancellationToken::new(),
        next_seq: 1,
    }
}

fn processed(report: &BatchReport) -> &CheckpointDirective {
    match &report.disposition {
        Disposition::Processed(d) => d,
        other => panic!(
            "expected a processed batch, got {other:?} after {:?}",
            report.failures
        ),
    }
}

async fn conformance(lang: &'static str) {
    guest_log::install();
    let wasm = build(lang);
    let granted = tempfile::tempdir().expect("tempdir");
    std::fs::write(granted.path().join("hello.txt"), "hello").expect("granted file");
    let settings = [("field", "type"), ("value", "purchase")];
    let mut s = subject(lang, &wasm, "main", &settings, &granted);
    let id = s.shard_id.clone();

    // The work: matches, amounts, a skipped non-JSON record, one summary line.
    let report = s
        .run(&[
            "{'type':'purchase','amount':12.5}",
            "{'type':'view','amount':99}",
            "not json",
            "{'type':'purchase','amount':30}",
        ])
        .await;
    assert_eq!(processed(&report), &CheckpointDirective::BatchEnd, "{lang}");
    s.assert_logged(
        tracing::Level::INFO,
        &format!("initialize {id} field=type value=purchase"),
    );
    s.assert_logged(
        tracing::Level::WARN,
        &format!("skip {:020}: not a JSON object", 3),
    );
    assert_eq!(
        s.last_line(),
        "batch 4 records 2 matched 1 skipped total 42.5",
        "{lang}"
    );
    let first_instance = report.instance_serial;

    // Directives: at / rewind / none, at the test record, the rest of the batch skipped.
    for command in ["at", "rewind", "none"] {
        let test_record = Subject::position(s.next_seq + 1);
        let expected = match command {
            "at" => CheckpointDirective::At(test_record),
            "rewind" => CheckpointDirective::Rewind(test_record),
            _ => CheckpointDirective::None,
        };
        let text = format!("{{'shoal_test':'{command}'}}");
        let report = s
            .run(&[
                "{'type':'purchase','amount':1}",
                &text,
                "{'type':'purchase','amount':1}",
            ])
            .await;
        assert_eq!(processed(&report), &expected, "{lang}: {command}");
    }

    // Guest errors map to retry / fatal, with the guest's message.
    for (command, expected) in [
        ("retry", GuestError::Retry("conformance retry".into())),
        ("fatal", GuestError::Fatal("conformance fatal".into())),
    ] {
        let text = format!("{{'shoal_test':'{command}'}}");
        let report = s.run(&[&text]).await;
        assert!(
            matches!(report.disposition, Disposition::GaveUp),
            "{lang}: {command}: {:?}",
            report.disposition
        );
        match report.failures.as_slice() {
            [Failure::Guest(e)] => assert_eq!(e, &expected, "{lang}: {command}"),
            other => panic!("{lang}: {command}: expected one guest error, got {other:?}"),
        }
        assert_eq!(
            report.instance_serial, first_instance,
            "{lang}: a guest error keeps the instance"
        );
    }

    // Capabilities: what was granted is reachable, nothing else is.
    let report = s
        .run(&[
            "{'shoal_test':'read-file','path':'/granted/hello.txt'}",
            "{'shoal_test':'read-file','path':'/etc/passwd'}",
            "{'shoal_test':'env','name':'SHOAL_GRANTED'}",
            "{'shoal_test':'env','name':'HOME'}",
            "{'shoal_test':'env','name':'PATH'}",
            "{'shoal_test':'lease-token'}",
        ])
        .await;
    assert_eq!(processed(&report), &CheckpointDirective::BatchEnd, "{lang}");
    s.assert_logged(
        tracing::Level::INFO,
        "read-file /granted/hello.txt: allowed",
    );
    s.assert_logged(tracing::Level::INFO, "read-file /etc/passwd: denied");
    s.assert_logged(tracing::Level::INFO, "env SHOAL_GRANTED: set");
    s.assert_logged(tracing::Level::INFO, "env HOME: unset");
    s.assert_logged(tracing::Level::INFO, "env PATH: unset");
    s.assert_logged(
        tracing::Level::INFO,
        &format!(
            "lease-token epoch={} owner={}",
            LEASE_TOKEN.epoch, LEASE_TOKEN.owner
        ),
    );

    // A language-level failure is a classified trap; the next batch runs on a fresh
    // instance (initialize again, the running total starts over).
    let built = s.shard.instances_built();
    let report = s.run(&["{'shoal_test':'trap'}"]).await;
    match report.failures.as_slice() {
        [Failure::Trap(trap)] => eprintln!("{lang}: trap classified as {}", trap.kind),
        other => panic!("{lang}: expected one trap, got {other:?}"),
    }
    let report = s.run(&["{'type':'purchase','amount':7}"]).await;
    assert_eq!(processed(&report), &CheckpointDirective::BatchEnd, "{lang}");
    assert_ne!(
        report.instance_serial, first_instance,
        "{lang}: a fresh instance after the trap"
    );
    assert!(s.shard.instances_built() > built, "{lang}");
    assert_eq!(
        s.last_line(),
        "batch 1 records 1 matched 0 skipped total 7",
        "{lang}: the total restarted"
    );
    let initializations = s
        .log()
        .iter()
        .filter(|l| l.message.starts_with("initialize "))
        .count();
    assert_eq!(initializations, 2, "{lang}: initialize once per instance");

    // shutdown carries the reason.
    s.shard
        .shutdown(ShutdownReason::Requested)
        .await
        .expect("shutdown");
    s.assert_logged(tracing::Level::INFO, &format!("shutdown {id} requested"));
    for (suffix, reason, word) in [
        ("end", ShutdownReason::ShardEnd, "shard-end"),
        ("lost", ShutdownReason::LeaseLost, "lease-lost"),
    ] {
        let mut other = subject(
            lang,
            &wasm,
            suffix,
            &[("field", "kind"), ("value", "x")],
            &granted,
        );
        let report = other
            .run(&["{'kind':'x','amount':2}", "{'type':'purchase','amount':5}"])
            .await;
        assert_eq!(processed(&report), &CheckpointDirective::BatchEnd, "{lang}");
        // Settings reach initialize.
        other.assert_logged(
            tracing::Level::INFO,
            &format!("initialize {} field=kind value=x", other.shard_id),
        );
        assert_eq!(
            other.last_line(),
            "batch 2 records 1 matched 0 skipped total 2",
            "{lang}"
        );
        other.shard.shutdown(reason).await.expect("shutdown");
        other.assert_logged(
            tracing::Level::INFO,
            &format!("shutdown {} {word}", other.shard_id),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_processor_conforms() {
    conformance("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_processor_conforms() {
    conformance("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_processor_conforms() {
    conformance("c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_processor_conforms() {
    conformance("javascript").await;
}

/// `npm ci` (npm 11) rejects a lock file with a package entry that has no version, which
/// npm 10 wrote for optional platform bindings it could not resolve. Every entry must pin
/// its version and integrity, so the JavaScript build works on npm 10 and 11 alike.
#[test]
fn javascript_lock_file_pins_every_package() {
    let path = repo_root().join("examples/processors/javascript/package-lock.json");
    let text = std::fs::read_to_string(&path).expect("read package-lock.json");
    let lock: serde_json::Value = serde_json::from_str(&text).expect("package-lock.json is JSON");
    let packages = lock["packages"]
        .as_object()
        .expect("lockfileVersion 3 `packages`");
    let mut checked = 0;
    for (name, entry) in packages.iter().filter(|(name, _)| !name.is_empty()) {
        for field in ["version", "integrity"] {
            assert!(
                entry[field].as_str().is_some_and(|v| !v.is_empty()),
                "{}: {name} has no `{field}`: regenerate it with `npm install --package-lock-only`",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(
        packages.contains_key("node_modules/componentize-qjs"),
        "{packages:?}"
    );
    assert!(checked >= 2, "only {checked} packages in the lock file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_processor_conforms() {
    conformance("go").await;
}
