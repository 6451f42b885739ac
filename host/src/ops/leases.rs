//! `shoal leases -c FILE`: the lease table as an operator reads it, one row per lease
//! (shard, owner, checkpoint, counter, parents, state, and how recently its counter moved
//! as this process saw it), as a table or JSON, once or refreshed like `top` (with each
//! shard's lag and rate from a consumer's `/metrics` when given).
//!
//! A lease's renewal age is judged as the coordinator judges expiry: by this process's
//! own clock watching the counter, never by comparing clocks. A single look reads the
//! table twice, half a lease duration (one and a half renewal periods) apart.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lease::{Checkpoint, Lease};

/// What a lease is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseState {
    /// Being (or waiting to be) processed.
    Open,
    /// Its shard is closed and fully processed (`SHARD_END`).
    Ended,
    /// A parent shard is not ended yet: it starts after them.
    WaitingForParents,
}

impl std::fmt::Display for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseState::Open => "open",
            LeaseState::Ended => "ended",
            LeaseState::WaitingForParents => "waiting for parents",
        })
    }
}

/// One row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseRow {
    /// The shard id.
    pub shard: String,
    /// Who holds it (`None`: nobody).
    pub owner: Option<String>,
    /// The checkpoint, as KCL writes it (`TRIM_HORIZON`, a sequence number, `SHARD_END`…).
    pub checkpoint: String,
    /// Its sub-sequence number (inside a KPL aggregate).
    pub checkpoint_sub_sequence: u64,
    /// The fencing counter.
    pub counter: u64,
    /// The batch being delivered, as recorded with `consumer.stable_batches`
    /// (`<first>/<sub> <last>/<sub>`); absent when none is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_batch: Option<String>,
    /// Parent shards.
    pub parents: Vec<String>,
    /// See [`LeaseState`].
    pub state: LeaseState,
    /// Seconds since this process saw the counter change; with `renewal_age_at_least`
    /// set, the counter has not changed since this process first looked.
    pub renewal_age_seconds: Option<f64>,
    /// The age is a lower bound (unchanged since the first look).
    pub renewal_age_at_least: bool,
    /// `MillisBehindLatest` of the shard, in seconds (from `/metrics`, when given).
    pub behind_latest_seconds: Option<f64>,
    /// Records per second processed (from `/metrics`, when given, over the refresh).
    pub records_per_second: Option<f64>,
}

/// When each lease's counter was first seen with its current value.
#[derive(Debug, Default)]
pub struct Observer {
    first_look: Option<Instant>,
    seen: HashMap<String, (u64, Instant)>,
}

impl Observer {
    /// Record a reading of the table at `now`.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        self.first_look.get_or_insert(now);
        for lease in leases {
            let entry = self
                .seen
                .entry(lease.key.clone())
                .or_insert((lease.counter, now));
            if entry.0 != lease.counter {
                *entry = (lease.counter, now);
            }
        }
    }

    /// (age, lower bound) of a lease's counter at `now`.
    fn age(&self, key: &str, now: Instant) -> Option<(Duration, bool)> {
        let (_, since) = self.seen.get(key)?;
        let at_least = Some(*since) == self.first_look;
        Some((now.duration_since(*since), at_least))
    }
}

