//! Scenarios against real emulators speaking the AWS wire protocol: kinesis-mock (and
//! kinesalite) for Kinesis, DynamoDB Local for the lease table, through the real SDK, with
//! real `shoal run` processes.

use std::time::Duration;

use crate::cluster::{Cluster, assert_complete_in_order};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::scenarios;

/// DynamoDB Local answers in milliseconds; 3 s keeps the runs short and the timing
/// assertions meaningful on a loaded 2-core machine.
const LEASE: Duration = Duration::from_millis(3000);

fn on(kinesis: Kinesis) -> impl FnOnce(usize) -> Cluster {
    move |shards| Cluster::aws(&Emulators::new(kinesis), shards, LEASE)
}

#[test]
fn a_one_worker_archives_every_record_in_order() {
    let _one_at_a_time = exclusive();
    scenarios::a_one_worker_archives_every_record_in_order(on(Kinesis::Mock));
}

#[test]
fn a_on_kinesalite_too() {
    let _one_at_a_time = exclusive();
    scenarios::a_one_worker_archives_every_record_in_order(on(Kinesis::Kinesalite));
}

#[test]
fn b_kill_and_restart_resumes_from_the_checkpoint() {
    let _one_at_a_time = exclusive();
    scenarios::b_kill_and_restart_resumes_from_the_checkpoint(on(Kinesis::Mock));
}

#[test]
fn c_two_workers_converge_to_an_even_split() {
    let _one_at_a_time = exclusive();
    scenarios::c_two_workers_converge_to_an_even_split(on(Kinesis::Mock));
}

#[test]
fn d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing() {
    let _one_at_a_time = exclusive();
    scenarios::d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing(on(Kinesis::Mock));
}

#[test]
fn e_sigterm_hands_leases_over_within_a_tick_without_duplicates() {
    let _one_at_a_time = exclusive();
    scenarios::e_sigterm_hands_leases_over_within_a_tick_without_duplicates(on(Kinesis::Mock));
}

/// Records `pk<k>-<n>` for every partition key `k` in 0..16 and `n` in `from..to`, in
/// `n` order, routed by partition key.
pub fn produce_by_key(c: &Cluster, from: usize, to: usize) {
    let records = (from..to)
        .flat_map(|n| (0..16).map(move |k| (format!("pk{k}"), format!("pk{k}-{n}"))))
        .collect();
    c.stream().put_by_key(records);
}

