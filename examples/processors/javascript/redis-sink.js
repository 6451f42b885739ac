// A shoal record processor in JavaScript: `redis-sink`, the same processor as the
// Rust `plugins/redis-sink` and the Python `examples/processors/python/redis_sink.py`.
// It delivers every record to Redis over TCP (granted in `[plugin.sandbox] tcp`),
// idempotently: each record is stored under a key made of its stream, shard,
// sequence and sub-sequence numbers, only if that key is new, and a newly stored key
// is appended to the shard's delivery list in the same atomic step (one `EVAL`).
// Delivery is at least once (a batch is delivered again after a crash before its
// checkpoint); the sink turns that into effectively once.
//
// Fenced, as the Rust sink is: every write carries the instance's lease token (the
// world's `leaseToken()` import, a global like `log`), and the same atomic step
// refuses it if a later holder of the shard's lease has written (a higher epoch is
// stored), so a holder that lost its lease while its writes were in flight (a paused
// process, a slow network) cannot write after its successor.
//
// Settings (`[plugin.settings]`):
// - `address` (required): Redis `host:port`, e.g. `127.0.0.1:6379` or `[::1]:6379`
//   (grant the same in `[plugin.sandbox] tcp`).
// - `prefix` (default `shoal`): the first part of every key.
//
// Keys: `<prefix>:<stream>:<shard>:<sequence>:<sub-sequence>` holds the record's
// data; `<prefix>:<stream>:<shard>:delivered` lists the record keys in
// first-delivery order; the hash `<prefix>:<stream>:<shard>:fence` holds the highest
// `epoch` accepted and its `owner`, and counts the writes it `refused` (a refused
// write is `retry`: the host stops this instance once it sees the lease lost). Each
// non-empty batch is pipelined: every command goes out,
// then every reply is read. A connection or I/O failure (refused or ungranted
// connect, reset, closed, 10 s without progress) closes the connection and is
// `retry` (the host backs off and delivers the batch again; the next attempt
// reconnects); a Redis error reply is `fatal`. The connection stays open across
// batches (one per instance, so per shard) and is closed on shutdown.
//
// QuickJS has no socket API, so the TCP is the WASI 0.2.12 socket interfaces,
// imported by `wit/redis-sink/redis-sink.wit` and called as ES modules (the
// WIT-to-JavaScript mapping is the one `app.js` and `http-sink.js` describe):
// `instanceNetwork()`, `resolveAddresses(network, host)` (shoal resolves only
// names a grant names; an IP literal comes back as itself), `createTcpSocket`,
// `socket.startConnect(network, address)` and `finishConnect()` (which gives the
// input and output streams), and the streams' non-blocking `read`, `checkWrite`,
// `write` and `flush`, waited on with `poll([ready, timer])` so that no step waits
// longer than TIMEOUT_MS. Errors arrive as thrown Errors whose `payload` is the
// WIT error: an `error-code` enum case (a string such as 'connection-refused') or
// a `stream-error` (`{ tag: 'closed' }`, `{ tag: 'last-operation-failed', val }`).
// Resources are dropped explicitly, children first: pollables before their stream
// or socket, the streams before the socket.

