//! The local file source, for one machine with no cloud: a directory with one JSON-lines
//! file per shard (`<shard-id>.jsonl`, lines in the archive format; only
//! `partition_key` and `data` or `data_base64` are required). Lines appended while
//! running are picked up. A record's sequence number is its line number (20 digits),
//! stable across restarts as long as files are only appended to. A shard is closed
//! when `<shard-id>.closed` exists (shard end after its last line), and its parents are
//! listed, one per line, in `<shard-id>.parents`.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::archive_format::InputLine;

use super::{Fetched, ShardDescription, ShardSource, SourceError, SourceRecord, StartPosition};

/// A directory of shard files.
#[derive(Debug, Clone)]
pub struct LocalSource {
    dir: PathBuf,
    stream_name: String,
}

/// Where a local iterator points: the next line to read and its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    line: u64,
    offset: u64,
}

impl LocalSource {
    /// A source over `dir`, presenting itself as stream `stream_name`.
    pub fn new(dir: &Path, stream_name: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            stream_name: stream_name.to_string(),
        }
    }

    fn shard_file(&self, shard: &str) -> PathBuf {
        self.dir.join(format!("{shard}.jsonl"))
    }

    fn is_closed(&self, shard: &str) -> bool {
        self.dir.join(format!("{shard}.closed")).exists()
    }

    /// Sequence number of line `n` (1-based).
    pub fn sequence_of(line: u64) -> String {
        format!("{line:020}")
    }

    fn encode(shard: &str, cursor: Cursor) -> String {
        format!("{shard}|{}|{}", cursor.line, cursor.offset)
    }

    fn decode(iterator: &str) -> Result<(String, Cursor), SourceError> {
        let mut parts = iterator.rsplitn(3, '|');
        let offset = parts.next().and_then(|p| p.parse().ok());
        let line = parts.next().and_then(|p| p.parse().ok());
        let shard = parts.next();
        match (shard, line, offset) {
            (Some(shard), Some(line), Some(offset)) => {
                Ok((shard.to_string(), Cursor { line, offset }))
            }
            _ => Err(SourceError::Fatal(format!(
                "malformed local shard iterator {iterator:?}"
            ))),
        }
    }

    /// Scan complete lines from the start to find the cursor for `position`.
    fn seek(&self, shard: &str, position: &StartPosition) -> Result<Cursor, SourceError> {
        let path = self.shard_file(shard);
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                SourceError::NotFound(format!("no shard file {}", path.display()))
            }
            _ => SourceError::Transient(format!("cannot open {}: {e}", path.display())),
        })?;
        let target_line = match position {
            StartPosition::TrimHorizon => return Ok(Cursor { line: 1, offset: 0 }),
            StartPosition::AtSequence(s) => Some(parse_sequence(s)?),
            StartPosition::AfterSequence(s) => Some(parse_sequence(s)? + 1),
            StartPosition::Latest | StartPosition::AtTimestamp(_) => None,
        };
        let mut reader = std::io::BufReader::new(file);
        let mut cursor = Cursor { line: 1, offset: 0 };
        let mut buf = Vec::new();
        loop {
            if target_line == Some(cursor.line) {
                return Ok(cursor);
            }
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| SourceError::Transient(e.to_string()))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                return Ok(cursor); // end of complete lines
            }
            if let StartPosition::AtTimestamp(ts) = position {
                let arrival = InputLine::parse(String::from_utf8_lossy(&buf).trim())
                    .ok()
                    .and_then(|l| l.approximate_arrival_ms);
                if arrival.is_some_and(|a| a >= *ts) {
                    return Ok(cursor);
                }
            }
            cursor = Cursor {
                line: cursor.line + 1,
                offset: cursor.offset + n as u64,
            };
        }
    }

    fn read(&self, shard: &str, cursor: Cursor, limit: usize) -> Result<Fetched, SourceError> {
        let path = self.shard_file(shard);
        let mut file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                SourceError::NotFound(format!("no shard file {}", path.display()))
            }
            _ => SourceError::Transient(format!("cannot open {}: {e}", path.display())),
        })?;
        let modified_ms = file
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        file.seek(SeekFrom::Start(cursor.offset))
            .map_err(|e| SourceError::Transient(e.to_string()))?;
        let mut reader = std::io::BufReader::new(file);
        let mut records = Vec::new();
        let mut next = cursor;
        let mut buf = Vec::new();
        let mut more = false;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| SourceError::Transient(e.to_string()))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break; // a partial last line is left for a later fetch
            }
            if records.len() >= limit {
                more = true;
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n - 1]);
            let sequence = Self::sequence_of(next.line);
            next = Cursor {
                line: next.line + 1,
                offset: next.offset + n as u64,
            };
            if text.trim().is_empty() {
                continue;
            }
            let record = InputLine::parse(text.trim())
                .and_then(|l| l.into_record(sequence.clone(), modified_ms))
                .map(|r| SourceRecord {
                    sequence_number: sequence.clone(),
                    partition_key: r.partition_key,
                    approximate_arrival_ms: r.approximate_arrival_ms,
                    explicit_hash_key: r.explicit_hash_key,
                    data: r.data,
                })
                .unwrap_or_else(|e| {
                    // A malformed line is still a record: deliver its raw bytes so the
                    // processor decides, and say so once.
                    tracing::warn!(shard, sequence = %sequence, "local shard line is not a record ({e}); delivering it raw");
                    SourceRecord {
                        sequence_number: sequence.clone(),
                        partition_key: String::new(),
                        approximate_arrival_ms: modified_ms,
                        explicit_hash_key: None,
                        data: buf[..n - 1].to_vec(),
                    }
                });
            records.push(record);
        }
        let at_end = !more;
        let next_iterator = if at_end && self.is_closed(shard) {
            None
        } else {
            Some(Self::encode(shard, next))
        };
        let millis_behind_latest = if more {
            let last = records
                .last()
                .map_or(modified_ms, |r| r.approximate_arrival_ms);
            u64::try_from((crate::delivery::now_ms() - last).max(1)).unwrap_or(1)
        } else {
            0
        };
        Ok(Fetched {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards: Vec::new(),
        })
    }
}