/// `(timestamp, shard)` of every log line containing `what`, from every worker's log.
fn log_events(c: &Cluster, workers: &[&str], what: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for w in workers {
        for line in c.log(w).lines().filter(|l| l.contains(what)) {
            let time = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if let Some(rest) = line.split("shard=").nth(1) {
                let shard = rest
                    .split(['}', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                events.push((time, shard));
            }
        }
    }
    events
}

#[test]
fn f_split_and_merge_while_producing_children_wait_for_parents() {
    let _one_at_a_time = exclusive();
    split_and_merge_while_producing_children_wait_for_parents(on(Kinesis::Mock)(2));
}

/// Scenario f on a 2-shard cluster `c` (either retrieval).
pub fn split_and_merge_while_producing_children_wait_for_parents(mut c: Cluster) {
    c.start("w1");
    c.start("w2");
    const PER_ROUND: usize = 40;
    produce_by_key(&c, 0, PER_ROUND);
    // shardId-0 → shardId-2 + shardId-3, while both workers consume.
    c.stream().split("shardId-000000000000");
    produce_by_key(&c, PER_ROUND, 2 * PER_ROUND);
    // shardId-3 + shardId-1 (adjacent hash ranges) → shardId-4.
    c.stream()
        .merge("shardId-000000000003", "shardId-000000000001");
    produce_by_key(&c, 2 * PER_ROUND, 3 * PER_ROUND);
    let total = 16 * 3 * PER_ROUND;
    c.wait_for(
        "every record archived across parents and children",
        Duration::from_secs(180),
        |c| {
            let distinct: std::collections::HashSet<String> = c
                .archived()
                .values()
                .flatten()
                .map(|(_, d)| d.clone())
                .collect();
            distinct.len() == total
        },
    );

    let shards = c.stream().shards();
    assert_eq!(shards.len(), 5, "{shards:?}");
    for s in &shards {
        let is_parent = shards.iter().any(|x| x.parents.contains(&s.shard_id));
        assert_eq!(
            s.closed, is_parent,
            "only the resharded parents are closed: {s:?}"
        );
    }
    let archived = c.archived();
    // Per partition key: increasing within each shard, and every record of a parent
    // before every record of its child.
    let per_key = |shard: &str, key: &str| -> Vec<usize> {
        let mut seen = std::collections::HashSet::new();
        archived
            .get(shard)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|(_, d)| {
                d.strip_prefix(&format!("{key}-"))
                    .and_then(|n| n.parse().ok())
            })
            .filter(|n| seen.insert(*n))
            .collect()
    };
    for k in 0..16 {
        let key = format!("pk{k}");
        for s in &shards {
            let ns = per_key(&s.shard_id, &key);
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "{key} out of order in {}: {ns:?}",
                s.shard_id
            );
            for parent in &s.parents {
                let before = per_key(parent, &key);
                if let (Some(last), Some(first)) = (before.iter().max(), ns.first()) {
                    assert!(
                        last < first,
                        "{key}: parent {parent} has n={last} but child {} has n={first}",
                        s.shard_id
                    );
                }
            }
        }
    }
    // Lineage: each child's worker started only after every parent checkpointed SHARD_END.
    let workers = ["w1", "w2"];
    let ends = log_events(&c, &workers, "checkpointed SHARD_END");
    let starts = log_events(&c, &workers, "shard worker starting");
    for s in shards.iter().filter(|s| !s.parents.is_empty()) {
        let started = starts
            .iter()
            .filter(|(_, shard)| *shard == s.shard_id)
            .map(|(t, _)| t)
            .min();
        let started = started.unwrap_or_else(|| panic!("{} never started", s.shard_id));
        for parent in &s.parents {
            let ended = ends
                .iter()
                .find(|(_, shard)| shard == parent)
                .map(|(t, _)| t);
            let ended = ended.unwrap_or_else(|| {
                panic!("parent {parent} of {} never reached SHARD_END", s.shard_id)
            });
            assert!(
                ended < started,
                "{} started at {started} before parent {parent} ended at {ended}",
                s.shard_id
            );
            eprintln!(
                "{} started at {started}, after parent {parent} reached SHARD_END at {ended}",
                s.shard_id
            );
        }
    }
    for lease in c.leases() {
        if shards.iter().any(|s| s.parents.contains(&lease.key)) {
            assert_eq!(
                lease.checkpoint,
                shoal::lease::Checkpoint::ShardEnd,
                "{lease:?}"
            );
        }
    }
}

/// Bursts of throttling long enough to exhaust the SDK's own retries (so the worker's
/// back-off runs), 5xx and dropped connections sprinkled between.
fn fault_plan(n: u64) -> crate::fault_proxy::Fault {
    use crate::fault_proxy::Fault;
    match n {
        _ if n % 40 >= 10 && n % 40 < 16 => Fault::Throttle,
        _ if n.is_multiple_of(7) => Fault::ServerError,
        _ if n.is_multiple_of(11) => Fault::Drop,
        _ => Fault::Forward,
    }
}

#[test]
fn g_throttling_5xx_and_dropped_connections_back_off_recover_and_lose_nothing() {
    let _one_at_a_time = exclusive();
    let mut c = on(Kinesis::Mock)(2);
    let proxy = crate::fault_proxy::FaultProxy::start(
        c.stream_endpoint(),
        &["GetRecords", "GetShardIterator", "ListShards"],
        fault_plan,
    );
    c.set_kinesis_endpoint(&proxy.endpoint);
    for s in 0..2 {
        c.produce(s, 0, 1000);
    }
    // Small batches: many GetRecords calls, so many faults.
    c.start_with("w1", "max_records = 50");
    c.wait_for(
        "every record archived through the faults",
        Duration::from_secs(180),
        |c| c.has_last_records(2, 1000),
    );
    assert!(c.terminate("w1"), "clean exit\n{}", c.log("w1"));
    eprintln!("fault proxy: {}", proxy.summary());
    let counts = &proxy.counts;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        counts.throttled.load(Relaxed) > 0
            && counts.server_errors.load(Relaxed) > 0
            && counts.dropped.load(Relaxed) > 0
    );
    let log = c.log("w1");
    let backoffs = log
        .lines()
        .filter(|l| l.contains("fetch failed") || l.contains("cannot get a shard iterator"))
        .count();
    eprintln!("worker-level back-offs: {backoffs}");
    assert!(
        backoffs > 0,
        "the worker never had to back off itself:\n{log}"
    );
    assert!(
        log.contains("throttl") || log.contains("ProvisionedThroughputExceeded"),
        "throttling is named in the log"
    );
    // Nothing lost, nothing out of order; a fault never repeats a processed batch.
    let duplicates = crate::cluster::assert_complete_in_order(&c.archived(), 2, 1000);
    assert_eq!(duplicates, 0);
}

