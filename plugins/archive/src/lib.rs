//! `archive`: appends every record as one JSON line
//! `{"shard_id","sequence_number","sub_sequence_number","partition_key","approximate_arrival_ms","data_base64"}`
//! to `<dir>/<shard-id>.jsonl` and checkpoints the batch.
//!
//! Settings: `dir` (the guest path of a read-write directory the host grants; default
//! `/archive`), `sync` (`true` to fsync after every batch; default `false`),
//! `trap_per_mille` (chaos tests: trap on that many batches in 1,000, at random, before
//! writing anything, so a retry on a fresh instance writes the batch once; default 0),
//! `worker` (lease tests: when set, every written batch also appends one line
//! `{"worker","shard","start_ms","end_ms","first","last","records"}` to
//! `<dir>/batches-<worker>.jsonl`, so a checker can prove no two workers processed one
//! shard at overlapping times), `sleep_ms` (lease tests: sleep this long at the start
//! of every batch, a slow but legal processor; default 0), and, for directive tests,
//! `at_record`, `none_record`, `rewind_record` (a record's data, as text): a batch
//! holding that record returns `at(<it>)`, `none`, or — once per instance —
//! `rewind(<it>)` instead of `batch-end`. `trap_at_shard_end` (`true` for shard-end
//! tests: `shutdown(shard-end)` traps, so the host must not checkpoint `SHARD_END`).
//! `record_shutdowns` (`true`: every `shutdown` call appends `{"shard","reason"}` to
//! `<dir>/shutdowns.log` before anything else, so tests see which calls the guest got).
//! `shutdown_sleep_ms` (a processor that flushes in `shutdown`: sleep this long there,
//! then, with `worker` set, log the call in the batch log like a batch, `"call":
//! "shutdown(<reason>)"`, with `first` and `last` `"-"`, so the overlap checker covers
//! what `shutdown` writes too).
//! The batch is written with one append and flushed before `batch-end` is returned, so
//! everything the host checkpoints is in the file.
//!
//! A write can be torn: the host killed mid-batch (SIGKILL, power loss), a trap on the
//! deadline, or a failed write (disk full) leave part of a line at the end of the file.
//! Those records are not lost (their batch was never checkpointed, so it is delivered
//! again), but appending after the fragment would glue two records into one bad line. So
//! the file's tail is repaired, cut back to its last complete line, whenever the file is
//! opened and after any write that failed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shoal_sdk::{
    Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo, ShutdownReason,
};

struct Archive {
    file: File,
    path: String,
    sync: bool,
    trap_per_mille: u64,
    line: Vec<u8>,
    /// `(worker id, its batch log)` when `worker` is set.
    batch_log: Option<(String, File)>,
    sleep: std::time::Duration,
    at_record: Option<String>,
    none_record: Option<String>,
    rewind_record: Option<String>,
    rewound: bool,
    trap_at_shard_end: bool,
    dir: String,
    record_shutdowns: bool,
    shutdown_sleep: std::time::Duration,
}

/// Wall-clock milliseconds since the epoch (WASI's wall clock: the host's).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random number in 0..1000 (std's hasher keys come from WASI's random source).
fn draw_per_mille() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 1000
}

