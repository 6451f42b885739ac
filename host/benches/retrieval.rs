//! Retrieval benchmark on the emulators (one command: `cargo bench -p shoal --bench
//! retrieval`; it starts kinesis-mock, DynamoDB Local and kinesalite through
//! `tests/emulators.sh` when they are not answering, and stops only those it started).
//!
//! The three ways records reach a guest — polling serially (fetch, process, fetch:
//! `read_ahead_records = 0`, `read_ahead_bytes = 0`), polling with the default read-ahead
//! (the next GetRecords made while the guest processes) and enhanced fan-out
//! (SubscribeToShard) — are compared on one emulator, kinesis-mock, the only one with
//! SubscribeToShard. Every run is a `shoal run` process with the `archive` guest, which
//! appends each record to `<shard>.jsonl` and, per batch, a line with the guest's wall
//! clock when it entered `process` and when the batch was written and flushed
//! (`start_ms`, `end_ms`) and the batch's first and last sequence numbers.
//!
//! 1. **Latency.** Per mode and rate, a fresh 1-shard stream and lease table, shoal's
//!    defaults otherwise; once `shoal run` has processed a few warm-up records, a producer
//!    puts each rate of `SHOAL_RETRIEVAL_RATES` (default `1000,250` records a second) for
//!    `SHOAL_RETRIEVAL_SECONDS` (default 20; 0 skips this part): a PutRecords call of
//!    rate ÷ 20 records every 50 ms, each record's data a JSON document of
//!    `SHOAL_RETRIEVAL_RECORD_BYTES` (default 1,024) holding the call's send time (µs). At
//!    most 4 calls are out at once and a tick that cannot be sent within a tick of its due
//!    time is skipped, so an emulator that cannot take the rate lowers the rate achieved
//!    (reported) rather than queueing without bound. A record's "processed" time is the
//!    `end_ms` of the batch that holds it: the guest had written and flushed it. Reported:
//!    put → processed and the emulator's own arrival stamp → processed, p50 / p99 / max
//!    over every record, the rate achieved, the PutRecords call time, the batch sizes, and
//!    the CPU of shoal and of kinesis-mock.
//! 2. **Drain.** One stream of `SHOAL_RETRIEVAL_SHARDS` shards (default 1) pre-filled with
//!    `SHOAL_RETRIEVAL_RECORDS` records (default 12,000; 0 skips this part) — kinesis-mock
//!    takes longer per put the more records its shard holds, so a bigger backlog mostly
//!    costs filling time — read from TRIM_HORIZON with `max_records =
//!    SHOAL_RETRIEVAL_MAX_RECORDS` (default 1,000, so a polling drain is a dozen fetches)
//!    by each mode into its own new lease table (and, for fan-out, its own registered
//!    consumer), `SHOAL_RETRIEVAL_ROUNDS` times (default 3, order rotated), with the
//!    `archive` guest as it is (µs per record) and, for the two polling modes, with it
//!    sleeping `SHOAL_RETRIEVAL_SLOW_MS` (default 300; 0 skips) at the start of every
//!    batch: a guest whose batch costs more than the 200 ms pacing between fetches (a
//!    sink's round trip, say), which is what read-ahead can hide. Done when each shard's
//!    last record is processed. Reported: start → first and → last record processed,
//!    records/s per shard over that and after the first batch, and the share of the time
//!    the guest was busy.
//! 3. The polling drain again on kinesalite (`SHOAL_RETRIEVAL_KINESALITE=0` skips it), a
//!    faster emulator without SubscribeToShard.
//!
//! Before each run the benchmark waits (up to 60 s) for the emulator to be idle, and it
//! deletes its streams and tables afterwards. `SHOAL_RETRIEVAL_LOGS=<dir>` keeps each
//! run's shoal log and batch log there.
//!
//! Prints Markdown with the machine, date, command and the medians.

