//! One task per owned shard: iterator → fetch → de-aggregate → guest → checkpoint → pace,
//! until shard end, shutdown or a lost lease.
//!
//! Cancellation is structured: the worker listens for a lost lease and for shutdown only
//! at safe awaits (fetch, back-off, pacing, and the delivery's retry back-off), never
//! between a guest call and its checkpoint. Shutdown finishes the batch, checkpoints,
//! calls `shutdown(requested)` and releases the lease. A lost lease stops at once,
//! without checkpointing, after `shutdown(lease-lost)`. The end of the shard's records
//! is checkpointed as `SHARD_END` only once `shutdown(shard-end)` succeeded (see
//! `shard_end`).

pub mod checkpointer;
pub mod pacing;
pub mod resume;
mod shard_end;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Disposition, ShardProcessor, backoff};
use crate::kpl;
use crate::lease::coordinator::HeldLease;
use crate::lease::{Checkpoint, LeaseStore};
use crate::plugin::bindings::{
    Batch, CheckpointDirective, KinesisRecord, Position, ShutdownReason,
};
use crate::source::{Fetched, ShardSource, SourceError, SourceRecord, StartPosition};
use crate::telemetry::metrics::ShardMetrics;
use checkpointer::Checkpointer;
use resume::Resume;

/// How a shard worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Records per GetRecords call (≤ 10,000).
    pub max_records: usize,
    /// Sleep when caught up and a fetch returned nothing.
    pub idle_time: Duration,
    /// Coalesce checkpoint writes to at most one per interval (0: every directive).
    pub checkpoint_interval: Duration,
    /// Where to start a shard whose lease has no processed position yet.
    pub initial_position: StartPosition,
    /// Deliver empty batches to the guest (e.g. for time-based flushing).
    pub deliver_empty_batches: bool,
    /// First back-off after a source error.
    pub backoff_initial: Duration,
    /// Longest back-off after source errors.
    pub backoff_max: Duration,
}

/// Why a worker stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerExit {
    /// Every record processed: `SHARD_END` checkpointed and the lease released.
    ShardEnd,
    /// Another worker owns the shard now; nothing was checkpointed after the loss.
    LeaseLost,
    /// Shutdown: batch finished, checkpointed, lease released.
    Shutdown,
    /// An error no retry fixes (stream deleted, access denied, KMS key unusable): the
    /// consumer stops with this message.
    Failed(String),
}

/// Processes one shard for as long as this worker holds its lease.
pub struct ShardWorker {
    source: Arc<dyn ShardSource>,
    store: Arc<dyn LeaseStore>,
    held: Arc<HeldLease>,
    processor: ShardProcessor,
    settings: WorkerSettings,
    shutdown: CancellationToken,
    /// This shard's Prometheus series, which the progress log reads too (given back to
    /// the registry by the supervisor when the worker stops).
    metrics: ShardMetrics,
    /// The first record this worker delivered: where the unacknowledged records begin
    /// while no checkpoint names a record yet.
    first_delivered: Option<Position>,
}

impl std::fmt::Debug for ShardWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWorker")
            .field("shard", &self.held.key())
            .finish_non_exhaustive()
    }
}

enum Step<T> {
    Go(T),
    Stop(WorkerExit),
}

impl ShardWorker {
    /// A worker for a held lease.
    pub fn new(
        source: Arc<dyn ShardSource>,
        store: Arc<dyn LeaseStore>,
        held: Arc<HeldLease>,
        mut processor: ShardProcessor,
        settings: WorkerSettings,
        shutdown: CancellationToken,
        metrics: ShardMetrics,
    ) -> Self {
        processor.abandon_calls_when(held.lost().clone());
        Self {
            source,
            store,
            held,
            processor,
            settings,
            shutdown,
            metrics,
            first_delivered: None,
        }
    }

