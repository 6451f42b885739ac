//! What an operator sees of a running `shoal run`: `/metrics` parses as OpenMetrics with
//! the Prometheus project's own strict parser and its counters move while records flow;
//! every query of the shipped Grafana dashboard names a metric found there; `/healthz`
//! and `/readyz` answer, and `/readyz` turns unready while the lease store is down and
//! ready again when it returns. Real processes on the emulators.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, shard_id};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::fault_proxy::{Fault, FaultProxy};
use crate::fixtures::{repo_root, test_python};

const LEASE: Duration = Duration::from_millis(2000);

/// A free port on loopback (bound, then released for the worker to take).
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// `GET path` over HTTP/1.1: (status, body); `None` if nothing answered.
pub fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// One OpenMetrics family as the parser gave it.
#[derive(Debug, serde::Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse a scrape with `prometheus_client.openmetrics.parser` (strict), failing the test
/// with the parser's words if it is not valid OpenMetrics.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut child = Command::new(test_python())
        .arg(repo_root().join("tests/openmetrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the OpenMetrics parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the scrape");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "{}\n--- scrape:\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Vec<Family> = serde_json::from_slice(&out.stdout).expect("parser JSON");
    families.into_iter().map(|f| (f.name.clone(), f)).collect()
}

/// The value of the sample `name` whose labels include `labels` (summed over the rest).
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .values()
        .flat_map(|f| &f.samples)
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The sample names a family of this type exposes (OpenMetrics).
fn sample_names(family: &Family) -> Vec<String> {
    let n = &family.name;
    match family.kind.as_str() {
        "counter" => vec![format!("{n}_total"), format!("{n}_created")],
        "histogram" => vec![
            format!("{n}_bucket"),
            format!("{n}_count"),
            format!("{n}_sum"),
            format!("{n}_created"),
        ],
        _ => vec![n.clone()],
    }
}

