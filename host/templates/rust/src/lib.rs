//! `{{name}}`: a shoal record processor. shoal calls `initialize` once per shard instance,
//! `process` for every batch, and `shutdown` when the instance stops serving the shard.
//! Build with `bash build.sh`; try it with `shoal run --config shoal.toml`.

use shoal_sdk::{
    Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo, ShutdownReason,
};

/// What this processor remembers between batches of one shard.
struct Counter {
    records: u64,
    bytes: u64,
    report_every: u64,
    since_report: u64,
}

impl Processor for Counter {
    fn initialize(shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        // `[plugin.settings]` of the host's config, as text.
        let report_every = settings.parse_or("report_every", 100u64)?.max(1);
        shoal_sdk::info!("{}: starting, reporting every {report_every} records", shard.shard_id);
        Ok(Counter {
            records: 0,
            bytes: 0,
            report_every,
            since_report: 0,
        })
    }

    fn process(
        &mut self,
        shard: &ShardInfo,
        batch: Batch,
    ) -> Result<CheckpointDirective, ProcessError> {
        for record in &batch.records {
            // Deliver `record.data` to its destination here. Return
            // `Err(ProcessError::Retry(..))` when it is unavailable (the batch comes again),
            // `Err(ProcessError::Fatal(..))` when it can never be processed (the poison policy).
            self.records += 1;
            self.bytes += record.data.len() as u64;
            self.since_report += 1;
        }
        if self.since_report >= self.report_every {
            shoal_sdk::info!(
                "{}: {} records, {} bytes so far",
                shard.shard_id,
                self.records,
                self.bytes
            );
            self.since_report = 0;
        }
        // Everything up to the batch's last record is done: checkpoint it.
        Ok(CheckpointDirective::BatchEnd)
    }

    fn shutdown(&mut self, shard: &ShardInfo, reason: ShutdownReason) {
        let why = match reason {
            ShutdownReason::ShardEnd => "shard end",
            ShutdownReason::LeaseLost => "lease lost",
            ShutdownReason::Requested => "shutdown requested",
        };
        shoal_sdk::info!("{}: {why} after {} records", shard.shard_id, self.records);
    }
}

shoal_sdk::export_processor!(Counter);
