//! The crash-failover scenario of the end-to-end benchmark: two workers of one kind on a
//! fresh application over a fresh 2-shard stream, a 1/1 split of the leases, SIGKILL of one
//! worker's whole process group, and the time until the survivor owns every lease and has
//! processed a record put after the kill.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::consumer::{LEASE_DURATION, Setup, Spec, Variant, Worker};
use crate::emulators::{AwsStream, Emulators};
use crate::leases;

/// Which worker is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Victim {
    /// The first worker started (shoal has no leader).
    First,
    /// KCL: the worker that does not hold the leader lock.
    KclNonLeader,
    /// KCL: the worker holding the leader lock (the one that assigns leases).
    KclLeader,
}

impl Victim {
    pub fn label(self) -> &'static str {
        match self {
            Victim::First => "either (no leader)",
            Victim::KclNonLeader => "the non-leader",
            Victim::KclLeader => "the leader",
        }
    }
}

/// One failover run.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// From starting both workers to the 1/1 split with both shards checkpointed.
    pub split_s: f64,
    /// From the SIGKILL until the survivor owns every lease.
    pub owns_all_s: f64,
    /// From the SIGKILL until the victim's shard is checkpointed at a record put after it.
    pub processed_s: f64,
}

const RECORDS_PER_SHARD: usize = 10;
const SPLIT_TIMEOUT: Duration = Duration::from_secs(300);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(400);

/// Two workers of `variant`, kill `victim`, measure.
pub fn run(
    emulators: &Emulators,
    setup: &Setup,
    variant: Variant,
    victim: Victim,
    nonce: &str,
) -> Failover {
    let stream = emulators.create_stream(2);
    let mut last = BTreeMap::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let records = (0..RECORDS_PER_SHARD)
            .map(|n| (format!("pk{n}"), crate::event(0, n)))
            .collect();
        let seq = stream.put_to_shard(shard, records).pop().expect("sequence");
        last.insert(shard.to_string(), seq);
    }
    let app = format!("e2e-fo-{}-{nonce}", variant.short());
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = ["w1", "w2"];
    let spawn = |id: &str| {
        Worker::spawn(
            variant,
            setup,
            &Spec {
                stream: &stream.name,
                app: &app,
                worker_id: id,
                dir: dir.path(),
                kcl_failover: LEASE_DURATION,
                kcl_assign_interval: None,
            },
        )
    };
    let started = Instant::now();
    let mut workers = [spawn(ids[0]), spawn(ids[1])];
    let logs = |workers: &[Worker; 2]| format!("{}\n{}", workers[0].log(), workers[1].log());

    // The 1/1 split, both shards processed up to the records already there.
    loop {
        workers.iter_mut().for_each(Worker::assert_running);
        let now = leases::scan(&stream, &app);
        let owners: Vec<_> = now.values().filter_map(|l| l.owner.clone()).collect();
        let split =
            owners.len() == 2 && owners.contains(&"w1".into()) && owners.contains(&"w2".into());
        let processed = last
            .iter()
            .all(|(shard, seq)| now.get(shard).and_then(|l| l.checkpoint.as_ref()) == Some(seq));
        if split && processed {
            break;
        }
        assert!(
            started.elapsed() < SPLIT_TIMEOUT,
            "{variant:?} failover: no 1/1 split with both shards processed after {} s \
             (leases: {now:?}):\n{}",
            SPLIT_TIMEOUT.as_secs(),
            logs(&workers)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let split_s = started.elapsed().as_secs_f64();

    let victim_id = match victim {
        Victim::First => ids[0],
        Victim::KclLeader | Victim::KclNonLeader => {
            let leader = kcl_leader(&stream, &app).unwrap_or_else(|| {
                panic!(
                    "{app}: no leader lock item in {app}-CoordinatorState:\n{}",
                    logs(&workers)
                )
            });
            let leader = ids
                .into_iter()
                .find(|id| *id == leader)
                .unwrap_or_else(|| panic!("{app}: leader {leader:?} is neither w1 nor w2"));
            match victim {
                Victim::KclLeader => leader,
                _ => ids.into_iter().find(|id| *id != leader).expect("two ids"),
            }
        }
    };
    let victim_index = ids.iter().position(|id| *id == victim_id).expect("victim");
    let survivor_id = ids[1 - victim_index];
    let victim_shard = leases::scan(&stream, &app)
        .into_iter()
        .find(|(_, l)| l.owner.as_deref() == Some(victim_id))
        .map(|(shard, _)| shard)
        .expect("the victim's shard");

    let killed = Instant::now();
    workers[victim_index].kill();
    let put_after = stream
        .put_to_shard(
            &victim_shard,
            vec![("after-kill".into(), crate::event(9, RECORDS_PER_SHARD))],
        )
        .pop()
        .expect("sequence");
    let (mut owns_all, mut processed) = (None, None);
    while owns_all.is_none() || processed.is_none() {
        workers[1 - victim_index].assert_running();
        let now = leases::scan(&stream, &app);
        if owns_all.is_none()
            && now.len() == 2
            && now
                .values()
                .all(|l| l.owner.as_deref() == Some(survivor_id))
        {
            owns_all = Some(killed.elapsed());
        }
        if processed.is_none()
            && now.get(&victim_shard).and_then(|l| l.checkpoint.as_ref()) == Some(&put_after)
        {
            processed = Some(killed.elapsed());
        }
        assert!(
            killed.elapsed() < FAILOVER_TIMEOUT,
            "{variant:?} failover (killed {victim_id}, {}): the survivor did not take over in \
             {} s (leases: {now:?}):\n{}",
            victim.label(),
            FAILOVER_TIMEOUT.as_secs(),
            logs(&workers)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    workers[1 - victim_index].stop();
    Failover {
        split_s,
        owns_all_s: owns_all.unwrap_or_default().as_secs_f64(),
        processed_s: processed.unwrap_or_default().as_secs_f64(),
    }
}

/// The worker holding the KCL 3.x leader lock: the `Leader` item of the application's
/// CoordinatorState table (DynamoDB lock client, attribute `ownerName`).
fn kcl_leader(stream: &AwsStream, app: &str) -> Option<String> {
    stream.block_on(async {
        let page = stream
            .dynamodb
            .scan()
            .table_name(format!("{app}-CoordinatorState"))
            .consistent_read(true)
            .send()
            .await
            .ok()?;
        page.items().iter().find_map(|item| {
            (item.get("key")?.as_s().ok()? == "Leader")
                .then(|| item.get("ownerName")?.as_s().ok().cloned())
                .flatten()
        })
    })
}