impl Processor for Archive {
    fn initialize(shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        let dir = settings.get_or("dir", "/archive").trim_end_matches('/');
        let path = format!("{dir}/{}.jsonl", shard.shard_id);
        repair_torn_tail(&path).map_err(|e| {
            ProcessError::Fatal(format!(
                "cannot repair the end of {path} (is `{dir}` granted read-write?): {e}"
            ))
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| {
                ProcessError::Fatal(format!(
                    "cannot open {path} for appending (is `{dir}` granted read-write?): {e}"
                ))
            })?;
        let batch_log = match settings.get("worker") {
            Some(worker) => {
                let log = format!("{dir}/batches-{worker}.jsonl");
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_err(|e| {
                        ProcessError::Fatal(format!("cannot open {log} for appending: {e}"))
                    })?;
                Some((worker.to_string(), file))
            }
            None => None,
        };
        Ok(Archive {
            file,
            path,
            batch_log,
            sleep: std::time::Duration::from_millis(settings.parse_or("sleep_ms", 0)?),
            at_record: settings.get("at_record").map(str::to_string),
            none_record: settings.get("none_record").map(str::to_string),
            rewind_record: settings.get("rewind_record").map(str::to_string),
            rewound: false,
            trap_at_shard_end: settings.parse_or("trap_at_shard_end", false)?,
            dir: dir.to_string(),
            record_shutdowns: settings.parse_or("record_shutdowns", false)?,
            shutdown_sleep: std::time::Duration::from_millis(
                settings.parse_or("shutdown_sleep_ms", 0)?,
            ),
            sync: settings.parse_or("sync", false)?,
            trap_per_mille: settings.parse_or("trap_per_mille", 0)?,
            line: Vec::with_capacity(64 * 1024),
        })
    }

    fn process(
        &mut self,
        shard: &ShardInfo,
        batch: Batch,
    ) -> Result<CheckpointDirective, ProcessError> {
        if self.trap_per_mille > 0 && draw_per_mille() < self.trap_per_mille {
            panic!(
                "chaos: injected trap ({} per mille of batches)",
                self.trap_per_mille
            );
        }
        let start_ms = now_ms();
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        self.line.clear();
        for r in &batch.records {
            let value = serde_json::json!({
                "shard_id": shard.shard_id,
                "sequence_number": r.sequence_number,
                "sub_sequence_number": r.sub_sequence_number,
                "partition_key": r.partition_key,
                "approximate_arrival_ms": r.approximate_arrival_ms,
                "data_base64": BASE64.encode(&r.data),
            });
            serde_json::to_writer(&mut self.line, &value)
                .map_err(|e| ProcessError::Fatal(format!("cannot encode record: {e}")))?;
            self.line.push(b'\n');
        }
        // A failed write is transient from our point of view (disk full, say): the host
        // retries the batch; nothing was checkpointed. Part of it may be in the file:
        // cut that off so the retry starts on a line boundary.
        if let Err(e) = self
            .file
            .write_all(&self.line)
            .and_then(|()| self.file.flush())
        {
            let repaired = match repair_torn_tail(&self.path) {
                Ok(()) => String::new(),
                Err(r) => format!("; the torn tail is cut when the file is next opened ({r})"),
            };
            return Err(ProcessError::Retry(format!(
                "cannot append to {}: {e}{repaired}",
                self.path
            )));
        }
        if self.sync {
            self.file
                .sync_data()
                .map_err(|e| ProcessError::Retry(format!("cannot sync {}: {e}", self.path)))?;
        }
        if let Some((worker, log)) = &mut self.batch_log
            && let (Some(first), Some(last)) = (batch.records.first(), batch.records.last())
        {
            let line = serde_json::json!({
                "worker": worker,
                "shard": shard.shard_id,
                "start_ms": start_ms,
                "end_ms": now_ms(),
                "first": first.sequence_number,
                "last": last.sequence_number,
                "records": batch.records.len(),
            });
            let mut text = line.to_string();
            text.push('\n');
            log.write_all(text.as_bytes())
                .map_err(|e| ProcessError::Retry(format!("cannot append to the batch log: {e}")))?;
        }
        Ok(self.directive(&batch))
    }

    fn shutdown(&mut self, shard: &ShardInfo, reason: ShutdownReason) {
        let reason_name = match reason {
            ShutdownReason::ShardEnd => "shard-end",
            ShutdownReason::LeaseLost => "lease-lost",
            ShutdownReason::Requested => "requested",
        };
        if self.record_shutdowns {
            let line = serde_json::json!({"shard": shard.shard_id, "reason": reason_name});
            let path = format!("{}/shutdowns.log", self.dir);
            if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
                let _ = file.write_all(format!("{line}\n").as_bytes());
            }
        }
        let start_ms = now_ms();
        if !self.shutdown_sleep.is_zero() {
            std::thread::sleep(self.shutdown_sleep);
            if let Some((worker, log)) = &mut self.batch_log {
                let line = serde_json::json!({
                    "worker": worker,
                    "shard": shard.shard_id,
                    "start_ms": start_ms,
                    "end_ms": now_ms(),
                    "call": format!("shutdown({reason_name})"),
                    "first": "-",
                    "last": "-",
                    "records": 0,
                });
                let _ = log.write_all(format!("{line}\n").as_bytes());
            }
        }
        let _ = self.file.flush();
        if self.trap_at_shard_end && matches!(reason, ShutdownReason::ShardEnd) {
            panic!("archive: trap_at_shard_end is set ({})", shard.shard_id);
        }
    }
}

impl Archive {
    /// `batch-end`, unless a record named by a directive setting is in the batch.
    fn directive(&mut self, batch: &Batch) -> CheckpointDirective {
        let find = |wanted: &Option<String>| {
            let wanted = wanted.as_deref()?;
            batch.records.iter().find(|r| r.data == wanted.as_bytes())
        };
        if !self.rewound
            && let Some(r) = find(&self.rewind_record)
        {
            self.rewound = true;
            return CheckpointDirective::Rewind(r.position());
        }
        if let Some(r) = find(&self.at_record) {
            return CheckpointDirective::At(r.position());
        }
        if find(&self.none_record).is_some() {
            return CheckpointDirective::None;
        }
        CheckpointDirective::BatchEnd
    }
}

/// Cuts `path` back to its last complete line (ending in `\n`) if a write was torn, and
/// logs what it cut. A missing or empty file, or one that ends with a newline, is left as
/// it is.
fn repair_torn_tail(path: &str) -> std::io::Result<()> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let keep = complete_prefix_len(&mut file, len)?;
    if keep == len {
        return Ok(());
    }
    file.set_len(keep)?;
    file.sync_data()?;
    let cut = len - keep;
    shoal_sdk::warn!(
        "{path}: cut a torn last line ({cut} bytes after offset {keep}); its records are delivered again"
    );
    Ok(())
}

/// The length of the file's prefix that ends with its last `\n` (0 when it has none),
/// reading backwards from `len` in chunks: a line can be megabytes long.
fn complete_prefix_len(file: &mut File, len: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

shoal_sdk::export_processor!(Archive);
