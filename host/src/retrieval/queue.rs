//! The hand-off between a shard's reader task and its worker: a queue bounded by the
//! records and bytes read ahead, which lets the reader fetch only while there is room (or,
//! with no read-ahead, only while the worker waits).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Arrival;

/// How much a reader may hold for its worker beyond the batch being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAhead {
    /// Records queued at most (0: read only when the worker asks: serial).
    pub records: usize,
    /// Bytes of record data queued at most.
    pub bytes: usize,
}

impl ReadAhead {
    /// No read-ahead: fetch, process, fetch.
    pub const SERIAL: Self = Self {
        records: 0,
        bytes: 0,
    };
}

/// See the module docs. One reader and one worker use a queue.
#[derive(Debug)]
pub struct ArrivalQueue {
    state: Mutex<State>,
    limit: ReadAhead,
    /// The worker waits on this for an arrival.
    arrived: Notify,
    /// The reader waits on this for room (or demand).
    room: Notify,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Arrival>,
    records: usize,
    bytes: usize,
    /// The worker is waiting for the next arrival.
    wanted: bool,
}

impl State {
    fn has_room(&self, limit: &ReadAhead) -> bool {
        (self.items.is_empty() && self.wanted)
            || (self.records < limit.records && self.bytes < limit.bytes)
    }
}

/// What a batch counts against the record bound: an empty batch (delivered for guests
/// that flush on time) counts as one, so empty reads cannot pile up without bound.
fn weight(batch: &super::RetrievedBatch) -> usize {
    batch.records.len().max(1)
}

impl ArrivalQueue {
    /// An empty queue holding up to `limit` ahead.
    pub fn new(limit: ReadAhead) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limit,
            arrived: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until the reader may read more: the queue is under its limits, or empty while
    /// the worker waits. What one read returns may overshoot the limits by one batch.
    pub async fn room(&self) {
        loop {
            if self.lock().has_room(&self.limit) {
                return;
            }
            // One waiter: a notification sent before this await is kept as a permit.
            self.room.notified().await;
        }
    }

    /// Queue an arrival for the worker.
    pub fn push(&self, arrival: Arrival) {
        let mut state = self.lock();
        if let Arrival::Batch(batch) = &arrival {
            state.records += weight(batch);
            state.bytes += batch.bytes;
        }
        state.items.push_back(arrival);
        drop(state);
        self.arrived.notify_one();
    }

    /// The next arrival, waiting for the reader if none is queued. Cancel-safe.
    pub async fn pop(&self) -> Arrival {
        loop {
            {
                let mut state = self.lock();
                if let Some(arrival) = state.items.pop_front() {
                    if let Arrival::Batch(batch) = &arrival {
                        state.records -= weight(batch);
                        state.bytes -= batch.bytes;
                    }
                    state.wanted = false;
                    drop(state);
                    self.room.notify_one();
                    return arrival;
                }
                state.wanted = true;
            }
            self.room.notify_one();
            self.arrived.notified().await;
        }
    }

    /// Whether the next arrival is queued now and is a batch with records.
    pub fn has_records_next(&self) -> bool {
        matches!(self.lock().items.front(), Some(Arrival::Batch(b)) if !b.records.is_empty())
    }

    /// Records and bytes queued now.
    pub fn queued(&self) -> (usize, usize) {
        let state = self.lock();
        (state.records, state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::plugin::bindings::KinesisRecord;
    use crate::retrieval::RetrievedBatch;

    fn batch(records: usize, bytes_each: usize) -> Arrival {
        Arrival::Batch(RetrievedBatch::new(
            (0..records)
                .map(|n| KinesisRecord {
                    partition_key: "k".into(),
                    sequence_number: format!("{n}"),
                    sub_sequence_number: 0,
                    approximate_arrival_ms: 0,
                    explicit_hash_key: None,
                    data: vec![0; bytes_each],
                })
                .collect(),
            0,
        ))
    }

    async fn has_room_soon(queue: &ArrivalQueue) -> bool {
        tokio::time::timeout(Duration::from_millis(50), queue.room())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn serial_reads_only_while_the_worker_waits() {
        let queue = Arc::new(ArrivalQueue::new(ReadAhead::SERIAL));
        assert!(!has_room_soon(&queue).await, "nobody asked yet");
        let waiting = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.pop().await }
        });
        assert!(has_room_soon(&queue).await, "the worker asks");
        queue.push(batch(3, 10));
        assert!(matches!(waiting.await, Ok(Arrival::Batch(b)) if b.records.len() == 3));
        assert!(!has_room_soon(&queue).await, "processing: no read-ahead");
    }

    #[tokio::test]
    async fn read_ahead_stops_at_the_record_or_byte_limit() {
        let by_records = ArrivalQueue::new(ReadAhead {
            records: 5,
            bytes: 1 << 20,
        });
        by_records.push(batch(4, 10));
        assert!(has_room_soon(&by_records).await);
        by_records.push(batch(4, 10));
        assert!(!has_room_soon(&by_records).await, "8 records ≥ 5");
        assert_eq!(by_records.queued(), (8, 80));
        let _ = by_records.pop().await;
        assert!(has_room_soon(&by_records).await, "4 records < 5 again");

        let by_bytes = ArrivalQueue::new(ReadAhead {
            records: 1000,
            bytes: 100,
        });
        by_bytes.push(batch(1, 100));
        assert!(!has_room_soon(&by_bytes).await, "100 bytes ≥ 100");
    }

    #[tokio::test]
    async fn arrivals_come_out_in_order() {
        let queue = ArrivalQueue::new(ReadAhead {
            records: 100,
            bytes: 1 << 20,
        });
        queue.push(batch(1, 1));
        queue.push(batch(2, 1));
        queue.push(Arrival::End);
        assert!(matches!(queue.pop().await, Arrival::Batch(b) if b.records.len() == 1));
        assert!(matches!(queue.pop().await, Arrival::Batch(b) if b.records.len() == 2));
        assert!(matches!(queue.pop().await, Arrival::End));
        assert_eq!(queue.queued(), (0, 0));
    }

    #[tokio::test]
    async fn empty_batches_count_against_the_bound() {
        let queue = ArrivalQueue::new(ReadAhead {
            records: 3,
            bytes: 1 << 20,
        });
        for _ in 0..3 {
            queue.push(batch(0, 0));
        }
        assert!(
            !has_room_soon(&queue).await,
            "three empty reads fill a bound of 3"
        );
    }
}
