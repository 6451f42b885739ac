//! `archive`: appends every record as one JSON line
//! `{"shard_id","sequence_number","sub_sequence_number","partition_key","approximate_arrival_ms","data_base64"}`
//! to `<dir>/<shard-id>.jsonl` and checkpoints the batch.
//!
//! Settings: `dir` (the guest path of a read-write directory the host grants; default
//! `/archive`), `sync` (`true` to fsync after every batch; default `false`),
//! `trap_per_mille` (chaos tests: trap on that many batches in 1,000, at random, before
//! writing anything, so a retry on a fresh instance writes the batch once; default 0).
//! The batch is written with one append and flushed before `batch-end` is returned, so
//! everything the host checkpoints is in the file.

use std::fs::{File, OpenOptions};
use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shoal_sdk::{Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo, ShutdownReason};

struct Archive {
    file: File,
    path: String,
    sync: bool,
    trap_per_mille: u64,
    line: Vec<u8>,
}

/// A random number in 0..1000 (std's hasher keys come from WASI's random source).
fn draw_per_mille() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish() % 1000
}

impl Processor for Archive {
    fn initialize(shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        let dir = settings.get_or("dir", "/archive").trim_end_matches('/');
        let path = format!("{dir}/{}.jsonl", shard.shard_id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ProcessError::Fatal(format!("cannot open {path} for appending (is `{dir}` granted read-write?): {e}")))?;
        Ok(Archive {
            file,
            path,
            sync: settings.parse_or("sync", false)?,
            trap_per_mille: settings.parse_or("trap_per_mille", 0)?,
            line: Vec::with_capacity(64 * 1024),
        })
    }

    fn process(&mut self, shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        if self.trap_per_mille > 0 && draw_per_mille() < self.trap_per_mille {
            panic!("chaos: injected trap ({} per mille of batches)", self.trap_per_mille);
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
            serde_json::to_writer(&mut self.line, &value).map_err(|e| ProcessError::Fatal(format!("cannot encode record: {e}")))?;
            self.line.push(b'\n');
        }
        // A failed write is transient from our point of view (disk full, say): the host
        // retries the batch; nothing was checkpointed.
        self.file.write_all(&self.line).map_err(|e| ProcessError::Retry(format!("cannot append to {}: {e}", self.path)))?;
        self.file.flush().map_err(|e| ProcessError::Retry(format!("cannot flush {}: {e}", self.path)))?;
        if self.sync {
            self.file.sync_data().map_err(|e| ProcessError::Retry(format!("cannot sync {}: {e}", self.path)))?;
        }
        Ok(CheckpointDirective::BatchEnd)
    }

    fn shutdown(&mut self, _shard: &ShardInfo, _reason: ShutdownReason) {
        let _ = self.file.flush();
    }
}

shoal_sdk::export_processor!(Archive);