/// The rows for a reading, judged by `observer` at `now`.
pub fn rows(leases: &[Lease], observer: &Observer, now: Instant) -> Vec<LeaseRow> {
    let ended: HashMap<&str, bool> = leases
        .iter()
        .map(|l| (l.key.as_str(), l.is_finished()))
        .collect();
    let mut rows: Vec<LeaseRow> = leases
        .iter()
        .map(|lease| {
            let state = if lease.is_finished() {
                LeaseState::Ended
            } else if lease
                .parent_shard_ids
                .iter()
                // A parent without a lease any more expired and was cleaned up: done.
                .any(|p| ended.get(p.as_str()) == Some(&false))
            {
                LeaseState::WaitingForParents
            } else {
                LeaseState::Open
            };
            let (checkpoint, sub) = match &lease.checkpoint {
                Checkpoint::Sequence {
                    sequence,
                    sub_sequence,
                } => (sequence.clone(), *sub_sequence),
                other => (other.as_attribute().to_string(), 0),
            };
            let age = observer.age(&lease.key, now);
            LeaseRow {
                shard: lease.key.clone(),
                owner: lease.owner.clone(),
                checkpoint,
                checkpoint_sub_sequence: sub,
                counter: lease.counter,
                pending_batch: lease.pending_batch.as_ref().map(|e| e.as_attribute()),
                parents: lease.parent_shard_ids.clone(),
                state,
                renewal_age_seconds: age.map(|(a, _)| (a.as_secs_f64() * 10.0).round() / 10.0),
                renewal_age_at_least: age.is_some_and(|(_, at_least)| at_least),
                behind_latest_seconds: None,
                records_per_second: None,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.shard.cmp(&b.shard));
    rows
}

/// The rows as aligned text columns, a header first.
pub fn render_table(rows: &[LeaseRow]) -> String {
    let with_metrics = rows
        .iter()
        .any(|r| r.behind_latest_seconds.is_some() || r.records_per_second.is_some());
    let mut table: Vec<Vec<String>> = vec![
        [
            "SHARD",
            "OWNER",
            "CHECKPOINT",
            "COUNTER",
            "PARENTS",
            "STATE",
            "RENEWED",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    if with_metrics {
        table[0].push("BEHIND".into());
        table[0].push("REC/S".into());
    }
    for r in rows {
        let checkpoint = if r.checkpoint_sub_sequence > 0 {
            format!("{}/{}", r.checkpoint, r.checkpoint_sub_sequence)
        } else {
            r.checkpoint.clone()
        };
        let renewed = match r.renewal_age_seconds {
            Some(a) if r.renewal_age_at_least => format!("≥{a:.1}s ago"),
            Some(a) => format!("{a:.1}s ago"),
            None => "-".into(),
        };
        let mut row = vec![
            r.shard.clone(),
            r.owner.clone().unwrap_or_else(|| "-".into()),
            checkpoint,
            r.counter.to_string(),
            if r.parents.is_empty() {
                "-".into()
            } else {
                r.parents.join(",")
            },
            r.state.to_string(),
            renewed,
        ];
        if with_metrics {
            row.push(
                r.behind_latest_seconds
                    .map_or_else(|| "-".into(), |s| format!("{s:.1}s")),
            );
            row.push(
                r.records_per_second
                    .map_or_else(|| "-".into(), |s| format!("{s:.0}")),
            );
        }
        table.push(row);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Per-shard figures read from a consumer's `/metrics` text.
#[derive(Debug, Default, Clone)]
pub struct ShardFigures {
    /// `shoal_behind_latest_seconds` by shard.
    pub behind: BTreeMap<String, f64>,
    /// `shoal_records_processed_total` by shard.
    pub records: BTreeMap<String, f64>,
}

/// Read the per-shard series out of shoal's own `/metrics` text (only the two sample
/// names this command shows; anything else is skipped).
pub fn shard_figures(text: &str) -> ShardFigures {
    let mut figures = ShardFigures::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let Some(shard) = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("shard=\""))
            .and_then(|v| v.split('"').next())
        else {
            continue;
        };
        let into = match name {
            "shoal_behind_latest_seconds" => &mut figures.behind,
            "shoal_records_processed_total" => &mut figures.records,
            _ => continue,
        };
        into.insert(shard.to_string(), value);
    }
    figures
}

/// Fill each row's lag, and its rate from the records counted `elapsed` apart.
pub fn add_figures(
    rows: &mut [LeaseRow],
    now: &ShardFigures,
    before: Option<&ShardFigures>,
    elapsed: Duration,
) {
    for row in rows {
        row.behind_latest_seconds = now.behind.get(&row.shard).copied();
        row.records_per_second = before.and_then(|b| {
            let (a, z) = (b.records.get(&row.shard)?, now.records.get(&row.shard)?);
            (elapsed > Duration::ZERO).then(|| (z - a).max(0.0) / elapsed.as_secs_f64())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(key: &str, owner: Option<&str>, counter: u64, checkpoint: Checkpoint) -> Lease {
        Lease {
            owner: owner.map(str::to_string),
            counter,
            ..Lease::new(key, checkpoint)
        }
    }

    #[test]
    fn states_follow_lineage_and_ages_follow_the_counter() {
        let t0 = Instant::now();
        let mut parent = lease("s0", None, 9, Checkpoint::ShardEnd);
        let mut child = lease("s1", Some("w1"), 4, Checkpoint::TrimHorizon);
        child.parent_shard_ids = vec!["s0".into()];
        let mut grandchild = lease("s2", None, 1, Checkpoint::TrimHorizon);
        grandchild.parent_shard_ids = vec!["s1".into()];
        let mut observer = Observer::default();
        observer.observe(&[parent.clone(), child.clone(), grandchild.clone()], t0);
        child.counter = 5; // renewed between the two looks
        parent.counter = 9;
        let t1 = t0 + Duration::from_secs(3);
        observer.observe(&[parent.clone(), child.clone(), grandchild.clone()], t1);
        let rows = rows(&[grandchild, child, parent], &observer, t1);
        let by: HashMap<&str, &LeaseRow> = rows.iter().map(|r| (r.shard.as_str(), r)).collect();
        assert_eq!(by["s0"].state, LeaseState::Ended);
        assert_eq!(by["s1"].state, LeaseState::Open);
        assert_eq!(by["s2"].state, LeaseState::WaitingForParents);
        assert_eq!(by["s1"].renewal_age_seconds, Some(0.0));
        assert!(!by["s1"].renewal_age_at_least);
        assert_eq!(by["s0"].renewal_age_seconds, Some(3.0));
        assert!(by["s0"].renewal_age_at_least);
        assert_eq!(rows[0].shard, "s0", "sorted by shard");

        let text = render_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SHARD  OWNER  CHECKPOINT"), "{text}");
        assert!(
            lines[1].contains("SHARD_END") && lines[1].contains("≥3.0s ago"),
            "{text}"
        );
        assert!(
            lines[2].contains("w1") && lines[2].contains("0.0s ago"),
            "{text}"
        );
        assert!(lines[3].contains("waiting for parents"), "{text}");
    }

    #[test]
    fn shard_figures_come_from_the_metrics_text_and_rates_from_two_readings() {
        let text = "# TYPE shoal_behind_latest_seconds gauge\n\
            shoal_behind_latest_seconds{stream=\"s\",shard=\"shardId-1\"} 2.5\n\
            shoal_records_processed_total{stream=\"s\",shard=\"shardId-1\"} 1000\n\
            shoal_leases_held{stream=\"s\"} 1\n# EOF\n";
        let before = shard_figures(text);
        assert_eq!(before.behind["shardId-1"], 2.5);
        let after = shard_figures(&text.replace("} 1000", "} 1600"));
        let mut rows = vec![LeaseRow {
            shard: "shardId-1".into(),
            owner: None,
            checkpoint: "LATEST".into(),
            checkpoint_sub_sequence: 0,
            counter: 1,
            pending_batch: None,
            parents: vec![],
            state: LeaseState::Open,
            renewal_age_seconds: None,
            renewal_age_at_least: false,
            behind_latest_seconds: None,
            records_per_second: None,
        }];
        add_figures(&mut rows, &after, Some(&before), Duration::from_secs(2));
        assert_eq!(rows[0].records_per_second, Some(300.0));
        assert_eq!(rows[0].behind_latest_seconds, Some(2.5));
        assert!(
            render_table(&rows)
                .lines()
                .next()
                .is_some_and(|h| h.ends_with("BEHIND  REC/S"))
        );
    }
}

/// `shoal leases` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LeasesOptions {
    /// The consumer's config file (its `[leases]` and `[consumer]` sections are read).
    #[arg(long, short)]
    pub config: std::path::PathBuf,
    /// Print JSON (an array of rows) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every `--interval` until interrupted, like `top`.
    #[arg(long)]
    pub watch: bool,
    /// Refresh period with `--watch`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// A consumer's metrics address (`host:port`): adds each shard's lag and rate.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// Run `shoal leases`, writing to `out`.
pub async fn run(options: &LeasesOptions, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    use anyhow::Context;
    let settings = crate::config::check_file(&options.config)?;
    let consumer = settings
        .consumer
        .context("the config has no [consumer], [source] and [leases] sections")?;
    if let crate::config::LeaseStoreSettings::Sqlite { path } = &consumer.leases
        && !path.exists()
    {
        anyhow::bail!(
            "no lease table yet: {} does not exist (the first `shoal run` creates it)",
            path.display()
        );
    }
    let store = crate::consumer::build_store(&consumer.leases, &consumer.application).await?;
    // One and a half renewal periods: a live lease's counter moves at least once.
    let look = consumer.lease_duration / 2;
    let mut observer = Observer::default();
    let read = |leases: Result<Vec<Lease>, crate::lease::LeaseError>| {
        leases.context("cannot read the lease table")
    };
    observer.observe(&read(store.list().await)?, Instant::now());
    let mut before: Option<(ShardFigures, Instant)> = None;
    loop {
        let pause = if options.watch {
            options.interval
        } else {
            look
        };
        tokio::time::sleep(pause).await;
        let leases = read(store.list().await)?;
        let now = Instant::now();
        observer.observe(&leases, now);
        let mut rows = rows(&leases, &observer, now);
        if let Some(address) = &options.metrics {
            let text = scrape(address).await?;
            let figures = shard_figures(&text);
            let earlier = before.as_ref().map(|(f, at)| (f, now.duration_since(*at)));
            add_figures(
                &mut rows,
                &figures,
                earlier.map(|(f, _)| f),
                earlier.map_or(Duration::ZERO, |(_, d)| d),
            );
            before = Some((figures, now));
        }
        if options.watch && !options.json {
            // Clear the screen and home the cursor, as `top` does.
            write!(out, "\x1b[2J\x1b[H")?;
            writeln!(
                out,
                "shoal leases: {} ({} leases), every {}",
                consumer.application,
                rows.len(),
                humantime::format_duration(options.interval)
            )?;
        }
        if options.json {
            writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        } else {
            write!(out, "{}", render_table(&rows))?;
        }
        out.flush()?;
        if !options.watch {
            return Ok(());
        }
    }
}

/// `GET /metrics` from a consumer's metrics address.
async fn scrape(address: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .with_context(|| format!("metrics at {address}: no answer within 5s"))?
    .with_context(|| format!("cannot connect to metrics at {address}"))?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .with_context(|| format!("metrics at {address}: no answer within 5s"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("metrics at {address}: not an HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "metrics at {address}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}
