//! Deny by default: a guest cannot open files, read environment variables or open
//! sockets unless the config grants them; what is granted works, and only that.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use shoal::config::{DirGrant, DirMode, LimitSettings, SandboxSettings};
use shoal::egress::{EgressGrants, parse_socket};
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::{CallOutcome, GuestError, ProcessorInstance};

use crate::fixtures::*;
use crate::guest_log;

/// The shard every probe instance serves (its refusals are logged under it).
const PROBE_SHARD: &str = "shardId-sandbox";

/// The test limits with a deadline no loaded machine reaches: a probe tests the sandbox,
/// and real connects and name lookups run inside its call.
fn probe_limits() -> LimitSettings {
    LimitSettings {
        deadline: Duration::from_secs(10),
        recycle_above_bytes: None,
        ..test_limits()
    }
}

/// Run one `probe:` marker in a fresh instance with `sandbox` and return its report.
fn probe(sandbox: SandboxSettings, marker: &str) -> String {
    let engine = engine();
    let plugin = load(&engine, "misbehave");
    let mut instance = ProcessorInstance::new(
        &engine,
        &plugin,
        &instance_config(PROBE_SHARD, sandbox, probe_limits()),
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
        ..SandboxSettings::default()
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

/// A listener on 127.0.0.1 that has not been reached yet.
fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn assert_not_reached(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the guest reached a listener it was not granted: {other:?}"),
    }
}

fn tcp_grants(entries: &[String]) -> SandboxSettings {
    SandboxSettings {
        egress: EgressGrants {
            tcp: entries
                .iter()
                .map(|e| parse_socket(e, false).expect("grant"))
                .collect(),
            ..EgressGrants::default()
        },
        ..SandboxSettings::default()
    }
}

/// The sandbox's refusals logged for the probe shard so far.
fn refusals() -> Vec<String> {
    guest_log::of(PROBE_SHARD)
        .into_iter()
        .filter(|l| l.target == "shoal::sandbox" && l.level == tracing::Level::WARN)
        .map(|l| l.message)
        .collect()
}

#[test]
fn a_granted_tcp_destination_connects_and_only_that_one() {
    guest_log::install();
    let (granted, granted_addr) = listener();
    let (other, other_addr) = listener();
    let sandbox = tcp_grants(&[granted_addr.to_string()]);
    assert_allowed(&probe(
        sandbox.clone(),
        &format!("probe:socket:{granted_addr}"),
    ));
    granted
        .accept()
        .expect("the granted connection reached the listener");

    assert_denied(&probe(sandbox, &format!("probe:socket:{other_addr}")));
    assert_not_reached(&other);
    let expected = format!(
        "guest TCP connect to {other_addr} refused: no plugin.sandbox.tcp entry grants it; grant it with `\"{other_addr}\"` in plugin.sandbox.tcp"
    );
    assert!(
        refusals().contains(&expected),
        "no refusal naming the missing grant in {:?}",
        refusals()
    );
}

#[test]
fn names_resolve_only_when_a_grant_names_them() {
    guest_log::install();
    let (granted, addr) = listener();
    let port = addr.port();
    let sandbox = tcp_grants(&[format!("localhost:{port}")]);
    // The guest resolves `localhost` through shoal's lookup; the address it connects to
    // is judged by that name.
    assert_allowed(&probe(
        sandbox.clone(),
        &format!("probe:socket:localhost:{port}"),
    ));
    granted
        .accept()
        .expect("the connection by a granted name reached the listener");
    // The same address by IP literal is not the granted name.
    assert_denied(&probe(
        sandbox.clone(),
        &format!("probe:socket:127.0.0.1:{port}"),
    ));
    assert_not_reached(&granted);
    // A name no entry names is never looked up (no query leaves the host).
    assert_denied(&probe(
        sandbox,
        &format!("probe:socket:exfiltrate.example.invalid:{port}"),
    ));
    assert!(
        refusals().iter().any(|r| r
            == "guest name lookup of `exfiltrate.example.invalid` refused: no [plugin.sandbox] http, tcp or udp entry names it"),
        "no lookup refusal in {:?}",
        refusals()
    );
}

#[test]
fn udp_reaches_only_a_granted_destination() {
    guest_log::install();
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let addr = receiver.local_addr().expect("addr");
    let mut buf = [0u8; 16];

    assert_denied(&probe(
        SandboxSettings::default(),
        &format!("probe:udp:{addr}"),
    ));
    let mut granted = SandboxSettings::default();
    granted.egress.udp =
        vec![parse_socket(&format!("127.0.0.2:{}", addr.port()), false).expect("grant")];
    assert_denied(&probe(granted.clone(), &format!("probe:udp:{addr}")));
    assert!(
        receiver.recv_from(&mut buf).is_err(),
        "a datagram arrived from a guest that was not granted this destination"
    );

    granted.egress.udp = vec![parse_socket(&addr.to_string(), false).expect("grant")];
    assert_allowed(&probe(granted, &format!("probe:udp:{addr}")));
    let (n, _) = receiver
        .recv_from(&mut buf)
        .expect("the granted datagram arrives");
    assert_eq!(&buf[..n], b"probe");
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
        ..SandboxSettings::default()
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
        ..SandboxSettings::default()
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