#[allow(dead_code)]
#[path = "../../tests/runtime/emulators.rs"]
mod emulators;
#[allow(dead_code)]
#[path = "../../tests/runtime/fixtures.rs"]
mod fixtures;
#[path = "retrieval/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "support/proc_stats.rs"]
mod proc_stats;
#[path = "support/report.rs"]
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use emulators::{AwsStream, Emulators, Kinesis};
use fixtures::plugin_path;
use harness::{
    BatchLine, EmulatorGuard, Mode, Produced, Shoal, Target, clean_up, median, parse_record,
    percentile, prefill, produce_steady,
};
use report::{machine, today};

const MODES: [Mode; 3] = [Mode::Serial, Mode::Prefetch, Mode::FanOut];
/// Records put (and waited for) before the latency is measured.
const WARMUP: usize = 10;
/// The producer's tick.
const TICK: Duration = Duration::from_millis(50);
/// PutRecords calls out at once: enough to hold the schedule through a slow answer, few
/// enough that an emulator that cannot keep up slows the producer instead of queueing.
const MAX_IN_FLIGHT: usize = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's parameters (environment variables, with defaults).
struct Params {
    seconds: u64,
    rates: Vec<u64>,
    records: usize,
    max_records: usize,
    shards: usize,
    rounds: usize,
    slow_ms: u64,
    kinesalite: bool,
}

impl Params {
    fn from_env() -> Self {
        let shards = env_or("SHOAL_RETRIEVAL_SHARDS", 1).max(1) as usize;
        Self {
            seconds: env_or("SHOAL_RETRIEVAL_SECONDS", 20),
            rates: std::env::var("SHOAL_RETRIEVAL_RATES")
                .unwrap_or_else(|_| "1000,250".into())
                .split(',')
                .filter_map(|r| r.trim().parse::<u64>().ok())
                .map(|r| r.max(20))
                .collect(),
            records: env_or("SHOAL_RETRIEVAL_RECORDS", 12_000) as usize / shards * shards,
            max_records: env_or("SHOAL_RETRIEVAL_MAX_RECORDS", 1000).clamp(1, 10_000) as usize,
            shards,
            rounds: env_or("SHOAL_RETRIEVAL_ROUNDS", 3).max(1) as usize,
            slow_ms: env_or("SHOAL_RETRIEVAL_SLOW_MS", 300),
            kinesalite: env_or("SHOAL_RETRIEVAL_KINESALITE", 1) != 0,
        }
    }
}

/// What one latency run measured.
struct Latency {
    produced: Produced,
    /// Spawn → the warm-up records processed, s.
    consuming_s: f64,
    measured: usize,
    duplicates: usize,
    missing: usize,
    /// Sorted, ms.
    put_to_processed: Vec<f64>,
    arrival_to_processed: Vec<f64>,
    put_to_arrival: Vec<f64>,
    batch_sizes: Vec<f64>,
    /// shoal's CPU while producing and draining the tail, % of one core.
    cpu_pct: f64,
    /// kinesis-mock's CPU meanwhile (whoever else uses it included), % of one core.
    emulator_cpu_pct: f64,
}

/// Each archived record with the `end_ms` of the batch that wrote it, checked against the
/// batch log's first and last sequence numbers.
fn processed_at(shoal: &Shoal) -> Result<Vec<(harness::Archived, u64)>, String> {
    let mut batches: BTreeMap<String, Vec<BatchLine>> = BTreeMap::new();
    for b in shoal.batches() {
        batches.entry(b.shard.clone()).or_default().push(b);
    }
    let mut by_shard: BTreeMap<String, Vec<harness::Archived>> = BTreeMap::new();
    for a in shoal.archived() {
        by_shard.entry(a.shard.clone()).or_default().push(a);
    }
    let mut out = Vec::new();
    for (shard, records) in by_shard {
        let logged = batches.remove(&shard).unwrap_or_default();
        let mut records = records.into_iter();
        for batch in logged {
            let chunk: Vec<_> = records.by_ref().take(batch.records).collect();
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                return Err(format!(
                    "{shard}: the batch log names more records than archived"
                ));
            };
            if first.sequence_number != batch.first || last.sequence_number != batch.last {
                return Err(format!(
                    "{shard}: archive and batch log disagree ({} / {} vs {} / {})",
                    first.sequence_number, last.sequence_number, batch.first, batch.last
                ));
            }
            out.extend(chunk.into_iter().map(|a| (a, batch.end_ms)));
        }
        if records.next().is_some() {
            return Err(format!(
                "{shard}: archived records missing from the batch log"
            ));
        }
    }
    Ok(out)
}