/// KCL 2.x lease attributes and their DynamoDB types.
const KCL_ATTRIBUTES: [(&str, &str); 10] = [
    ("leaseKey", "S"),
    ("leaseOwner", "S"),
    ("leaseCounter", "N"),
    ("checkpoint", "S"),
    ("checkpointSubSequenceNumber", "N"),
    ("ownerSwitchesSinceCheckpoint", "N"),
    ("parentShardId", "SS"),
    ("childShardIds", "SS"),
    ("startingHashKey", "S"),
    ("endingHashKey", "S"),
];

fn type_of(value: &aws_sdk_dynamodb::types::AttributeValue) -> &'static str {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    match value {
        V::S(_) => "S",
        V::N(_) => "N",
        V::Ss(_) => "SS",
        V::Ns(_) => "NS",
        V::B(_) => "B",
        V::Bool(_) => "BOOL",
        V::L(_) => "L",
        V::M(_) => "M",
        V::Null(_) => "NULL",
        _ => "other",
    }
}

/// Every attribute of every lease item is a KCL 2.x attribute of the KCL type (or the
/// foreign attribute the test planted), and the ones KCL always writes are there.
fn assert_kcl_items(
    items: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>],
    foreign: &str,
) {
    assert!(!items.is_empty());
    for item in items {
        for (name, value) in item {
            if name == foreign {
                continue;
            }
            let expected = KCL_ATTRIBUTES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t);
            assert_eq!(
                expected,
                Some(type_of(value)),
                "attribute {name} of {item:?}: not KCL 2.x's name and type"
            );
        }
        for required in [
            "leaseKey",
            "leaseCounter",
            "checkpoint",
            "checkpointSubSequenceNumber",
            "ownerSwitchesSinceCheckpoint",
            "startingHashKey",
            "endingHashKey",
        ] {
            assert!(
                item.contains_key(required),
                "{required} missing from {item:?}"
            );
        }
    }
}

#[test]
fn h_lease_items_have_kcl_2x_names_and_types_and_a_kcl_table_is_adopted() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue as V, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType,
    };
    let _one_at_a_time = exclusive();
    let mut c = on(Kinesis::Mock)(2);
    let seqs: Vec<String> = c.stream().put_to_shard(
        "shardId-000000000000",
        (0..1000)
            .map(|n| (format!("pk{}", n % 16), format!("0-{n}")))
            .collect(),
    );
    c.produce(1, 0, 1000);
    // A lease table as a KCL 2.x application left it: shard 0 checkpointed at its record
    // 499 by a KCL worker that released it, plus an attribute some other tool added.
    let shard0 = c
        .stream()
        .shards()
        .into_iter()
        .find(|s| s.shard_id == "shardId-000000000000")
        .expect("shard 0");
    let stream = c.stream();
    stream.block_on(async {
        stream
            .dynamodb
            .create_table()
            .table_name(&stream.table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("leaseKey")
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key"),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("leaseKey")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attr"),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("CreateTable");
        stream
            .dynamodb
            .put_item()
            .table_name(&stream.table)
            .item("leaseKey", V::S("shardId-000000000000".into()))
            .item("leaseCounter", V::N("7".into()))
            .item("checkpoint", V::S(seqs[499].clone()))
            .item("checkpointSubSequenceNumber", V::N("0".into()))
            .item("ownerSwitchesSinceCheckpoint", V::N("0".into()))
            .item(
                "startingHashKey",
                V::S(shard0.starting_hash_key.to_string()),
            )
            .item("endingHashKey", V::S(shard0.ending_hash_key.to_string()))
            .item("operatorNote", V::S("migrated from KCL".into()))
            .send()
            .await
            .expect("PutItem");
    });

    c.start("w1");
    c.wait_for("every record archived", Duration::from_secs(120), |c| {
        c.has_last_records(2, 1000)
    });
    // While owned: leaseOwner is a string naming the worker.
    let items = c.stream().lease_items();
    assert_kcl_items(&items, "operatorNote");
    assert!(
        items
            .iter()
            .all(|i| i.get("leaseOwner") == Some(&V::S("w1".into()))),
        "{items:?}"
    );
    assert!(c.terminate("w1"), "clean exit\n{}", c.log("w1"));

    // Released: no owner, KCL types throughout, the foreign attribute preserved, the
    // counter moved on from KCL's.
    let items = c.stream().lease_items();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_kcl_items(&items, "operatorNote");
    let migrated = items
        .iter()
        .find(|i| i.get("leaseKey") == Some(&V::S("shardId-000000000000".into())))
        .expect("shard 0 item");
    assert_eq!(
        migrated.get("operatorNote"),
        Some(&V::S("migrated from KCL".into()))
    );
    let counter: u64 = migrated["leaseCounter"]
        .as_n()
        .expect("N")
        .parse()
        .expect("number");
    assert!(counter > 7, "{migrated:?}");
    assert!(
        items.iter().all(|i| !i.contains_key("leaseOwner")),
        "released leases have no owner: {items:?}"
    );
    assert!(items.iter().all(|i| {
        i["checkpoint"]
            .as_s()
            .is_ok_and(|s| s.chars().all(|c| c.is_ascii_digit()))
    }));

    // shoal resumed shard 0 after KCL's checkpoint: records 500.. only.
    let archived = c.archived();
    let shard0_data: Vec<&str> = archived["shardId-000000000000"]
        .iter()
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(
        shard0_data.first(),
        Some(&"0-500"),
        "resumed right after the KCL checkpoint"
    );
    assert_eq!(shard0_data.len(), 500);
    let key_schema = c.stream().block_on(async {
        c.stream()
            .dynamodb
            .describe_table()
            .table_name(&c.stream().table)
            .send()
            .await
            .expect("DescribeTable")
    });
    let table = key_schema.table().expect("table");
    assert_eq!(table.key_schema()[0].attribute_name(), "leaseKey");
}

