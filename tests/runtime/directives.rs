//! What a worker re-delivers, checked end to end with real `shoal run` processes on
//! kinesis-mock: real KPL aggregates (made by the `aws-kinesis-agg` package) are
//! delivered as their user records and a restart resumes inside an aggregate; the `at`,
//! `none` and `rewind` directives decide what comes again after a restart or at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal::lease::Checkpoint;

use crate::cluster::{Cluster, assert_complete_in_order, shard_id};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::fixtures::{plugin_path, repo_root};

const LEASE: Duration = Duration::from_millis(3000);

/// `(partition key, data)` user records aggregated `per` to a KPL record by the
/// `aws-kinesis-agg` package (installed by `tests/run.sh`).
fn aggregates(records: &[(String, String)], per: usize) -> Vec<(String, Vec<u8>)> {
    let python = crate::fixtures::test_python();
    let mut child = Command::new(&python)
        .arg(repo_root().join("tests/kpl/aggregate.py"))
        .arg(per.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the aggregator");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for (pk, data) in records {
            writeln!(stdin, "{}", serde_json::json!([pk, data])).expect("write");
        }
    }
    let out = child.wait_with_output().expect("aggregator output");
    assert!(out.status.success(), "aggregator failed: {}", out.status);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let data = v["data_base64"].as_str().expect("data");
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64");
            (v["partition_key"].as_str().expect("pk").to_string(), bytes)
        })
        .collect()
}

fn user_records(from: usize, count: usize) -> Vec<(String, String)> {
    (from..from + count)
        .map(|n| (format!("pk{}", n % 16), format!("0-{n}")))
        .collect()
}

/// How often each record's data was archived.
fn deliveries(c: &Cluster) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, data) in c.archived().remove(&shard_id(0)).unwrap_or_default() {
        *counts.entry(data).or_default() += 1;
    }
    counts
}

/// The ids archived more than once, as record numbers in order.
fn repeated(c: &Cluster) -> Vec<usize> {
    let mut again: Vec<usize> = deliveries(c)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(d, _)| d.trim_start_matches("0-").parse().expect("id"))
        .collect();
    again.sort_unstable();
    again
}

fn checkpoint(c: &Cluster) -> Checkpoint {
    c.leases()
        .into_iter()
        .find(|l| l.key == shard_id(0))
        .map(|l| l.checkpoint)
        .unwrap_or(Checkpoint::TrimHorizon)
}

fn cluster_with(settings: &str, retrieval: &'static str) -> Cluster {
    let mut c = Cluster::aws(&Emulators::new(Kinesis::Mock), 1, LEASE);
    c.set_plugin(&plugin_path("archive"), settings);
    c.set_retrieval(retrieval);
    c
}

/// The same directives through enhanced fan-out: what is delivered again is decided by
/// the worker, however the records arrived.
mod fan_out {
    use crate::emulators::exclusive;

    #[test]
    fn kpl_aggregates_arrive_as_user_records_and_a_restart_resumes_inside_one() {
        let _one_at_a_time = exclusive();
        super::kpl_aggregates_in("fan-out");
    }

    #[test]
    fn a_none_directive_leaves_its_batch_to_be_delivered_again_after_a_restart() {
        let _one_at_a_time = exclusive();
        super::a_none_directive_in("fan-out");
    }

    #[test]
    fn a_rewind_reads_again_from_the_record_it_names() {
        let _one_at_a_time = exclusive();
        super::a_rewind_in("fan-out");
    }
}

#[test]
fn kpl_aggregates_arrive_as_user_records_and_a_restart_resumes_inside_one() {
    let _one_at_a_time = exclusive();
    kpl_aggregates_in("polling");
}

