"""`json-count`: the Rust `plugins/json-count` guest in Python.

Parses each record as JSON, counts records by the value of a configured field, logs the
counts every `report_every` records and at shutdown, and skips records that are not JSON
with a warning. Checkpoints every batch. The log lines are the Rust guest's, word for word:

    <shard> counts by <field> (<why>): <key>=<n> ... | <seen> records, <skipped> skipped as not JSON

with `<why>` one of `periodic`, `shard end`, `lease lost`, `shutdown`, and the keys in
sorted order. The end-to-end benchmark (host/benches/e2e) runs it beside the Rust guest and
the Java KCL's Python processor and checks that the shutdown counts add up.

Settings (`[plugin.settings]` in the host's config):
    field         a dotted path such as `type` or `user.country` (default `type`)
    report_every  records between count reports (default 1000)

A record whose field is missing (or whose parent is not an object) counts as `(missing)`;
a string value counts as itself, any other value as its compact JSON text. Build with
./build.sh (world `processor`, `build/json-count.wasm`).
"""

import json
from dataclasses import dataclass, field as dataclass_field

from componentize_py_types import Err
from wit_world import WitWorld as _World, log
from wit_world.imports.types import (
    Batch,
    CheckpointDirective,
    CheckpointDirective_BatchEnd,
    LogLevel,
    ProcessError_Fatal,
    ShardInfo,
    ShutdownReason,
)


@dataclass
class _Counts:
    """What the processor remembers between calls (one instance per shard)."""

    field: list[str] = dataclass_field(default_factory=lambda: ["type"])
    report_every: int = 1000
    counts: dict[str, int] = dataclass_field(default_factory=dict)
    seen: int = 0
    skipped: int = 0
    since_report: int = 0


# Module-level state is per-shard state: the host creates one instance per shard (see app.py).
_state = _Counts()

_WHY = {
    ShutdownReason.SHARD_END: "shard end",
    ShutdownReason.LEASE_LOST: "lease lost",
    ShutdownReason.REQUESTED: "shutdown",
}


class WitWorld(_World):
    """The exports of the `processor` world."""

    def initialize(self, shard: ShardInfo, settings: list[tuple[str, str]]) -> None:
        global _state
        config = dict(settings)
        path = config.get("field", "type")
        if not path:
            raise Err(ProcessError_Fatal("setting `field` must not be empty"))
        try:
            report_every = int(config.get("report_every", "1000"))
        except ValueError:
            raise Err(ProcessError_Fatal(f"setting `report_every`: not a number: {config['report_every']!r}"))
        _state = _Counts(field=path.split("."), report_every=max(report_every, 1))

    def process(self, shard: ShardInfo, batch: Batch) -> CheckpointDirective:
        s = _state
        for record in batch.records:
            s.seen += 1
            s.since_report += 1
            try:
                value = json.loads(record.data.decode("utf-8"), parse_constant=_reject_constant)
            except ValueError as e:  # covers UnicodeDecodeError and json.JSONDecodeError
                s.skipped += 1
                log(
                    LogLevel.WARN,
                    f"{shard.shard_id} skipping record {record.sequence_number}/"
                    f"{record.sub_sequence_number} (partition key {record.partition_key}): "
                    f"not JSON: {e}",
                )
            else:
                key = _key_of(value, s.field)
                s.counts[key] = s.counts.get(key, 0) + 1
            if s.since_report >= s.report_every:
                _report(shard, "periodic")
        return CheckpointDirective_BatchEnd()

    def shutdown(self, shard: ShardInfo, reason: ShutdownReason) -> None:
        _report(shard, _WHY.get(reason, "shutdown"))


def _reject_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON (and serde_json) does not.
    raise ValueError(f"{name} is not JSON")


def _key_of(value: object, path: list[str]) -> str:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return "(missing)"
        value = value[part]
    if isinstance(value, str):
        return value
    # serde_json's compact form (its objects keep their keys sorted).
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _report(shard: ShardInfo, why: str) -> None:
    s = _state
    counts = " ".join(f"{k}={v}" for k, v in sorted(s.counts.items()))
    log(
        LogLevel.INFO,
        f"{shard.shard_id} counts by {'.'.join(s.field)} ({why}): {counts} | "
        f"{s.seen} records, {s.skipped} skipped as not JSON",
    )
    s.since_report = 0
