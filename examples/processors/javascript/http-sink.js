// A shoal record processor in JavaScript: `http-sink`, the same processor as the
// Rust `plugins/http-sink`. It POSTs each batch as one JSON document to an HTTP
// endpoint, with the batch's first and last positions as its idempotency key, and
// checkpoints only after the endpoint accepted it. The endpoint must be granted in
// `[plugin.sandbox] http`.
//
// Settings (`[plugin.settings]`):
// - `url` (required): e.g. `https://ingest.example.com/v1/records`.
// - `timeout_ms` (default 5000): connect, first-byte and between-bytes timeout (the
//   host caps each at the call deadline).
// - `max_redirects` (default 3): 3xx responses followed; each hop is a new request
//   that the host checks against the grants again.
//
// The body: `{"first", "last", "records": [{"approximate_arrival_ms", "data_base64",
// "partition_key", "sequence_number", "sub_sequence_number"}], "shard_id", "stream"}`
// (keys in the order the Rust processor's serde_json writes them, so both write the
// same bytes); the header `idempotency-key: <stream>/<shard>/<first>-<last>` (positions
// as `sequence.sub-sequence`) is the same on every retry of a batch, so an endpoint
// that honours it stores each batch once; with `consumer.stable_batches = true` in the
// host's config also when the batch is delivered again after a crash or a lease move
// (the host cuts it with the same first and last record), so each record is stored
// once. Without it such a re-delivery may cut the records differently, under a new
// key. Outcomes: 2xx → `batch-end`; 5xx, a timeout
// or a failed connection → `retry`; 4xx, a refused destination, an invalid URL or too
// many redirects → `fatal`.
//
// Built with componentize-qjs against `wit/http-sink/http-sink.wit` (shoal's
// `http-processor` world plus `wasi:http/types`) by `build-http-sink.mjs`, which
// works around componentize-qjs 0.4.5 not building wasi:http imports (see there);
// this file is written as if it did not need to. The WIT-to-JavaScript mapping is
// the one `app.js` describes; for the wasi:http resources used here:
// - Resources are classes exported by their interface's module: `new Fields()`,
//   `Fields.fromList(...)` (a `static` function), `new OutgoingRequest(fields)`;
//   methods are camelCase (`setPathWithQuery`, `blockingWriteAndFlush`).
// - A `result` return gives the `ok` value or throws an Error whose `payload` is
//   the `err` value (e.g. `{ tag: 'HTTP-request-denied' }`, `{ tag: 'closed' }`).
//   Nested results are `{ tag: 'ok' | 'err', val }`; `option<T>` is T or null.
// - Passing a resource to an `own<T>` parameter moves it. Everything else is
//   dropped here explicitly with `[Symbol.dispose]()`, children before parents
//   (a stream before its body, a pollable before its future): wasmtime refuses to
//   drop a resource that still has children, and the garbage collector would drop
//   them in no particular order.
// - Built with `--sync`: no async ABI, so waiting is `pollable.block()` and the
//   streams' `blocking*` methods.

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import {
    Fields,
    OutgoingRequest,
    OutgoingBody,
    RequestOptions,
    IncomingBody,
    httpErrorCode,
} from 'wasi:http/types@0.2.12';

/** A guest error: the export returns `err(process-error.<kind>(message))`. */
class ProcessError extends Error {
    /** @param {'retry' | 'fatal'} kind @param {string} message */
    constructor(kind, message) {
        super(`${kind}: ${message}`);
        this.name = 'ProcessError';
        this.payload = { tag: kind, val: message };
    }
}

/** Why a request got no response (the Rust SDK's `http::Error`). */
class HttpError extends Error {
    /** @param {'denied' | 'timeout' | 'connection' | 'invalid'} kind @param {string} [detail] */
    constructor(kind, detail = '') {
        super(describe(kind, detail));
        this.name = 'HttpError';
        this.kind = kind;
    }
}

function describe(kind, detail) {
    switch (kind) {
        case 'denied':
            return 'request denied by the host: no plugin.sandbox.http grant for this destination';
        case 'timeout':
            return `timed out: ${detail}`;
        case 'connection':
            return `connection failed: ${detail}`;
        default:
            return `invalid request: ${detail}`;
    }
}

const TIMEOUT_CODES = new Set([
    'connection-timeout',
    'connection-read-timeout',
    'connection-write-timeout',
    'HTTP-response-timeout',
    'DNS-timeout',
]);
const INVALID_CODES = new Set(['HTTP-request-URI-invalid', 'HTTP-request-method-invalid']);

