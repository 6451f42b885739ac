//! A trivial processor for benchmarks: folds every record's bytes into an FNV-1a hash
//! (the same work the host benchmark does in a native closure) and checkpoints the batch.

use shoal_sdk::{Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo};

struct Checksum {
    hash: u64,
}

/// FNV-1a over `data`, continuing from `hash`.
fn fnv1a(mut hash: u64, data: &[u8]) -> u64 {
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

impl Processor for Checksum {
    fn initialize(_shard: &ShardInfo, _settings: &Settings) -> Result<Self, ProcessError> {
        Ok(Checksum { hash: 0xcbf2_9ce4_8422_2325 })
    }

    fn process(&mut self, _shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        for record in &batch.records {
            self.hash = fnv1a(self.hash, &record.data);
        }
        Ok(CheckpointDirective::BatchEnd)
    }
}

shoal_sdk::export_processor!(Checksum);
