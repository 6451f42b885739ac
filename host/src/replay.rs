//! `shoal replay`: runs a plugin over records from a JSON-lines file, offline, with the
//! same sandbox, limits, trap handling and directives as the consumer, printing each
//! batch's outcome and timing. The plugin author's edit-run loop.
//!
//! One difference from the consumer: the poison policy `block` would retry a
//! deterministic failure forever, which helps no one offline, so replay gives the batch
//! up after `max_attempts`, reports it, and goes on (the input file is untouched).
//! `dead-letter` writes the dead-letter file exactly as the consumer would.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::archive_format::InputLine;
use crate::config::{self, FailurePolicy, PluginSettings, PoisonPolicy, Settings};
use crate::delivery::{Disposition, Failure, OnPoison, ShardProcessor, now_ms};
use crate::plugin::bindings::{Batch, FencingToken, KinesisRecord, ShardInfo, ShutdownReason};
use crate::plugin::{InstanceConfig, PluginEngine};

/// What to replay and how (also the `shoal replay` command line).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// The processor component (.wasm); overrides the config's `plugin.path`.
    #[arg(long)]
    pub plugin: PathBuf,
    /// Records as JSON lines in the archive format (`partition_key` and `data_base64` or
    /// `data` required).
    #[arg(long)]
    pub input: PathBuf,
    /// Config file for sandbox grants, limits, plugin settings and failure policy.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Records per batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Shard id for input lines without one.
    #[arg(long, default_value = "shardId-000000000000")]
    pub shard_id: String,
    /// Stream name passed to the guest.
    #[arg(long, default_value = "replay")]
    pub stream_name: String,
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Records read from the input.
    pub records: usize,
    /// Batches delivered.
    pub batches: usize,
    /// Batches processed.
    pub processed: usize,
    /// Batches dead-lettered.
    pub dead_lettered: usize,
    /// Batches given up.
    pub gave_up: usize,
    /// Input lines that could not be read.
    pub bad_lines: usize,
    /// Traps seen, by kind.
    pub traps: BTreeMap<String, usize>,
    /// Guest errors seen, by kind.
    pub guest_errors: BTreeMap<String, usize>,
}

