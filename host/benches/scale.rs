//! Scale benchmark (one command: `cargo bench -p shoal --bench scale`): one `shoal run`
//! process owning 1,000 shards of the local file source, SQLite leases and the trivial
//! Rust `checksum` processor. Reports the time until every shard has a running worker,
//! the time to drain a backlog, CPU seconds while busy and while idle, and peak and
//! steady RSS, sampled from /proc. Target: RSS < 1 GiB.
//!
//! `SHOAL_SCALE_SHARDS` (default 1000) and `SHOAL_SCALE_RECORDS` per shard (default 200).

#[allow(dead_code)]
#[path = "support/proc_stats.rs"]
mod proc_stats;

#[path = "support/guest_plugins.rs"]
mod guest_plugins;
use guest_plugins::guest_plugin;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (RSS bytes, peak RSS bytes, CPU seconds) of a process.
fn sample(pid: u32) -> Option<(u64, u64, f64)> {
    Some((
        proc_stats::rss_bytes(pid)?,
        proc_stats::peak_rss_bytes(pid)?,
        proc_stats::cpu_seconds(pid)?,
    ))
}

fn count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.matches(needle).count())
        .unwrap_or(0)
}

/// Records processed so far, from the last `progress` line.
fn progress_records(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| l.contains(" progress "))
                .and_then(|l| l.split("records=").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let shards = env_or("SHOAL_SCALE_SHARDS", 1000);
    let per_shard = env_or("SHOAL_SCALE_RECORDS", 200);
    let checksum = guest_plugin("checksum");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("stream")).expect("mkdir");
    let payload = "x".repeat(180);
    for s in 0..shards {
        let mut f = std::fs::File::create(dir.path().join(format!("stream/shardId-{s:012}.jsonl")))
            .expect("shard");
        for n in 0..per_shard {
            writeln!(
                f,
                "{{\"partition_key\":\"k{n}\",\"data\":\"{s}-{n}-{payload}\"}}"
            )
            .expect("write");
        }
    }
    let config = dir.path().join("scale.toml");
    std::fs::write(
        &config,
        format!(
            r#"[engine]
max_instances = {slots}

[consumer]
application = "scale"
worker_id = "scale"
max_records = 1000
idle_time_between_reads = "1s"

[source]
kind = "local"
directory = "stream"

[leases]
kind = "sqlite"
path = "leases.db"

[plugin]
path = "{plugin}"

[plugin.limits]
memory = "16MiB"
"#,
            slots = shards + 64,
            plugin = checksum.display()
        ),
    )
    .expect("config");
    let log = dir.path().join("shoal.log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn shoal");
    let pid = child.id();
    let total = (shards * per_shard) as u64;
    let (mut all_started, mut drained) = (None, None);
    let mut busy_cpu = 0.0;
    let mut rss_at_drain = 0;
    let deadline = started + Duration::from_secs(600);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let Some((rss, _, cpu)) = sample(pid) else {
            panic!(
                "shoal exited:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        };
        if all_started.is_none() && count(&log, "shard worker starting") >= shards {
            all_started = Some(started.elapsed());
        }
        if drained.is_none() && progress_records(&log) >= total {
            drained = Some(started.elapsed());
            busy_cpu = cpu;
            rss_at_drain = rss;
            break;
        }
    }
    let drained = drained.expect("backlog drained within 10 minutes");
    // Idle: every shard caught up, polling once a second.
    let (_, _, cpu_before) = sample(pid).expect("sample");
    let idle_window = Duration::from_secs(20);
    std::thread::sleep(idle_window);
    let (rss_idle, peak, cpu_after) = sample(pid).expect("sample");
    let idle_cpu = (cpu_after - cpu_before) / idle_window.as_secs_f64();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stop = Instant::now();
    let exit = child.wait().expect("wait");
    let stopped_in = stop.elapsed();
    let released = count(&log, "checkpointed and released the lease");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "## Scale: one process, {shards} shards (local source, SQLite leases, `checksum` guest)\n"
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| time until every shard has a running worker | {:.2} s |",
        all_started.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    println!(
        "| time to drain the backlog ({total} records of ~200 B) | {:.2} s |",
        drained.as_secs_f64()
    );
    println!(
        "| CPU while starting + draining | {busy_cpu:.1} CPU-s ({:.2} CPU-s per 100k records, start included) |",
        busy_cpu / total as f64 * 1e5
    );
    println!(
        "| CPU when idle (every shard polling once a second) | {:.1} % of one core |",
        idle_cpu * 100.0
    );
    println!(
        "| RSS after draining / idle / peak | {:.0} / {:.0} / {:.0} MiB |",
        mib(rss_at_drain),
        mib(rss_idle),
        mib(peak)
    );
    println!(
        "| graceful shutdown (SIGTERM → exit, {released} leases checkpointed and released) | {:.2} s, {exit} |",
        stopped_in.as_secs_f64()
    );
    println!();
    println!(
        "Target RSS < 1 GiB: {}",
        if peak < 1 << 30 { "met" } else { "NOT met" }
    );
}
