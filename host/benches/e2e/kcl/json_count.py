#!/usr/bin/env python3
"""json-count as an amazon_kclpy (v3 API) record processor for the REAL Java KCL 3.x
MultiLangDaemon: the same work as shoal's `json-count` guest (plugins/json-count) and the
Python guest examples/processors/python/json_count.py.

For every record: parse its data as JSON and count it by its `type` field ("(missing)" when
absent or when the value is not an object; non-string values are counted by their JSON text);
records that are not JSON are counted as skipped. Checkpoints at the end of every batch
(checkpoint() with no sequence number = the last record of the batch just delivered).

The MultiLangDaemon starts one such process per shard lease. Each process appends ONE JSON line
per report to the file named by $JSON_COUNT_OUT (if set), in a single write() on a file opened
with O_APPEND, so lines from several shard processes never interleave:

  {"shard_id": "...", "pid": 123, "event": "batch", "seen": 1000, "skipped": 0,
   "counts": {"click": 500, ...}, "ts_ms": 1700000000000}

`event` is "batch" (after every checkpointed batch), "shard_ended", "lease_lost" or
"shutdown_requested". `seen` is cumulative for this process (i.e. this shard lease). A harness
sums, over shards, the `seen` of the latest line of each shard_id (if a lease moves, a new
process starts from the last checkpoint, so take the latest pid's line per shard).

Process lifetime: the child exits when its stdin reaches EOF, i.e. as soon as the JVM is gone
(also after SIGKILL of the JVM; measured: gone within 1-3 s). PR_SET_PDEATHSIG is deliberately
not used: it fires when the JVM *thread* that spawned the child ends, and the daemon spawns from
a cached thread pool whose idle threads end after 60 s. A harness that wants certainty can start
run.sh in its own process group and kill the group.

Human-readable reports go to stderr every 1,000 records and at shutdown, as in json-count.
"""

import json
import os
import sys
import time

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

REPORT_EVERY = 1000


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class JsonCountProcessor(processor.RecordProcessorBase):
    def __init__(self):
        self.shard_id = "?"
        self.counts = {}
        self.seen = 0
        self.skipped = 0
        self.since_report = 0
        out = os.environ.get("JSON_COUNT_OUT")
        self.out_fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if out else None

    # -- reporting ---------------------------------------------------------------------
    def write_counts(self, event):
        if self.out_fd is None:
            return
        now = int(time.time() * 1000)
        line = json.dumps({
            "shard_id": self.shard_id,
            "pid": os.getpid(),
            "event": event,
            "seen": self.seen,
            "skipped": self.skipped,
            "counts": self.counts,
            "ts_ms": now,
        }, separators=(",", ":"), sort_keys=True) + "\n"
        os.write(self.out_fd, line.encode())

    def report(self, why):
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        log(f"{self.shard_id} counts by type ({why}): {counts} | {self.seen} records, "
            f"{self.skipped} skipped as not JSON")
        self.since_report = 0

    def checkpoint(self, checkpointer):
        try:
            checkpointer.checkpoint()
        except kcl.CheckpointError as e:
            # ShutdownException / InvalidStateException: the lease is gone; the next owner
            # restarts from the last successful checkpoint.
            log(f"{self.shard_id} checkpoint failed: {e.value}")

    # -- amazon_kclpy v3 API -----------------------------------------------------------
    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
        log(f"{self.shard_id} initialize at {initialize_input.sequence_number}")

    def process_records(self, process_records_input):
        for record in process_records_input.records:
            self.seen += 1
            self.since_report += 1
            try:
                value = json.loads(record.binary_data)
                key = value.get("type", "(missing)") if isinstance(value, dict) else "(missing)"
                key = key if isinstance(key, str) else json.dumps(key)
                self.counts[key] = self.counts.get(key, 0) + 1
            except ValueError as e:
                self.skipped += 1
                log(f"{self.shard_id} skipping record {record.sequence_number}: not JSON: {e}")
            if self.since_report >= REPORT_EVERY:
                self.report("periodic")
        self.checkpoint(process_records_input.checkpointer)
        self.write_counts("batch")

    def lease_lost(self, lease_lost_input):
        self.report("lease lost")
        self.write_counts("lease_lost")

    def shard_ended(self, shard_ended_input):
        self.report("shard ended")
        self.checkpoint(shard_ended_input.checkpointer)
        self.write_counts("shard_ended")

    def shutdown_requested(self, shutdown_requested_input):
        self.report("shutdown")
        self.checkpoint(shutdown_requested_input.checkpointer)
        self.write_counts("shutdown_requested")


if __name__ == "__main__":
    kcl.KCLProcess(JsonCountProcessor()).run()