    /// Run until shard end, shutdown or lease loss.
    pub async fn run(mut self) -> WorkerExit {
        // Inside `consumer{worker, stream}` (the caller instruments this future with it).
        let span = tracing::info_span!("worker", shard = %self.held.key());
        let exit = tracing::Instrument::instrument(self.run_inner(), span).await;
        match exit {
            WorkerExit::LeaseLost => {
                // Nothing is checkpointed after a loss, so a trap here changes nothing.
                let _ = self.processor.shutdown(ShutdownReason::LeaseLost).await;
            }
            WorkerExit::Shutdown | WorkerExit::ShardEnd | WorkerExit::Failed(_) => {}
        }
        exit
    }

    async fn run_inner(&mut self) -> WorkerExit {
        let lease = self.held.snapshot().await;
        let mut checkpointer =
            Checkpointer::new(self.settings.checkpoint_interval, lease.checkpoint.clone());
        if lease.is_finished() {
            return self.release_ended().await;
        }
        if let Step::Stop(exit) = self.wait_out_previous_holder().await {
            return self.stop(exit, &mut checkpointer).await;
        }
        tracing::info!(checkpoint = %lease.checkpoint, "shard worker starting");
        let mut resume =
            Resume::from_checkpoint(&lease.checkpoint, &self.settings.initial_position);
        let mut shard_end_failures: u32 = 0;
        loop {
            let exit = self.read_until_stopped(resume, &mut checkpointer).await;
            if exit != WorkerExit::ShardEnd {
                return self.stop(exit, &mut checkpointer).await;
            }
            match self
                .end_shard(&mut checkpointer, &mut shard_end_failures)
                .await
            {
                Step::Go(shard_end::Ended::Done) => return self.release_ended().await,
                Step::Go(shard_end::Ended::Redeliver(from)) => resume = from,
                Step::Stop(exit) => return self.stop(exit, &mut checkpointer).await,
            }
        }
    }

    /// The fetch loop from `resume`: fetch, de-aggregate and trim, deliver, apply the
    /// directive, checkpoint, pace — until something stops it; returns why.
    async fn read_until_stopped(
        &mut self,
        mut resume: Resume,
        checkpointer: &mut Checkpointer,
    ) -> WorkerExit {
        let mut iterator = match self.acquire(&mut resume).await {
            Step::Go(it) => it,
            Step::Stop(exit) => return exit,
        };
        let (interrupt, _interrupt_guard) = self.interrupt_on_loss_or_shutdown();
        let mut failures: u32 = 0;
        loop {
            let (fetched, called_at) =
                match self.fetch(&mut iterator, &mut resume, &mut failures).await {
                    Step::Go(Some(fetched)) => fetched,
                    Step::Go(None) => continue, // handled a failure; fetch again
                    Step::Stop(exit) => return exit,
                };
            let records = self.user_records(fetched.records, &mut resume);
            let delivered = records.len();
            if !records.is_empty() || self.settings.deliver_empty_batches {
                let batch = Arc::new(Batch {
                    records,
                    millis_behind_latest: fetched.millis_behind_latest,
                });
                match self.deliver(&batch, &interrupt, checkpointer).await {
                    Step::Go(Applied::Continue) => {
                        if let Some(last) = batch.records.last() {
                            resume.delivered_through(&Position {
                                sequence_number: last.sequence_number.clone(),
                                sub_sequence_number: last.sub_sequence_number,
                            });
                        }
                    }
                    Step::Go(Applied::Rewind(to)) => {
                        resume.rewind_to(&to);
                        if let Step::Stop(exit) = self.flush_due(checkpointer).await {
                            return exit;
                        }
                        iterator = match self.acquire(&mut resume).await {
                            Step::Go(it) => it,
                            Step::Stop(exit) => return exit,
                        };
                        continue;
                    }
                    Step::Stop(exit) => return exit,
                }
                if let Step::Stop(exit) = self.flush_due(checkpointer).await {
                    return exit;
                }
            }
            let Some(next) = fetched.next_iterator else {
                return WorkerExit::ShardEnd;
            };
            iterator = next;
            let delay = pacing::next_fetch_delay(
                delivered,
                fetched.millis_behind_latest,
                self.settings.idle_time,
                Instant::now().duration_since(called_at),
            );
            if !delay.is_zero()
                && let Step::Stop(exit) = self.pause(delay).await
            {
                return exit;
            }
        }
    }