/** A `wasi:http/types.error-code` value as an HttpError naming the code. */
function fromErrorCode(code) {
    const tag = code?.tag ?? String(code);
    if (tag === 'HTTP-request-denied') {
        return new HttpError('denied');
    }
    const name = code?.val == null ? tag : `${tag}(${JSON.stringify(code.val)})`;
    if (TIMEOUT_CODES.has(tag)) {
        return new HttpError('timeout', name);
    }
    if (INVALID_CODES.has(tag)) {
        return new HttpError('invalid', name);
    }
    return new HttpError('connection', name);
}

// Per-instance state (one instance per shard). Top-level code runs once, at build
// time: keep it to constants.
let url = '';
let timeoutMs = 5000;
let maxRedirects = 3;

/**
 * Called once per instance before the first batch.
 * @param {{streamName: string, shardId: string}} shard
 * @param {[string, string][]} settings  the `[plugin.settings]` table
 */
export function initialize(shard, settings) {
    const config = new Map(settings);
    if (!config.has('url')) {
        throw new ProcessError('fatal', 'setting `url` is required');
    }
    url = config.get('url');
    timeoutMs = parseUnsigned(config, 'timeout_ms', 5000, 2n ** 64n - 1n);
    maxRedirects = parseUnsigned(config, 'max_redirects', 3, 2n ** 32n - 1n);
    log('info', `initialize ${shard.shardId} url=${url} timeout_ms=${timeoutMs} max_redirects=${maxRedirects}`);
}

/** Setting `key` as an unsigned integer up to `max` (Rust's u64/u32 `parse`), or `fallback`. */
function parseUnsigned(config, key, fallback, max) {
    const v = config.get(key);
    if (v === undefined) {
        return fallback;
    }
    if (!/^\+?[0-9]+$/.test(v) || BigInt(v) > max) {
        throw new ProcessError('fatal', `setting ${key} = ${JSON.stringify(v)} is not valid`);
    }
    return Number(v);
}

/**
 * POST the batch and checkpoint its end once the endpoint accepted it.
 * @returns {{tag: 'batch-end'}}
 */
export function process(shard, batch) {
    const records = batch.records;
    if (records.length === 0) {
        return { tag: 'batch-end' };
    }
    const position = (r) => `${r.sequenceNumber}.${r.subSequenceNumber}`;
    const first = position(records[0]);
    const last = position(records[records.length - 1]);
    const key = `${shard.streamName}/${shard.shardId}/${first}-${last}`;
    const document = {
        first,
        last,
        records: records.map((r) => ({
            approximate_arrival_ms: r.approximateArrivalMs,
            data_base64: r.data.toBase64(),
            partition_key: r.partitionKey,
            sequence_number: r.sequenceNumber,
            sub_sequence_number: r.subSequenceNumber,
        })),
        shard_id: shard.shardId,
        stream: shard.streamName,
    };
    const body = encodeUtf8(JSON.stringify(document));
    const headers = [
        ['content-type', encodeUtf8('application/json')],
        ['idempotency-key', encodeUtf8(key)],
    ];

    let target = url;
    for (let hop = 0; hop <= maxRedirects; hop += 1) {
        let response;
        try {
            response = post(target, headers, body, timeoutMs);
        } catch (e) {
            if (!(e instanceof HttpError)) {
                throw e; // a bug: trap
            }
            const kind = e.kind === 'denied' || e.kind === 'invalid' ? 'fatal' : 'retry';
            throw new ProcessError(kind, `POST ${target}: ${e.message}`);
        }
        const status = response.status;
        if (status >= 200 && status <= 299) {
            return { tag: 'batch-end' };
        }
        if (status >= 300 && status <= 399) {
            const next = response.header('location');
            if (next === undefined) {
                throw new ProcessError('fatal', `POST ${target}: ${status} without a Location`);
            }
            target = resolveLocation(target, next);
            continue;
        }
        if (status >= 400 && status <= 499) {
            const text = Array.from(decodeUtf8Lossy(response.body)).slice(0, 200).join('');
            throw new ProcessError('fatal', `POST ${target}: ${status} ${text}`);
        }
        throw new ProcessError('retry', `POST ${target}: ${status}`);
    }
    throw new ProcessError('fatal', `POST ${url}: more than ${maxRedirects} redirects`);
}

/** Called once when shoal stops delivering batches to this instance. */
export function shutdown(_shard, _reason) {}

/** A `Location` value as an absolute URL (a path is taken relative to `current`'s origin). */
function resolveLocation(current, location) {
    if (location.includes('://')) {
        return location;
    }
    const start = current.indexOf('://');
    let originEnd = current.length;
    if (start >= 0) {
        const slash = current.indexOf('/', start + 3);
        if (slash >= 0) {
            originEnd = slash;
        }
    }
    return current.slice(0, originEnd) + location;
}

