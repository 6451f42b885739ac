// A shoal record processor in JavaScript: the conformance `filter` processor
// (docs/CONFORMANCE.md). It counts JSON records whose field `<field>` equals
// `<value>` and sums their `amount`, and it obeys the suite's test commands.
//
// Built with componentize-qjs (QuickJS) against `wit/filter.wit`, which is
// shoal's `processor` world plus two WASI imports. How WIT maps to JavaScript:
//
// - Exports are this module's exported functions, in camelCase.
// - Records are plain objects with camelCase fields (`shard.shardId`,
//   `record.sequenceNumber`); `list<u8>` is a Uint8Array; u64/s64 are numbers
//   (exact up to 2^53); `option<T>` is the value or null.
// - Variants are `{ tag, val }` (`{ tag: 'at', val: position }`); enums are
//   their case name as a string (`'info'`, `'shard-end'`).
// - A `result` return: return the `ok` value (or nothing), throw for `err`.
//   The thrown value's `payload` property is the `err` value (ProcessError
//   below). Any other exception escaping an export is a trap: shoal discards
//   the instance, builds a fresh one and retries the batch.
// - The world's own imports are global functions in camelCase (`log`,
//   `leaseToken`); interface imports are ES modules named by their WIT name.

import { getEnvironment } from 'wasi:cli/environment@0.2.12';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

/** A guest error: the export returns `err(process-error.<kind>(message))`. */
class ProcessError extends Error {
    /** @param {'retry' | 'fatal'} kind @param {string} message */
    constructor(kind, message) {
        super(`${kind}: ${message}`);
        this.name = 'ProcessError';
        this.payload = { tag: kind, val: message };
    }
}

// Per-instance state. shoal builds one instance per shard and a fresh one after
// a trap, so module-level variables are per shard. Top-level code runs once, at
// build time (the initialized engine is snapshotted into the component): keep it
// to constants, and call imports (log, WASI) only from the exports.
let field = 'type';
let value = 'purchase';
let total = 0;

/**
 * Called once per instance before the first batch.
 * @param {{streamName: string, shardId: string}} shard
 * @param {[string, string][]} settings  the `[plugin.settings]` table
 */
export function initialize(shard, settings) {
    const config = new Map(settings);
    field = config.get('field') ?? 'type';
    value = config.get('value') ?? 'purchase';
    total = 0;
    log('info', `initialize ${shard.shardId} field=${field} value=${value}`);
}

/**
 * Process one batch and say how far shoal may checkpoint.
 * @returns {{tag: 'none' | 'batch-end' | 'at' | 'rewind', val?: object}}
 */
export function process(shard, batch) {
    let matched = 0;
    let skipped = 0;
    for (const record of batch.records) {
        const event = parseObject(record.data);
        if (event === undefined) {
            log('warn', `skip ${record.sequenceNumber}: not a JSON object`);
            skipped += 1;
            continue;
        }
        if (typeof event.shoal_test === 'string') {
            const directive = testCommand(event, record);
            if (directive !== undefined) {
                return directive; // ends the batch at once, without a summary
            }
            continue;
        }
        if (Object.hasOwn(event, field) && event[field] === value) {
            matched += 1;
            if (typeof event.amount === 'number') {
                total += event.amount;
            }
        }
    }
    const n = batch.records.length;
    log('info', `batch ${n} records ${matched} matched ${skipped} skipped total ${formatTotal(total)}`);
    return { tag: 'batch-end' };
}

/** Called once when shoal stops delivering batches to this instance. */
export function shutdown(shard, reason) {
    log('info', `shutdown ${shard.shardId} ${reason}`);
}

/**
 * Runs the conformance test command of `event` (docs/CONFORMANCE.md). Returns
 * the directive that ends the batch, or undefined to go on with the next record.
 */
