//! CPU time and memory of one consumer's whole process tree, read from /proc: every
//! process in the consumer's process group (each consumer is started as the leader of a
//! group of its own, and its children, the KCL's Python processors, inherit it).

/// One reading of a process group.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU seconds of the live members, each with the CPU of the children
    /// it has already reaped (`cutime` + `cstime`), so a child that exited still counts.
    pub cpu_s: f64,
    /// Unique set size: Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup, summed.
    pub uss: u64,
    /// VmHWM (each process's own resident high-water mark), summed: an upper bound of the
    /// tree's peak, since the members need not peak at the same time and shared pages count
    /// once per process.
    pub hwm: u64,
    /// How many processes were read.
    pub processes: usize,
}

/// USER_HZ: 100 on every Linux architecture this runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The fields of /proc/<pid>/stat after the command name (field 3, `state`, first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(") ")?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The live members of process group `pgid` (zombies excluded).
pub fn members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| {
                f.first().map(String::as_str) != Some("Z")
                    && f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            })
        })
        .collect()
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // utime, stime, cutime, cstime: fields 14-17, indexes 11-14 here.
    let ticks: f64 = (11..=14)
        .map(|i| f.get(i)?.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    Some(ticks / CLOCK_TICKS_PER_SECOND)
}

/// The sum of the `kB` values of `keys` in a /proc file, in bytes.
fn kb_fields(path: &str, keys: &[&str]) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut total = 0;
    for line in text.lines() {
        if keys.iter().any(|k| line.starts_with(k)) {
            total += line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024;
        }
    }
    Some(total)
}

/// Read every member of `pgid` now.
pub fn sample(pgid: u32) -> Sample {
    let mut s = Sample::default();
    for pid in members(pgid) {
        s.cpu_s += cpu_seconds(pid).unwrap_or(0.0);
        s.uss += kb_fields(
            &format!("/proc/{pid}/smaps_rollup"),
            &["Private_Clean:", "Private_Dirty:"],
        )
        .unwrap_or(0);
        s.hwm += kb_fields(&format!("/proc/{pid}/status"), &["VmHWM:"]).unwrap_or(0);
        s.processes += 1;
    }
    s
}

/// Send `signal` (a `kill` name such as `KILL`) to every process in group `pgid`.
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status();
}