// ---------------------------------------------------------------------------
// A small blocking HTTP client over wasi:http/outgoing-handler (the Rust SDK's
// `shoal_sdk::http::post`). Throws HttpError when there is no response.

/**
 * POST `body` to `target` with `headers`, waiting at most `timeoutMs` at each step.
 * @returns {{status: number, headers: [string, Uint8Array][], body: Uint8Array, header(name: string): string | undefined}}
 */
function post(target, headers, body, timeoutMs) {
    const [scheme, authority, path] = splitUrl(target);
    const entries = headers.slice();
    if (body.length > 0) {
        entries.push(['content-length', encodeUtf8(String(body.length))]);
    }
    let fields;
    try {
        fields = Fields.fromList(entries);
    } catch (e) {
        throw new HttpError('invalid', `header: ${tagOf(e)}`);
    }
    const request = new OutgoingRequest(fields); // takes `fields`
    const invalid = (what) => new HttpError('invalid', `${what} of ${target}`);
    let outgoingBody;
    try {
        attempt(() => request.setMethod({ tag: 'post' }), () => invalid('method'));
        attempt(() => request.setScheme(scheme), () => invalid('scheme'));
        attempt(() => request.setAuthority(authority), () => invalid('authority'));
        attempt(() => request.setPathWithQuery(path), () => invalid('path'));
        outgoingBody = attempt(() => request.body(), () => invalid('body'));
    } catch (e) {
        outgoingBody?.[Symbol.dispose]();
        request[Symbol.dispose]();
        throw e;
    }

    const options = new RequestOptions();
    const ns = Math.min(timeoutMs * 1e6, Number.MAX_SAFE_INTEGER);
    for (const set of ['setConnectTimeout', 'setFirstByteTimeout', 'setBetweenBytesTimeout']) {
        try {
            options[set](ns);
        } catch {
            // the host does not support this timeout: ignore, as the Rust SDK does
        }
    }

    let pending;
    try {
        pending = handle(request, options); // takes `request` and `options`
    } catch (e) {
        outgoingBody[Symbol.dispose]();
        throw fromErrorCode(e.payload);
    }

    // If the host refused or failed the request, the body stream is closed: the reason
    // is in the response, so look there before reporting the body write.
    let sent;
    try {
        writeBody(outgoingBody, body);
        try {
            OutgoingBody.finish(outgoingBody, null); // takes `outgoingBody`
        } catch (e) {
            throw fromErrorCode(e.payload);
        }
        outgoingBody = undefined;
    } catch (e) {
        if (!(e instanceof HttpError)) {
            throw e;
        }
        sent = e;
        outgoingBody?.[Symbol.dispose]();
    }

    try {
        const pollable = pending.subscribe();
        pollable.block();
        pollable[Symbol.dispose]();
        const got = pending.get();
        if (got === null || got.tag === 'err') {
            throw new HttpError('connection', 'the response was already taken');
        }
        if (got.val.tag === 'err') {
            throw fromErrorCode(got.val.val);
        }
        const response = got.val.val;
        try {
            if (sent !== undefined) {
                throw sent;
            }
            return readResponse(response);
        } finally {
            response[Symbol.dispose]();
        }
    } finally {
        pending[Symbol.dispose]();
    }
}

/** Calls `f`; a thrown `result` error becomes `error()`. */
function attempt(f, error) {
    try {
        return f();
    } catch {
        throw error();
    }
}

/** The `tag` of a thrown WIT error, for messages. */
function tagOf(e) {
    return e?.payload?.tag ?? String(e?.payload ?? e);
}

function writeBody(outgoingBody, bytes) {
    let stream;
    try {
        stream = outgoingBody.write();
    } catch {
        throw new HttpError('invalid', 'request body already written');
    }
    try {
        for (let i = 0; i < bytes.length; i += 4096) {
            try {
                stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
            } catch (e) {
                throw streamError(e.payload);
            }
        }
    } finally {
        stream[Symbol.dispose](); // a child of the body: drop it before finishing the body
    }
}

function readResponse(response) {
    const status = response.status();
    const fields = response.headers();
    const headers = fields.entries().map(([name, value]) => [name.toLowerCase(), value]);
    fields[Symbol.dispose]();
    let incoming;
    try {
        incoming = response.consume();
    } catch {
        throw new HttpError('connection', 'no response body');
    }
    let body;
    try {
        body = readBody(incoming);
    } catch (e) {
        incoming[Symbol.dispose]();
        throw e;
    }
    IncomingBody.finish(incoming)[Symbol.dispose](); // takes `incoming`; drop the trailers
    return {
        status,
        headers,
        body,
        /** The first value of header `name` (case-insensitive), as text. */
        header(name) {
            const wanted = name.toLowerCase();
            const found = headers.find(([n]) => n === wanted);
            return found === undefined ? undefined : decodeUtf8Lossy(found[1]);
        },
    };
}

