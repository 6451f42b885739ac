#!/usr/bin/env python3
"""A record processor speaking the KCL MultiLangDaemon protocol (one JSON object per line
on stdin/stdout, record data in base64), shaped like an amazon_kclpy application: the
baseline of the end-to-end benchmark (host/benches/e2e/main.rs).

Usage: multilang_child.py json-count          count records by their `type` field
       multilang_child.py archive <directory> append each record as a JSON line to
                                              <directory>/<shard-id>.jsonl

Both do what the `json-count` and `archive` guest plugins do, in the same order, and
checkpoint at the end of every batch (a `checkpoint` request with a null sequence number,
which the daemon reads as "the last record of this batch").
"""

import base64
import json
import sys


class JsonCount:
    """Counts records by `type`; reports every 1,000 records and at shutdown (stderr)."""

    def __init__(self, shard_id):
        self.shard_id = shard_id
        self.counts = {}
        self.seen = 0
        self.skipped = 0
        self.since_report = 0

    def process(self, records):
        for record in records:
            self.seen += 1
            self.since_report += 1
            try:
                value = json.loads(base64.b64decode(record["data"]))
                key = value.get("type", "(missing)") if isinstance(value, dict) else "(missing)"
                key = key if isinstance(key, str) else json.dumps(key)
                self.counts[key] = self.counts.get(key, 0) + 1
            except ValueError as e:
                self.skipped += 1
                log(f"{self.shard_id} skipping record {record['sequenceNumber']}: not JSON: {e}")
            if self.since_report >= 1000:
                self.report("periodic")

    def report(self, why):
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        log(f"{self.shard_id} counts by type ({why}): {counts} | {self.seen} records, "
            f"{self.skipped} skipped as not JSON")
        self.since_report = 0

    def shutdown(self):
        self.report("shutdown")


class Archive:
    """Appends every record as one JSON line; one write and a flush per batch."""

    def __init__(self, shard_id, directory):
        self.shard_id = shard_id
        self.file = open(f"{directory}/{shard_id}.jsonl", "a", encoding="utf-8")

    def process(self, records):
        lines = []
        for r in records:
            lines.append(json.dumps({
                "shard_id": self.shard_id,
                "sequence_number": r["sequenceNumber"],
                "sub_sequence_number": r.get("subSequenceNumber", 0),
                "partition_key": r["partitionKey"],
                "approximate_arrival_ms": r.get("approximateArrivalTimestamp"),
                "data_base64": r["data"],
            }, separators=(",", ":")))
            lines.append("\n")
        self.file.write("".join(lines))
        self.file.flush()

    def shutdown(self):
        self.file.close()


def log(line):
    """One line to stderr in one write, so the children sharing a log never interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def checkpoint():
    """Ask the daemon to checkpoint the batch and wait for its answer."""
    send({"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None})
    answer = json.loads(sys.stdin.readline())
    if answer.get("action") != "checkpoint" or answer.get("error"):
        raise RuntimeError(f"checkpoint failed: {answer}")


def main():
    kind = sys.argv[1]
    processor = None
    for line in sys.stdin:
        message = json.loads(line)
        action = message["action"]
        if action == "initialize":
            shard_id = message["shardId"]
            processor = JsonCount(shard_id) if kind == "json-count" else Archive(shard_id, sys.argv[2])
        elif action == "processRecords":
            processor.process(message["records"])
            checkpoint()
        elif action in ("shutdownRequested", "shardEnded"):
            processor.shutdown()
            checkpoint()
        elif action == "leaseLost":
            processor.shutdown()
        else:
            raise RuntimeError(f"unknown action {action!r}")
        send({"action": "status", "responseFor": action})


if __name__ == "__main__":
    main()
