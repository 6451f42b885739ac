//! The synthetic batches the benchmarks feed to guests.

use shoal::plugin::bindings::{Batch, KinesisRecord};

/// `records` records of `size` bytes each, with distinct sequence numbers and data.
pub fn make_batch(records: usize, size: usize) -> Batch {
    Batch {
        records: (0..records)
            .map(|i| KinesisRecord {
                partition_key: format!("pk-{}", i % 64),
                sequence_number: format!("{:056}", 49_000_000 + i),
                sub_sequence_number: 0,
                approximate_arrival_ms: 1_700_000_000_000,
                explicit_hash_key: None,
                data: (0..size).map(|j| (i + j) as u8).collect(),
            })
            .collect(),
        millis_behind_latest: 0,
    }
}
