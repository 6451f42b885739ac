//! Deny by default: a guest cannot open files, read environment variables or open
//! sockets unless the config grants them; what is granted works, and only that.

use std::io::ErrorKind;
use std::net::TcpListener;

use shoal::config::{DirGrant, DirMode, SandboxSettings};
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::{CallOutcome, GuestError, ProcessorInstance};

use crate::fixtures::*;

/// Run one `probe:` marker in a fresh instance with `sandbox` and return its report.
fn probe(sandbox: SandboxSettings, marker: &str) -> String {
    let engine = engine();
    let plugin = load(&engine, "misbehave");
    let mut instance = ProcessorInstance::new(
        &engine,
        &plugin,
        &instance_config("shardId-sandbox", sandbox, test_limits()),
    )
    .expect("instance");
    assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
    match instance.process(&batch(1, &[marker])) {
        CallOutcome::GuestError(GuestError::Fatal(report)) => report,
        other => panic!("{marker}: expected a probe report, got {other:?}"),
    }
}

fn assert_denied(report: &str) {
    assert!(
        report.contains(": denied: "),
        "expected a denial, got: {report}"
    );
}

fn assert_allowed(report: &str) {
    assert!(
        report.contains(": allowed: "),
        "expected access, got: {report}"
    );
}

#[test]
fn files_are_denied_without_a_grant() {
    // Files that certainly exist on the host.
    for path in [
        "/etc/hostname",
        "/etc/passwd",
        "/proc/self/status",
        "Cargo.toml",
        ".",
    ] {
        assert_denied(&probe(
            SandboxSettings::default(),
            &format!("probe:file:{path}"),
        ));
    }
    let target = std::env::temp_dir().join(format!("shoal-sandbox-{}", std::process::id()));
    assert_denied(&probe(
        SandboxSettings::default(),
        &format!("probe:write:{}", target.display()),
    ));
    assert!(
        !target.exists(),
        "the guest created a host file without a grant"
    );
}

#[test]
fn environment_variables_are_denied_without_a_grant() {
    // PATH and HOME are set in every test environment.
    assert!(std::env::var("PATH").is_ok());
    assert_denied(&probe(SandboxSettings::default(), "probe:env:PATH"));
    assert_denied(&probe(SandboxSettings::default(), "probe:env:HOME"));
}

#[test]
fn granted_environment_variables_and_only_those_are_visible() {
    let sandbox = SandboxSettings {
        env: vec![("MODE".into(), "test".into())],
        dirs: vec![],
    };
    assert_eq!(
        probe(sandbox.clone(), "probe:env:MODE"),
        "probe env MODE: allowed: test"
    );
    assert_denied(&probe(sandbox, "probe:env:PATH"));
}

#[test]
fn sockets_are_denied_and_no_connection_reaches_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    assert_denied(&probe(
        SandboxSettings::default(),
        &format!("probe:socket:{addr}"),
    ));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the host listener: {other:?}"),
    }
}

#[test]
fn a_read_only_grant_reads_but_does_not_write_or_escape() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), "hello from the host").expect("write");
    let sandbox = SandboxSettings {
        env: vec![],
        dirs: vec![DirGrant {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
            mode: DirMode::ReadOnly,
        }],
    };
    assert_eq!(
        probe(sandbox.clone(), "probe:file:/data/hello.txt"),
        "probe file /data/hello.txt: allowed: hello from the host"
    );
    assert_denied(&probe(sandbox.clone(), "probe:write:/data/new.txt"));
    assert!(!dir.path().join("new.txt").exists());
    assert_denied(&probe(
        sandbox.clone(),
        "probe:file:/data/../../etc/hostname",
    ));
    assert_denied(&probe(sandbox, "probe:file:/etc/hostname"));
}

#[test]
fn a_read_write_grant_writes_on_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = SandboxSettings {
        env: vec![],
        dirs: vec![DirGrant {
            host: dir.path().to_path_buf(),
            guest: "/out".into(),
            mode: DirMode::ReadWrite,
        }],
    };
    assert_allowed(&probe(sandbox, "probe:write:/out/new.txt"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).expect("written"),
        "written by misbehave\n"
    );
}

#[test]
fn guest_output_and_log_calls_do_not_disturb_processing() {
    let engine = engine();
    let plugin = load(&engine, "misbehave");
    let mut instance = ProcessorInstance::new(
        &engine,
        &plugin,
        &instance_config("shardId-stdio", SandboxSettings::default(), test_limits()),
    )
    .expect("instance");
    assert!(matches!(instance.initialize(&[]), CallOutcome::Ok(())));
    let long = format!("misbehave:print:{}", "x".repeat(100_000));
    let outcome = instance.process(&batch(
        1,
        &[
            "misbehave:print:one line",
            &long,
            "misbehave:log:via the log import",
        ],
    ));
    assert!(
        matches!(outcome, CallOutcome::Ok(CheckpointDirective::BatchEnd)),
        "{outcome:?}"
    );
}
