//! A Kinesis GetRecords answer (awsJson 1.1) parsed as its bytes arrive: each record's
//! base64 `Data` is decoded straight from the body into the record's buffer, so neither the
//! whole body nor a string copy of every payload is ever held; the answer's other members
//! (`NextShardIterator`, `MillisBehindLatest`, `ChildShards`, anything new) are kept
//! verbatim as a small JSON object for the AWS SDK's own deserializer.
//!
//! Parsing restarts at the last complete value when a chunk ends inside one, so a record
//! split across chunks is read again once (records are kilobytes, chunks tens of them).
//! Network bytes are outside input: any of them give records or an error, never a panic
//! (fuzzed in `host/fuzz`, which builds this module without the engine).

use crate::source_record::SourceRecord;

/// Why a body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed GetRecords answer at byte {offset}: {reason}")]
pub struct BodyError {
    /// Offset in the whole body.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

/// A step that ran out of bytes (`Incomplete`) or met bad input.
#[derive(Debug)]
enum Stop {
    Incomplete,
    Invalid(usize, String),
}

type Step<T> = Result<T, Stop>;

/// The first piece of a new chunk added to a value split across chunks (doubling while the
/// value is still incomplete).
const SPLIT_PIECE: usize = 4096;

fn invalid<T>(at: usize, reason: impl Into<String>) -> Step<T> {
    Err(Stop::Invalid(at, reason.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the answer's opening brace.
    Start,
    /// Between members of the answer object.
    Members,
    /// Inside the `Records` array.
    Records,
    /// After the closing brace.
    Done,
}

/// The incremental reader: [`Self::feed`] each chunk, then [`Self::finish`].
#[derive(Debug)]
pub struct GetRecordsBody {
    /// Bytes not yet consumed.
    pending: Vec<u8>,
    /// Bytes consumed before `pending[0]` (for error offsets).
    consumed: usize,
    phase: Phase,
    records: Vec<SourceRecord>,
    /// The answer without its records: `{` + the other members.
    rest: Vec<u8>,
    /// Members written to `rest` so far.
    rest_members: usize,
}

/// What a whole answer held.
#[derive(Debug)]
pub struct ParsedGetRecords {
    /// The records, in order.
    pub records: Vec<SourceRecord>,
    /// The answer with `"Records":[]`, everything else as it came.
    pub rest: Vec<u8>,
}

impl Default for GetRecordsBody {
    fn default() -> Self {
        Self::new()
    }
}

impl GetRecordsBody {
    /// A reader at the start of a body.
    pub fn new() -> Self {
        Self::expecting(0)
    }

    /// A reader with room for `records` records from the start (a hint: more still fit),
    /// so a full answer's record list is allocated once instead of grown by doubling.
    pub fn expecting(records: usize) -> Self {
        Self {
            pending: Vec::new(),
            consumed: 0,
            phase: Phase::Start,
            records: Vec::with_capacity(records),
            rest: b"{".to_vec(),
            rest_members: 0,
        }
    }

    /// Read `chunk`, keeping an incomplete tail for the next one. Only a value split
    /// across chunks is copied (into `pending`, a growing piece at a time until it is
    /// complete); everything else is read where it arrived.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), BodyError> {
        let mut piece = SPLIT_PIECE;
        while !self.pending.is_empty() && !chunk.is_empty() {
            let held = self.pending.len();
            let take = piece.min(chunk.len());
            self.pending.extend_from_slice(&chunk[..take]);
            let pending = std::mem::take(&mut self.pending);
            let at = self.parse(&pending)?;
            self.consumed += at;
            if at >= held {
                // The split value is complete: the rest of this piece is still in `chunk`.
                chunk = &chunk[at - held..];
            } else {
                self.pending = pending;
                self.pending.drain(..at);
                chunk = &chunk[take..];
                piece = piece.saturating_mul(2);
            }
        }
        if self.pending.is_empty() {
            let at = self.parse(chunk)?;
            self.consumed += at;
            self.pending.extend_from_slice(&chunk[at..]);
        }
        Ok(())
    }

    /// Step through `buf` until it ends or ends inside a value; how far that got.
    fn parse(&mut self, buf: &[u8]) -> Result<usize, BodyError> {
        let mut at = 0;
        loop {
            match self.step(buf, at) {
                Ok(Some(next)) => at = next,
                Ok(None) | Err(Stop::Incomplete) => return Ok(at),
                Err(Stop::Invalid(offset, reason)) => {
                    return Err(BodyError {
                        offset: self.consumed + offset,
                        reason,
                    });
                }
            }
        }
    }

    /// The body has ended: the answer must be complete.
    pub fn finish(mut self) -> Result<ParsedGetRecords, BodyError> {
        let trailing = skip_ws(&self.pending, 0);
        if self.phase != Phase::Done || trailing != self.pending.len() {
            return Err(BodyError {
                offset: self.consumed + trailing,
                reason: match self.phase {
                    Phase::Done => "data after the answer".into(),
                    _ => "the body ended inside the answer".into(),
                },
            });
        }
        self.rest.push(b'}');
        Ok(ParsedGetRecords {
            records: self.records,
            rest: self.rest,
        })
    }

    /// One step from `at`: the offset after what it consumed, `None` when nothing is left
    /// to do in this chunk.
    fn step(&mut self, buf: &[u8], at: usize) -> Step<Option<usize>> {
        let i = skip_ws(buf, at);
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        match self.phase {
            Phase::Start => {
                if byte != b'{' {
                    return invalid(i, "expected `{`");
                }
                self.phase = Phase::Members;
                Ok(Some(i + 1))
            }
            Phase::Members => match byte {
                b'}' => {
                    self.phase = Phase::Done;
                    Ok(Some(i + 1))
                }
                b',' => Ok(Some(i + 1)),
                b'"' => {
                    let (key, value) = member(buf, i)?;
                    if &buf[key.start + 1..key.end - 1] == b"Records" {
                        match buf.get(value) {
                            None => Err(Stop::Incomplete),
                            Some(b'[') => {
                                self.push_rest_member(b"\"Records\":[]");
                                self.phase = Phase::Records;
                                Ok(Some(value + 1))
                            }
                            Some(b'n') => {
                                let end = skip_value(buf, value)?;
                                self.push_rest_member(b"\"Records\":[]");
                                Ok(Some(end))
                            }
                            Some(_) => invalid(value, "`Records` is not an array"),
                        }
                    } else {
                        let end = skip_value(buf, value)?;
                        let member = buf[key.start..end].to_vec();
                        self.push_rest_member(&member);
                        Ok(Some(end))
                    }
                }
                _ => invalid(i, "expected a member name or `}`"),
            },
            Phase::Records => match byte {
                b']' => {
                    self.phase = Phase::Members;
                    Ok(Some(i + 1))
                }
                b',' => Ok(Some(i + 1)),
                b'{' => {
                    let (record, end) = parse_record(buf, i)?;
                    self.records.push(record);
                    Ok(Some(end))
                }
                _ => invalid(i, "expected a record object"),
            },
            Phase::Done => invalid(i, "data after the answer"),
        }
    }

    fn push_rest_member(&mut self, member: &[u8]) {
        if self.rest_members > 0 {
            self.rest.push(b',');
        }
        self.rest.extend_from_slice(member);
        self.rest_members += 1;
    }
}

fn skip_ws(buf: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = buf.get(i) {
        i += 1;
    }
    i
}

/// The span of the string starting at `at` (quotes included) and whether it has escapes.
fn string_bounds(buf: &[u8], at: usize) -> Step<(std::ops::Range<usize>, bool)> {
    let mut i = at + 1;
    let mut escaped = false;
    loop {
        match memchr::memchr2(b'"', b'\\', &buf[i.min(buf.len())..]) {
            None => return Err(Stop::Incomplete),
            Some(found) => {
                let j = i + found;
                if buf[j] == b'"' {
                    return Ok((at..j + 1, escaped));
                }
                escaped = true;
                i = j + 2;
                if i > buf.len() {
                    return Err(Stop::Incomplete);
                }
            }
        }
    }
}

/// The member starting at `at` (a name, `:`, a value that has begun to arrive): the name's
/// span, quotes included, and where the value starts.
fn member(buf: &[u8], at: usize) -> Step<(std::ops::Range<usize>, usize)> {
    let (key, _) = string_bounds(buf, at)?;
    let colon = skip_ws(buf, key.end);
    match buf.get(colon) {
        None => return Err(Stop::Incomplete),
        Some(b':') => {}
        Some(_) => return invalid(colon, "expected `:`"),
    }
    let value = skip_ws(buf, colon + 1);
    if value >= buf.len() {
        return Err(Stop::Incomplete);
    }
    Ok((key, value))
}

/// The string at `at`, unescaped, and the offset after it.
fn read_string(buf: &[u8], at: usize) -> Step<(String, usize)> {
    let (span, escaped) = string_bounds(buf, at)?;
    let end = span.end;
    let text = if escaped {
        serde_json::from_slice::<String>(&buf[span])
            .or_else(|e| invalid(at, format!("bad string: {e}")))?
    } else {
        std::str::from_utf8(&buf[span.start + 1..span.end - 1])
            .map(str::to_owned)
            .or_else(|e| invalid(at, format!("bad string: {e}")))?
    };
    Ok((text, end))
}

/// The base64 string at `at`, decoded, and the offset after it.
fn read_base64(buf: &[u8], at: usize) -> Step<(Vec<u8>, usize)> {
    let (span, escaped) = string_bounds(buf, at)?;
    let end = span.end;
    let decoded = if escaped {
        let text = serde_json::from_slice::<String>(&buf[span])
            .or_else(|e| invalid(at, format!("bad string: {e}")))?;
        base64_simd::STANDARD.decode_to_vec(text.as_bytes())
    } else {
        base64_simd::STANDARD.decode_to_vec(&buf[span.start + 1..span.end - 1])
    };
    match decoded {
        Ok(data) => Ok((data, end)),
        Err(e) => invalid(at, format!("`Data` is not base64: {e}")),
    }
}

/// The end of the scalar (number or literal) at `at`: the next delimiter, which must have
/// arrived.
fn scalar_end(buf: &[u8], at: usize) -> Step<usize> {
    let mut i = at;
    loop {
        match buf.get(i) {
            None => return Err(Stop::Incomplete),
            Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => return Ok(i),
            Some(_) => i += 1,
        }
    }
}

/// The offset after the JSON value at `at` (any kind), once all of it has arrived.
fn skip_value(buf: &[u8], at: usize) -> Step<usize> {
    match buf.get(at) {
        None => Err(Stop::Incomplete),
        Some(b'"') => Ok(string_bounds(buf, at)?.0.end),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match buf.get(i) {
                    None => return Err(Stop::Incomplete),
                    Some(b'"') => i = string_bounds(buf, i)?.0.end,
                    Some(b'{' | b'[') => {
                        depth += 1;
                        i += 1;
                    }
                    Some(b'}' | b']') => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Ok(i);
                        }
                    }
                    Some(_) => i += 1,
                }
            }
        }
        Some(_) => {
            let end = scalar_end(buf, at)?;
            if end == at {
                return invalid(at, "expected a value");
            }
            Ok(end)
        }
    }
}