    /// A token cancelled by a lost lease or shutdown (it interrupts a batch waiting to be
    /// retried), and the guard that ends its watcher with the worker.
    fn interrupt_on_loss_or_shutdown(&self) -> (CancellationToken, AbortOnDrop) {
        let interrupt = CancellationToken::new();
        let (lost, shutdown, cancel) = (
            self.held.lost().clone(),
            self.shutdown.clone(),
            interrupt.clone(),
        );
        let task = tokio::spawn(async move {
            tokio::select! { _ = lost.cancelled() => {}, _ = shutdown.cancelled() => {} }
            cancel.cancel();
        });
        (interrupt, AbortOnDrop(task))
    }

    /// One GetRecords call: the records and when the call returned; `None` when a
    /// failure was handled (backed off, or a new iterator acquired) and the caller
    /// should fetch again.
    async fn fetch(
        &mut self,
        iterator: &mut String,
        resume: &mut Resume,
        failures: &mut u32,
    ) -> Step<Option<(Fetched, Instant)>> {
        let result = tokio::select! {
            biased;
            _ = self.held.lost().cancelled() => return Step::Stop(WorkerExit::LeaseLost),
            _ = self.shutdown.cancelled() => return Step::Stop(WorkerExit::Shutdown),
            r = self.source.fetch(iterator, self.settings.max_records) => r,
        };
        // The fetch was sent just before it returned; pacing counts from here.
        let called_at = Instant::now();
        match result {
            Ok(fetched) => {
                *failures = 0;
                self.metrics.set_behind_latest(fetched.millis_behind_latest);
                Step::Go(Some((fetched, called_at)))
            }
            Err(SourceError::ExpiredIterator) => {
                tracing::info!(
                    "shard iterator expired; re-acquiring from the last processed record"
                );
                match self.acquire(resume).await {
                    Step::Go(it) => {
                        *iterator = it;
                        Step::Go(None)
                    }
                    Step::Stop(exit) => Step::Stop(exit),
                }
            }
            Err(SourceError::NotFound(e)) => match self.confirm_gone(&e).await {
                Gone::Shard => Step::Stop(WorkerExit::ShardEnd),
                Gone::Stream(message) => Step::Stop(WorkerExit::Failed(message)),
                Gone::Not => self.back_off(failures, &e).await,
            },
            Err(SourceError::Fatal(e)) => Step::Stop(WorkerExit::Failed(format!(
                "cannot read shard {}: {e}",
                self.held.key()
            ))),
            Err(e) => self.back_off(failures, &e.to_string()).await,
        }
    }

    /// Count a failed fetch and sleep its back-off (unless stopped meanwhile).
    async fn back_off<T>(&self, failures: &mut u32, error: &str) -> Step<Option<T>> {
        *failures += 1;
        let delay = self.backoff(*failures);
        tracing::warn!(
            attempt = *failures,
            delay_ms = delay.as_millis() as u64,
            "fetch failed: {error}"
        );
        match self.pause(delay).await {
            Step::Go(()) => Step::Go(None),
            Step::Stop(exit) => Step::Stop(exit),
        }
    }

    /// The records a processor sees from one fetch: de-aggregated, without what was
    /// processed already.
    fn user_records(&self, fetched: Vec<SourceRecord>, resume: &mut Resume) -> Vec<KinesisRecord> {
        let mut records = Vec::with_capacity(fetched.len());
        for record in fetched {
            kpl::deaggregate_into(record, self.held.key(), &mut records);
        }
        resume.trim(&mut records);
        records
    }