function readBody(incoming) {
    let stream;
    try {
        stream = incoming.stream();
    } catch {
        throw new HttpError('connection', 'response body already read');
    }
    const chunks = [];
    let length = 0;
    try {
        for (;;) {
            let chunk;
            try {
                chunk = stream.blockingRead(64 * 1024);
            } catch (e) {
                if (e.payload?.tag === 'closed') {
                    break;
                }
                throw streamError(e.payload);
            }
            chunks.push(chunk);
            length += chunk.length;
        }
    } finally {
        stream[Symbol.dispose](); // a child of the body: drop it before finishing the body
    }
    const out = new Uint8Array(length);
    let offset = 0;
    for (const chunk of chunks) {
        out.set(chunk, offset);
        offset += chunk.length;
    }
    return out;
}

/** A `wasi:io/streams.stream-error` as an HttpError. */
function streamError(error) {
    if (error?.tag !== 'last-operation-failed') {
        return new HttpError('connection', 'stream closed');
    }
    const ioError = error.val;
    try {
        const code = httpErrorCode(ioError);
        if (code !== null) {
            return fromErrorCode(code);
        }
        return new HttpError('connection', ioError.toDebugString());
    } finally {
        ioError[Symbol.dispose]();
    }
}

/** `scheme://authority/path?query` → its three parts (path `/` when absent). */
function splitUrl(target) {
    const at = target.indexOf('://');
    if (at < 0) {
        throw new HttpError('invalid', `\`${target}\` has no scheme`);
    }
    const schemeName = target.slice(0, at).toLowerCase();
    const rest = target.slice(at + 3);
    let scheme;
    if (schemeName === 'http') {
        scheme = { tag: 'HTTP' };
    } else if (schemeName === 'https') {
        scheme = { tag: 'HTTPS' };
    } else {
        throw new HttpError('invalid', `scheme \`${schemeName}\` in \`${target}\``);
    }
    const slash = rest.indexOf('/');
    let authority;
    let path;
    if (slash >= 0) {
        authority = rest.slice(0, slash);
        path = rest.slice(slash);
    } else if (rest.includes('?')) {
        throw new HttpError('invalid', `\`${target}\`: put a \`/\` before the query`);
    } else {
        authority = rest;
        path = '/';
    }
    if (authority === '') {
        throw new HttpError('invalid', `\`${target}\` has no host`);
    }
    return [scheme, authority, path];
}

// ---------------------------------------------------------------------------
// Text. QuickJS has no TextEncoder/TextDecoder. btoa/atob and the typed-array base64
// methods are native, so they carry the byte conversions (see `app.js`).

const NON_ASCII = /[^\x00-\x7f]/;

/** The UTF-8 bytes of `text`. */
function encodeUtf8(text) {
    const latin1 = NON_ASCII.test(text) ? unescape(encodeURIComponent(text)) : text;
    return Uint8Array.fromBase64(btoa(latin1));
}

/** `bytes` as text, each malformed sequence replaced by U+FFFD (Rust's `from_utf8_lossy`). */
function decodeUtf8Lossy(bytes) {
    const latin1 = atob(bytes.toBase64());
    if (!/[\x80-\xff]/.test(latin1)) {
        return latin1;
    }
    try {
        return decodeURIComponent(escape(latin1));
    } catch {
        // malformed: decode by hand below
    }
    let out = '';
    let i = 0;
    while (i < bytes.length) {
        const b = bytes[i];
        let need = 0;
        let cp = 0;
        let lo = 0x80;
        let hi = 0xbf;
        if (b < 0x80) {
            out += String.fromCharCode(b);
            i += 1;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            cp = b & 0x0f;
            if (b === 0xe0) lo = 0xa0;
            if (b === 0xed) hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            cp = b & 0x07;
            if (b === 0xf0) lo = 0x90;
            if (b === 0xf4) hi = 0x8f;
        } else {
            out += '\ufffd';
            i += 1;
            continue;
        }
        let j = i + 1;
        let ok = true;
        for (let k = 0; k < need; k += 1, j += 1) {
            const c = bytes[j];
            if (j >= bytes.length || c < lo || c > hi) {
                ok = false;
                break;
            }
            cp = (cp << 6) | (c & 0x3f);
            lo = 0x80;
            hi = 0xbf;
        }
        out += ok ? String.fromCodePoint(cp) : '\ufffd';
        i = j; // a maximal invalid prefix is one U+FFFD; the offending byte starts anew
    }
    return out;
}
