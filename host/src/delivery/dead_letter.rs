//! Writes poisoned batches to `<dir>/<shard-id>.jsonl`: each record in the archive format
//! plus a `dead_letter` object with the reason, so the file replays as is.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::archive_format::ArchiveLine;
use crate::plugin::bindings::Batch;

/// Appends dead-lettered batches to one file per shard, synced before returning, so a
/// batch is on disk before the shard moves past it.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    dir: PathBuf,
}

/// Why a batch was dead-lettered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterReason<'a> {
    /// Classified failure of the last attempt, e.g. `trap panic` or `guest error fatal`.
    pub kind: &'a str,
    /// Its message.
    pub message: &'a str,
    /// Attempts made.
    pub attempts: u32,
    /// Plugin generation of the last attempt.
    pub generation: u64,
    /// Plugin content digest of the last attempt.
    pub plugin_digest: &'a str,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

impl DeadLetterWriter {
    /// A writer into `dir` (which must exist).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Append every record of `batch`; returns the file written.
    pub fn write(
        &self,
        shard_id: &str,
        batch: &Batch,
        reason: &DeadLetterReason<'_>,
    ) -> anyhow::Result<PathBuf> {
        let file_name = format!("{}.jsonl", sanitize(shard_id));
        let path = self.dir.join(file_name);
        let reason =
            serde_json::to_value(reason).context("cannot encode the dead-letter reason")?;
        let mut out = Vec::with_capacity(batch.records.len() * 256);
        for record in &batch.records {
            let mut line = ArchiveLine::new(shard_id, record);
            line.dead_letter = Some(&reason);
            serde_json::to_writer(&mut out, &line).context("cannot encode a dead-letter line")?;
            out.push(b'\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open dead-letter file {}", path.display()))?;
        file.write_all(&out)
            .with_context(|| format!("cannot write dead-letter file {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("cannot sync dead-letter file {}", path.display()))?;
        Ok(path)
    }
}

/// Shard ids are `shardId-000000000001`, but never let one name a path outside `dir`.
fn sanitize(shard_id: &str) -> String {
    shard_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::KinesisRecord;

    #[test]
    fn batches_append_as_replayable_lines_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = DeadLetterWriter::new(dir.path());
        let record = |n: u8| KinesisRecord {
            partition_key: "k".into(),
            sequence_number: format!("{n}"),
            sub_sequence_number: 0,
            approximate_arrival_ms: 5,
            explicit_hash_key: None,
            data: vec![n],
        };
        let batch = Batch {
            records: vec![record(1), record(2)],
            millis_behind_latest: 0,
        };
        let reason = DeadLetterReason {
            kind: "trap panic",
            message: "boom",
            attempts: 3,
            generation: 2,
            plugin_digest: "abc",
            at_ms: 9,
        };
        let path = writer
            .write("../shardId-1", &batch, &reason)
            .expect("written");
        assert_eq!(path, dir.path().join("___shardId-1.jsonl"));
        writer
            .write("../shardId-1", &batch, &reason)
            .expect("appended");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 4);
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("line")).expect("json");
        assert_eq!(first["data_base64"], "AQ==");
        assert_eq!(first["dead_letter"]["kind"], "trap panic");
        assert_eq!(first["dead_letter"]["attempts"], 3);
        let replayable =
            crate::archive_format::InputLine::parse(text.lines().nth(1).expect("line"))
                .expect("replayable");
        assert_eq!(replayable.sequence_number.as_deref(), Some("2"));
    }
}