/// Every `shoal_…` name in the dashboard's queries (panel targets and template variables).
fn dashboard_metric_names() -> Vec<String> {
    let path = repo_root().join("docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the Grafana dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            queries.push(variable["query"].as_str().expect("query").to_string());
        }
    }
    let mut names: Vec<String> = queries
        .iter()
        .flat_map(|q| {
            q.match_indices("shoal_")
                .map(|(at, _)| {
                    q[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn metrics_move_while_records_flow_and_parse_as_openmetrics() {
    let _one_at_a_time = exclusive();
    let emulators = Emulators::new(Kinesis::Mock);
    let mut c = Cluster::aws(&emulators, 2, LEASE);
    let address = free_address();
    c.set_metrics(&address);
    c.produce(0, 0, 100);
    c.produce(1, 0, 100);
    c.start("w1");
    c.wait_for("the first records archived", Duration::from_secs(90), |c| {
        c.has_last_records(2, 100)
    });
    let (status, first) = get(&address, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{first}");
    let before = parse(&first);

    c.produce(0, 100, 150);
    c.produce(1, 100, 150);
    c.wait_for(
        "the second records archived",
        Duration::from_secs(90),
        |c| c.has_last_records(2, 250),
    );
    // Renewals come every third of the lease: let a few happen between the scrapes.
    std::thread::sleep(LEASE * 2);
    // The scrape may come a moment before the last batch's counters are updated.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (status, text) = get(&address, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{text}");
        let after = parse(&text);
        let done = (0..2).all(|s| {
            value(
                &after,
                "shoal_records_processed_total",
                &[("shard", &shard_id(s))],
            ) >= 250.0
        });
        if done || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let stream = c.stream().name.clone();
    for s in 0..2 {
        let shard = shard_id(s);
        let labels = [("stream", stream.as_str()), ("shard", shard.as_str())];
        let records = |f| value(f, "shoal_records_processed_total", &labels);
        assert!(records(&before) >= 100.0, "{shard}: {}", records(&before));
        assert_eq!(records(&after), 250.0, "{shard}: every record counted once");
        let bytes = value(&after, "shoal_processed_bytes_total", &labels);
        assert!(bytes >= 250.0 * 3.0, "{shard}: {bytes} bytes");
        assert!(
            after["shoal_behind_latest_seconds"]
                .samples
                .iter()
                .any(|x| x.labels.get("shard") == Some(&shard)),
            "{shard}: no lag gauge"
        );
        assert!(value(&after, "shoal_checkpoints_total", &labels) >= 2.0);
    }
    let get_records = |f| {
        value(
            f,
            "shoal_source_requests_total",
            &[("operation", "GetRecords"), ("outcome", "ok")],
        )
    };
    assert!(
        get_records(&after) > get_records(&before),
        "GetRecords calls moved"
    );
    assert!(
        value(
            &after,
            "shoal_source_request_duration_seconds_count",
            &[("operation", "GetRecords")]
        ) > 0.0
    );
    let renewals = |f| {
        value(
            f,
            "shoal_lease_store_requests_total",
            &[("operation", "renew"), ("outcome", "ok")],
        )
    };
    assert!(
        renewals(&after) > renewals(&before),
        "renewals moved: {} then {}; lease-store samples: {:?}",
        renewals(&before),
        renewals(&after),
        after.get("shoal_lease_store_requests").map(|f| f
            .samples
            .iter()
            .map(|s| (&s.labels, s.value))
            .collect::<Vec<_>>())
    );
    assert_eq!(value(&after, "shoal_leases_held", &[]), 2.0);
    assert_eq!(value(&after, "shoal_leases_taken_total", &[]), 2.0);
    assert_eq!(value(&after, "shoal_plugin_generation", &[]), 1.0);
    let calls = |f| value(f, "shoal_guest_call_duration_seconds_count", &[]);
    assert!(calls(&after) > calls(&before), "guest calls moved");
    // Every series carries the stream.
    for family in after.values() {
        for sample in &family.samples {
            assert_eq!(
                sample.labels.get("stream"),
                Some(&stream),
                "{} {:?}",
                sample.name,
                sample.labels
            );
        }
    }

    // Every metric the Grafana dashboard queries is one this process exports.
    let names = dashboard_metric_names();
    assert!(names.len() >= 15, "the dashboard names only {names:?}");
    let exported: Vec<String> = after.values().flat_map(sample_names).collect();
    for name in &names {
        assert!(
            exported.contains(name),
            "the dashboard queries {name}, which /metrics does not export; exported: {exported:?}"
        );
    }

    let (status, body) = get(&address, "/healthz").expect("/healthz answers");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&address, "/readyz").expect("/readyz answers");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _) = get(&address, "/nothing").expect("answers");
    assert_eq!(status, 404);

    // `shoal leases` reads the DynamoDB table too, and adds lag and rate from /metrics.
    let config = c.path("w1.toml");
    let json = shoal_leases(&[
        "--config",
        config.to_str().expect("path"),
        "--json",
        "--metrics",
        &address,
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim()).expect("JSON rows");
    assert_eq!(rows.len(), 2, "{json}");
    for row in &rows {
        assert_eq!(row["owner"], "w1", "{row}");
        assert_eq!(row["state"], "open", "{row}");
        assert!(row["behind_latest_seconds"].is_number(), "{row}");
    }
    assert!(c.terminate("w1"));
}

#[test]
fn readyz_is_unready_while_the_lease_store_is_down_and_ready_when_it_returns() {
    let _one_at_a_time = exclusive();
    let emulators = Emulators::new(Kinesis::Mock);
    let mut c = Cluster::aws(&emulators, 1, LEASE);
    let dynamodb = c.stream().dynamodb_endpoint.clone();
    let proxy = FaultProxy::start(&dynamodb, &[], |_| Fault::Forward);
    c.set_dynamodb_endpoint(&proxy.endpoint);
    let address = free_address();
    c.set_metrics(&address);
    c.produce(0, 0, 20);
    c.start("w1");
    let ready = || get(&address, "/readyz");
    c.wait_for("/readyz to say ready", Duration::from_secs(90), |_| {
        ready().is_some_and(|(s, _)| s == 200)
    });

    proxy.set_outage(true);
    let down_at = Instant::now();
    let mut reasons = String::new();
    c.wait_for(
        "/readyz to say unready",
        Duration::from_secs(60),
        |_| match ready() {
            Some((503, body)) => {
                reasons = body;
                true
            }
            _ => false,
        },
    );
    let took = down_at.elapsed();
    assert!(
        reasons.contains("lease store: last answered"),
        "the reason names the lease store: {reasons}"
    );
    // The window is three lease durations (6 s here).
    assert!(
        took >= Duration::from_secs(5),
        "unready after only {took:?}"
    );
    let (status, body) = get(&address, "/healthz").expect("/healthz answers");
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "alive while the lease store is down"
    );

    proxy.set_outage(false);
    c.wait_for(
        "/readyz to say ready again",
        Duration::from_secs(60),
        |_| ready().is_some_and(|(s, _)| s == 200),
    );
    c.produce(0, 20, 20);
    c.wait_for("records after the outage", Duration::from_secs(90), |c| {
        c.has_last_records(1, 40)
    });
    assert!(c.terminate("w1"));
}

/// `--log-format json`: every line is one JSON object, and the events of a shard carry
/// the worker id, the stream, the shard and (in the guest's calls) the plugin generation
/// in their spans.
#[test]
fn json_log_lines_parse_and_carry_the_worker_stream_shard_and_generation() {
    let mut c = Cluster::local(1, LEASE);
    // json-count logs its counts through the host's `log` import every 10 records.
    c.set_plugin(
        &crate::fixtures::plugin_path("json_count"),
        "field = \"type\"\nreport_every = 10\n",
    );
    c.produce(0, 0, 30);
    c.start_with_args("w1", "", &["--log-format", "json"]);
    c.wait_for(
        "the processor's count report",
        Duration::from_secs(60),
        |c| c.log("w1").contains("30 records"),
    );
    assert!(c.terminate("w1"));
    let log = c.log("w1");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    assert!(lines.len() >= 5, "{log}");
    for line in &lines {
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    // The span list of an event, outermost first, as `name → fields`.
    let spans = |line: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        line["spans"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|s| {
                        (
                            s["name"].as_str().unwrap_or_default().to_string(),
                            s.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "shard worker starting")
        .unwrap_or_else(|| panic!("no 'shard worker starting' line in\n{log}"));
    let s = spans(started);
    assert_eq!(s["consumer"]["worker"], "w1", "{started}");
    assert_eq!(s["consumer"]["stream"], "local", "{started}");
    assert_eq!(s["worker"]["shard"], shard_id(0).as_str(), "{started}");
    // What the guest logs is in its shard's spans, plugin generation included.
    let guest = lines
        .iter()
        .find(|l| l["target"] == "shoal::guest")
        .unwrap_or_else(|| panic!("no line from the guest in\n{log}"));
    let s = spans(guest);
    assert_eq!(
        s.get("consumer").map(|c| &c["worker"]),
        Some(&"w1".into()),
        "{guest}"
    );
    let shard = s
        .get("shard")
        .unwrap_or_else(|| panic!("no shard span: {guest}"));
    assert_eq!(shard["shard"], shard_id(0).as_str(), "{guest}");
    assert_eq!(shard["generation"], 1, "{guest}");
}

/// Run `shoal check -c config`: (exit status, stdout).
pub fn shoal_check(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["check", "--config"])
        .arg(config)
        .envs(crate::emulators::TEST_CREDENTIALS.iter().copied())
        .output()
        .expect("run shoal check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The line of `check`'s output about `what`.
pub fn finding<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|l| l[6..].starts_with(&format!("{what}: ")))
        .unwrap_or_else(|| panic!("no {what} line in\n{out}"))
}

#[test]
fn check_finds_a_bad_config_a_bad_plugin_an_unreachable_endpoint_and_a_missing_stream() {
    let _one_at_a_time = exclusive();
    let emulators = Emulators::new(Kinesis::Mock);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = crate::fixtures::plugin_path("archive");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("config");
        path
    };
    let aws = |stream: &str, kinesis: &str, plugin: &std::path::Path| {
        format!(
            "[consumer]\napplication = \"check-test\"\n[source]\nkind = \"kinesis\"\nstream_name = \"{stream}\"\nregion = \"us-east-1\"\nendpoint = \"{kinesis}\"\n[leases]\nkind = \"dynamodb\"\ntable = \"check-test-{}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[plugin]\npath = \"{}\"\n",
            std::process::id(),
            emulators.dynamodb_endpoint(),
            plugin.display()
        )
    };

    // Everything in place: a stream that exists, a table still to be created.
    let stream = emulators.create_stream(2);
    let good = write(
        "good.toml",
        aws(&stream.name, emulators.kinesis_endpoint(), &archive),
    );
    let (status, out) = shoal_check(&good);
    assert_eq!(status, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok    ")).count(),
        4,
        "{out}"
    );
    assert!(
        finding(&out, "stream").contains("2 shard(s), 2 open"),
        "{out}"
    );
    assert!(
        finding(&out, "lease store").contains("does not exist yet"),
        "{out}"
    );

    // A config error names the file, line and key, and nothing else is tried.
    let bad_config = write(
        "bad-config.toml",
        aws(&stream.name, emulators.kinesis_endpoint(), &archive)
            .replace("[plugin]\n", "[plugin]\nwatchh = true\n"),
    );
    let (status, out) = shoal_check(&bad_config);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.starts_with("FAIL  config: config error in ")
            && out.contains("line 14 at key `plugin.watchh`"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // A component of another world: rejected with what does not fit.
    let wrong = crate::fixtures::plugin_path("wrong_world");
    let bad_plugin = write(
        "bad-plugin.toml",
        aws(&stream.name, emulators.kinesis_endpoint(), &wrong),
    );
    let (status, out) = shoal_check(&bad_plugin);
    assert_eq!(status, 1, "{out}");
    let plugin = finding(&out, "plugin");
    assert!(
        plugin.starts_with("FAIL") && plugin.contains("shoal:processor"),
        "{out}"
    );
    assert!(finding(&out, "stream").starts_with("ok"), "{out}");

    // Nothing listens at the Kinesis endpoint.
    let closed = free_address();
    let unreachable = write(
        "unreachable.toml",
        aws(&stream.name, &format!("http://{closed}"), &archive),
    );
    let (status, out) = shoal_check(&unreachable);
    assert_eq!(status, 1, "{out}");
    let line = finding(&out, "stream");
    assert!(
        line.starts_with("FAIL") && line.contains("Kinesis ListShards: cannot connect"),
        "{out}"
    );
    assert!(!line.contains("DispatchFailure"), "{out}");

    // A stream that does not exist.
    let missing = write(
        "missing.toml",
        aws("no-such-stream", emulators.kinesis_endpoint(), &archive),
    );
    let (status, out) = shoal_check(&missing);
    assert_eq!(status, 1, "{out}");
    let line = finding(&out, "stream");
    assert!(
        line.starts_with("FAIL  stream: stream no-such-stream not found")
            && line.contains("ResourceNotFoundException"),
        "{out}"
    );
}

/// Run `shoal leases` with `args`: stdout (the command must succeed).
fn shoal_leases(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("leases")
        .args(args)
        .envs(crate::emulators::TEST_CREDENTIALS.iter().copied())
        .output()
        .expect("run shoal leases");
    assert!(
        out.status.success(),
        "shoal leases {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn leases_shows_what_a_two_worker_run_leaves_as_a_table_and_as_json() {
    let mut c = Cluster::local(4, LEASE);
    for s in 0..4 {
        c.produce(s, 0, 50);
    }
    c.start("w1");
    c.start("w2");
    c.wait_for(
        "an even split and every record",
        Duration::from_secs(90),
        |c| {
            c.owners().get("w1") == Some(&2)
                && c.owners().get("w2") == Some(&2)
                && c.has_last_records(4, 50)
        },
    );
    let config = c.path("w1.toml");
    let config = config.to_str().expect("path");

    // While both run: every lease owned and renewed within the one renewal period the
    // command watches for.
    let table = shoal_leases(&["--config", config]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "a header and 4 rows:\n{table}");
    assert!(
        lines[0].starts_with("SHARD")
            && lines[0].contains("OWNER")
            && lines[0].ends_with("RENEWED"),
        "{table}"
    );
    for (s, line) in lines[1..].iter().enumerate() {
        assert!(line.starts_with(&shard_id(s)), "{table}");
        assert!(line.contains(" w1 ") || line.contains(" w2 "), "{table}");
        assert!(line.contains(" open "), "{table}");
        assert!(!line.contains('≥'), "renewed during the look: {table}");
        // Checkpointed at its last record (line 50 of its file).
        assert!(
            line.contains(&shoal::source::local::LocalSource::sequence_of(50)),
            "{table}"
        );
    }

    let json = shoal_leases(&["--config", config, "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim()).expect("JSON rows");
    assert_eq!(rows.len(), 4, "{json}");
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        *owners
            .entry(row["owner"].as_str().expect("owner").to_string())
            .or_default() += 1;
        assert_eq!(row["state"], "open", "{row}");
        assert_eq!(row["renewal_age_at_least"], false, "{row}");
        assert!(row["counter"].as_u64().expect("counter") > 0, "{row}");
        assert!(
            row["parents"].as_array().expect("parents").is_empty(),
            "{row}"
        );
    }
    assert_eq!(owners, BTreeMap::from([("w1".into(), 2), ("w2".into(), 2)]));

    // After both stopped: released, and nothing moves any more.
    assert!(c.terminate("w1"));
    assert!(c.terminate("w2"));
    let json = shoal_leases(&["--config", config, "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim()).expect("JSON rows");
    for row in &rows {
        assert!(row["owner"].is_null(), "released: {row}");
        assert_eq!(row["renewal_age_at_least"], true, "{row}");
    }
}

/// A failure that ends `shoal run` is one line, and says its root cause once.
#[test]
fn a_missing_plugin_file_is_reported_once_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("stream")).expect("mkdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[consumer]\napplication = \"missing-plugin\"\n[source]\nkind = \"local\"\ndirectory = \"stream\"\n[leases]\nkind = \"sqlite\"\npath = \"leases.db\"\n[plugin]\npath = \"no-such.wasm\"\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run shoal");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().expect("a message");
    assert!(
        last.starts_with("shoal: cannot read plugin ") && last.contains("no-such.wasm"),
        "{stderr}"
    );
    assert_eq!(
        last.matches("No such file or directory").count(),
        1,
        "the cause said once: {last}"
    );
}
