//! Outbound HTTP from a guest (`wasi:http`, the `http-sink` processor) against a real
//! local server: a granted endpoint receives each batch with its idempotency key; a
//! guest with no HTTP grant at all traps at its first HTTP resource, naming the key; an
//! endpoint that is not granted (by name, by IP literal, or as a redirect target) is
//! refused with the missing grant named and never reached; a 500 is retried; a server
//! that stalls ends in a timeout the guest sees, within its deadline. The Python and
//! JavaScript `http-sink` examples keep the same contract as the Rust one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::config::{LimitSettings, SandboxSettings};
use shoal::egress::parse_http;
use shoal::plugin::bindings::CheckpointDirective;
use shoal::plugin::{CallOutcome, GuestError, ProcessorInstance, TrapKind};

use crate::fixtures::*;
use crate::guest_log;
use crate::http_server::{HttpServer, Mode};

const SHARD: &str = "shardId-http";

fn grants(entries: &[String]) -> SandboxSettings {
    let mut sandbox = SandboxSettings::default();
    sandbox.egress.http = entries
        .iter()
        .map(|e| parse_http(e, false).expect("grant"))
        .collect();
    sandbox
}

/// One `process` call of the Rust `http-sink` posting to `url`.
fn post_batch(
    sandbox: SandboxSettings,
    url: &str,
    timeout_ms: u64,
    deadline: Duration,
) -> CallOutcome<CheckpointDirective> {
    post_batch_with(
        &plugin_path("http_sink"),
        sandbox,
        url,
        timeout_ms,
        deadline,
    )
}

/// One `process` call of the `http-sink` component at `path` posting to `url`.
fn post_batch_with(
    path: &Path,
    sandbox: SandboxSettings,
    url: &str,
    timeout_ms: u64,
    deadline: Duration,
) -> CallOutcome<CheckpointDirective> {
    let engine = engine();
    let plugin = Arc::new(engine.load_file(path, 1).expect("plugin loads"));
    let limits = LimitSettings {
        deadline,
        ..test_limits()
    };
    let mut instance =
        ProcessorInstance::new(&engine, &plugin, &instance_config(SHARD, sandbox, limits))
            .expect("instance");
    let settings = vec![
        ("url".to_string(), url.to_string()),
        ("timeout_ms".to_string(), timeout_ms.to_string()),
    ];
    assert!(matches!(
        instance.initialize(&settings),
        CallOutcome::Ok(())
    ));
    instance.process(&batch(1, &["first", "second"]))
}

/// Without any `plugin.sandbox.http` entry no HTTP resource exists: the guest's first
/// one (its request headers) traps `host-refused`, naming the key to add, and nothing
/// reaches the server.
fn assert_no_http_without_a_grant(path: &Path, server: &HttpServer) {
    let before = server.received().len();
    let outcome = post_batch_with(
        path,
        SandboxSettings::default(),
        &server.url("/ingest"),
        5000,
        Duration::from_secs(20),
    );
    match outcome {
        CallOutcome::Trap(trap) => {
            assert_eq!(trap.kind, TrapKind::HostRefused, "{trap}");
            assert!(
                trap.message.contains("grants it no HTTP destination")
                    && trap.message.contains("plugin.sandbox.http"),
                "{trap}"
            );
        }
        other => panic!("not granted: expected a host-refused trap, got {other:?}"),
    }
    assert_eq!(
        server.received().len(),
        before,
        "a request reached the server"
    );
}

fn refusals() -> Vec<String> {
    guest_log::of(SHARD)
        .into_iter()
        .filter(|l| l.target == "shoal::sandbox")
        .map(|l| l.message)
        .collect()
}

#[test]
fn an_endpoint_that_is_not_granted_is_refused_and_never_reached() {
    guest_log::install();
    let server = HttpServer::start(Mode::Ok);
    // Nothing granted: no wasi:http resource exists, the first one traps naming the key.
    assert_no_http_without_a_grant(&plugin_path("http_sink"), &server);
    // Granted elsewhere: the request is refused, naming the entry that would grant it.
    let elsewhere = grants(&[format!("http://127.0.0.2:{}", server.addr.port())]);
    let outcome = post_batch(
        elsewhere,
        &server.url("/ingest"),
        5000,
        Duration::from_secs(10),
    );
    match outcome {
        CallOutcome::GuestError(GuestError::Fatal(m)) => assert!(m.contains("denied"), "{m}"),
        other => panic!("expected a fatal refusal, got {other:?}"),
    }
    let expected = format!(
        "guest HTTP request to http://{}:{} refused: no entry grants this address; grant it with `\"http://{}\"` in plugin.sandbox.http",
        server.addr.ip(),
        server.addr.port(),
        server.addr
    );
    assert!(
        refusals().contains(&expected),
        "{expected} not in {:?}",
        refusals()
    );
    // Granted by name, requested by IP literal: still refused.
    let by_name = grants(&[format!("http://localhost:{}", server.addr.port())]);
    let outcome = post_batch(
        by_name,
        &server.url("/ingest"),
        5000,
        Duration::from_secs(10),
    );
    assert!(
        matches!(outcome, CallOutcome::GuestError(GuestError::Fatal(_))),
        "{outcome:?}"
    );
    assert!(
        server.received().is_empty(),
        "a refused request reached the server"
    );
}