fn kpl_aggregates_in(retrieval: &'static str) {
    // 200 user records in 20 aggregates of 10; the guest checkpoints at(0-194), the
    // fifth user record of the last aggregate.
    let mut c = cluster_with("at_record = \"0-194\"", retrieval);
    let aggregated = aggregates(&user_records(0, 200), 10);
    assert_eq!(aggregated.len(), 20);
    let sequences = c.stream().put_bytes_to_shard(&shard_id(0), aggregated);
    c.start("w1");
    c.wait_for("every user record archived", Duration::from_secs(90), |c| {
        c.has_last_records(1, 200)
    });
    let last = sequences.last().expect("sequence").clone();
    let inside = Checkpoint::Sequence {
        sequence: last,
        sub_sequence: 4,
    };
    c.wait_for(
        "the checkpoint inside the last aggregate",
        Duration::from_secs(30),
        |c| checkpoint(c) == inside,
    );
    assert!(
        repeated(&c).is_empty(),
        "nothing repeated before the restart"
    );
    c.kill("w1");
    c.start("w1");
    c.wait_for(
        "the rest of the aggregate delivered again",
        Duration::from_secs(90),
        |c| repeated(c).len() >= 5,
    );
    std::thread::sleep(LEASE);
    assert_eq!(
        repeated(&c),
        vec![195, 196, 197, 198, 199],
        "a restart resumes after sub-record 4 of the aggregate, repeating only what follows it"
    );
    // Every user record, in order (the user records of one aggregate share its sequence
    // number, so the order is checked on the data).
    let mut seen = std::collections::HashSet::new();
    let first_order: Vec<String> = c
        .archived()
        .remove(&shard_id(0))
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, d)| seen.insert(d.clone()))
        .map(|(_, d)| d)
        .collect();
    let expected: Vec<String> = (0..200).map(|n| format!("0-{n}")).collect();
    assert_eq!(first_order, expected);
}

#[test]
fn a_none_directive_leaves_its_batch_to_be_delivered_again_after_a_restart() {
    let _one_at_a_time = exclusive();
    a_none_directive_in("polling");
}

fn a_none_directive_in(retrieval: &'static str) {
    let mut c = cluster_with("none_record = \"0-25\"", retrieval);
    c.stream().put_to_shard(&shard_id(0), user_records(0, 20));
    c.start("w1");
    c.wait_for("the first 20 archived", Duration::from_secs(90), |c| {
        c.has_last_records(1, 20)
    });
    c.stream().put_to_shard(&shard_id(0), user_records(20, 10));
    c.wait_for("all 30 archived", Duration::from_secs(90), |c| {
        c.has_last_records(1, 30)
    });
    let before = checkpoint(&c);
    assert!(c.terminate("w1"), "w1 exits cleanly");
    assert_eq!(
        checkpoint(&c),
        before,
        "shutdown writes no checkpoint a `none` withheld"
    );
    assert!(repeated(&c).is_empty());
    c.start("w1");
    c.wait_for(
        "0-25's batch delivered again",
        Duration::from_secs(90),
        |c| deliveries(c).get("0-25") == Some(&2),
    );
    std::thread::sleep(LEASE);
    let again = repeated(&c);
    // The batch holding 0-25 (and anything after the last checkpoint) came again, as a
    // contiguous run ending with the newest record; nothing checkpointed before did.
    assert_eq!(again.last(), Some(&29), "{again:?}");
    assert!(again.first().is_some_and(|&f| f >= 20), "{again:?}");
    assert!(again.windows(2).all(|w| w[1] == w[0] + 1), "{again:?}");
    assert_complete_in_order(&c.archived(), 1, 30);
}

#[test]
fn a_rewind_reads_again_from_the_record_it_names() {
    let _one_at_a_time = exclusive();
    a_rewind_in("polling");
}

fn a_rewind_in(retrieval: &'static str) {
    let mut c = cluster_with("rewind_record = \"0-5\"", retrieval);
    c.stream().put_to_shard(&shard_id(0), user_records(0, 20));
    c.start("w1");
    c.wait_for("0-5 delivered twice", Duration::from_secs(90), |c| {
        deliveries(c).get("0-5") == Some(&2)
    });
    c.wait_for("all 20 archived", Duration::from_secs(90), |c| {
        c.has_last_records(1, 20)
    });
    std::thread::sleep(LEASE);
    let again = repeated(&c);
    // Everything from 0-5 to the end of its batch came twice, nothing before it.
    assert_eq!(again.first(), Some(&5), "{again:?}");
    assert!(again.windows(2).all(|w| w[1] == w[0] + 1), "{again:?}");
    let counts = deliveries(&c);
    assert!(
        (0..5).all(|n| counts.get(&format!("0-{n}")) == Some(&1)),
        "{counts:?}"
    );
    assert!(
        counts.values().all(|&n| n <= 2),
        "rewound once, not again: {counts:?}"
    );
    assert_complete_in_order(&c.archived(), 1, 20);
}
