// `{{name}}`: a shoal record processor in JavaScript, built with componentize-qjs.
//
// shoal calls `initialize` once per shard instance, `process` for every batch, and
// `shutdown` when the instance stops serving the shard. Build with `bash build.sh`; try it
// with `shoal run --config shoal.toml`.
//
// How the WIT maps to JavaScript: exports are this module's exported functions; records
// are objects with camelCase fields (`record.sequenceNumber`); `list<u8>` is a Uint8Array;
// variants are `{ tag, val }`; enums are their case name as a string. To return an error,
// throw an object whose `payload` is `{ tag: 'retry' | 'fatal', val: message }`: `retry`
// delivers the batch again, `fatal` applies the poison policy. Any other exception traps
// the instance: shoal builds a fresh one and retries the batch. `log` is a global.

let records = 0;
let bytes = 0;
let sinceReport = 0;
let reportEvery = 100;

export function initialize(shard, settings) {
    const value = new Map(settings).get('report_every');
    reportEvery = Math.max(1, Number(value ?? 100) || 100);
    log('info', `${shard.shardId}: starting, reporting every ${reportEvery} records`);
}

export function process(shard, batch) {
    for (const record of batch.records) {
        // Deliver record.data to its destination here.
        records += 1;
        bytes += record.data.length;
        sinceReport += 1;
    }
    if (sinceReport >= reportEvery) {
        log('info', `${shard.shardId}: ${records} records, ${bytes} bytes so far`);
        sinceReport = 0;
    }
    // Everything up to the batch's last record is done: checkpoint it.
    return { tag: 'batch-end' };
}

export function shutdown(shard, reason) {
    log('info', `${shard.shardId}: ${reason} after ${records} records`);
}