#[test]
fn a_redirect_to_a_host_that_is_not_granted_is_refused() {
    guest_log::install();
    let server = HttpServer::start(Mode::Ok);
    let elsewhere = format!("http://127.0.0.2:{}/elsewhere", server.addr.port());
    server.set_mode(Mode::Redirect(elsewhere.clone()));
    let outcome = post_batch(
        grants(&[format!("http://{}", server.addr)]),
        &server.url("/ingest"),
        5000,
        Duration::from_secs(10),
    );
    match outcome {
        CallOutcome::GuestError(GuestError::Fatal(m)) => {
            assert!(m.contains(&elsewhere) && m.contains("denied"), "{m}")
        }
        other => panic!("expected the redirect to be refused, got {other:?}"),
    }
    let received = server.received();
    assert_eq!(
        received.len(),
        1,
        "only the first request reached the server: {received:?}"
    );
    assert!(
        refusals()
            .iter()
            .any(|r| r.contains("HTTP request to http://127.0.0.2:")),
        "{:?}",
        refusals()
    );
}

#[test]
fn a_server_error_is_retried_and_a_stalled_server_times_out_within_the_deadline() {
    let server = HttpServer::start(Mode::Fail);
    let granted = grants(&[format!("http://{}", server.addr)]);
    let outcome = post_batch(
        granted.clone(),
        &server.url("/ingest"),
        5000,
        Duration::from_secs(10),
    );
    match outcome {
        CallOutcome::GuestError(GuestError::Retry(m)) => assert!(m.contains("500"), "{m}"),
        other => panic!("expected retry on a 500, got {other:?}"),
    }
    server.set_mode(Mode::Stall);
    // The guest's own timeout.
    let started = Instant::now();
    let outcome = post_batch(
        granted.clone(),
        &server.url("/ingest"),
        300,
        Duration::from_secs(10),
    );
    match outcome {
        CallOutcome::GuestError(GuestError::Retry(m)) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("expected a timeout the guest sees, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // A guest timeout longer than the deadline is cut to the deadline: the call ends
    // (as a timeout the guest reports, or as a deadline trap) long before 60 s.
    let started = Instant::now();
    let outcome = post_batch(
        granted,
        &server.url("/ingest"),
        60_000,
        Duration::from_millis(1500),
    );
    assert!(
        matches!(
            &outcome,
            CallOutcome::GuestError(GuestError::Retry(_)) | CallOutcome::Trap(_)
        ),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// What every language's `http-sink` must do, checked against one component: the batch
/// document and its idempotency key reach a granted endpoint and end in `batch-end`; an
/// ungranted endpoint is refused (fatal, "denied") and never reached; a 500 is retried;
/// a redirect to an ungranted host is refused after the first hop.
fn keeps_the_http_sink_contract(path: &Path) {
    let server = HttpServer::start(Mode::Ok);
    let granted = || grants(&[format!("http://{}", server.addr)]);
    let deadline = Duration::from_secs(20);
    let outcome = post_batch_with(path, granted(), &server.url("/ingest"), 5000, deadline);
    assert!(
        matches!(outcome, CallOutcome::Ok(CheckpointDirective::BatchEnd)),
        "granted: {outcome:?}"
    );
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/ingest")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(
        request.header("idempotency-key").is_some_and(
            |k| k.ends_with("/shardId-http/00000000000000000001.0-00000000000000000002.0")
        ),
        "{request:?}"
    );
    let posted: Vec<(String, String)> = server
        .accepted_records()
        .into_iter()
        .map(|r| (r.position, r.data))
        .collect();
    assert_eq!(
        posted,
        [
            ("00000000000000000001.0".to_string(), "first".to_string()),
            ("00000000000000000002.0".to_string(), "second".to_string())
        ]
    );

    assert_no_http_without_a_grant(path, &server);
    assert_eq!(
        server.received().len(),
        1,
        "a refused request reached the server"
    );

    server.set_mode(Mode::Fail);
    match post_batch_with(path, granted(), &server.url("/ingest"), 5000, deadline) {
        CallOutcome::GuestError(GuestError::Retry(m)) => assert!(m.contains("500"), "{m}"),
        other => panic!("500: expected retry, got {other:?}"),
    }

    let elsewhere = format!("http://127.0.0.2:{}/elsewhere", server.addr.port());
    server.set_mode(Mode::Redirect(elsewhere.clone()));
    match post_batch_with(path, granted(), &server.url("/ingest"), 5000, deadline) {
        CallOutcome::GuestError(GuestError::Fatal(m)) => {
            assert!(m.contains(&elsewhere) && m.contains("denied"), "{m}")
        }
        other => panic!("redirect: expected a fatal refusal, got {other:?}"),
    }
    assert_eq!(
        server.received().len(),
        3,
        "the redirect target was never reached"
    );
}

#[test]
fn the_rust_http_sink_keeps_the_contract() {
    keeps_the_http_sink_contract(&plugin_path("http_sink"));
}

#[test]
fn the_python_http_sink_keeps_the_contract() {
    keeps_the_http_sink_contract(&crate::conformance::build_component("python", "http-sink"));
}

#[test]
fn the_javascript_http_sink_keeps_the_contract() {
    keeps_the_http_sink_contract(&crate::conformance::build_component(
        "javascript",
        "http-sink",
    ));
}