    /// Run one batch through the guest (with the processor's retries and poison policy)
    /// and apply its directive, unless the lease was lost or fenced meanwhile.
    async fn deliver(
        &mut self,
        batch: &Arc<Batch>,
        interrupt: &CancellationToken,
        checkpointer: &mut Checkpointer,
    ) -> Step<Applied> {
        if !self.held.may_process() {
            // Past the self-fence deadline: a peer may own the shard soon.
            return Step::Stop(WorkerExit::LeaseLost);
        }
        if self.first_delivered.is_none() {
            self.first_delivered = batch.records.first().map(|r| Position {
                sequence_number: r.sequence_number.clone(),
                sub_sequence_number: r.sub_sequence_number,
            });
        }
        let report = match self.processor.process(Arc::clone(batch), interrupt).await {
            Ok(report) => report,
            Err(_cancelled) if self.held.lost().is_cancelled() => {
                return Step::Stop(WorkerExit::LeaseLost);
            }
            Err(_cancelled) => return Step::Stop(WorkerExit::Shutdown),
        };
        if self.held.lost().is_cancelled() {
            // Lost while the guest ran: its result must not be checkpointed.
            return Step::Stop(WorkerExit::LeaseLost);
        }
        self.metrics.records.inc_by(batch.records.len() as u64);
        self.metrics
            .bytes
            .inc_by(batch.records.iter().map(|r| r.data.len() as u64).sum());
        let directive = match &report.disposition {
            Disposition::Processed(d) => d.clone(),
            // Dead-lettered batches are on disk: move past them.
            Disposition::DeadLettered(_) | Disposition::GaveUp => CheckpointDirective::BatchEnd,
        };
        Step::Go(self.apply(&directive, batch, checkpointer))
    }

    /// A new iterator where `resume` says.
    async fn acquire(&self, resume: &mut Resume) -> Step<String> {
        let step = self.acquire_iterator(resume.position()).await;
        if let Step::Go(_) = step {
            resume.acquired();
        }
        step
    }

    fn apply(
        &mut self,
        directive: &CheckpointDirective,
        batch: &Batch,
        checkpointer: &mut Checkpointer,
    ) -> Applied {
        let in_batch = |p: &Position| {
            batch.records.iter().any(|r| {
                r.sequence_number == p.sequence_number
                    && r.sub_sequence_number == p.sub_sequence_number
            })
        };
        match directive {
            CheckpointDirective::None => Applied::Continue,
            CheckpointDirective::BatchEnd => {
                if let Some(r) = batch.records.last() {
                    self.offer(checkpointer, &r.sequence_number, r.sub_sequence_number);
                }
                Applied::Continue
            }
            CheckpointDirective::At(p) if in_batch(p) => {
                self.offer(checkpointer, &p.sequence_number, p.sub_sequence_number);
                Applied::Continue
            }
            CheckpointDirective::At(p) => {
                tracing::error!(
                    sequence = %p.sequence_number, sub = p.sub_sequence_number,
                    "guest asked to checkpoint at a record that is not in the batch; not checkpointing this batch"
                );
                Applied::Continue
            }
            CheckpointDirective::Rewind(p) if in_batch(p) => Applied::Rewind(p.clone()),
            CheckpointDirective::Rewind(p) => {
                tracing::error!(
                    sequence = %p.sequence_number, sub = p.sub_sequence_number,
                    "guest asked to rewind to a record that is not in the batch; continuing"
                );
                Applied::Continue
            }
        }
    }

    fn offer(&self, checkpointer: &mut Checkpointer, sequence: &str, sub_sequence: u64) {
        let position = Checkpoint::Sequence {
            sequence: sequence.to_string(),
            sub_sequence,
        };
        if !checkpointer.offer(position.clone()) {
            tracing::warn!(checkpoint = %position, current = %checkpointer.last_written(), "ignoring a checkpoint that would move backwards");
        }
    }

