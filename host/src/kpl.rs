//! KPL de-aggregation: a Kinesis record whose data is a KPL aggregate (magic
//! `F3 89 9A C2`, a protobuf `AggregatedRecord`, a 16-byte MD5 of the protobuf) becomes
//! its user records, numbered by sub-sequence 0, 1, 2, ... A record that starts with the
//! magic but fails the checksum or the protobuf parse is delivered as one plain record
//! with a warning, as KCL does. A user record without an explicit hash key index has no
//! explicit hash key (`None`); the partition key decides its shard, as it did at put.
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;   // ignored
//! }
//! ```

use md5::{Digest, Md5};

#[cfg(feature = "engine")]
use crate::plugin::bindings::KinesisRecord;
#[cfg(feature = "engine")]
use crate::source::SourceRecord;

/// The four bytes every KPL aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// A user record inside an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, if it had one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
}

/// Why an aggregate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// Too short, or without the KPL magic: not an aggregate at all.
    #[error("not a KPL aggregate (no magic bytes, or shorter than magic + MD5)")]
    NotAggregate,
    /// The MD5 trailer does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The protobuf is malformed.
    #[error("malformed protobuf: {0}")]
    Protobuf(&'static str),
}

#[cfg(feature = "engine")]
/// Expand one source record into the records a processor sees, appending to `out`.
pub fn deaggregate_into(record: SourceRecord, shard: &str, out: &mut Vec<KinesisRecord>) {
    if !is_aggregate(&record.data) {
        out.push(plain(record));
        return;
    }
    match decode(&record.data) {
        Ok(users) => {
            for (index, user) in users.into_iter().enumerate() {
                out.push(KinesisRecord {
                    partition_key: user.partition_key,
                    sequence_number: record.sequence_number.clone(),
                    sub_sequence_number: index as u64,
                    approximate_arrival_ms: record.approximate_arrival_ms,
                    explicit_hash_key: user.explicit_hash_key,
                    data: user.data,
                });
            }
        }
        Err(e) => {
            tracing::warn!(
                shard,
                sequence = %record.sequence_number,
                "record starts with the KPL magic but is not a valid aggregate ({e}); delivering it as one plain record"
            );
            out.push(plain(record));
        }
    }
}

#[cfg(feature = "engine")]
fn plain(record: SourceRecord) -> KinesisRecord {
    KinesisRecord {
        partition_key: record.partition_key,
        sequence_number: record.sequence_number,
        sub_sequence_number: 0,
        approximate_arrival_ms: record.approximate_arrival_ms,
        explicit_hash_key: record.explicit_hash_key,
        data: record.data,
    }
}

/// Does `data` look like an aggregate (magic and room for a digest)?
pub fn is_aggregate(data: &[u8]) -> bool {
    data.len() >= MAGIC.len() + DIGEST_LEN && data[..MAGIC.len()] == MAGIC
}

/// Decode an aggregate into its user records.
pub fn decode(data: &[u8]) -> Result<Vec<UserRecord>, AggregateError> {
    if !is_aggregate(data) {
        return Err(AggregateError::NotAggregate);
    }
    let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let digest = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(body).as_slice() != digest {
        return Err(AggregateError::Checksum);
    }
    let mut keys = Vec::new();
    let mut hash_keys = Vec::new();
    let mut raw_records = Vec::new();
    let mut reader = Reader { buf: body };
    while !reader.buf.is_empty() {
        let (field, wire) = reader.key()?;
        match (field, wire) {
            (1, 2) => keys.push(reader.string()?),
            (2, 2) => hash_keys.push(reader.string()?),
            (3, 2) => raw_records.push(reader.bytes()?),
            _ => reader.skip(wire)?,
        }
    }
    raw_records
        .into_iter()
        .map(|raw| {
            let mut r = Reader { buf: raw };
            let (mut pk, mut ehk, mut data) = (None, None, None);
            while !r.buf.is_empty() {
                let (field, wire) = r.key()?;
                match (field, wire) {
                    (1, 0) => pk = Some(r.varint()?),
                    (2, 0) => ehk = Some(r.varint()?),
                    (3, 2) => data = Some(r.bytes()?.to_vec()),
                    _ => r.skip(wire)?,
                }
            }
            let pk = pk.ok_or(AggregateError::Protobuf(
                "record without partition_key_index",
            ))?;
            let partition_key = usize::try_from(pk)
                .ok()
                .and_then(|i| keys.get(i))
                .cloned()
                .ok_or(AggregateError::Protobuf("partition_key_index out of range"))?;
            let explicit_hash_key = match ehk {
                None => None,
                Some(i) => Some(
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| hash_keys.get(i))
                        .cloned()
                        .ok_or(AggregateError::Protobuf(
                            "explicit_hash_key_index out of range",
                        ))?,
                ),
            };
            Ok(UserRecord {
                partition_key,
                explicit_hash_key,
                data: data.ok_or(AggregateError::Protobuf("record without data"))?,
            })
        })
        .collect()
}