/// Is the value at `at` `null`? (Then the offset after it.)
fn null_at(buf: &[u8], at: usize) -> Step<Option<usize>> {
    if buf.get(at) != Some(&b'n') {
        return Ok(None);
    }
    let end = scalar_end(buf, at)?;
    if &buf[at..end] == b"null" {
        Ok(Some(end))
    } else {
        invalid(at, "expected `null`")
    }
}

/// An epoch-seconds timestamp (a number, as awsJson writes it, or a number in a string) in
/// ms since the epoch, rounded as the SDK's `DateTime::to_millis` rounds (0 if out of range).
fn read_timestamp_ms(buf: &[u8], at: usize) -> Step<(i64, usize)> {
    // Borrowed from the body (no allocation per record) unless it is a string.
    let (text, end): (std::borrow::Cow<'_, str>, usize) = if buf.get(at) == Some(&b'"') {
        let (text, end) = read_string(buf, at)?;
        (text.into(), end)
    } else {
        let end = scalar_end(buf, at)?;
        let text = std::str::from_utf8(&buf[at..end]).or_else(|_| invalid(at, "bad number"))?;
        (text.into(), end)
    };
    let bad = || invalid(at, format!("bad epoch-seconds timestamp {text:?}"));
    let (seconds, nanos) = if text.contains(['.', 'e', 'E']) {
        let Ok(value) = text.parse::<f64>() else {
            return bad();
        };
        if !value.is_finite() || !(i64::MIN as f64..i64::MAX as f64).contains(&value) {
            return bad();
        }
        let whole = value.floor();
        // As `DateTime::from_fractional_secs`: a fraction that rounds to a whole second
        // rolls over.
        let nanos = ((value - whole) * 1_000_000_000_f64) as u32;
        if nanos >= 1_000_000_000 {
            (whole as i64 + 1, 0)
        } else {
            (whole as i64, nanos)
        }
    } else {
        let Ok(seconds) = text.parse::<i64>() else {
            return bad();
        };
        (seconds, 0)
    };
    Ok((epoch_millis(seconds, nanos).unwrap_or(0), end))
}

