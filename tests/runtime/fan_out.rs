//! Enhanced fan-out against kinesis-mock, whose SubscribeToShard pushes an event a second
//! (over HTTP/1.1 on its plain port: the SDK reads the event stream there as it does over
//! HTTP/2 with TLS): the engine scenarios a–f in fan-out mode, one consumer registered
//! by racing workers, the stream's consumer limit named, subscriptions cut and refused
//! and resumed without loss, and a deployment switched between polling and fan-out by
//! one config key, losing and repeating nothing.

use std::time::Duration;

use crate::cluster::{Cluster, assert_complete_in_order};
use crate::emulators::{Emulators, Kinesis, exclusive};
use crate::scenarios;

/// As in `consumer_aws`: DynamoDB Local answers in milliseconds.
const LEASE: Duration = Duration::from_millis(3000);

fn fanned_out() -> impl FnOnce(usize) -> Cluster {
    |shards| {
        let mut c = Cluster::aws(&Emulators::new(Kinesis::Mock), shards, LEASE);
        c.set_retrieval("fan-out");
        c
    }
}

/// The stream's ARN.
fn stream_arn(c: &Cluster) -> String {
    let stream = c.stream();
    stream.block_on(async {
        stream
            .kinesis
            .describe_stream_summary()
            .stream_name(&stream.name)
            .send()
            .await
            .expect("DescribeStreamSummary")
            .stream_description_summary()
            .expect("summary")
            .stream_arn()
            .to_string()
    })
}

/// The stream's registered consumers: (name, status).
fn consumers(c: &Cluster) -> Vec<(String, String)> {
    let arn = stream_arn(c);
    let stream = c.stream();
    stream.block_on(async {
        stream
            .kinesis
            .list_stream_consumers()
            .stream_arn(arn)
            .send()
            .await
            .expect("ListStreamConsumers")
            .consumers()
            .iter()
            .map(|c| {
                (
                    c.consumer_name().to_string(),
                    c.consumer_status().as_str().to_string(),
                )
            })
            .collect()
    })
}

#[test]
fn a_one_worker_archives_every_record_in_order() {
    let _one_at_a_time = exclusive();
    scenarios::a_one_worker_archives_every_record_in_order(fanned_out());
}

#[test]
fn b_kill_and_restart_resumes_from_the_checkpoint() {
    let _one_at_a_time = exclusive();
    scenarios::b_kill_and_restart_resumes_from_the_checkpoint(fanned_out());
}

#[test]
fn c_two_workers_converge_to_an_even_split() {
    let _one_at_a_time = exclusive();
    scenarios::c_two_workers_converge_to_an_even_split(fanned_out());
}

#[test]
fn d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing() {
    let _one_at_a_time = exclusive();
    scenarios::d_sigkill_one_of_two_and_the_survivor_takes_over_losing_nothing(fanned_out());
}

#[test]
fn e_sigterm_hands_leases_over_within_a_tick_without_duplicates() {
    let _one_at_a_time = exclusive();
    scenarios::e_sigterm_hands_leases_over_within_a_tick_without_duplicates(fanned_out());
}

/// kinesis-mock never sends `ChildShards`: the end of each parent is found through the
/// listing, and read to its null iterator.
#[test]
fn f_split_and_merge_while_producing_children_wait_for_parents() {
    let _one_at_a_time = exclusive();
    crate::consumer_aws::split_and_merge_while_producing_children_wait_for_parents(fanned_out()(2));
}

#[test]
fn workers_starting_together_register_one_consumer() {
    let _one_at_a_time = exclusive();
    let mut c = fanned_out()(2);
    for s in 0..2 {
        c.produce(s, 0, 200);
    }
    let config = c.config("check", "");
    let (status, out) = crate::operate::shoal_check(&config);
    assert_eq!(status, 0, "{out}");
    assert_eq!(
        crate::operate::finding(&out, "fan-out"),
        "ok    fan-out: consumer test is not registered yet: `shoal run` registers it (0 of 20 consumers on the stream now)"
    );
    c.start("w1");
    c.start("w2");
    c.wait_for("every record archived", Duration::from_secs(120), |c| {
        c.has_last_records(2, 200)
    });
    assert_eq!(
        consumers(&c),
        vec![("test".to_string(), "ACTIVE".to_string())],
        "one consumer, named after the application"
    );
    let (status, out) = crate::operate::shoal_check(&config);
    assert_eq!(status, 0, "{out}");
    assert!(
        crate::operate::finding(&out, "fan-out")
            .starts_with("ok    fan-out: consumer test is ACTIVE (arn:aws:kinesis:"),
        "{out}"
    );
    assert!(c.terminate("w1") && c.terminate("w2"));
    assert_eq!(assert_complete_in_order(&c.archived(), 2, 200), 0);
}

