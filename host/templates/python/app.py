"""`{{name}}`: a shoal record processor in Python.

shoal calls `initialize` once per shard instance, `process` for every batch, and `shutdown`
when the instance stops serving the shard. Build with `bash build.sh` (componentize-py);
try it with `shoal run --config shoal.toml`.

Errors: return `Err(ProcessError_Retry(...))` when a destination is unavailable (the batch
comes again) or `Err(ProcessError_Fatal(...))` when it can never be processed (the poison
policy). An exception escaping an export traps the instance: shoal builds a fresh one and
retries the batch.
"""

from componentize_py_types import Err  # noqa: F401  (for the error cases above)
from wit_world import WitWorld as _World, log
from wit_world.imports.types import (
    Batch,
    CheckpointDirective,
    CheckpointDirective_BatchEnd,
    LogLevel,
    ShardInfo,
    ShutdownReason,
)

# One component instance per shard: module-level state is per-shard state.
_records = 0
_bytes = 0
_since_report = 0
_report_every = 100


class WitWorld(_World):
    def initialize(self, shard: ShardInfo, settings: list[tuple[str, str]]) -> None:
        global _report_every
        _report_every = max(1, int(dict(settings).get("report_every", "100")))
        log(LogLevel.INFO, f"{shard.shard_id}: starting, reporting every {_report_every} records")

    def process(self, shard: ShardInfo, batch: Batch) -> CheckpointDirective:
        global _records, _bytes, _since_report
        for record in batch.records:
            # Deliver record.data to its destination here.
            _records += 1
            _bytes += len(record.data)
            _since_report += 1
        if _since_report >= _report_every:
            log(LogLevel.INFO, f"{shard.shard_id}: {_records} records, {_bytes} bytes so far")
            _since_report = 0
        # Everything up to the batch's last record is done: checkpoint it.
        return CheckpointDirective_BatchEnd()

    def shutdown(self, shard: ShardInfo, reason: ShutdownReason) -> None:
        log(LogLevel.INFO, f"{shard.shard_id}: {reason.name} after {_records} records")