/// Encode user records as a KPL aggregate (for tests, harnesses and producers).
pub fn encode(records: &[UserRecord]) -> Vec<u8> {
    let mut keys: Vec<&str> = Vec::new();
    let mut hash_keys: Vec<&str> = Vec::new();
    // Build the records first so the tables are complete.
    let mut encoded_records = Vec::new();
    for r in records {
        let mut rec = Vec::new();
        put_key(&mut rec, 1, 0);
        put_varint(&mut rec, index(&mut keys, &r.partition_key));
        if let Some(h) = &r.explicit_hash_key {
            put_key(&mut rec, 2, 0);
            put_varint(&mut rec, index(&mut hash_keys, h));
        }
        put_key(&mut rec, 3, 2);
        put_varint(&mut rec, r.data.len() as u64);
        rec.extend_from_slice(&r.data);
        encoded_records.push(rec);
    }
    let mut body = Vec::new();
    for k in &keys {
        put_key(&mut body, 1, 2);
        put_varint(&mut body, k.len() as u64);
        body.extend_from_slice(k.as_bytes());
    }
    for h in &hash_keys {
        put_key(&mut body, 2, 2);
        put_varint(&mut body, h.len() as u64);
        body.extend_from_slice(h.as_bytes());
    }
    for rec in &encoded_records {
        put_key(&mut body, 3, 2);
        put_varint(&mut body, rec.len() as u64);
        body.extend_from_slice(rec);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

/// Index of `v` in a string table, adding it if new.
fn index<'a>(table: &mut Vec<&'a str>, v: &'a str) -> u64 {
    match table.iter().position(|k| *k == v) {
        Some(i) => i as u64,
        None => {
            table.push(v);
            (table.len() - 1) as u64
        }
    }
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, AggregateError> {
        let mut value = 0u64;
        for (i, byte) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(AggregateError::Protobuf("truncated or overlong varint"))
    }

    fn key(&mut self) -> Result<(u64, u64), AggregateError> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }

    fn bytes(&mut self) -> Result<&'a [u8], AggregateError> {
        let len = usize::try_from(self.varint()?)
            .map_err(|_| AggregateError::Protobuf("length too large"))?;
        if len > self.buf.len() {
            return Err(AggregateError::Protobuf("length past the end"));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, AggregateError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| AggregateError::Protobuf("string is not UTF-8"))
    }

    fn skip(&mut self, wire: u64) -> Result<(), AggregateError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => Err(AggregateError::Protobuf("unsupported wire type")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), AggregateError> {
        if n > self.buf.len() {
            return Err(AggregateError::Protobuf("field past the end"));
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

#[cfg(test)]
mod fuzz_found {
    /// Found by `host/fuzz` (target `kpl`): decoding an empty or short input panicked.
    #[test]
    fn short_inputs_are_not_aggregates() {
        for data in [
            &b""[..],
            &[0xF3, 0x89, 0x9A, 0xC2],
            &[0xF3, 0x89, 0x9A, 0xC2, 1, 2, 3],
        ] {
            assert!(matches!(
                super::decode(data),
                Err(super::AggregateError::NotAggregate)
            ));
        }
    }
}

#[cfg(all(test, feature = "engine"))]
mod tests {
    use super::*;

    fn user(pk: &str, ehk: Option<&str>, data: &str) -> UserRecord {
        UserRecord {
            partition_key: pk.into(),
            explicit_hash_key: ehk.map(str::to_string),
            data: data.as_bytes().to_vec(),
        }
    }

    fn source(data: Vec<u8>) -> SourceRecord {
        SourceRecord {
            sequence_number: "777".into(),
            partition_key: "outer".into(),
            approximate_arrival_ms: 5,
            explicit_hash_key: None,
            data,
        }
    }

    #[test]
    fn aggregates_expand_with_sub_sequence_numbers() {
        let users = vec![
            user("a", None, "one"),
            user("b", Some("123"), "two"),
            user("a", None, "three"),
        ];
        let mut out = Vec::new();
        deaggregate_into(source(encode(&users)), "s", &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter()
                .map(|r| r.sub_sequence_number)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(
            out.iter()
                .all(|r| r.sequence_number == "777" && r.approximate_arrival_ms == 5)
        );
        assert_eq!(
            (
                out[1].partition_key.as_str(),
                out[1].explicit_hash_key.as_deref(),
                out[1].data.as_slice()
            ),
            ("b", Some("123"), &b"two"[..])
        );
        assert_eq!(out[2].explicit_hash_key, None);
    }

    #[test]
    fn plain_and_corrupt_records_pass_through_whole() {
        let mut out = Vec::new();
        deaggregate_into(source(b"just data".to_vec()), "s", &mut out);
        let mut corrupt = encode(&[user("a", None, "x")]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        deaggregate_into(source(corrupt.clone()), "s", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].data, corrupt);
        assert_eq!(out[1].partition_key, "outer");
        assert_eq!(decode(&corrupt), Err(AggregateError::Checksum));
    }

    #[test]
    fn malformed_protobuf_with_a_valid_checksum_is_rejected() {
        let body = vec![0x1a, 0x05, 0x08]; // record field claims 5 bytes, has 1
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        assert!(matches!(decode(&data), Err(AggregateError::Protobuf(_))));
    }
}
