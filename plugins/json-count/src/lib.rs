//! `json-count`: parses each record as JSON, counts records by the value of a configured
//! field, logs the counts every `report_every` records and at shutdown, and skips
//! records that are not JSON with a warning. Checkpoints every batch.
//!
//! Settings: `field` (a dotted path such as `type` or `user.country`; default `type`),
//! `report_every` (records between count reports; default 1000).

use std::collections::BTreeMap;

use shoal_sdk::{Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo, ShutdownReason};

struct JsonCount {
    field: Vec<String>,
    report_every: u64,
    counts: BTreeMap<String, u64>,
    seen: u64,
    skipped: u64,
    since_report: u64,
}

impl JsonCount {
    fn key_of(&self, value: &serde_json::Value) -> String {
        let mut v = value;
        for part in &self.field {
            match v.get(part) {
                Some(inner) => v = inner,
                None => return "(missing)".to_string(),
            }
        }
        match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn report(&mut self, shard: &ShardInfo, why: &str) {
        let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        shoal_sdk::info!(
            "{} counts by {} ({why}): {} | {} records, {} skipped as not JSON",
            shard.shard_id,
            self.field.join("."),
            counts.join(" "),
            self.seen,
            self.skipped
        );
        self.since_report = 0;
    }
}

impl Processor for JsonCount {
    fn initialize(_shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        let field = settings.get_or("field", "type");
        if field.is_empty() {
            return Err(ProcessError::Fatal("setting `field` must not be empty".into()));
        }
        Ok(JsonCount {
            field: field.split('.').map(str::to_string).collect(),
            report_every: settings.parse_or("report_every", 1000u64)?.max(1),
            counts: BTreeMap::new(),
            seen: 0,
            skipped: 0,
            since_report: 0,
        })
    }

    fn process(&mut self, shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        for record in &batch.records {
            self.seen += 1;
            self.since_report += 1;
            match serde_json::from_slice::<serde_json::Value>(&record.data) {
                Ok(value) => *self.counts.entry(self.key_of(&value)).or_default() += 1,
                Err(e) => {
                    self.skipped += 1;
                    shoal_sdk::warn!(
                        "{} skipping record {}/{} (partition key {}): not JSON: {e}",
                        shard.shard_id,
                        record.sequence_number,
                        record.sub_sequence_number,
                        record.partition_key
                    );
                }
            }
            if self.since_report >= self.report_every {
                self.report(shard, "periodic");
            }
        }
        Ok(CheckpointDirective::BatchEnd)
    }

    fn shutdown(&mut self, shard: &ShardInfo, reason: ShutdownReason) {
        let why = match reason {
            ShutdownReason::ShardEnd => "shard end",
            ShutdownReason::LeaseLost => "lease lost",
            ShutdownReason::Requested => "shutdown",
        };
        self.report(shard, why);
    }
}

shoal_sdk::export_processor!(JsonCount);