/// A lease table shared with other tools holds items that are not shoal's leases (KCL
/// 3.x marks its own with `entityType`) or that no reader can parse: each scan skips
/// them, says so once per item, and never writes or deletes them; the consumer goes on.
#[test]
fn i_items_that_are_not_leases_are_skipped_and_left_as_they_are() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let _one_at_a_time = exclusive();
    let mut c = on(Kinesis::Mock)(2);
    c.produce(0, 0, 100);
    c.produce(1, 0, 100);
    c.start("w1");
    c.wait_for("the first records", Duration::from_secs(120), |c| {
        c.has_last_records(2, 100)
    });
    let foreign = [
        vec![
            ("leaseKey", V::S("worker-metrics-w9".into())),
            ("entityType", V::S("WORKER_METRICS".into())),
            ("leaseCounter", V::N("3".into())),
        ],
        vec![
            ("leaseKey", V::S("shardId-broken".into())),
            ("leaseCounter", V::S("seven".into())),
            ("checkpoint", V::S("TRIM_HORIZON".into())),
        ],
        vec![("leaseKey", V::S("operator-note".into()))],
    ];
    let stream = c.stream();
    stream.block_on(async {
        for item in &foreign {
            let mut put = stream.dynamodb.put_item().table_name(&stream.table);
            for (name, value) in item {
                put = put.item(*name, value.clone());
            }
            put.send().await.expect("PutItem");
        }
    });
    c.produce(0, 100, 100);
    c.produce(1, 100, 100);
    c.wait_for(
        "the records after the foreign items",
        Duration::from_secs(120),
        |c| c.has_last_records(2, 200),
    );
    let named = |c: &Cluster, key: &str| c.log("w1").matches(&format!("item={key}")).count();
    c.wait_for("scans that skip the items", Duration::from_secs(60), |c| {
        ["worker-metrics-w9", "shardId-broken", "operator-note"]
            .iter()
            .all(|k| named(c, k) > 0)
    });
    // A few more scans (one per second at this lease duration) must not say it again.
    std::thread::sleep(LEASE);
    assert!(c.terminate("w1"), "a clean exit\n{}", c.log("w1"));

    let log = c.log("w1");
    for key in ["worker-metrics-w9", "shardId-broken", "operator-note"] {
        assert_eq!(
            log.matches(&format!("item={key}")).count(),
            1,
            "{key}: said once, though every scan skips it:\n{log}"
        );
    }
    let items = c.stream().lease_items();
    for item in &foreign {
        let key = &item[0].1;
        let stored = items
            .iter()
            .find(|i| i.get("leaseKey") == Some(key))
            .unwrap_or_else(|| panic!("{key:?} was deleted: {items:?}"));
        let expected: std::collections::HashMap<String, V> = item
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        assert_eq!(stored, &expected, "left exactly as it was");
    }
    assert_complete_in_order(&c.archived(), 2, 200);
}