function testCommand(event, record) {
    const position = {
        sequenceNumber: record.sequenceNumber,
        subSequenceNumber: record.subSequenceNumber,
    };
    switch (event.shoal_test) {
        case 'retry':
            throw new ProcessError('retry', 'conformance retry');
        case 'fatal':
            throw new ProcessError('fatal', 'conformance fatal');
        case 'trap':
            throw new Error('conformance trap'); // no payload: a trap
        case 'at':
            return { tag: 'at', val: position };
        case 'rewind':
            return { tag: 'rewind', val: position };
        case 'none':
            return { tag: 'none' };
        case 'read-file': {
            const path = String(event.path);
            log('info', `read-file ${path}: ${canReadFile(path) ? 'allowed' : 'denied'}`);
            return undefined;
        }
        case 'env': {
            const name = String(event.name);
            const set = getEnvironment().some(([key]) => key === name);
            log('info', `env ${name}: ${set ? 'set' : 'unset'}`);
            return undefined;
        }
        case 'lease-token': {
            const token = leaseToken(); // {epoch, owner}
            log('info', `lease-token epoch=${token.epoch} owner=${token.owner}`);
            return undefined;
        }
        default:
            log('warn', `unknown test command ${JSON.stringify(event.shoal_test)} in ${record.sequenceNumber}`);
            return undefined;
    }
}

/** The record's data as a JSON object, or undefined if it is anything else. */
function parseObject(data) {
    let parsed;
    try {
        parsed = JSON.parse(decodeUtf8(data));
    } catch {
        return undefined; // not UTF-8, or not JSON
    }
    const isObject = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
    return isObject ? parsed : undefined;
}

// QuickJS has no TextDecoder. atob(bytes.toBase64()) turns the bytes into a
// Latin-1 string (one char per byte) natively, the fastest way QuickJS has; for
// pure ASCII, the common case for JSON, that is already the text. Otherwise
// escape() turns each byte into %XX and decodeURIComponent decodes the UTF-8,
// throwing URIError on malformed input.
const NON_ASCII = /[\x80-\xff]/;

function decodeUtf8(bytes) {
    const latin1 = atob(bytes.toBase64());
    return NON_ASCII.test(latin1) ? decodeURIComponent(escape(latin1)) : latin1;
}

/** An integral total prints as an integer (`42`, never `4.2e+21`), else shortest round-trip. */
function formatTotal(n) {
    return Number.isInteger(n) ? BigInt(n).toString() : String(n);
}

// WASI filesystem access. A guest sees only the directories the host config
// grants (`[[plugin.sandbox.dirs]]`, none by default), each under a guest path.
let preopens;

/** Whether the file at the absolute guest `path` can be opened and read. */
function canReadFile(path) {
    preopens ??= getDirectories(); // own handles: fetch once per instance
    for (const [dir, guestPath] of preopens) {
        const relative = relativeTo(guestPath, path);
        if (relative === undefined) {
            continue;
        }
        try {
            const file = dir.openAt({ symlinkFollow: true }, relative, {}, { read: true });
            try {
                readAll(file);
            } finally {
                file[Symbol.dispose]?.();
            }
            return true;
        } catch {
            return false; // e.g. not found, a directory, or escaping the grant
        }
    }
    return false; // not under any granted directory
}

/** `path` relative to the preopen `root`, or undefined if it is not inside it. */
function relativeTo(root, path) {
    const base = root.length > 1 ? root.replace(/\/+$/, '') : root;
    if (path === base) {
        return '.';
    }
    const prefix = base.endsWith('/') ? base : `${base}/`;
    return path.startsWith(prefix) ? path.slice(prefix.length) : undefined;
}

/** Reads a file descriptor to its end; returns the number of bytes. */
function readAll(file) {
    let offset = 0;
    for (;;) {
        const [bytes, end] = file.read(64 * 1024, offset);
        offset += bytes.length;
        if (end || bytes.length === 0) {
            return offset;
        }
    }
}
