//! Consumer scenarios a–e of the engine issue, written once and run on both backends:
//! real `shoal run` processes, the `archive` plugin showing what was processed.

use std::time::Duration;

use shoal::lease::Checkpoint;

use crate::cluster::{Cluster, assert_complete_in_order};

pub fn a_one_worker_archives_every_record_in_order(new: impl FnOnce(usize) -> Cluster) {
    let mut c = new(4);
    for s in 0..4 {
        c.produce(s, 0, 2500);
    }
    c.start("w1");
    c.wait_for("10,000 records archived", Duration::from_secs(120), |c| {
        c.has_last_records(4, 2500)
    });
    assert!(c.terminate("w1"), "clean exit on SIGTERM\n{}", c.log("w1"));
    let duplicates = assert_complete_in_order(&c.archived(), 4, 2500);
    assert_eq!(duplicates, 0);
    // Graceful shutdown checkpointed every shard through its last record and released it.
    let archived = c.archived();
    for lease in c.leases() {
        let last = &archived[&lease.key].last().expect("records").0;
        assert_eq!(lease.owner, None, "{lease:?}");
        assert_eq!(
            lease.checkpoint,
            Checkpoint::Sequence {
                sequence: last.clone(),
                sub_sequence: 0
            },
            "{}",
            lease.key
        );
    }
}

pub fn b_kill_and_restart_resumes_from_the_checkpoint(new: impl FnOnce(usize) -> Cluster) {
    let mut c = new(2);
    for s in 0..2 {
        c.produce(s, 0, 1000);
    }
    // Checkpoint rarely, so a kill leaves un-checkpointed batches behind.
    c.start_with("w1", "checkpoint_interval = \"1h\"");
    c.wait_for("the first records archived", Duration::from_secs(60), |c| {
        c.has_last_records(2, 1000)
    });
    c.kill("w1");
    let checkpoints: Vec<(String, Checkpoint)> = c
        .leases()
        .into_iter()
        .map(|l| (l.key, l.checkpoint))
        .collect();
    for s in 0..2 {
        c.produce(s, 1000, 1000);
    }
    c.start("w1");
    c.wait_for("every record archived", Duration::from_secs(120), |c| {
        c.has_last_records(2, 2000)
    });
    let archived = c.archived();
    assert_complete_in_order(&archived, 2, 2000);
    // Only what was not checkpointed at the kill repeats.
    for (shard, checkpoint) in checkpoints {
        let records = &archived[&shard];
        for (seq, data) in records {
            let occurrences = records.iter().filter(|(_, d)| d == data).count();
            let after_checkpoint = match &checkpoint {
                Checkpoint::Sequence { sequence, .. } => {
                    shoal::lease::compare_sequence_numbers(seq, sequence).is_gt()
                }
                _ => true,
            };
            assert!(
                occurrences == 1 || after_checkpoint,
                "{shard} {data} (seq {seq}) repeated though checkpointed at {checkpoint}"
            );
            assert!(
                occurrences <= 2,
                "{shard} {data} archived {occurrences} times"
            );
        }
    }
}

pub fn c_two_workers_converge_to_an_even_split(new: impl FnOnce(usize) -> Cluster) {
    let mut c = new(8);
    c.start("w1");
    c.wait_for("w1 to hold all 8 leases", Duration::from_secs(60), |c| {
        c.owners().get("w1") == Some(&8)
    });
    c.start("w2");
    let took = c.wait_for("a 4/4 split", Duration::from_secs(90), |c| {
        let o = c.owners();
        o.get("w1") == Some(&4) && o.get("w2") == Some(&4)
    });
    eprintln!("converged to 4/4 in {took:?}");
    // And it stays balanced: no thrashing.
    std::thread::sleep(c.lease_duration * 2);
    let o = c.owners();
    assert_eq!((o.get("w1"), o.get("w2")), (Some(&4), Some(&4)), "{o:?}");
}

pub fn d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing(
    new: impl FnOnce(usize) -> Cluster,
) {
    let mut c = new(4);
    for s in 0..4 {
        c.produce(s, 0, 500);
    }
    c.start("w1");
    c.start("w2");
    c.wait_for("a 2/2 split", Duration::from_secs(90), |c| {
        let o = c.owners();
        o.get("w1") == Some(&2) && o.get("w2") == Some(&2)
    });
    c.kill("w2");
    let took = c.wait_for("w1 to take every lease", Duration::from_secs(60), |c| {
        c.owners().get("w1") == Some(&4)
    });
    eprintln!(
        "failover after SIGKILL took {took:?} (lease duration {:?})",
        c.lease_duration
    );
    // Within lease duration + one renewal tick, plus polling and process scheduling slack.
    assert!(
        took <= c.lease_duration + c.lease_duration / 3 + Duration::from_secs(2),
        "failover took {took:?}"
    );
    for s in 0..4 {
        c.produce(s, 500, 500);
    }
    c.wait_for("every record archived", Duration::from_secs(120), |c| {
        c.has_last_records(4, 1000)
    });
    assert_complete_in_order(&c.archived(), 4, 1000);
}

pub fn e_sigterm_hands_leases_over_within_a_tick_without_duplicates(
    new: impl FnOnce(usize) -> Cluster,
) {
    let mut c = new(4);
    c.start("w1");
    c.start("w2");
    c.wait_for("a 2/2 split", Duration::from_secs(90), |c| {
        let o = c.owners();
        o.get("w1") == Some(&2) && o.get("w2") == Some(&2)
    });
    // Records flow only once the split is settled, so the hand-off alone is measured.
    for s in 0..4 {
        c.produce(s, 0, 500);
    }
    c.wait_for("the backlog archived", Duration::from_secs(60), |c| {
        c.has_last_records(4, 500)
    });
    assert!(c.terminate("w2"), "w2 exits cleanly\n{}", c.log("w2"));
    assert!(c.log("w2").contains("checkpointed and released the lease"));
    let took = c.wait_for(
        "w1 to take the released leases",
        Duration::from_secs(30),
        |c| c.owners().get("w1") == Some(&4),
    );
    eprintln!("graceful hand-off took {took:?}");
    assert!(
        took <= c.lease_duration / 3 + Duration::from_secs(2),
        "hand-off took {took:?}"
    );
    for s in 0..4 {
        c.produce(s, 500, 500);
    }
    c.wait_for("every record archived", Duration::from_secs(120), |c| {
        c.has_last_records(4, 1000)
    });
    let duplicates = assert_complete_in_order(&c.archived(), 4, 1000);
    assert_eq!(
        duplicates,
        0,
        "a graceful hand-off repeats nothing\n--- w1\n{}\n--- w2\n{}",
        c.log("w1"),
        c.log("w2")
    );
}
