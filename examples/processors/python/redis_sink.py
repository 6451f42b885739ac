"""`redis-sink`: shoal's Python processor that delivers every record to Redis over TCP.

The same processor as the Rust `plugins/redis-sink`: each record is stored under a key made
of its stream, shard, sequence and sub-sequence numbers, only if that key is new, and a newly
stored key is appended to the shard's delivery list in the same atomic step (one `EVAL`).
Delivery is at least once (a batch is delivered again after a crash before its checkpoint);
the sink turns that into effectively once.

Fenced, as the Rust sink is: every write carries the instance's lease token (`lease_token()`),
and the same atomic step refuses it if a later holder of the shard's lease has written (a
higher epoch is stored), so a holder that lost its lease while its writes were in flight (a
paused process, a slow network) cannot write after its successor.

Settings (`[plugin.settings]`):
    address  required: Redis `host:port`, e.g. `127.0.0.1:6379`; grant the same in
             `[plugin.sandbox] tcp`
    prefix   the first part of every key (default `shoal`)

Keys: `<prefix>:<stream>:<shard>:<sequence>:<sub-sequence>` holds the record's data;
`<prefix>:<stream>:<shard>:delivered` lists the record keys in first-delivery order; the hash
`<prefix>:<stream>:<shard>:fence` holds the highest `epoch` accepted and its `owner`, and
counts the writes it `refused`. A connection or I/O failure is `retry` (the host backs off and
delivers the batch again, after a reconnect); a Redis error reply is `fatal`; a write the
fence refused is `retry` (the host stops this instance once it sees the lease lost).

Python's own `socket` module does the TCP: componentize-py's libc implements it over
`wasi:sockets`, which shoal opens only towards `[plugin.sandbox] tcp` destinations. Built
against the `processor` world by ./build.sh. componentize-py snapshots the modules the app
imports at build time; `socket.getaddrinfo` (inside `create_connection`) looks up the `idna`
codec at run time, which is then missing ("LookupError: unknown encoding: idna") unless the
module imports `encodings.idna` itself.
"""

import encodings.idna  # noqa: F401  socket.getaddrinfo encodes the host with it (see below)
import socket
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import WitWorld as _World, lease_token, log
from wit_world.imports.types import (
    Batch,
    CheckpointDirective,
    CheckpointDirective_BatchEnd,
    LogLevel,
    ProcessError_Fatal,
    ProcessError_Retry,
    ShardInfo,
    ShutdownReason,
)

# One atomic step: refuse the write (-1) if the fence (KEYS[3]) holds a higher epoch than
# this writer's (ARGV[2]); else raise the fence to it, store the record (KEYS[1] = ARGV[1]) if
# its key is new and then list the key (KEYS[2]): 1 if stored, 0 if already known.
STORE_FENCED = (
    "local held = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0') "
    "local epoch = tonumber(ARGV[2]) "
    "if epoch < held then redis.call('HINCRBY', KEYS[3], 'refused', 1) return -1 end "
    "if epoch > held then redis.call('HSET', KEYS[3], 'epoch', ARGV[2], 'owner', ARGV[3]) end "
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX') then "
    "redis.call('RPUSH', KEYS[2], KEYS[1]) return 1 end return 0"
)
# The reply of a write the fence refused.
REFUSED = ":-1"

_address: Tuple[str, int] = ("", 0)
_prefix = "shoal"
_epoch = b"0"
_owner = b""
_connection: Optional[socket.socket] = None
_replies = b""


def _command(*parts: bytes) -> bytes:
    """One RESP command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _connect() -> socket.socket:
    global _connection, _replies
    if _connection is None:
        _connection = socket.create_connection(_address, timeout=10)
        _replies = b""
    return _connection


def _line(conn: socket.socket) -> bytes:
    """The next CRLF-terminated reply line (without the CRLF)."""
    global _replies
    while b"\r\n" not in _replies:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        _replies += chunk
    line, _replies = _replies.split(b"\r\n", 1)
    return line


def _reply(conn: socket.socket) -> Optional[str]:
    """Read one reply; return its error text if it is an error reply, `REFUSED` if the fence
    refused the write."""
    line = _line(conn)
    if line.startswith(b"-"):
        return line[1:].decode("utf-8", "replace")
    if line == REFUSED.encode():
        return REFUSED
    if line.startswith(b"$") and int(line[1:]) >= 0:
        _line(conn)  # a bulk string's payload (short in this sink's replies)
    return None


class WitWorld(_World):
    """The exports of the `processor` world."""

    def initialize(self, shard: ShardInfo, settings: List[Tuple[str, str]]) -> None:
        global _address, _prefix, _epoch, _owner
        token = lease_token()
        _epoch, _owner = str(token.epoch).encode(), token.owner.encode()
        table = dict(settings)
        address = table.get("address")
        if not address or ":" not in address:
            raise Err(ProcessError_Fatal("setting `address` (Redis host:port) is required"))
        host, _, port = address.rpartition(":")
        try:
            _address = (host.strip("[]"), int(port))
        except ValueError:
            raise Err(ProcessError_Fatal(f"setting `address` = {address!r}: the port is not a number"))
        _prefix = table.get("prefix", "shoal")
        log(LogLevel.INFO, f"redis-sink {shard.shard_id}: delivering to redis at {address}")

    def process(self, shard: ShardInfo, batch: Batch) -> CheckpointDirective:
        global _connection
        if not batch.records:
            return CheckpointDirective_BatchEnd()
        base = f"{_prefix}:{shard.stream_name}:{shard.shard_id}"
        delivered = f"{base}:delivered".encode()
        fence = f"{base}:fence".encode()
        commands = b"".join(
            _command(
                b"EVAL",
                STORE_FENCED.encode(),
                b"3",
                f"{base}:{r.sequence_number}:{r.sub_sequence_number}".encode(),
                delivered,
                fence,
                bytes(r.data),
                _epoch,
                _owner,
            )
            for r in batch.records
        )
        host, port = _address
        try:
            conn = _connect()
            conn.sendall(commands)  # pipelined: every command, then every reply
            errors = [e for e in (_reply(conn) for _ in batch.records) if e is not None]
        except (OSError, ConnectionError, ValueError) as e:
            if _connection is not None:
                _connection.close()
            _connection = None
            raise Err(ProcessError_Retry(f"redis at {host}:{port}: {e}"))
        refused = errors.count(REFUSED)
        if refused:
            raise Err(ProcessError_Retry(
                f"redis at {host}:{port}: {refused} writes refused as stale (lease epoch "
                f"{_epoch.decode()} of {_owner.decode()}): a later holder of {shard.shard_id}'s "
                "lease has written"
            ))
        if errors:
            raise Err(ProcessError_Fatal(f"redis at {host}:{port} answered an error: {errors[0]}"))
        return CheckpointDirective_BatchEnd()

    def shutdown(self, shard: ShardInfo, reason: ShutdownReason) -> None:
        global _connection
        if _connection is not None:
            _connection.close()
            _connection = None