#[test]
fn a_stream_at_its_consumer_limit_is_named_and_the_run_stops() {
    let _one_at_a_time = exclusive();
    let mut c = fanned_out()(1);
    let arn = stream_arn(&c);
    let stream = c.stream();
    stream.block_on(async {
        for n in 0..20 {
            stream
                .kinesis
                .register_stream_consumer()
                .stream_arn(&arn)
                .consumer_name(format!("other-{n}"))
                .send()
                .await
                .expect("RegisterStreamConsumer");
        }
    });
    c.start("w1");
    let status = c.wait_exit("w1", Duration::from_secs(60));
    assert!(!status.success());
    let log = c.log("w1");
    assert!(
        log.contains("cannot register the enhanced fan-out consumer test: the stream already has 20 registered consumers, Kinesis' limit"),
        "{log}"
    );
    assert!(log.contains("consumer.retrieval = \"polling\""), "{log}");
}

/// Subscriptions refused (throttled, 5xx) or cut mid-stream are made again from the last
/// event's continuation: nothing lost, nothing repeated, nothing out of order.
#[test]
fn g_refused_and_cut_subscriptions_resume_without_loss() {
    use crate::fault_proxy::{Fault, FaultProxy};
    let _one_at_a_time = exclusive();
    let mut c = fanned_out()(2);
    // Six refusals in a row outlast the SDK's own three attempts: of two shards
    // subscribing at once, one meets at least three of them and shoal backs off itself.
    fn plan(n: u64) -> Fault {
        match n % 8 {
            0..3 => Fault::Throttle,
            3..6 => Fault::ServerError,
            _ => Fault::Cut(Duration::from_millis(2500)),
        }
    }
    let proxy = FaultProxy::start(c.stream_endpoint(), &["SubscribeToShard"], plan);
    c.set_kinesis_endpoint(&proxy.endpoint);
    for s in 0..2 {
        c.produce(s, 0, 300);
    }
    c.start_with("w1", "checkpoint_interval = \"1h\"");
    // Produce while subscriptions come and go.
    for round in 1..4 {
        std::thread::sleep(Duration::from_secs(2));
        for s in 0..2 {
            c.produce(s, round * 300, 300);
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    c.wait_for(
        "subscriptions cut at least twice",
        Duration::from_secs(120),
        |_| proxy.counts.cut.load(Relaxed) >= 2,
    );
    for s in 0..2 {
        c.produce(s, 1200, 300);
    }
    c.wait_for(
        "every record archived through refused and cut subscriptions",
        Duration::from_secs(180),
        |c| c.has_last_records(2, 1500),
    );
    assert!(c.terminate("w1"), "clean exit\n{}", c.log("w1"));
    eprintln!("fault proxy: {}", proxy.summary());
    let counts = &proxy.counts;
    assert!(
        counts.throttled.load(Relaxed) > 0
            && counts.server_errors.load(Relaxed) > 0
            && counts.cut.load(Relaxed) > 0,
        "{}",
        proxy.summary()
    );
    let log = c.log("w1");
    assert!(
        log.contains("cannot subscribe to the shard"),
        "refusals backed off:\n{log}"
    );
    assert_eq!(assert_complete_in_order(&c.archived(), 2, 1500), 0);
}

/// One config key moves a deployment between polling and fan-out (a restart each time):
/// every record once, in order, resumed from the other mode's checkpoints.
#[test]
fn switching_between_polling_and_fan_out_loses_and_repeats_nothing() {
    let _one_at_a_time = exclusive();
    let mut c = Cluster::aws(&Emulators::new(Kinesis::Mock), 2, LEASE);
    let mut produced = 0;
    for (round, mode) in ["polling", "fan-out", "polling"].into_iter().enumerate() {
        c.set_retrieval(mode);
        for s in 0..2 {
            c.produce(s, produced, 400);
        }
        produced += 400;
        let worker = format!("w{round}");
        c.start(&worker);
        c.wait_for(
            &format!("records through {produced} archived by {mode}"),
            Duration::from_secs(120),
            |c| c.has_last_records(2, produced),
        );
        assert!(c.terminate(&worker), "clean exit\n{}", c.log(&worker));
        let log = c.log(&worker);
        assert_eq!(
            log.contains("subscribed to the shard") || log.contains("enhanced fan-out consumer"),
            mode == "fan-out",
            "{mode}:\n{log}"
        );
    }
    assert_eq!(assert_complete_in_order(&c.archived(), 2, produced), 0);
}
