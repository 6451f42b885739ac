//! Scenarios a–e on one machine: the local file source and the SQLite lease store.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::scenarios;

const LEASE: Duration = Duration::from_millis(2000);

fn local(shards: usize) -> Cluster {
    Cluster::local(shards, LEASE)
}

#[test]
fn a_one_worker_archives_every_record_in_order() {
    scenarios::a_one_worker_archives_every_record_in_order(local);
}

#[test]
fn b_kill_and_restart_resumes_from_the_checkpoint() {
    scenarios::b_kill_and_restart_resumes_from_the_checkpoint(local);
}

#[test]
fn c_two_workers_converge_to_an_even_split() {
    scenarios::c_two_workers_converge_to_an_even_split(local);
}

#[test]
fn d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing() {
    scenarios::d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing(local);
}

#[test]
fn e_sigterm_hands_leases_over_within_a_tick_without_duplicates() {
    scenarios::e_sigterm_hands_leases_over_within_a_tick_without_duplicates(local);
}