/// Run a replay, writing the per-batch report to `out`.
pub async fn run(
    options: &ReplayOptions,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<ReplaySummary> {
    let settings = match &options.config {
        Some(path) => config::load(path)?,
        None => Settings {
            engine: Default::default(),
            plugin: None,
            consumer: None,
            metrics_address: None,
        },
    };
    let mut plugin_settings = settings.plugin.clone().unwrap_or_else(|| {
        let mut p = PluginSettings::for_path(options.plugin.clone());
        // Quick retries for an interactive loop when no config says otherwise.
        p.failure = FailurePolicy {
            max_attempts: 3,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            poison: PoisonPolicy::Block,
        };
        p
    });
    plugin_settings.path =
        std::path::absolute(&options.plugin).unwrap_or_else(|_| options.plugin.clone());
    let mut engine_settings = settings.engine.clone();
    engine_settings.memory_bytes = plugin_settings.limits.memory_bytes;
    engine_settings.max_instances = engine_settings.max_instances.min(64);

    let engine = PluginEngine::new(&engine_settings)?;
    let plugin = {
        let engine = engine.clone();
        let path = plugin_settings.path.clone();
        tokio::task::spawn_blocking(move || engine.load_file(&path, 1)).await??
    };
    writeln!(
        out,
        "plugin {} generation 1, {} bytes, sha256 {}, {} in {:.1} ms",
        plugin.path().display(),
        plugin.size_bytes(),
        plugin.short_digest(),
        match plugin.source() {
            crate::plugin::cache::ArtifactSource::Cached => "loaded from cache",
            crate::plugin::cache::ArtifactSource::Compiled => "compiled",
        },
        plugin.load_time().as_secs_f64() * 1e3
    )?;
    let (_publisher, plugins) = tokio::sync::watch::channel(Arc::new(plugin));
    let on_poison = match &plugin_settings.failure.poison {
        PoisonPolicy::Block => OnPoison::GiveUp,
        other => OnPoison::from_policy(other),
    };

    let mut summary = ReplaySummary::default();
    let batches = read_batches(&options.input, options, &mut summary, out)?;
    let mut processors: BTreeMap<String, ShardProcessor> = BTreeMap::new();
    let cancel = CancellationToken::new();
    let replay_started = Instant::now();
    for (index, (shard_id, batch)) in batches.into_iter().enumerate() {
        let processor = processors.entry(shard_id.clone()).or_insert_with(|| {
            ShardProcessor::new(
                engine.clone(),
                plugins.clone(),
                InstanceConfig {
                    shard: ShardInfo {
                        stream_name: options.stream_name.clone(),
                        shard_id: shard_id.clone(),
                    },
                    sandbox: plugin_settings.sandbox.clone(),
                    limits: plugin_settings.limits,
                    fencing: FencingToken::unleased(),
                },
                &plugin_settings.guest_settings,
                plugin_settings.failure.clone(),
                on_poison.clone(),
            )
        });
        let records = batch.records.len();
        let bytes: usize = batch.records.iter().map(|r| r.data.len()).sum();
        let range = match (batch.records.first(), batch.records.last()) {
            (Some(a), Some(b)) => format!("{}..{}", a.sequence_number, b.sequence_number),
            _ => "-".into(),
        };
        let report = processor.process(Arc::new(batch), &cancel).await?;
        summary.batches += 1;
        for (n, failure) in report.failures.iter().enumerate() {
            match failure {
                Failure::Trap(t) => {
                    *summary.traps.entry(t.kind.label().to_string()).or_default() += 1
                }
                Failure::Guest(_) => *summary.guest_errors.entry(failure.kind()).or_default() += 1,
                Failure::Setup(_) => *summary.guest_errors.entry("setup".into()).or_default() += 1,
            }
            writeln!(
                out,
                "batch {index} {shard_id} attempt {}: {}",
                n + 1,
                one_line(&failure.to_string())
            )?;
        }
        let head = format!(
            "batch {index} {shard_id} records {records} ({bytes} B, seq {range}) gen {}",
            report.generation
        );
        match &report.disposition {
            Disposition::Processed(directive) => {
                summary.processed += 1;
                let secs = report.guest_time.as_secs_f64();
                let rate = if secs > 0.0 {
                    records as f64 / secs
                } else {
                    0.0
                };
                writeln!(
                    out,
                    "{head}: ok {directive} after {} attempt(s), guest {:.3} ms ({:.0} records/s){}",
                    report.attempts,
                    secs * 1e3,
                    rate,
                    report
                        .fuel
                        .map(|f| format!(", fuel {f}"))
                        .unwrap_or_default()
                )?;
            }
            Disposition::DeadLettered(file) => {
                summary.dead_lettered += 1;
                writeln!(
                    out,
                    "{head}: DEAD-LETTERED after {} attempt(s) to {}",
                    report.attempts,
                    file.display()
                )?;
            }
            Disposition::GaveUp => {
                summary.gave_up += 1;
                writeln!(
                    out,
                    "{head}: POISONED after {} attempt(s), skipped (replay does not block)",
                    report.attempts
                )?;
            }
        }
    }
    for processor in processors.values_mut() {
        // A trap in shutdown is logged; replay has nothing more to do with the shard.
        let _ = processor.shutdown(ShutdownReason::Requested).await;
    }
    writeln!(
        out,
        "replayed {} records in {} batches in {:.1} ms: {} processed, {} dead-lettered, {} poisoned; traps {}; guest errors {}; bad input lines {}",
        summary.records,
        summary.batches,
        replay_started.elapsed().as_secs_f64() * 1e3,
        summary.processed,
        summary.dead_lettered,
        summary.gave_up,
        counts(&summary.traps),
        counts(&summary.guest_errors),
        summary.bad_lines
    )?;
    Ok(summary)
}

fn counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "0".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

/// Read the input into batches of at most `batch_size`, per shard, in input order.
fn read_batches(
    path: &Path,
    options: &ReplayOptions,
    summary: &mut ReplaySummary,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<(String, Batch)>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open replay input {}", path.display()))?;
    let batch_size = options.batch_size.max(1);
    let now = now_ms();
    let mut pending: BTreeMap<String, Vec<KinesisRecord>> = BTreeMap::new();
    let mut batches = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read {} line {number}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = InputLine::parse(&line).and_then(|l| {
            let shard = l
                .shard_id
                .clone()
                .unwrap_or_else(|| options.shard_id.clone());
            l.into_record(format!("{number:020}"), now)
                .map(|r| (shard, r))
        });
        match parsed {
            Ok((shard, record)) => {
                summary.records += 1;
                let records = pending.entry(shard.clone()).or_default();
                records.push(record);
                if records.len() >= batch_size {
                    let records = std::mem::take(records);
                    batches.push((
                        shard,
                        Batch {
                            records,
                            millis_behind_latest: 0,
                        },
                    ));
                }
            }
            Err(e) => {
                summary.bad_lines += 1;
                writeln!(
                    out,
                    "{}:{number}: skipped bad input line: {e}",
                    path.display()
                )?;
            }
        }
    }
    for (shard, records) in pending {
        if !records.is_empty() {
            batches.push((
                shard,
                Batch {
                    records,
                    millis_behind_latest: 0,
                },
            ));
        }
    }
    Ok(batches)
}