    /// Write the pending checkpoint if the interval allows.
    async fn flush_due(&self, checkpointer: &mut Checkpointer) -> Step<()> {
        let now = Instant::now();
        let Some(due) = checkpointer.due(now).cloned() else {
            return Step::Go(());
        };
        self.write_checkpoint(checkpointer, due).await
    }

    async fn write_checkpoint(
        &self,
        checkpointer: &mut Checkpointer,
        checkpoint: Checkpoint,
    ) -> Step<()> {
        let mut attempt = 0;
        loop {
            match self.held.checkpoint(self.store.as_ref(), &checkpoint).await {
                Ok(()) => {
                    self.metrics.checkpoints.inc();
                    checkpointer.written(checkpoint, Instant::now());
                    return Step::Go(());
                }
                Err(e) if self.held.lost().is_cancelled() => {
                    self.metrics.checkpoint_failures.inc();
                    tracing::warn!("checkpoint refused, lease lost: {e}");
                    return Step::Stop(WorkerExit::LeaseLost);
                }
                Err(e) => {
                    self.metrics.checkpoint_failures.inc();
                    attempt += 1;
                    let delay = self.backoff(attempt);
                    tracing::warn!(attempt, "checkpoint write failed, retrying: {e}");
                    tokio::select! {
                        _ = self.held.lost().cancelled() => return Step::Stop(WorkerExit::LeaseLost),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// A lease taken from a live holder: wait until that holder must have fenced itself
    /// (see the lease argument in `crate::lease::coordinator`).
    async fn wait_out_previous_holder(&self) -> Step<()> {
        let start_after = self.held.start_after();
        let wait = start_after.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Step::Go(());
        }
        tracing::info!(
            wait_ms = wait.as_millis() as u64,
            "waiting until the previous holder has stopped before processing"
        );
        tokio::select! {
            biased;
            _ = self.held.lost().cancelled() => Step::Stop(WorkerExit::LeaseLost),
            _ = self.shutdown.cancelled() => Step::Stop(WorkerExit::Shutdown),
            _ = tokio::time::sleep_until(start_after) => Step::Go(()),
        }
    }

    /// A `ResourceNotFound` alone does not end a shard: ask the listing whether the shard
    /// (or the whole stream) is really gone.
    async fn confirm_gone(&self, error: &str) -> Gone {
        match self.source.list_shards().await {
            Ok(shards) if shards.iter().any(|s| s.shard_id == self.held.key()) => {
                tracing::warn!(
                    "shard not found ({error}), yet the stream still lists it; retrying"
                );
                Gone::Not
            }
            Ok(_) => {
                tracing::warn!(
                    "the stream no longer lists this shard (expired past retention); treating it as ended"
                );
                Gone::Shard
            }
            Err(SourceError::NotFound(e)) => Gone::Stream(format!(
                "stream {} not found ({e}): it was deleted or the name, ARN or region is wrong",
                self.source.stream_name()
            )),
            Err(e) => {
                tracing::warn!("shard not found ({error}) and the listing failed ({e}); retrying");
                Gone::Not
            }
        }
    }

    /// Stop for an error no retry fixes: write what was processed, release the lease
    /// and report the error, which stops the consumer.
    async fn fail(&mut self, message: String, checkpointer: &mut Checkpointer) -> WorkerExit {
        tracing::error!("{message}");
        match self.finish_shutdown(checkpointer).await {
            WorkerExit::Shutdown => WorkerExit::Failed(message),
            other => other,
        }
    }

    /// The back-off before retry `attempt` (1-based): capped exponential, jittered.
    fn backoff(&self, attempt: u32) -> Duration {
        backoff::jittered(
            attempt,
            self.settings.backoff_initial,
            self.settings.backoff_max,
        )
    }

    /// Sleep, unless the lease is lost or shutdown begins.
    async fn pause(&self, delay: Duration) -> Step<()> {
        tokio::select! {
            biased;
            _ = self.held.lost().cancelled() => Step::Stop(WorkerExit::LeaseLost),
            _ = self.shutdown.cancelled() => Step::Stop(WorkerExit::Shutdown),
            _ = tokio::time::sleep(delay) => Step::Go(()),
        }
    }

    async fn acquire_iterator(&self, position: &StartPosition) -> Step<String> {
        let mut attempt = 0;
        loop {
            let result = tokio::select! {
                biased;
                _ = self.held.lost().cancelled() => return Step::Stop(WorkerExit::LeaseLost),
                _ = self.shutdown.cancelled() => return Step::Stop(WorkerExit::Shutdown),
                r = self.source.iterator(self.held.key(), position) => r,
            };
            match result {
                Ok(iterator) => return Step::Go(iterator),
                Err(SourceError::NotFound(e)) => match self.confirm_gone(&e).await {
                    Gone::Shard => return Step::Stop(WorkerExit::ShardEnd),
                    Gone::Stream(message) => return Step::Stop(WorkerExit::Failed(message)),
                    Gone::Not => {
                        attempt += 1;
                        if let Step::Stop(exit) = self.pause(self.backoff(attempt)).await {
                            return Step::Stop(exit);
                        }
                    }
                },
                Err(SourceError::Fatal(e)) => {
                    return Step::Stop(WorkerExit::Failed(format!(
                        "cannot get an iterator for shard {}: {e}",
                        self.held.key()
                    )));
                }
                Err(e) => {
                    attempt += 1;
                    let delay = self.backoff(attempt);
                    tracing::warn!(
                        attempt,
                        ?position,
                        "cannot get a shard iterator, retrying: {e}"
                    );
                    if let Step::Stop(exit) = self.pause(delay).await {
                        return Step::Stop(exit);
                    }
                }
            }
        }
    }

    /// Stop for `exit`: shutdown flushes, calls the guest and releases; a lost lease does
    /// nothing more here; an ended shard (its `SHARD_END` written) releases its lease.
    async fn stop(&mut self, exit: WorkerExit, checkpointer: &mut Checkpointer) -> WorkerExit {
        match exit {
            WorkerExit::LeaseLost => exit,
            WorkerExit::Failed(message) => self.fail(message, checkpointer).await,
            WorkerExit::ShardEnd => self.release_ended().await,
            WorkerExit::Shutdown => self.finish_shutdown(checkpointer).await,
        }
    }

    /// Shutdown (or hand-off): write the pending checkpoint, call `shutdown(requested)`,
    /// release the lease.
    async fn finish_shutdown(&mut self, checkpointer: &mut Checkpointer) -> WorkerExit {
        if let Some(pending) = checkpointer.pending().cloned()
            && let Step::Stop(exit) = self.write_checkpoint(checkpointer, pending).await
        {
            return exit;
        }
        // A trap here is logged; what was processed is checkpointed already.
        let _ = self.processor.shutdown(ShutdownReason::Requested).await;
        match self.held.release(self.store.as_ref()).await {
            Ok(()) => {
                tracing::info!(checkpoint = %checkpointer.last_written(), "checkpointed and released the lease")
            }
            Err(e) => {
                tracing::warn!("cannot release the lease (it will expire instead): {e}")
            }
        }
        WorkerExit::Shutdown
    }
}

enum Applied {
    Continue,
    Rewind(Position),
}

/// What a `ResourceNotFound` turned out to mean, once the listing was asked.
enum Gone {
    /// The stream no longer lists the shard (expired past retention): it has ended.
    Shard,
    /// The stream itself is gone: stop the consumer with this message.
    Stream(String),
    /// The shard is still listed (or the listing failed): retry.
    Not,
}

/// Aborts a helper task when the worker returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