import { instanceNetwork } from 'wasi:sockets/instance-network@0.2.12';
import { resolveAddresses } from 'wasi:sockets/ip-name-lookup@0.2.12';
import { createTcpSocket } from 'wasi:sockets/tcp-create-socket@0.2.12';
import { poll } from 'wasi:io/poll@0.2.12';
import { subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.12';

/**
 * One atomic step: refuse the write (-1) if the fence (KEYS[3]) holds a higher epoch
 * than this writer's (ARGV[2]); else raise the fence to it, store the record (KEYS[1]
 * = ARGV[1]) if its key is new and then list the key (KEYS[2]): 1 if stored, 0 if known.
 */
const STORE_FENCED =
    "local held = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0') " +
    "local epoch = tonumber(ARGV[2]) " +
    "if epoch < held then redis.call('HINCRBY', KEYS[3], 'refused', 1) return -1 end " +
    "if epoch > held then redis.call('HSET', KEYS[3], 'epoch', ARGV[2], 'owner', ARGV[3]) end " +
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('RPUSH', KEYS[2], KEYS[1]) return 1 end " +
    'return 0';

/** The start of every command: `EVAL <script> 3`, as RESP (the script is ASCII). */
const COMMAND_HEAD = `*9\r\n$4\r\nEVAL\r\n$${STORE_FENCED.length}\r\n${STORE_FENCED}\r\n$1\r\n3\r\n`;

/** What `readReply` returns for a write the fence refused. */
const REFUSED = Symbol('refused');

/** The longest any one connect, lookup, write or read step may wait (the Python sink's socket timeout). */
const TIMEOUT_MS = 10_000;
const READ_SIZE = 64 * 1024;

/** A guest error: the export returns `err(process-error.<kind>(message))`. */
class ProcessError extends Error {
    /** @param {'retry' | 'fatal'} kind @param {string} message */
    constructor(kind, message) {
        super(`${kind}: ${message}`);
        this.name = 'ProcessError';
        this.payload = { tag: kind, val: message };
    }
}

/** A connection or I/O failure: the batch is retried after a reconnect. */
class IoError extends Error {
    constructor(message) {
        super(message);
        this.name = 'IoError';
    }
}

// Per-instance state (one instance per shard). Top-level code runs once, at build
// time: keep it to constants.
let address = '';
let host = '';
let port = 0;
let prefix = 'shoal';
/** The lease holding this instance writes under: `{epoch, owner}` (`leaseToken()`). */
let token = { epoch: 0, owner: '' };
/** @type {Connection | null} */
let connection = null;

/**
 * Called once per instance before the first batch.
 * @param {{streamName: string, shardId: string}} shard
 * @param {[string, string][]} settings  the `[plugin.settings]` table
 */
export function initialize(shard, settings) {
    const config = new Map(settings);
    const value = config.get('address');
    if (!value || !value.includes(':')) {
        throw new ProcessError('fatal', 'setting `address` (Redis host:port) is required');
    }
    const colon = value.lastIndexOf(':');
    const portText = value.slice(colon + 1);
    if (!/^[0-9]+$/.test(portText) || Number(portText) > 65535) {
        throw new ProcessError('fatal', `setting \`address\` = '${value}': the port is not a number`);
    }
    address = value;
    host = value.slice(0, colon).replace(/^\[|\]$/g, '');
    port = Number(portText);
    prefix = config.get('prefix') ?? 'shoal';
    token = leaseToken();
    closeConnection(); // a re-initialized instance starts afresh
    log('info', `redis-sink ${shard.shardId}: delivering to redis at ${address}`);
}

/**
 * Store every record of the batch once, and checkpoint its end.
 * @returns {{tag: 'batch-end'}}
 */
export function process(shard, batch) {
    const records = batch.records;
    if (records.length === 0) {
        return { tag: 'batch-end' };
    }
    const base = `${prefix}:${shard.streamName}:${shard.shardId}`;
    const list = utf8Latin1(`${base}:delivered`);
    const fence = utf8Latin1(`${base}:fence`);
    const epoch = String(token.epoch);
    const owner = utf8Latin1(token.owner);
    const tail = `$${epoch.length}\r\n${epoch}\r\n$${owner.length}\r\n${owner}\r\n`;
    const out = new ByteWriter(records.length * 256);
    for (const r of records) {
        const key = utf8Latin1(`${base}:${r.sequenceNumber}:${r.subSequenceNumber}`);
        // One RESP array of bulk strings:
        // EVAL <script> 3 <key> <list> <fence> <data> <epoch> <owner>.
        out.text(
            `${COMMAND_HEAD}$${key.length}\r\n${key}\r\n$${list.length}\r\n${list}\r\n` +
                `$${fence.length}\r\n${fence}\r\n$${r.data.length}\r\n`,
        );
        out.bytes(r.data);
        out.text(`\r\n${tail}`);
    }
    let errors;
    try {
        const conn = (connection ??= connect());
        conn.writeAll(out.result()); // pipelined: every command, then every reply
        errors = [];
        for (let i = 0; i < records.length; i += 1) {
            const error = readReply(conn);
            if (error !== null) errors.push(error);
        }
    } catch (e) {
        if (!(e instanceof IoError)) {
            throw e; // a bug: trap
        }
        closeConnection(); // it may be half-used: reconnect on the retry
        throw new ProcessError('retry', `redis at ${address}: ${e.message}`);
    }
    const refused = errors.filter((e) => e === REFUSED).length;
    if (refused > 0) {
        throw new ProcessError(
            'retry',
            `redis at ${address}: ${refused} writes refused as stale (lease epoch ${token.epoch} of ` +
                `${token.owner}): a later holder of ${shard.shardId}'s lease has written`,
        );
    }
    if (errors.length > 0) {
        throw new ProcessError('fatal', `redis at ${address} answered an error: ${errors[0]}`);
    }
    return { tag: 'batch-end' };
}

/** Called once when shoal stops delivering batches to this instance. */
export function shutdown(_shard, _reason) {
    closeConnection();
}

function closeConnection() {
    if (connection !== null) {
        connection.close();
        connection = null;
    }
}

// ---------------------------------------------------------------------------
// RESP replies (as far as this sink needs them).

/**
 * Read one reply: its error text if it is an error reply (or holds one), REFUSED for
 * the fence's refusal (`:-1`), else null.
 */
function readReply(conn) {
    const line = conn.readLine();
    const kind = line.slice(0, 1);
    const rest = line.slice(1);
    const bad = () => new IoError(`unexpected reply \`${line}\``);
    switch (kind) {
        case '+':
            return null;
        case ':':
            return rest === '-1' ? REFUSED : null;
        case '-':
            return decodeUtf8Lossy(rest);
        case '$': {
            if (!/^-?[0-9]+$/.test(rest)) throw bad();
            const len = Number(rest);
            if (len >= 0) conn.skip(len + 2);
            return null;
        }
        case '*': {
            if (!/^-?[0-9]+$/.test(rest)) throw bad();
            for (let n = Number(rest); n > 0; n -= 1) {
                const error = readReply(conn);
                if (error !== null) return error;
            }
            return null;
        }
        default:
            throw bad();
    }
}

// ---------------------------------------------------------------------------
// TCP over wasi:sockets, every wait bounded by TIMEOUT_MS.

/** The `error-code` (or other WIT error) a thrown Error carries, as text. */
function codeOf(e) {
    const p = e?.payload;
    if (typeof p === 'string') return p;
    return p?.tag ?? String(e?.message ?? e);
}

/** Calls `f`; a thrown WIT error becomes an IoError "`what`: <code>". */
function io(what, f) {
    try {
        return f();
    } catch (e) {
        if (e instanceof IoError || e instanceof ProcessError) throw e;
        throw new IoError(`${what}: ${codeOf(e)}`);
    }
}

/** Waits until `pollable` is ready, at most TIMEOUT_MS; else IoError "`what` timed out". */
function wait(pollable, what) {
    const timer = subscribeDuration(TIMEOUT_MS * 1_000_000);
    try {
        const ready = poll([pollable, timer]);
        if (!Array.from(ready).includes(0)) {
            throw new IoError(`${what} timed out after ${TIMEOUT_MS / 1000} s`);
        }
    } finally {
        timer[Symbol.dispose]();
    }
}

/** Connect to `host:port`: each address the name resolves to in turn, the last failure if none answers. */
function connect() {
    const network = instanceNetwork();
    try {
        let last = new IoError(`resolve ${host}: no address`);
        for (const ip of resolve(network)) {
            const remote =
                ip.tag === 'ipv4'
                    ? { tag: 'ipv4', val: { port, address: ip.val } }
                    : { tag: 'ipv6', val: { port, flowInfo: 0, address: ip.val, scopeId: 0 } };
            try {
                return connectTo(network, remote);
            } catch (e) {
                if (!(e instanceof IoError)) throw e;
                last = e;
            }
        }
        throw last;
    } finally {
        network[Symbol.dispose]();
    }
}

/** The addresses `host` resolves to (an IP literal: itself). */
function resolve(network) {
    const stream = io(`resolve ${host}`, () => resolveAddresses(network, host));
    const addresses = [];
    let pollable;
    try {
        for (;;) {
            let next;
            try {
                next = stream.resolveNextAddress();
            } catch (e) {
                if (codeOf(e) !== 'would-block') throw new IoError(`resolve ${host}: ${codeOf(e)}`);
                pollable ??= stream.subscribe();
                wait(pollable, `resolve ${host}`);
                continue;
            }
            if (next == null) return addresses;
            addresses.push(next);
        }
    } finally {
        pollable?.[Symbol.dispose]();
        stream[Symbol.dispose]();
    }
}

function connectTo(network, remote) {
    const shown = remote.tag === 'ipv4' ? `${remote.val.address.join('.')}:${port}` : `[${host}]:${port}`;
    const what = `connect to ${shown}`;
    const socket = io(what, () => createTcpSocket(remote.tag));
    let pollable;
    try {
        io(what, () => socket.startConnect(network, remote));
        pollable = socket.subscribe();
        for (;;) {
            try {
                const [input, output] = socket.finishConnect();
                pollable[Symbol.dispose]();
                pollable = undefined;
                return new Connection(socket, input, output);
            } catch (e) {
                if (codeOf(e) !== 'would-block') throw new IoError(`${what}: ${codeOf(e)}`);
                wait(pollable, what);
            }
        }
    } catch (e) {
        pollable?.[Symbol.dispose]();
        socket[Symbol.dispose]();
        throw e;
    }
}

/** A `stream-error` as an IoError. */
function streamError(e, what) {
    const error = e?.payload;
    if (error?.tag === 'closed') {
        return new IoError('redis closed the connection');
    }
    if (error?.tag === 'last-operation-failed') {
        try {
            return new IoError(`${what}: ${error.val.toDebugString()}`);
        } finally {
            error.val[Symbol.dispose]();
        }
    }
    return new IoError(`${what}: ${codeOf(e)}`);
}

/** One open connection: its socket, streams, their pollables and the unread reply bytes. */
class Connection {
    constructor(socket, input, output) {
        this.socket = socket;
        this.input = input;
        this.output = output;
        this.readable = input.subscribe();
        this.writable = output.subscribe();
        this.buffer = new Uint8Array(0);
        this.pos = 0;
    }

    /** Drops everything, children first. */
    close() {
        this.readable[Symbol.dispose]();
        this.writable[Symbol.dispose]();
        this.input[Symbol.dispose]();
        this.output[Symbol.dispose]();
        this.socket[Symbol.dispose]();
    }

    /** Writes and flushes all of `bytes`, as fast as the stream permits. */
    writeAll(bytes) {
        const out = this.output;
        let offset = 0;
        while (offset < bytes.length) {
            const permit = this.checkWrite();
            if (permit === 0) {
                wait(this.writable, 'write');
                continue;
            }
            const end = offset + Math.min(Number(permit), bytes.length - offset);
            try {
                out.write(bytes.subarray(offset, end));
            } catch (e) {
                throw streamError(e, 'write');
            }
            offset = end;
        }
        try {
            out.flush();
        } catch (e) {
            throw streamError(e, 'flush');
        }
        while (this.checkWrite() === 0) {
            wait(this.writable, 'flush'); // ready once the flush is done
        }
    }

    checkWrite() {
        try {
            return Number(this.output.checkWrite());
        } catch (e) {
            throw streamError(e, 'write');
        }
    }

    /** Reads more reply bytes into the buffer (at least one). */
    fill() {
        for (;;) {
            let chunk;
            try {
                chunk = this.input.read(READ_SIZE);
            } catch (e) {
                throw streamError(e, 'read');
            }
            if (chunk.length === 0) {
                wait(this.readable, 'read');
                continue;
            }
            if (this.pos >= this.buffer.length) {
                this.buffer = chunk;
            } else {
                const rest = this.buffer.subarray(this.pos);
                const joined = new Uint8Array(rest.length + chunk.length);
                joined.set(rest);
                joined.set(chunk, rest.length);
                this.buffer = joined;
            }
            this.pos = 0;
            return;
        }
    }

    /** The next CRLF-terminated reply line, without the CRLF, as Latin-1 text. */
    readLine() {
        let from = this.pos;
        for (;;) {
            const cr = this.buffer.indexOf(13, from);
            if (cr >= 0 && cr + 1 < this.buffer.length) {
                if (this.buffer[cr + 1] === 10) {
                    const line = latin1(this.buffer.subarray(this.pos, cr));
                    this.pos = cr + 2;
                    return line;
                }
                from = cr + 1;
                continue;
            }
            const scanned = (cr >= 0 ? cr : this.buffer.length) - this.pos;
            this.fill();
            from = this.pos + scanned;
        }
    }

    /** Skips `n` reply bytes. */
    skip(n) {
        while (this.buffer.length - this.pos < n) {
            n -= this.buffer.length - this.pos;
            this.pos = this.buffer.length;
            this.fill();
        }
        this.pos += n;
    }
}

// ---------------------------------------------------------------------------
// Bytes and text. QuickJS has no TextEncoder/TextDecoder (see `app.js`).

/** A growing byte buffer; `text` takes a Latin-1 string (one char per byte). */
class ByteWriter {
    constructor(capacity) {
        this.buf = new Uint8Array(Math.max(capacity, 1024));
        this.len = 0;
    }
    reserve(n) {
        if (this.len + n > this.buf.length) {
            const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
            bigger.set(this.buf.subarray(0, this.len));
            this.buf = bigger;
        }
    }
    text(s) {
        this.reserve(s.length);
        for (let i = 0; i < s.length; i += 1) this.buf[this.len + i] = s.charCodeAt(i);
        this.len += s.length;
    }
    bytes(b) {
        this.reserve(b.length);
        this.buf.set(b, this.len);
        this.len += b.length;
    }
    result() {
        return this.buf.subarray(0, this.len);
    }
}

const NON_ASCII = /[^\x00-\x7f]/;

/** `text` encoded as UTF-8, one char per byte (so its length is the byte length). */
function utf8Latin1(text) {
    return NON_ASCII.test(text) ? unescape(encodeURIComponent(text)) : text;
}

function latin1(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 4096) {
        s += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096));
    }
    return s;
}

/** A Latin-1 string of UTF-8 bytes as text (as is, if it is not valid UTF-8). */
function decodeUtf8Lossy(s) {
    if (!/[\x80-\xff]/.test(s)) return s;
    try {
        return decodeURIComponent(escape(s));
    } catch {
        return s;
    }
}
