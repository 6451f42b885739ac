//! `redis-sink`: delivers every record to Redis over `std::net` TCP (granted in the
//! host's `[plugin.sandbox] tcp`), idempotently: each record is stored under a key made
//! of its stream, shard, sequence and sub-sequence numbers, only if that key is new, and
//! a newly stored key is appended to the shard's delivery list in the same atomic step.
//! Delivery is at least once (a batch is re-delivered after a crash before its
//! checkpoint); the sink turns that into effectively once.
//!
//! Fenced: every write carries the instance's lease token (`shoal_sdk::lease_token`), and
//! the same atomic step refuses it if a later holder of the shard's lease has written
//! (a higher epoch is stored). A holder that lost its lease while its writes were in
//! flight (a paused process, a slow network) thus cannot write after its successor.
//!
//! Settings (`[plugin.settings]`):
//! - `address` (required): Redis `host:port`, e.g. `127.0.0.1:6379` (grant the same in
//!   `plugin.sandbox.tcp`).
//! - `prefix` (default `shoal`): the first part of every key.
//!
//! Keys: `<prefix>:<stream>:<shard>:<sequence>:<sub-sequence>` holds the record's data;
//! `<prefix>:<stream>:<shard>:delivered` is the list of record keys in first-delivery
//! order; the hash `<prefix>:<stream>:<shard>:fence` holds the highest `epoch` accepted
//! and its `owner`, and counts the writes it `refused`. Replies: a connection or I/O failure is `retry` (the host backs off and
//! delivers the batch again, after reconnecting); a Redis error reply is `fatal`; a write
//! refused by the fence is `retry` (the host stops this instance once it sees the lease
//! lost, and the successor delivers the batch).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use shoal_sdk::{Batch, CheckpointDirective, FencingToken, ProcessError, Processor, Settings, ShardInfo};

/// One atomic step: refuse the write (-1) if the fence (KEYS[3]) holds a higher epoch
/// than this writer's (ARGV[2]); else raise the fence to it, store the record (KEYS[1] =
/// ARGV[1]) if its key is new and then list the key (KEYS[2]): 1 if stored, 0 if known.
const STORE_FENCED: &str = "local held = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0') \
local epoch = tonumber(ARGV[2]) \
if epoch < held then redis.call('HINCRBY', KEYS[3], 'refused', 1) return -1 end \
if epoch > held then redis.call('HSET', KEYS[3], 'epoch', ARGV[2], 'owner', ARGV[3]) end \
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('RPUSH', KEYS[2], KEYS[1]) return 1 end \
return 0";

struct RedisSink {
    address: String,
    prefix: String,
    /// Replies are read through the buffer; commands are written to the stream inside it
    /// (WASI sockets cannot be duplicated, so there is no separate writer handle).
    connection: Option<BufReader<TcpStream>>,
    commands: Vec<u8>,
    /// The lease holding this instance writes under.
    token: FencingToken,
}

/// One RESP reply, as far as this sink needs it.
#[derive(Debug)]
enum Reply {
    Ok,
    Error(String),
    Integer(i64),
    Other,
}

impl Processor for RedisSink {
    fn initialize(_shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        let address = settings
            .get("address")
            .ok_or_else(|| ProcessError::Fatal("setting `address` (Redis host:port) is required".into()))?
            .to_string();
        Ok(RedisSink {
            address,
            prefix: settings.get_or("prefix", "shoal").to_string(),
            connection: None,
            commands: Vec::with_capacity(64 * 1024),
            token: shoal_sdk::lease_token(),
        })
    }

    fn process(&mut self, shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        if batch.records.is_empty() {
            return Ok(CheckpointDirective::BatchEnd);
        }
        let base = format!("{}:{}:{}", self.prefix, shard.stream_name, shard.shard_id);
        let list = format!("{base}:delivered");
        let fence = format!("{base}:fence");
        let epoch = self.token.epoch.to_string();
        self.commands.clear();
        for r in &batch.records {
            let key = format!("{base}:{}:{}", r.sequence_number, r.sub_sequence_number);
            encode(
                &mut self.commands,
                &[
                    b"EVAL",
                    STORE_FENCED.as_bytes(),
                    b"3",
                    key.as_bytes(),
                    list.as_bytes(),
                    fence.as_bytes(),
                    &r.data,
                    epoch.as_bytes(),
                    self.token.owner.as_bytes(),
                ],
            );
        }
        // Pipelined: every command goes out, then every reply is read.
        let result = self.exchange(batch.records.len());
        match result {
            Ok(replies) => {
                if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
                    return Err(ProcessError::Fatal(format!("redis at {} refused a write: {e}", self.address)));
                }
                let fenced = replies.iter().filter(|r| matches!(r, Reply::Integer(-1))).count();
                if fenced > 0 {
                    return Err(ProcessError::Retry(format!(
                        "redis at {}: {fenced} writes refused as stale (lease epoch {} of {}): a later holder of {}'s lease has written",
                        self.address, self.token.epoch, self.token.owner, shard.shard_id
                    )));
                }
                Ok(CheckpointDirective::BatchEnd)
            }
            Err(e) => {
                // The connection may be half-used: drop it, reconnect on the retry.
                self.connection = None;
                Err(ProcessError::Retry(format!("redis at {}: {e}", self.address)))
            }
        }
    }
}

impl RedisSink {
    fn exchange(&mut self, replies: usize) -> std::io::Result<Vec<Reply>> {
        if self.connection.is_none() {
            let stream = TcpStream::connect(&self.address)?;
            self.connection = Some(BufReader::with_capacity(64 * 1024, stream));
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(std::io::Error::other("no connection"));
        };
        connection.get_mut().write_all(&self.commands)?;
        connection.get_mut().flush()?;
        (0..replies).map(|_| read_reply(connection)).collect()
    }
}

/// Append one command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "redis closed the connection"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected reply `{line}`"));
    match kind {
        "+" => Ok(Reply::Ok),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest.parse().map(Reply::Integer).map_err(|_| bad()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len >= 0 {
                let mut data = vec![0u8; len as usize + 2];
                std::io::Read::read_exact(reader, &mut data)?;
            }
            Ok(Reply::Other)
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            for _ in 0..n.max(0) {
                if let Reply::Error(e) = read_reply(reader)? {
                    return Ok(Reply::Error(e));
                }
            }
            Ok(Reply::Other)
        }
        _ => Err(bad()),
    }
}

shoal_sdk::export_processor!(RedisSink);