/// Seconds and sub-second nanos as epoch ms, as `DateTime::to_millis` computes them.
fn epoch_millis(seconds: i64, nanos: u32) -> Option<i64> {
    let sub_millis = i64::from(nanos / 1_000_000);
    if seconds < 0 {
        seconds
            .checked_add(1)?
            .checked_mul(1000)?
            .checked_sub(1000 - sub_millis)
    } else {
        seconds.checked_mul(1000)?.checked_add(sub_millis)
    }
}

/// One record object starting at `at`, and the offset after it. As the SDK's reading does,
/// a record without a sequence number, data or partition key gets them empty, and one
/// without an arrival time gets 0.
fn parse_record(buf: &[u8], at: usize) -> Step<(SourceRecord, usize)> {
    let mut record = SourceRecord {
        sequence_number: String::new(),
        partition_key: String::new(),
        approximate_arrival_ms: 0,
        // A GetRecords answer carries no explicit hash key.
        explicit_hash_key: None,
        data: Vec::new(),
    };
    let mut i = at + 1;
    let mut first = true;
    loop {
        i = skip_ws(buf, i);
        match buf.get(i) {
            None => return Err(Stop::Incomplete),
            Some(b'}') => return Ok((record, i + 1)),
            Some(b',') if !first => i = skip_ws(buf, i + 1),
            Some(_) if first => {}
            Some(_) => return invalid(i, "expected `,` or `}` in a record"),
        }
        first = false;
        match buf.get(i) {
            None => return Err(Stop::Incomplete),
            Some(b'"') => {}
            Some(_) => return invalid(i, "expected a member name in a record"),
        }
        let (key, value) = member(buf, i)?;
        if let Some(end) = null_at(buf, value)? {
            i = end;
            continue;
        }
        i = match &buf[key.start + 1..key.end - 1] {
            b"SequenceNumber" => {
                let (text, end) = read_string(buf, value)?;
                record.sequence_number = text;
                end
            }
            b"Data" => {
                let (data, end) = read_base64(buf, value)?;
                record.data = data;
                end
            }
            b"PartitionKey" => {
                let (text, end) = read_string(buf, value)?;
                record.partition_key = text;
                end
            }
            b"ApproximateArrivalTimestamp" => {
                let (ms, end) = read_timestamp_ms(buf, value)?;
                record.approximate_arrival_ms = ms;
                end
            }
            // `EncryptionType` and anything new: not part of a source record.
            _ => skip_value(buf, value)?,
        };
    }
}

