//! `filter`, the Rust example processor: counts JSON records whose `<field>` equals
//! `<value>` and sums their `amount`, logging one summary line per batch. It also answers
//! the test commands of docs/CONFORMANCE.md, which every language's example implements.

use serde_json::{Map, Value};
use shoal_sdk::{Batch, CheckpointDirective, KinesisRecord, ProcessError, Processor, Settings, ShardInfo, ShutdownReason};

struct Filter {
    field: String,
    value: String,
    /// Sum of `amount` over matched records since `initialize` (per instance).
    total: f64,
}

/// What a test command asks of the batch.
enum Command {
    /// Carry on with the next record.
    Continue,
    /// Stop the batch with this outcome.
    Return(Result<CheckpointDirective, ProcessError>),
}

impl Filter {
    fn test_command(&self, command: &str, object: &Map<String, Value>, record: &KinesisRecord) -> Command {
        let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        match command {
            "retry" => Command::Return(Err(ProcessError::Retry("conformance retry".into()))),
            "fatal" => Command::Return(Err(ProcessError::Fatal("conformance fatal".into()))),
            "trap" => panic!("conformance trap"),
            "at" => Command::Return(Ok(CheckpointDirective::At(record.position()))),
            "rewind" => Command::Return(Ok(CheckpointDirective::Rewind(record.position()))),
            "none" => Command::Return(Ok(CheckpointDirective::None)),
            "read-file" => {
                let path = text("path");
                let verdict = if std::fs::read(&path).is_ok() { "allowed" } else { "denied" };
                shoal_sdk::info!("read-file {path}: {verdict}");
                Command::Continue
            }
            "env" => {
                let name = text("name");
                let verdict = if std::env::var_os(&name).is_some() { "set" } else { "unset" };
                shoal_sdk::info!("env {name}: {verdict}");
                Command::Continue
            }
            "lease-token" => {
                let token = shoal_sdk::lease_token();
                shoal_sdk::info!("lease-token epoch={} owner={}", token.epoch, token.owner);
                Command::Continue
            }
            other => {
                shoal_sdk::warn!("unknown test command {other:?}; ignored");
                Command::Continue
            }
        }
    }
}

impl Processor for Filter {
    fn initialize(shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        let field = settings.get_or("field", "type").to_string();
        let value = settings.get_or("value", "purchase").to_string();
        shoal_sdk::info!("initialize {} field={field} value={value}", shard.shard_id);
        Ok(Filter { field, value, total: 0.0 })
    }

    fn process(&mut self, _shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        let (mut matched, mut skipped) = (0u64, 0u64);
        for record in &batch.records {
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&record.data) else {
                shoal_sdk::warn!("skip {}: not a JSON object", record.sequence_number);
                skipped += 1;
                continue;
            };
            if let Some(command) = object.get("shoal_test").and_then(Value::as_str) {
                match self.test_command(command, &object, record) {
                    Command::Continue => continue,
                    Command::Return(outcome) => return outcome,
                }
            }
            if object.get(&self.field).and_then(Value::as_str) == Some(self.value.as_str()) {
                matched += 1;
                self.total += object.get("amount").and_then(Value::as_f64).unwrap_or(0.0);
            }
        }
        shoal_sdk::info!(
            "batch {} records {matched} matched {skipped} skipped total {}",
            batch.records.len(),
            format_total(self.total)
        );
        Ok(CheckpointDirective::BatchEnd)
    }

    fn shutdown(&mut self, shard: &ShardInfo, reason: ShutdownReason) {
        let reason = match reason {
            ShutdownReason::ShardEnd => "shard-end",
            ShutdownReason::LeaseLost => "lease-lost",
            ShutdownReason::Requested => "requested",
        };
        shoal_sdk::info!("shutdown {} {reason}", shard.shard_id);
    }
}

/// An integer when it is one (`42`), else the shortest round-trip form (`12.5`).
fn format_total(total: f64) -> String {
    if total.fract() == 0.0 && total.abs() < 1e15 { format!("{}", total as i64) } else { format!("{total}") }
}

shoal_sdk::export_processor!(Filter);
