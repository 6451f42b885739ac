//! Failover and hot-swap timings (one command: `cargo bench -p shoal --bench failover`),
//! with real `shoal run` processes on the local source and SQLite leases (the same lease
//! logic as DynamoDB), lease duration 2 s:
//!
//! 1. crash failover: two workers on 4 shards, SIGKILL one, time until the survivor holds
//!    every lease; 2. graceful hand-off: SIGTERM one, same measure; both over
//!    `SHOAL_FAILOVER_RUNS` runs (default 20); 3. hot swap: one worker on 8 shards with
//!    records flowing, time from the plugin file being replaced until every shard has
//!    switched to the new generation, over 10 swaps.
//!
//! Prints Markdown with the distributions (min, median, p90, max).

#[allow(dead_code)]
#[path = "../../tests/runtime/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../../tests/runtime/emulators.rs"]
mod emulators;
#[allow(dead_code)]
#[path = "../../tests/runtime/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../../tests/runtime/watchdog.rs"]
mod watchdog;

use std::time::{Duration, Instant};

use cluster::Cluster;

const LEASE: Duration = Duration::from_millis(2000);

fn distribution(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "0 | – | – | – | –".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} | {:.2} | {:.2} | {:.2} | {:.2}",
        v.len(),
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

fn split_2_2(c: &mut Cluster) {
    c.wait_for("a 2/2 split", Duration::from_secs(90), |c| {
        let o = c.owners();
        o.get("w1") == Some(&2) && o.get("w2") == Some(&2)
    });
}

fn main() {
    let runs: usize = std::env::var("SHOAL_FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (mut crash, mut graceful) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut c = Cluster::local(4, LEASE);
        c.start("w1");
        c.start("w2");
        split_2_2(&mut c);
        c.kill("w2");
        crash.push(
            c.wait_for(
                "the survivor to hold every lease",
                Duration::from_secs(60),
                |c| c.owners().get("w1") == Some(&4),
            )
            .as_secs_f64(),
        );
        c.start("w2");
        split_2_2(&mut c);
        let sent = Instant::now();
        assert!(c.terminate("w2"), "clean exit");
        c.wait_for("the released leases taken", Duration::from_secs(60), |c| {
            c.owners().get("w1") == Some(&4)
        });
        graceful.push(sent.elapsed().as_secs_f64());
        eprintln!(
            "run {}: crash {:.2} s, graceful {:.2} s",
            run + 1,
            crash[run],
            graceful[run]
        );
    }

    // Hot swap under a flow of records.
    let shards = 8;
    let mut c = Cluster::local(shards, LEASE);
    let plugin = c.path("archive.wasm");
    let original = std::fs::read(fixtures::plugin_path("archive")).expect("archive");
    std::fs::write(&plugin, &original).expect("copy");
    c.set_plugin(&plugin, "");
    c.start("w1");
    c.wait_for("w1 to hold every lease", Duration::from_secs(60), |c| {
        c.owners().get("w1") == Some(&shards)
    });
    let mut swaps = Vec::new();
    let mut next = 0;
    for swap in 1..=10u32 {
        for s in 0..shards {
            c.produce(s, next, 50);
        }
        next += 50;
        let switched_before = c
            .log("w1")
            .matches("shard switched plugin generation")
            .count();
        let mut bytes = original.clone();
        // A custom section makes a new file (new digest) with the same code.
        let tag = format!("swap-{swap}");
        bytes.extend_from_slice(&[0, (tag.len() + 1) as u8, tag.len() as u8]);
        bytes.extend_from_slice(tag.as_bytes());
        let tmp = plugin.with_extension("tmp");
        std::fs::write(&tmp, &bytes).expect("write");
        let written = Instant::now();
        std::fs::rename(&tmp, &plugin).expect("swap");
        // Keep records flowing so every shard reaches a batch boundary.
        let deadline = written + Duration::from_secs(60);
        while c
            .log("w1")
            .matches("shard switched plugin generation")
            .count()
            < switched_before + shards
        {
            assert!(Instant::now() < deadline, "not every shard switched");
            for s in 0..shards {
                c.produce(s, next, 1);
            }
            next += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        swaps.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    c.terminate("w1");

    println!("## Failover and hot swap (local source, SQLite leases, lease duration {LEASE:?})\n");
    println!("| measure | runs | min | median | p90 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| crash failover (SIGKILL → survivor holds every lease), s | {} |",
        distribution(crash)
    );
    println!(
        "| graceful hand-off (SIGTERM → peer holds every lease), s | {} |",
        distribution(graceful)
    );
    println!(
        "| hot swap (file replaced → all {shards} shards on the new generation), ms | {} |",
        distribution(swaps)
    );
}