#[cfg(all(test, feature = "engine"))]
pub(crate) mod tests {
    use super::*;
    use crate::source::kinesis_http::test_support::sdk_reading;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// The oracle's records as the source hands them on.
    fn as_source(
        output: &aws_sdk_kinesis::operation::get_records::GetRecordsOutput,
    ) -> Vec<SourceRecord> {
        output
            .records
            .iter()
            .cloned()
            .map(crate::source::kinesis::source_record)
            .collect()
    }

    fn parse_in_chunks(body: &[u8], chunk: usize) -> Result<ParsedGetRecords, BodyError> {
        let mut reader = GetRecordsBody::new();
        for piece in body.chunks(chunk.max(1)) {
            reader.feed(piece)?;
        }
        reader.finish()
    }

    /// An answer with what the service may send: members in any order, escapes (`\/` in
    /// base64, `\u` in keys), nulls, integer and exponent timestamps, empty and binary data,
    /// members this reader does not know, inside records and out.
    pub(crate) fn varied_answer(pretty: bool, binary_len: usize) -> Vec<u8> {
        let binary: Vec<u8> = (0..=255u8).cycle().take(binary_len).collect();
        let answer = serde_json::json!({
            "ChildShards": [{
                "ShardId": "shardId-000000000002",
                "ParentShards": ["shardId-000000000000"],
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "170141183460469231731687303715884105727"}
            }],
            "Records": [
                {
                    "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                    "ApproximateArrivalTimestamp": 1733560000.123,
                    "Data": STANDARD.encode(b"{\"type\":\"click\"}"),
                    "PartitionKey": "user-\u{e9}\u{1f600}",
                    "EncryptionType": "NONE"
                },
                {
                    "Data": STANDARD.encode(&binary),
                    "PartitionKey": null,
                    "SequenceNumber": "49590338271490256608559692538361571095921575989136588899",
                    "ApproximateArrivalTimestamp": 1733560001,
                    "Future": {"nested": [1, "x]}\"", {"y": null}], "z": true}
                },
                {
                    "SequenceNumber": "49590338271490256608559692538361571095921575989136588900",
                    "ApproximateArrivalTimestamp": 1.7335600025E9,
                    "Data": "",
                    "PartitionKey": "k\"quoted\"\\back",
                    "EncryptionType": "KMS"
                }
            ],
            "NextShardIterator": "AAAAAAAAAAH/iterator+with/slashes==",
            "MillisBehindLatest": 1234,
            "SomethingNew": [{"a": "}"}, -1.5e-3, false, null]
        });
        let text = if pretty {
            serde_json::to_string_pretty(&answer)
        } else {
            serde_json::to_string(&answer)
        }
        .expect("json");
        // Escape every `/` (legal JSON; some encoders do), and the key's `é` as `\u00e9`.
        text.replace('/', "\\/")
            .replace('\u{e9}', "\\u00e9")
            .into_bytes()
    }

    #[tokio::test]
    async fn reads_what_the_sdk_reads_whatever_the_chunking() {
        // 3,000 bytes of data fit a chunk; 40,000 (53 KB of base64) span many chunks and
        // outgrow several pieces of a split value.
        for (pretty, binary_len) in [(false, 3000), (true, 3000), (false, 40_000)] {
            let body = varied_answer(pretty, binary_len);
            let oracle = sdk_reading(&body).await.expect("the SDK reads the answer");
            assert_eq!(oracle.records().len(), 3, "the oracle saw every record");
            for chunk in [1, 2, 3, 5, 64, 1000, 4097, 10_000, body.len()] {
                let parsed = parse_in_chunks(&body, chunk)
                    .unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
                assert_eq!(
                    parsed.records,
                    as_source(&oracle),
                    "records, chunks of {chunk}"
                );
                let rest = sdk_reading(&parsed.rest)
                    .await
                    .unwrap_or_else(|e| panic!("the rest, chunks of {chunk}: {e}"));
                assert!(rest.records().is_empty());
                assert_eq!(rest.next_shard_iterator, oracle.next_shard_iterator);
                assert_eq!(rest.millis_behind_latest, oracle.millis_behind_latest);
                assert_eq!(rest.child_shards, oracle.child_shards);
            }
        }
    }

    #[tokio::test]
    async fn an_answer_without_records_or_with_null_records_is_read() {
        for body in [
            &br#"{"Records":[],"NextShardIterator":"it","MillisBehindLatest":0}"#[..],
            br#"{"NextShardIterator":null,"MillisBehindLatest":0,"Records":null}"#,
            br#"{}"#,
        ] {
            let parsed = parse_in_chunks(body, 1).expect("parse");
            let oracle = sdk_reading(body).await.expect("oracle");
            assert_eq!(parsed.records, as_source(&oracle));
            let rest = sdk_reading(&parsed.rest).await.expect("rest");
            assert_eq!(rest.next_shard_iterator, oracle.next_shard_iterator);
        }
    }

    #[test]
    fn a_body_cut_short_anywhere_is_an_error() {
        let body = varied_answer(false, 300);
        for end in 0..body.len() {
            assert!(
                parse_in_chunks(&body[..end], 7).is_err(),
                "a body cut at byte {end} of {} was accepted",
                body.len()
            );
        }
    }

    /// Whatever bytes arrive, in whatever chunks, the reader answers (records or an error)
    /// and never panics: a mangled answer must cost one failed call, not the shard.
    #[test]
    fn mangled_answers_never_panic_the_reader() {
        let body = varied_answer(false, 300);
        let mut rng = fastrand::Rng::with_seed(0x5ea1);
        let bytes = b"{}[]\":,\\ nu0123456789.eE-+AQ=/x";
        for _ in 0..3000 {
            let mut mangled = body.clone();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..mangled.len());
                match rng.u8(..3) {
                    0 => mangled[at] = bytes[rng.usize(..bytes.len())],
                    1 => mangled.insert(at, bytes[rng.usize(..bytes.len())]),
                    _ => {
                        mangled.remove(at);
                    }
                }
            }
            if rng.bool() {
                mangled.truncate(rng.usize(..=mangled.len()));
            }
            let mut reader = GetRecordsBody::new();
            let mut rest = &mangled[..];
            let fed = loop {
                if rest.is_empty() {
                    break Ok(());
                }
                let take = rng.usize(1..=rest.len().min(5000));
                if let Err(e) = reader.feed(&rest[..take]) {
                    break Err(e);
                }
                rest = &rest[take..];
            };
            if fed.is_ok() {
                let _ = reader.finish();
            }
        }
    }

    #[test]
    fn malformed_answers_are_errors_that_say_where() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"Records":[{"Data":"@@@@"}]}"#, "base64"),
            (br#"{"Records":5}"#, "not an array"),
            (br#"[1]"#, "expected `{`"),
            (br#"{"Records":[{"Data" "QQ=="}]}"#, "expected `:`"),
            (br#"{"Records":[7]}"#, "record object"),
            (br#"{"Records":[]} {}"#, "after the answer"),
        ];
        for (body, says) in cases {
            let error = parse_in_chunks(body, 4).expect_err("malformed");
            assert!(
                error.to_string().contains(says),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
