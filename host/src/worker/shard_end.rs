//! Ending a shard: `SHARD_END` is checkpointed (and the children may start) only once the
//! processor's `shutdown(shard-end)` succeeded — on a fresh instance if none is live, so
//! the guest is always told, as KCL always calls `shardEnded`. A trap there (or a fresh
//! instance that cannot be built) follows the poison policy
//! like a failed batch: the records the processor had not acknowledged are delivered
//! again to a fresh instance, up to `max_attempts` times; then `block` goes on doing
//! that (with back-off) until it succeeds or a new plugin generation fixes it, and
//! `dead-letter` writes those records to the dead-letter directory and ends the shard.

use std::sync::Arc;

use crate::delivery::{Failure, OnPoison};
use crate::lease::Checkpoint;
use crate::plugin::bindings::Batch;
use crate::retrieval::Arrival;
use crate::retrieval::resume::Resume;

use super::checkpointer::Checkpointer;
use super::{ShardWorker, Step, WorkerExit};

/// What ending the shard came to.
pub(super) enum Ended {
    /// `SHARD_END` is checkpointed: release the lease.
    Done,
    /// `shutdown(shard-end)` failed: deliver the unacknowledged records again from here,
    /// then try again.
    Redeliver(Resume),
}

impl ShardWorker {
    /// Every record of the shard was delivered: shut the processor down for shard end and
    /// checkpoint `SHARD_END`, or apply the poison policy to a failure (`failures` counts
    /// consecutive ones across re-deliveries).
    pub(super) async fn end_shard(
        &mut self,
        checkpointer: &mut Checkpointer,
        failures: &mut u32,
    ) -> Step<Ended> {
        let failure = match self.processor.end_shard().await {
            Ok(()) => return self.checkpoint_shard_end(checkpointer).await,
            Err(_) if self.held.lost().is_cancelled() => return Step::Stop(WorkerExit::LeaseLost),
            Err(failure) => failure.during("shutdown(shard-end)"),
        };
        *failures += 1;
        // What the processor acknowledged stands; what it did not may not have reached
        // its destination: deliver it again (or dead-letter it), never skip it.
        if let Some(pending) = checkpointer.pending().cloned()
            && let Step::Stop(exit) = self.write_checkpoint(checkpointer, pending).await
        {
            return Step::Stop(exit);
        }
        let unacknowledged = self.unacknowledged_from(checkpointer.last_written());
        if self.processor.poisoned_after(*failures) {
            match self.processor.on_poison().clone() {
                OnPoison::DeadLetter(_) => {
                    let written = match self
                        .dead_letter_tail(unacknowledged, &failure, *failures)
                        .await
                    {
                        Step::Go(written) => written,
                        Step::Stop(exit) => return Step::Stop(exit),
                    };
                    tracing::error!(
                        attempts = *failures,
                        records = written,
                        "shard end poisoned ({failure}); dead-lettered the {written} record(s) after checkpoint {}; checkpointing SHARD_END",
                        checkpointer.last_written()
                    );
                    return self.checkpoint_shard_end(checkpointer).await;
                }
                OnPoison::GiveUp => {
                    tracing::error!(
                        attempts = *failures,
                        "shard end poisoned ({failure}); giving up on the records after checkpoint {}",
                        checkpointer.last_written()
                    );
                    return self.checkpoint_shard_end(checkpointer).await;
                }
                // Announced once, at the failure that poisons it.
                OnPoison::Block if !self.processor.poisoned_after(*failures - 1) => {
                    tracing::error!(
                        attempts = *failures,
                        "shard end poisoned ({failure}); policy `block`: delivering the records after checkpoint {} again until shutdown(shard-end) succeeds or a new plugin generation fixes it",
                        checkpointer.last_written()
                    );
                }
                OnPoison::Block => {}
            }
        }
        let delay = self.processor.retry_delay(*failures);
        tracing::warn!(
            attempt = *failures,
            delay_ms = delay.as_millis() as u64,
            "{failure}: not checkpointing SHARD_END; delivering the records after checkpoint {} again",
            checkpointer.last_written()
        );
        match self.pause(delay).await {
            Step::Go(()) => Step::Go(Ended::Redeliver(unacknowledged)),
            Step::Stop(exit) => Step::Stop(exit),
        }
    }

    /// Where the records the processor has not acknowledged begin: after the last
    /// checkpoint, or — while no checkpoint names a record — at the first record this
    /// worker delivered.
    fn unacknowledged_from(&self, checkpoint: &Checkpoint) -> Resume {
        let mut resume = Resume::from_checkpoint(checkpoint, &self.settings.initial_position);
        if !matches!(checkpoint, Checkpoint::Sequence { .. })
            && let Some(first) = &self.first_delivered
        {
            resume.rewind_to(first);
        }
        resume
    }

    /// The shard's `SHARD_END` is stored: release the lease.
    pub(super) async fn release_ended(&self) -> WorkerExit {
        if let Err(e) = self.held.release(self.store.as_ref()).await {
            tracing::warn!("cannot release the finished lease: {e}");
        }
        WorkerExit::ShardEnd
    }

    /// Write `SHARD_END` (children may start once it is stored).
    async fn checkpoint_shard_end(&self, checkpointer: &mut Checkpointer) -> Step<Ended> {
        checkpointer.offer(Checkpoint::ShardEnd);
        if let Step::Stop(exit) = self
            .write_checkpoint(checkpointer, Checkpoint::ShardEnd)
            .await
        {
            return Step::Stop(exit);
        }
        tracing::info!("shard end: checkpointed SHARD_END; child shards may start");
        Step::Go(Ended::Done)
    }

    /// Read the shard again from `resume` to its end and write every record to the
    /// dead-letter directory, one fetch at a time (memory stays one batch); returns how
    /// many records were written. A write that fails is retried: nothing is skipped.
    async fn dead_letter_tail(
        &mut self,
        resume: Resume,
        failure: &Failure,
        attempts: u32,
    ) -> Step<usize> {
        let retrieval =
            self.retriever
                .open_serial_polling(self.held.key(), resume, self.metrics.clone());
        let mut written = 0;
        loop {
            let arrival = tokio::select! {
                biased;
                _ = self.held.lost().cancelled() => return Step::Stop(WorkerExit::LeaseLost),
                _ = self.stop_requested() => return Step::Stop(WorkerExit::Shutdown),
                arrival = retrieval.next() => arrival,
            };
            let read = match arrival {
                Arrival::Batch(read) => read,
                // At the end, or no longer listed (expired past retention): nothing more.
                Arrival::End => return Step::Go(written),
                Arrival::Failed(message) => return Step::Stop(WorkerExit::Failed(message)),
            };
            if read.records.is_empty() {
                continue;
            }
            let count = read.records.len();
            let batch = Arc::new(Batch {
                records: read.records,
                millis_behind_latest: read.millis_behind_latest,
            });
            let mut write_failures = 0;
            while self
                .processor
                .dead_letter(Arc::clone(&batch), failure, attempts)
                .await
                .is_none()
            {
                write_failures += 1;
                if let Step::Stop(exit) = self.pause(self.backoff(write_failures)).await {
                    return Step::Stop(exit);
                }
            }
            written += count;
        }
    }
}
