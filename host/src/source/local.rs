//! The local file source, for one machine with no cloud: a directory with one JSON-lines
//! file per shard (`<shard-id>.jsonl`, lines in the archive format; only
//! `partition_key` and `data` or `data_base64` are required). Lines appended while
//! running are picked up. A record's sequence number is its line number (20 digits),
//! stable across restarts as long as files are only appended to. A shard is closed
//! when `<shard-id>.closed` exists (shard end after its last line), and its parents are
//! listed, one per line, in `<shard-id>.parents`. The `.closed` marker may hold the time
//! the shard closed (ms since the epoch, or RFC 3339); an empty one closed at its
//! modification time. A child shard was created when its parents closed: that is how
//! the source tells which shards were open at a time (for an AT_TIMESTAMP start).

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom};
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

/// Every `<shard-id>.jsonl` in `dir`, with its parents and, if closed, its last line's
/// sequence number.
fn list_dir(dir: &Path) -> Result<Vec<ShardDescription>, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
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
        let Some(shard_id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        shards.push(describe(dir, shard_id)?);
    }
    shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    Ok(shards)
}

/// One shard from its files.
fn describe(dir: &Path, shard_id: &str) -> Result<ShardDescription, SourceError> {
    let parents: Vec<String> = std::fs::read_to_string(dir.join(format!("{shard_id}.parents")))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let ending_sequence_number = if dir.join(format!("{shard_id}.closed")).exists() {
        let lines = complete_lines(&dir.join(format!("{shard_id}.jsonl")))?;
        Some(LocalSource::sequence_of(lines))
    } else {
        None
    };
    Ok(ShardDescription {
        shard_id: shard_id.to_string(),
        parent_shard_id: parents.first().cloned(),
        adjacent_parent_shard_id: parents.get(1).cloned(),
        starting_hash_key: None,
        ending_hash_key: None,
        ending_sequence_number,
    })
}

/// How many complete (newline-terminated) lines a shard file has: the last one's number.
fn complete_lines(path: &Path) -> Result<u64, SourceError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| SourceError::Transient(format!("cannot open {}: {e}", path.display())))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| SourceError::Transient(e.to_string()))?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// When a closed shard closed (ms since the epoch): the time its `.closed` marker holds,
/// else the marker's modification time; `None` while the shard is open.
fn closed_at(dir: &Path, shard_id: &str) -> Option<i64> {
    let marker = dir.join(format!("{shard_id}.closed"));
    let metadata = std::fs::metadata(&marker).ok()?;
    let written = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| parse_close_time(&t));
    written.or_else(|| {
        let modified = metadata.modified().ok()?;
        let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(since.as_millis()).ok()
    })
}

/// A `.closed` marker's time: ms since the epoch or RFC 3339; `None` if empty or neither.
fn parse_close_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// The shards open at `at_ms`: created at or before it (a root always was; a child was
/// created when its listed parents closed) and closed at or after it, or still open. A
/// closed shard whose close time cannot be read counts as closing after any time: that
/// may start it at the timestamp needlessly, but never marks unread records done.
fn open_at(dir: &Path, at_ms: i64) -> Result<Vec<String>, SourceError> {
    let shards = list_dir(dir)?;
    let closed: HashMap<&str, Option<i64>> = shards
        .iter()
        .map(|s| (s.shard_id.as_str(), closed_at(dir, &s.shard_id)))
        .collect();
    let open = shards.iter().filter(|s| {
        // A listed parent still open means the child is not there yet.
        let created_by = s
            .parents()
            .iter()
            .filter_map(|p| closed.get(p.as_str()))
            .all(|c| c.is_some_and(|c| c <= at_ms));
        let still_open = closed
            .get(s.shard_id.as_str())
            .copied()
            .flatten()
            .is_none_or(|c| c >= at_ms);
        created_by && still_open
    });
    Ok(open.map(|s| s.shard_id.clone()).collect())
}

#[async_trait::async_trait]
impl ShardSource for LocalSource {
    fn stream_name(&self) -> &str {
        &self.stream_name
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || list_dir(&dir))
            .await
            .map_err(|e| SourceError::Fatal(format!("list task failed: {e}")))?
    }

    async fn shards_open_at(&self, at_ms: i64) -> Result<Option<Vec<String>>, SourceError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || open_at(&dir, at_ms).map(Some))
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

    #[test]
    fn a_closed_marker_may_say_when_the_shard_closed() {
        assert_eq!(parse_close_time("1700000000123\n"), Some(1_700_000_000_123));
        assert_eq!(
            parse_close_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_close_time(""), None);
        assert_eq!(parse_close_time("  \n"), None);
        assert_eq!(parse_close_time("closed by hand"), None);
    }

    #[tokio::test]
    async fn lists_where_closed_shards_end_and_which_shards_were_open_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        // 0 split into 1 and 2 at t=100; 2 and 3 merged into 4 at t=200.
        put(
            "shardId-000000000000.jsonl",
            &format!("{}{}", line(1), line(2)),
        );
        put("shardId-000000000000.closed", "100");
        put("shardId-000000000001.jsonl", &line(1));
        put("shardId-000000000001.parents", "shardId-000000000000\n");
        put("shardId-000000000002.jsonl", "");
        put("shardId-000000000002.parents", "shardId-000000000000\n");
        put("shardId-000000000002.closed", "200\n");
        put("shardId-000000000003.jsonl", &line(1));
        put("shardId-000000000003.closed", "1970-01-01T00:00:00.200Z");
        put("shardId-000000000004.jsonl", "");
        put(
            "shardId-000000000004.parents",
            "shardId-000000000002\nshardId-000000000003\n",
        );
        let source = LocalSource::new(dir.path(), "local");

        let shards = source.list_shards().await.expect("list");
        let endings: Vec<Option<&str>> = shards
            .iter()
            .map(|s| s.ending_sequence_number.as_deref())
            .collect();
        assert_eq!(
            endings,
            [
                Some("00000000000000000002"),
                None,
                Some("00000000000000000000"),
                Some("00000000000000000001"),
                None
            ]
        );

        let open_at = |t| {
            let source = source.clone();
            async move {
                let mut ids = source
                    .shards_open_at(t)
                    .await
                    .expect("open at")
                    .expect("the local source can tell");
                ids.sort();
                ids.into_iter()
                    .map(|id| id.trim_start_matches("shardId-00000000000").to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(open_at(50).await, ["0", "3"]);
        assert_eq!(open_at(100).await, ["0", "1", "2", "3"], "both ends count");
        assert_eq!(open_at(150).await, ["1", "2", "3"]);
        assert_eq!(open_at(250).await, ["1", "4"]);
    }
}