fn latency_run(
    emulators: &Emulators,
    client: &aws_sdk_kinesis::Client,
    mode: Mode,
    rate: u64,
    seconds: u64,
) -> Result<Latency, String> {
    harness::settle("kinesis-mock", Duration::from_secs(60));
    let stream = emulators.create_stream(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let application = format!("{}-lat-{}", stream.name, mode.slug());
    let target = Target {
        stream: &stream,
        kinesis_endpoint: emulators.kinesis_endpoint(),
        table: &stream.table,
        application: &application,
    };
    let mut shoal = Shoal::spawn(dir.path(), &target, mode, None, 0);
    let result = measure_latency(&stream, client, &mut shoal, rate, seconds);
    let stopped = shoal.stop();
    clean_up(&stream, std::slice::from_ref(&stream.table));
    let latency = result?;
    stopped.map(|()| latency)
}

fn measure_latency(
    stream: &AwsStream,
    client: &aws_sdk_kinesis::Client,
    shoal: &mut Shoal,
    rate: u64,
    seconds: u64,
) -> Result<Latency, String> {
    let _ = prefill(stream, client, "warmup", WARMUP, 1);
    shoal.wait_for_records(WARMUP, Duration::from_secs(180))?;
    let consuming_s = shoal
        .batches()
        .iter()
        .map(|b| b.end_ms as f64)
        .fold(f64::NAN, f64::max)
        / 1000.0
        - shoal.spawned_ms / 1000.0;
    let cpu_before = shoal.cpu_seconds();
    let emulator_before = harness::emulator_cpu_seconds("kinesis-mock");
    let started = Instant::now();
    let steady_from_ms = harness::now_us() / 1000;
    let per_tick = (rate as f64 * TICK.as_secs_f64()).round() as usize;
    let produced = produce_steady(
        stream,
        client,
        per_tick,
        TICK,
        Duration::from_secs(seconds),
        MAX_IN_FLIGHT,
    );
    shoal.wait_for_records(WARMUP + produced.records, Duration::from_secs(180))?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_pct = (shoal.cpu_seconds() - cpu_before) / elapsed * 100.0;
    let emulator_cpu_pct =
        (harness::emulator_cpu_seconds("kinesis-mock") - emulator_before) / elapsed * 100.0;
    let records = processed_at(shoal)?;
    let batch_sizes = shoal
        .batches()
        .iter()
        .filter(|b| b.end_ms >= steady_from_ms)
        .map(|b| b.records as f64)
        .collect::<Vec<_>>();
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    let (mut put_to_processed, mut arrival_to_processed, mut put_to_arrival) =
        (Vec::new(), Vec::new(), Vec::new());
    for (record, end_ms) in &records {
        let Some((phase, n, sent_us)) = parse_record(&record.data) else {
            return Err("an archived record is not the benchmark's".into());
        };
        if phase != "steady" {
            continue;
        }
        if !seen.insert(n) {
            duplicates += 1;
            continue;
        }
        let sent_ms = sent_us as f64 / 1000.0;
        put_to_processed.push(*end_ms as f64 - sent_ms);
        arrival_to_processed.push(*end_ms as f64 - record.arrival_ms as f64);
        put_to_arrival.push(record.arrival_ms as f64 - sent_ms);
    }
    for v in [
        &mut put_to_processed,
        &mut arrival_to_processed,
        &mut put_to_arrival,
    ] {
        v.sort_by(f64::total_cmp);
    }
    Ok(Latency {
        measured: seen.len(),
        duplicates,
        missing: produced.records.saturating_sub(seen.len()),
        produced,
        consuming_s,
        put_to_processed,
        arrival_to_processed,
        put_to_arrival,
        batch_sizes,
        cpu_pct,
        emulator_cpu_pct,
    })
}

/// What one drain run measured.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Spawn → first batch processed, s.
    first_s: f64,
    /// Spawn → every record processed, s.
    all_s: f64,
    /// Records per second per shard over `all_s`.
    rate: f64,
    /// Records per second per shard from the end of each shard's first batch to its last.
    rate_after_first: f64,
    batches: usize,
    largest_batch: f64,
    /// Share of the time from the first batch's start to the last batch's end that the
    /// guest was inside `process`, %, mean over shards.
    guest_busy_pct: f64,
    cpu_s: f64,
    /// Records processed twice (a batch delivered again after a lease was lost).
    redelivered: usize,
}