fn parse_sequence(s: &str) -> Result<u64, SourceError> {
    s.parse()
        .map_err(|_| SourceError::Fatal(format!("{s:?} is not a local sequence number")))
}

#[async_trait::async_trait]
impl ShardSource for LocalSource {
    fn stream_name(&self) -> &str {
        &self.stream_name
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let entries = std::fs::read_dir(&dir).map_err(|e| {
                SourceError::NotFound(format!(
                    "cannot read local stream directory {}: {e}",
                    dir.display()
                ))
            })?;
            let mut shards = Vec::new();
            for entry in entries {
                let path = entry
                    .map_err(|e| SourceError::Transient(e.to_string()))?
                    .path();
                if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                    continue;
                }
                let Some(shard_id) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                let parents: Vec<String> =
                    std::fs::read_to_string(dir.join(format!("{shard_id}.parents")))
                        .map(|t| {
                            t.lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                shards.push(ShardDescription {
                    shard_id,
                    parent_shard_id: parents.first().cloned(),
                    adjacent_parent_shard_id: parents.get(1).cloned(),
                    starting_hash_key: None,
                    ending_hash_key: None,
                });
            }
            shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
            Ok(shards)
        })
        .await
        .map_err(|e| SourceError::Fatal(format!("list task failed: {e}")))?
    }

    async fn iterator(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, SourceError> {
        let this = self.clone();
        let (shard, position) = (shard_id.to_string(), position.clone());
        tokio::task::spawn_blocking(move || {
            this.seek(&shard, &position)
                .map(|c| Self::encode(&shard, c))
        })
        .await
        .map_err(|e| SourceError::Fatal(format!("seek task failed: {e}")))?
    }

    async fn fetch(&self, iterator: &str, limit: usize) -> Result<Fetched, SourceError> {
        let (shard, cursor) = Self::decode(iterator)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read(&shard, cursor, limit.max(1)))
            .await
            .map_err(|e| SourceError::Fatal(format!("fetch task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(i: u64) -> String {
        format!("{{\"partition_key\":\"k{i}\",\"data\":\"record {i}\"}}\n")
    }

    #[tokio::test]
    async fn reads_in_order_resumes_after_a_sequence_and_sees_appended_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shardId-000000000000.jsonl");
        let mut f = std::fs::File::create(&path).expect("create");
        for i in 1..=5 {
            f.write_all(line(i).as_bytes()).expect("write");
        }
        f.write_all(b"{\"partition_key\":\"partial")
            .expect("partial line");
        let source = LocalSource::new(dir.path(), "local");
        assert_eq!(source.list_shards().await.expect("list").len(), 1);

        let it = source
            .iterator("shardId-000000000000", &StartPosition::TrimHorizon)
            .await
            .expect("it");
        let first = source.fetch(&it, 3).await.expect("fetch");
        assert_eq!(
            first
                .records
                .iter()
                .map(|r| r.sequence_number.as_str())
                .collect::<Vec<_>>(),
            [
                "00000000000000000001",
                "00000000000000000002",
                "00000000000000000003"
            ]
        );
        assert!(first.millis_behind_latest > 0, "more lines remain");
        let second = source
            .fetch(first.next_iterator.as_deref().expect("open"), 10)
            .await
            .expect("fetch");
        assert_eq!(second.records.len(), 2, "the partial line is not delivered");
        assert_eq!(second.millis_behind_latest, 0);
        assert_eq!(second.records[1].data, b"record 5");

        f.write_all(b"\",\"data\":\"six\"}\n")
            .expect("finish the line");
        let third = source
            .fetch(second.next_iterator.as_deref().expect("open"), 10)
            .await
            .expect("fetch");
        assert_eq!(third.records.len(), 1);
        assert_eq!(
            (
                third.records[0].sequence_number.as_str(),
                third.records[0].data.as_slice()
            ),
            ("00000000000000000006", &b"six"[..])
        );

        let after = source
            .iterator(
                "shardId-000000000000",
                &StartPosition::AfterSequence("00000000000000000004".into()),
            )
            .await
            .expect("it");
        let resumed = source.fetch(&after, 10).await.expect("fetch");
        assert_eq!(
            resumed
                .records
                .iter()
                .map(|r| r.data.clone())
                .collect::<Vec<_>>(),
            [b"record 5".to_vec(), b"six".to_vec()]
        );
        let latest = source
            .iterator("shardId-000000000000", &StartPosition::Latest)
            .await
            .expect("it");
        assert!(
            source
                .fetch(&latest, 10)
                .await
                .expect("fetch")
                .records
                .is_empty()
        );
    }

    #[tokio::test]
    async fn closed_shards_end_and_report_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("shardId-000000000001.jsonl"), line(1)).expect("write");
        std::fs::write(dir.path().join("shardId-000000000002.jsonl"), "").expect("write");
        std::fs::write(
            dir.path().join("shardId-000000000002.parents"),
            "shardId-000000000001\n",
        )
        .expect("write");
        let source = LocalSource::new(dir.path(), "local");
        let it = source
            .iterator("shardId-000000000001", &StartPosition::TrimHorizon)
            .await
            .expect("it");
        assert!(
            source
                .fetch(&it, 10)
                .await
                .expect("fetch")
                .next_iterator
                .is_some(),
            "open until closed"
        );
        std::fs::write(dir.path().join("shardId-000000000001.closed"), "").expect("close");
        let fetched = source.fetch(&it, 10).await.expect("fetch");
        assert_eq!((fetched.records.len(), fetched.next_iterator), (1, None));
        let shards = source.list_shards().await.expect("list");
        assert_eq!(
            shards[1].parents(),
            vec!["shardId-000000000001".to_string()]
        );
    }
}
