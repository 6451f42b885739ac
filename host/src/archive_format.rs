//! The JSON-lines record format shared by the `archive` plugin, dead-letter files and
//! `shoal replay` input: one record per line,
//! `{"shard_id","sequence_number","sub_sequence_number","partition_key","approximate_arrival_ms","data_base64"}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use crate::plugin::bindings::KinesisRecord;

/// One line as written by `archive` (and, with `dead_letter` set, by the dead-letter
/// writer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveLine<'a> {
    /// The shard the record came from.
    pub shard_id: &'a str,
    /// Its sequence number.
    pub sequence_number: &'a str,
    /// Its sub-sequence number.
    pub sub_sequence_number: u64,
    /// Its partition key.
    pub partition_key: &'a str,
    /// Approximate arrival, ms since the epoch.
    pub approximate_arrival_ms: i64,
    /// The data, base64 (standard alphabet, padded).
    pub data_base64: String,
    /// The explicit hash key, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<&'a str>,
    /// Why the record's batch was dead-lettered (dead-letter files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<&'a serde_json::Value>,
}

#[cfg(feature = "engine")]
impl<'a> ArchiveLine<'a> {
    /// The line for one record of one shard.
    pub fn new(shard_id: &'a str, record: &'a KinesisRecord) -> Self {
        Self {
            shard_id,
            sequence_number: &record.sequence_number,
            sub_sequence_number: record.sub_sequence_number,
            partition_key: &record.partition_key,
            approximate_arrival_ms: record.approximate_arrival_ms,
            data_base64: BASE64.encode(&record.data),
            explicit_hash_key: record.explicit_hash_key.as_deref(),
            dead_letter: None,
        }
    }
}

/// A line of replay input: the archive format, where only `partition_key` and one of
/// `data_base64` / `data` (UTF-8 text) are required.
#[derive(Debug, Clone, Deserialize)]
pub struct InputLine {
    /// Shard id (default: the replay's `--shard-id`).
    pub shard_id: Option<String>,
    /// Sequence number (default: the line number, zero-padded).
    pub sequence_number: Option<String>,
    /// Sub-sequence number (default 0).
    #[serde(default)]
    pub sub_sequence_number: u64,
    /// Partition key.
    pub partition_key: String,
    /// Approximate arrival (default: now).
    pub approximate_arrival_ms: Option<i64>,
    /// Explicit hash key.
    pub explicit_hash_key: Option<String>,
    /// Data, base64.
    pub data_base64: Option<String>,
    /// Data as UTF-8 text (instead of `data_base64`).
    pub data: Option<String>,
}

impl InputLine {
    /// Parse one line; errors say what is missing or malformed.
    pub fn parse(line: &str) -> Result<Self, String> {
        let parsed: InputLine =
            serde_json::from_str(line).map_err(|e| format!("not a JSON record line: {e}"))?;
        match (&parsed.data_base64, &parsed.data) {
            (Some(_), Some(_)) => Err("has both `data_base64` and `data`; give one".into()),
            (None, None) => Err("has neither `data_base64` nor `data`".into()),
            _ => Ok(parsed),
        }
    }

    /// The record's data, taken out of the line: `data_base64` decoded, or the bytes of
    /// `data`.
    pub fn take_data(&mut self) -> Result<Vec<u8>, String> {
        match (self.data_base64.take(), self.data.take()) {
            (Some(b64), _) => BASE64
                .decode(b64.trim())
                .map_err(|e| format!("`data_base64` is not valid base64: {e}")),
            (None, Some(text)) => Ok(text.into_bytes()),
            (None, None) => Err("has neither `data_base64` nor `data`".into()),
        }
    }

    /// Into a record, filling defaults.
    #[cfg(feature = "engine")]
    pub fn into_record(
        mut self,
        default_sequence: String,
        now_ms: i64,
    ) -> Result<KinesisRecord, String> {
        let data = self.take_data()?;
        Ok(KinesisRecord {
            partition_key: self.partition_key,
            sequence_number: self.sequence_number.unwrap_or(default_sequence),
            sub_sequence_number: self.sub_sequence_number,
            approximate_arrival_ms: self.approximate_arrival_ms.unwrap_or(now_ms),
            explicit_hash_key: self.explicit_hash_key,
            data,
        })
    }
}

#[cfg(all(test, feature = "engine"))]
mod tests {
    use super::*;

    #[test]
    fn an_archived_line_reads_back_as_the_same_record() {
        let record = KinesisRecord {
            partition_key: "pk".into(),
            sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
            sub_sequence_number: 3,
            approximate_arrival_ms: 1_700_000_000_000,
            explicit_hash_key: None,
            data: vec![0, 159, 255, b'x'],
        };
        let line = serde_json::to_string(&ArchiveLine::new("shardId-000000000001", &record))
            .expect("json");
        assert_eq!(
            line,
            r#"{"shard_id":"shardId-000000000001","sequence_number":"49590338271490256608559692538361571095921575989136588898","sub_sequence_number":3,"partition_key":"pk","approximate_arrival_ms":1700000000000,"data_base64":"AJ//eA=="}"#
        );
        let back = InputLine::parse(&line)
            .and_then(|l| l.into_record("0".into(), 0))
            .expect("parses");
        assert_eq!(back, record);
    }

    #[test]
    fn text_data_and_defaults_are_accepted() {
        let r = InputLine::parse(r#"{"partition_key":"a","data":"{\"x\":1}"}"#)
            .and_then(|l| l.into_record("00000000000000000007".into(), 42))
            .expect("parses");
        assert_eq!(
            (
                r.data.as_slice(),
                r.sequence_number.as_str(),
                r.approximate_arrival_ms
            ),
            (&b"{\"x\":1}"[..], "00000000000000000007", 42)
        );
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(
            InputLine::parse("{")
                .unwrap_err()
                .contains("not a JSON record line")
        );
        assert!(
            InputLine::parse(r#"{"data":"x"}"#)
                .unwrap_err()
                .contains("partition_key")
        );
        assert!(
            InputLine::parse(r#"{"partition_key":"a"}"#)
                .unwrap_err()
                .contains("neither")
        );
        let l = InputLine::parse(r#"{"partition_key":"a","data_base64":"!!"}"#).expect("shape ok");
        assert!(
            l.into_record("1".into(), 0)
                .unwrap_err()
                .contains("not valid base64")
        );
    }
}