/// A drain variant: the emulator's stream, the mode and the guest's sleep per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Variant {
    emulator: &'static str,
    mode: Mode,
    sleep_ms: u64,
}

fn drain_run(
    stream: &AwsStream,
    kinesis_endpoint: &str,
    table: &str,
    variant: Variant,
    last: &BTreeMap<String, String>,
    p: &Params,
) -> Result<Drain, String> {
    let (records, shards) = (p.records, p.shards);
    harness::settle(variant.emulator, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target {
        stream,
        kinesis_endpoint,
        table,
        application: table,
    };
    let mut shoal = Shoal::spawn(
        dir.path(),
        &target,
        variant.mode,
        Some(p.max_records),
        variant.sleep_ms,
    );
    let waited = shoal.wait_for_last(last, records, Duration::from_secs(600));
    let cpu_s = shoal.cpu_seconds();
    let stopped = shoal.stop();
    waited?;
    stopped?;
    let batches = shoal.batches();
    let processed: usize = batches.iter().map(|b| b.records).sum();
    if processed < records {
        return Err(format!("{processed} records processed, {records} expected"));
    }
    let spawned = shoal.spawned_ms;
    let mut per_shard: BTreeMap<&str, Vec<&BatchLine>> = BTreeMap::new();
    for b in &batches {
        per_shard.entry(b.shard.as_str()).or_default().push(b);
    }
    let mut after_first = Vec::new();
    let mut busy = Vec::new();
    for shard_batches in per_shard.values() {
        let (first, last) = (shard_batches[0], shard_batches[shard_batches.len() - 1]);
        let n: usize = shard_batches.iter().map(|b| b.records).sum();
        // Over two batches at least: one interval says little (a fan-out drain of 12,000
        // records is one full event and a small one).
        if shard_batches.len() > 2 && last.end_ms > first.end_ms {
            after_first
                .push((n - first.records) as f64 / ((last.end_ms - first.end_ms) as f64 / 1000.0));
        }
        let inside: u64 = shard_batches.iter().map(|b| b.end_ms - b.start_ms).sum();
        busy.push(inside as f64 / (last.end_ms - first.start_ms).max(1) as f64 * 100.0);
    }
    let first_s = (batches.iter().map(|b| b.end_ms).min().unwrap_or(0) as f64 - spawned) / 1000.0;
    let all_s = (batches.iter().map(|b| b.end_ms).max().unwrap_or(0) as f64 - spawned) / 1000.0;
    Ok(Drain {
        first_s,
        all_s,
        rate: records as f64 / shards as f64 / all_s,
        rate_after_first: if after_first.is_empty() {
            f64::NAN
        } else {
            after_first.iter().sum::<f64>() / after_first.len() as f64
        },
        batches: batches.len(),
        largest_batch: batches.iter().map(|b| b.records).max().unwrap_or(0) as f64,
        guest_busy_pct: busy.iter().sum::<f64>() / busy.len() as f64,
        cpu_s,
        redelivered: processed - records,
    })
}

/// Drain every variant of one emulator `rounds` times from one pre-filled stream.
fn drain_all(
    emulators: &Emulators,
    emulator: &'static str,
    modes: &[Mode],
    p: &Params,
    results: &mut BTreeMap<Variant, Vec<Result<Drain, String>>>,
) -> f64 {
    let stream = emulators.create_stream(p.shards);
    let client = harness::put_client(emulators.kinesis_endpoint());
    let (took, last) = prefill(&stream, &client, "drain", p.records, 1);
    let put_rate = p.records as f64 / took.as_secs_f64();
    eprintln!(
        "retrieval: {} records of {} B put into {} shard(s) of {} on {emulator} in {:.1} s ({put_rate:.0} records/s)",
        p.records,
        harness::record_bytes(),
        p.shards,
        stream.name,
        took.as_secs_f64()
    );
    let mut variants = Vec::new();
    for &mode in modes {
        variants.push(Variant {
            emulator,
            mode,
            sleep_ms: 0,
        });
        // Fan-out reads the next event while the guest works whatever the guest costs;
        // the slow guest is there to show what read-ahead does for polling.
        if p.slow_ms > 0 && mode != Mode::FanOut {
            variants.push(Variant {
                emulator,
                mode,
                sleep_ms: p.slow_ms,
            });
        }
    }
    let mut tables = Vec::new();
    for round in 0..p.rounds {
        for i in 0..variants.len() {
            let variant = variants[(i + round) % variants.len()];
            let table = format!("{}-d{round}-{i}", stream.name);
            let drain = drain_run(
                &stream,
                emulators.kinesis_endpoint(),
                &table,
                variant,
                &last,
                p,
            );
            match &drain {
                Ok(d) => eprintln!(
                    "retrieval: drain round {} {emulator} {} sleep {} ms: first {:.2} s, all {:.2} s, \
                     {:.0} records/s per shard ({:.0} after the first batch), {} batches, \
                     guest busy {:.0} %, {:.2} CPU-s, {} records delivered again",
                    round + 1,
                    variant.mode.name(),
                    variant.sleep_ms,
                    d.first_s,
                    d.all_s,
                    d.rate,
                    d.rate_after_first,
                    d.batches,
                    d.guest_busy_pct,
                    d.cpu_s,
                    d.redelivered
                ),
                Err(e) => eprintln!(
                    "retrieval: drain round {} {emulator} {} sleep {} ms FAILED: {e}",
                    round + 1,
                    variant.mode.name(),
                    variant.sleep_ms
                ),
            }
            results.entry(variant).or_default().push(drain);
            tables.push(table);
        }
    }
    clean_up(&stream, &tables);
    put_rate
}

fn main() {
    let p = Params::from_env();
    // Build the plugins before anything is timed.
    let _ = plugin_path("archive");
    let mut names = vec!["kinesis-mock", "dynamodb-local"];
    if p.kinesalite {
        names.push("kinesalite");
    }
    let _emulators = EmulatorGuard::ensure(&names);
    let mock = Emulators::new(Kinesis::Mock);
    let mock_put = harness::put_client(mock.kinesis_endpoint());

    let mut latencies = Vec::new();
    for (r, &rate) in p.rates.iter().enumerate().filter(|_| p.seconds > 0) {
        for i in 0..MODES.len() {
            // Rotated, so no mode always runs on the emulator's most loaded heap.
            let mode = MODES[(i + r) % MODES.len()];
            let run = latency_run(&mock, &mock_put, mode, rate, p.seconds);
            log_latency(mode, rate, &run);
            latencies.push((rate, mode, run));
        }
    }

    let mut drains = BTreeMap::new();
    let mut put_rates = Vec::new();
    if p.records > 0 {
        put_rates.push((
            "kinesis-mock",
            drain_all(&mock, "kinesis-mock", &MODES, &p, &mut drains),
        ));
    }
    if p.kinesalite && p.records > 0 {
        let kinesalite = Emulators::new(Kinesis::Kinesalite);
        put_rates.push((
            "kinesalite",
            drain_all(
                &kinesalite,
                "kinesalite",
                &[Mode::Serial, Mode::Prefetch],
                &p,
                &mut drains,
            ),
        ));
    }
    report(&p, &latencies, &drains, &put_rates);
}

/// One latency run's figures (or failure) on stderr, as it ends.
fn log_latency(mode: Mode, rate: u64, run: &Result<Latency, String>) {
    match run {
        Ok(l) => eprintln!(
            "retrieval: latency {} at {rate}/s: {} records measured ({} put, {} refused, {} ticks \
             skipped) at {:.0} records/s; put → processed p50 {:.0} ms p99 {:.0} ms max {:.0} ms; \
             arrival → processed p50 {:.0} ms p99 {:.0} ms; put → arrival p50 {:.0} ms; \
             start → consuming {:.1} s; kinesis-mock {:.0} % of a core",
            mode.name(),
            l.measured,
            l.produced.records,
            l.produced.failed,
            l.produced.skipped_ticks,
            l.produced.records as f64 / l.produced.elapsed_s,
            percentile(&l.put_to_processed, 50.0),
            percentile(&l.put_to_processed, 99.0),
            percentile(&l.put_to_processed, 100.0),
            percentile(&l.arrival_to_processed, 50.0),
            percentile(&l.arrival_to_processed, 99.0),
            percentile(&l.put_to_arrival, 50.0),
            l.consuming_s,
            l.emulator_cpu_pct,
        ),
        Err(e) => eprintln!("retrieval: latency {} at {rate}/s FAILED: {e}", mode.name()),
    }
    if let Ok(Latency {
        produced:
            Produced {
                failed_calls,
                first_error: Some(error),
                ..
            },
        ..
    }) = run
    {
        eprintln!("retrieval: {failed_calls} PutRecords calls failed, the first: {error}");
    }
}

fn command() -> String {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SHOAL_RETRIEVAL_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars.push("cargo bench -p shoal --bench retrieval".into());
    vars.join(" ")
}

fn report(
    p: &Params,
    latencies: &[(u64, Mode, Result<Latency, String>)],
    drains: &BTreeMap<Variant, Vec<Result<Drain, String>>>,
    put_rates: &[(&str, f64)],
) {
    println!("## Retrieval: polling (serial, prefetch) and enhanced fan-out\n");
    println!("- **Command:** `{}`", command());
    println!("- **Date:** {}", today());
    println!("- **Machine:** {}", machine());
    println!(
        "- **Emulators:** kinesis-mock (npm kinesis-local 0.6.2) for all three modes, \
         DynamoDB Local 1.25.1 leases{}",
        if p.kinesalite {
            ", and kinesalite 3.3.3 for the polling drain"
        } else {
            ""
        }
    );
    println!();
    println!(
        "### Latency at a steady rate ({} B records, 1 shard, {} s per run)\n",
        harness::record_bytes(),
        p.seconds
    );
    println!(
        "| rate put | retrieval | records measured | rate achieved | put → processed p50 | p99 \
         | max | arrival → processed p50 | p99 | max | PutRecords call p50 / p99 \
         | records per batch (median) | shoal CPU | kinesis-mock CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut sorted: Vec<_> = latencies.iter().collect();
    sorted.sort_by_key(|(rate, mode, _)| (p.rates.iter().position(|r| r == rate), *mode));
    for (rate, mode, run) in sorted {
        match run {
            Ok(l) => {
                let mut calls = l.produced.call_ms.clone();
                calls.sort_by(f64::total_cmp);
                let notes = if l.duplicates + l.missing + l.produced.failed > 0 {
                    format!(
                        " ({} duplicates, {} missing, {} refused)",
                        l.duplicates, l.missing, l.produced.failed
                    )
                } else {
                    String::new()
                };
                let ms = |v: &[f64], q: f64| percentile(v, q);
                println!(
                    "| {rate}/s | {} | {}{notes} | {:.0}/s | {:.0} ms | {:.0} ms | {:.0} ms \
                     | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} / {:.0} ms | {:.0} | {:.1} % \
                     | {:.0} % |",
                    mode.name(),
                    l.measured,
                    l.produced.records as f64 / l.produced.elapsed_s,
                    ms(&l.put_to_processed, 50.0),
                    ms(&l.put_to_processed, 99.0),
                    ms(&l.put_to_processed, 100.0),
                    ms(&l.arrival_to_processed, 50.0),
                    ms(&l.arrival_to_processed, 99.0),
                    ms(&l.arrival_to_processed, 100.0),
                    ms(&calls, 50.0),
                    ms(&calls, 99.0),
                    median(l.batch_sizes.clone()),
                    l.cpu_pct,
                    l.emulator_cpu_pct,
                );
            }
            Err(e) => println!(
                "| {rate}/s | {} | failed: {} ||||||||||||",
                mode.name(),
                e.lines().next().unwrap_or_default()
            ),
        }
    }
    println!();
    let rates: Vec<String> = put_rates
        .iter()
        .map(|(e, r)| format!("{e} {r:.0} records/s"))
        .collect();
    println!(
        "### Drain: {} records of {} B in {} shard(s), from TRIM_HORIZON (median of {} rounds; pre-filled at {})\n",
        p.records,
        harness::record_bytes(),
        p.shards,
        p.rounds,
        rates.join(", ")
    );
    println!(
        "| emulator | retrieval | guest | records/s per shard, start → all processed (range) \
         | records/s after the first batch (range) | start → first processed \
         | start → all processed \
         | batches (largest) | guest busy | shoal CPU-s |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (variant, runs) in drains {
        let guest = if variant.sleep_ms == 0 {
            "archive".to_string()
        } else {
            format!("archive + {} ms per batch", variant.sleep_ms)
        };
        let ok: Vec<Drain> = runs
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let failed = runs.len() - ok.len();
        if ok.is_empty() {
            let error = runs
                .iter()
                .find_map(|r| r.as_ref().err())
                .map_or("", |e| e.lines().next().unwrap_or_default());
            println!(
                "| {} | {} | {guest} | failed: {error} |||||||",
                variant.emulator,
                variant.mode.name()
            );
            continue;
        }
        let m = |f: fn(&Drain) -> f64| median(ok.iter().map(f).collect());
        // Median, with the spread when there are several runs.
        let spread = |f: fn(&Drain) -> f64| {
            let v: Vec<f64> = ok.iter().map(f).filter(|x| x.is_finite()).collect();
            if v.is_empty() {
                return "–".to_string();
            }
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                });
            if v.len() > 1 {
                format!("{:.0} ({lo:.0}–{hi:.0})", median(v))
            } else {
                format!("{:.0}", v[0])
            }
        };
        println!(
            "| {} | {}{} | {guest} | {} | {} | {:.2} s | {:.2} s | {:.0} ({:.0}) | {:.0} % | {:.2} |",
            variant.emulator,
            variant.mode.name(),
            {
                let again = ok.iter().filter(|d| d.redelivered > 0).count();
                let mut notes = Vec::new();
                if failed > 0 {
                    notes.push(format!("{failed} of {} runs failed", runs.len()));
                }
                if again > 0 {
                    notes.push(format!(
                        "{again} of {} runs delivered a batch again after losing its lease",
                        runs.len()
                    ));
                }
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join("; "))
                }
            },
            spread(|d| d.rate),
            spread(|d| d.rate_after_first),
            m(|d| d.first_s),
            m(|d| d.all_s),
            m(|d| d.batches as f64),
            m(|d| d.largest_batch),
            m(|d| d.guest_busy_pct),
            m(|d| d.cpu_s),
        );
    }
}
