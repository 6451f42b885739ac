//! One task per owned shard: batches from the shard's retrieval → guest → directive →
//! checkpoint, until shard end, shutdown or a lost lease. How records arrive (polling or
//! enhanced fan-out, read-ahead, pacing, iterators) is the retrieval's business.
//!
//! Cancellation is structured: the worker listens for a lost lease and for shutdown only
//! at safe awaits (waiting for the next batch, back-off, and the delivery's retry
//! back-off), never between a guest call and its checkpoint. Whatever the retrieval read
//! ahead is dropped with it. Shutdown finishes the batch, checkpoints,
//! calls `shutdown(requested)` and releases the lease. A lost lease stops at once,
//! without checkpointing, after `shutdown(lease-lost)`. The end of the shard's records
//! is checkpointed as `SHARD_END` only once `shutdown(shard-end)` succeeded (see
//! `shard_end`).

pub mod checkpointer;
mod shard_end;
pub mod stable_batches;
pub mod supervisor;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::delivery::{CallGate, Disposition, ShardProcessor, backoff};
use crate::lease::coordinator::HeldLease;
use crate::lease::{Checkpoint, LeaseError, LeaseStore};
use crate::plugin::bindings::{Batch, CheckpointDirective, Position, ShutdownReason};
use crate::retrieval::resume::Resume;
use crate::retrieval::{Arrival, Retrieval, Retriever};
use crate::source::StartPosition;
use crate::telemetry::metrics::ShardMetrics;
use checkpointer::Checkpointer;
use stable_batches::Regroup;

/// How a shard worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Coalesce checkpoint writes to at most one per interval (0: every directive).
    pub checkpoint_interval: Duration,
    /// Where to start a shard whose lease has no processed position yet.
    pub initial_position: StartPosition,
    /// First back-off after a failed checkpoint or dead-letter write.
    pub backoff_initial: Duration,
    /// Longest such back-off.
    pub backoff_max: Duration,
    /// Record each batch's extent with the lease before delivering it, and re-deliver a
    /// recorded batch with the same boundaries (`consumer.stable_batches`).
    pub stable_batches: bool,
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
    retriever: Retriever,
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

/// With stable batches, how long a batch's checkpoint waits for the next batch, whose
/// extent write then carries it (one lease write per batch instead of two). Longer than a
/// paced read (5 per second) and the default idle read interval (500 ms).
const CARRY_WAIT: Duration = Duration::from_secs(1);

/// The batches a retrieval's arrivals make: reshaped (stable batches), queued when one
/// arrival makes several, and the shard's end once those are delivered.
struct Upcoming {
    regroup: Regroup,
    ready: VecDeque<Batch>,
    ended: bool,
}

impl Upcoming {
    fn new(regroup: Regroup) -> Self {
        Self {
            regroup,
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// Queue what the retrieval gave (reshaped); the shard's end once what is gathered
    /// is delivered. Any other stop is passed on.
    fn take(&mut self, next: Step<Batch>) -> Step<()> {
        match next {
            Step::Go(batch) => {
                let arrived = batch.records.len();
                let batches = self.regroup.arrived(batch);
                self.ready.extend(batches);
                if let Some(recut) = self.regroup.take_recut() {
                    tracing::info!(
                        batch = %recut.extent, records = recut.records, arrived,
                        reshaped = recut.reshaped,
                        "cut the recorded batch again"
                    );
                }
                Step::Go(())
            }
            Step::Stop(WorkerExit::ShardEnd) => {
                self.ended = true;
                self.ready.extend(self.regroup.flush());
                Step::Go(())
            }
            Step::Stop(exit) => Step::Stop(exit),
        }
    }

    /// Whether a batch with records is ready now, here or in the retrieval's queue.
    fn has_records_next(&self, retrieval: &Retrieval) -> bool {
        match self.ready.front() {
            Some(batch) => !batch.records.is_empty(),
            None => !self.ended && retrieval.has_records_next(),
        }
    }
}

impl ShardWorker {
    /// A worker for a held lease.
    pub fn new(
        retriever: Retriever,
        store: Arc<dyn LeaseStore>,
        held: Arc<HeldLease>,
        mut processor: ShardProcessor,
        settings: WorkerSettings,
        shutdown: CancellationToken,
        metrics: ShardMetrics,
    ) -> Self {
        processor.bound_by(Arc::clone(&held) as Arc<dyn CallGate>);
        Self {
            retriever,
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
        let exit = tracing::Instrument::instrument(self.run_inner(), span.clone()).await;
        if exit != WorkerExit::LeaseLost {
            return exit;
        }
        if self.held.is_interrupted() {
            // Stopped at the shutdown timeout: every guest call has returned now, so a
            // peer may take the lease at once.
            let released = self.held.release(self.store.as_ref());
            if let Err(e) = tracing::Instrument::instrument(released, span).await {
                tracing::warn!(
                    shard = self.held.key(),
                    "cannot release the interrupted lease (it will expire instead): {e}"
                );
            }
            return WorkerExit::Shutdown;
        }
        // Only before the fence, and interrupted at it; nothing is checkpointed after a
        // loss, so a trap here changes nothing.
        tracing::Instrument::instrument(self.processor.shutdown_after_loss(), span).await;
        WorkerExit::LeaseLost
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
        let mut regroup = if self.settings.stable_batches {
            Regroup::new(lease.pending_batch.clone(), &lease.checkpoint)
        } else {
            Regroup::pass_through()
        };
        if let Some(extent) = regroup.target() {
            tracing::info!(batch = %extent, "delivering the recorded batch again with the same boundaries");
        }
        let mut shard_end_failures: u32 = 0;
        loop {
            let upcoming = Upcoming::new(std::mem::take(&mut regroup));
            let exit = self
                .read_until_stopped(resume, upcoming, &mut checkpointer)
                .await;
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

    /// The delivery loop from `resume`: next batch, deliver, apply the directive,
    /// checkpoint — until something stops it; returns why.
    async fn read_until_stopped(
        &mut self,
        resume: Resume,
        mut upcoming: Upcoming,
        checkpointer: &mut Checkpointer,
    ) -> WorkerExit {
        let mut retrieval = self.open(resume);
        let (interrupt, _interrupt_guard) = self.interrupt_on_loss_or_shutdown();
        loop {
            let batch = match self.next_batch(&retrieval, &mut upcoming).await {
                Step::Go(batch) => Arc::new(batch),
                Step::Stop(exit) => return exit,
            };
            if self.settings.stable_batches
                && let Step::Stop(exit) = self.prepare(&batch, checkpointer).await
            {
                return exit;
            }
            match self.deliver(&batch, &interrupt, checkpointer).await {
                Step::Go(Applied::Continue) => {}
                Step::Go(Applied::Rewind(to)) => {
                    // What was read ahead is dropped with the old retrieval.
                    retrieval = self.open(Resume::from_record(&to));
                    upcoming = Upcoming::new(Regroup::pass_through());
                }
                Step::Stop(exit) => return exit,
            }
            let flushed = if self.settings.stable_batches {
                self.flush_unless_carried(checkpointer, &mut upcoming, &retrieval)
                    .await
            } else {
                self.flush_due(checkpointer).await
            };
            if let Step::Stop(exit) = flushed {
                return exit;
            }
            self.processor.recycle_if_grown().await;
        }
    }

    /// The next batch to deliver: one the last arrival made, or the next arrival's.
    async fn next_batch(&self, retrieval: &Retrieval, upcoming: &mut Upcoming) -> Step<Batch> {
        loop {
            if let Some(batch) = upcoming.ready.pop_front() {
                if self.held.lost().is_cancelled() {
                    return Step::Stop(WorkerExit::LeaseLost);
                }
                if self.shutdown.is_cancelled() || self.held.handoff().is_cancelled() {
                    return Step::Stop(WorkerExit::Shutdown);
                }
                return Step::Go(batch);
            }
            if upcoming.ended {
                return Step::Stop(WorkerExit::ShardEnd);
            }
            if let Step::Stop(exit) = upcoming.take(self.next(retrieval).await) {
                return Step::Stop(exit);
            }
        }
    }

    /// With stable batches: write the batch's extent, and what was processed before it,
    /// with the lease before the guest sees the batch. One write per batch: the
    /// checkpoint of the batch before rides along.
    async fn prepare(&self, batch: &Batch, checkpointer: &mut Checkpointer) -> Step<()> {
        let Some(extent) = stable_batches::extent_of(batch) else {
            return Step::Go(());
        };
        let moves = checkpointer.pending().is_some();
        let checkpoint = checkpointer
            .pending()
            .unwrap_or(checkpointer.last_written())
            .clone();
        let (held, store) = (&self.held, self.store.as_ref());
        let written = self
            .retry_lease_write("batch extent", || {
                held.prepare_batch(store, &checkpoint, &extent)
            })
            .await;
        if let Step::Go(()) = written {
            if moves {
                self.metrics.checkpoints.inc();
            }
            checkpointer.written(checkpoint, Instant::now());
        }
        written
    }

    /// With stable batches: leave the pending checkpoint to the next batch's extent write
    /// if that batch is ready, or arrives within [`CARRY_WAIT`]; else write it on its own.
    async fn flush_unless_carried(
        &self,
        checkpointer: &mut Checkpointer,
        upcoming: &mut Upcoming,
        retrieval: &Retrieval,
    ) -> Step<()> {
        let Some(pending) = checkpointer.pending().cloned() else {
            return Step::Go(());
        };
        if upcoming.has_records_next(retrieval) {
            return Step::Go(());
        }
        if upcoming.ready.is_empty()
            && !upcoming.ended
            && let Ok(next) = tokio::time::timeout(CARRY_WAIT, self.next(retrieval)).await
        {
            if let Step::Stop(exit) = upcoming.take(next) {
                return Step::Stop(exit);
            }
            if upcoming.has_records_next(retrieval) {
                return Step::Go(());
            }
        }
        self.write_checkpoint(checkpointer, pending).await
    }

    /// Start retrieving this shard's records from `resume`.
    fn open(&self, resume: Resume) -> Retrieval {
        self.retriever
            .open(self.held.key(), resume, self.metrics.clone())
    }

    /// The next arrival's batch, unless the lease is lost, shutdown begins or the shard
    /// ends.
    async fn next(&self, retrieval: &Retrieval) -> Step<Batch> {
        let arrival = tokio::select! {
            biased;
            _ = self.held.lost().cancelled() => return Step::Stop(WorkerExit::LeaseLost),
            _ = self.stop_requested() => return Step::Stop(WorkerExit::Shutdown),
            arrival = retrieval.next() => arrival,
        };
        match arrival {
            Arrival::Batch(batch) => Step::Go(Batch {
                records: batch.records,
                millis_behind_latest: batch.millis_behind_latest,
            }),
            Arrival::End => Step::Stop(WorkerExit::ShardEnd),
            Arrival::Failed(message) => Step::Stop(WorkerExit::Failed(message)),
        }
    }

    /// A token cancelled by a lost lease or shutdown (it interrupts a batch waiting to be
    /// retried), and the guard that ends its watcher with the worker.
    fn interrupt_on_loss_or_shutdown(&self) -> (CancellationToken, AbortOnDropHandle<()>) {
        let interrupt = CancellationToken::new();
        let (lost, shutdown, handoff, cancel) = (
            self.held.lost().clone(),
            self.shutdown.clone(),
            self.held.handoff().clone(),
            interrupt.clone(),
        );
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => {},
                _ = shutdown.cancelled() => {},
                _ = handoff.cancelled() => {},
            }
            cancel.cancel();
        });
        (interrupt, AbortOnDropHandle::new(task))
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
        let (held, store) = (&self.held, self.store.as_ref());
        let written = self
            .retry_lease_write("checkpoint", || held.checkpoint(store, &checkpoint))
            .await;
        if let Step::Go(()) = written {
            self.metrics.checkpoints.inc();
            checkpointer.written(checkpoint, Instant::now());
        }
        written
    }

    /// Send a fenced write of the held lease until it succeeds or the lease is lost,
    /// backing off between attempts.
    async fn retry_lease_write<F, W>(&self, what: &str, mut write: W) -> Step<()>
    where
        W: FnMut() -> F,
        F: std::future::Future<Output = Result<(), LeaseError>>,
    {
        let mut attempt = 0;
        loop {
            match write().await {
                Ok(()) => return Step::Go(()),
                Err(e) if self.held.lost().is_cancelled() => {
                    self.metrics.checkpoint_failures.inc();
                    tracing::warn!("{what} refused, lease lost: {e}");
                    return Step::Stop(WorkerExit::LeaseLost);
                }
                Err(e) => {
                    self.metrics.checkpoint_failures.inc();
                    attempt += 1;
                    let delay = self.backoff(attempt);
                    tracing::warn!(attempt, "{what} write failed, retrying: {e}");
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
            _ = self.stop_requested() => Step::Stop(WorkerExit::Shutdown),
            _ = tokio::time::sleep_until(start_after) => Step::Go(()),
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

    /// Resolves once this worker is asked to stop like a shutdown: the consumer shuts
    /// down, or a peer asked for the lease (hand-off).
    async fn stop_requested(&self) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = self.held.handoff().cancelled() => {}
        }
    }

    /// Sleep, unless the lease is lost or shutdown begins.
    async fn pause(&self, delay: Duration) -> Step<()> {
        tokio::select! {
            biased;
            _ = self.held.lost().cancelled() => Step::Stop(WorkerExit::LeaseLost),
            _ = self.stop_requested() => Step::Stop(WorkerExit::Shutdown),
            _ = tokio::time::sleep(delay) => Step::Go(()),
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

/// A shard's guest calls are bounded by its lease: one starts only while the lease may
/// process (not lost, last renewal recent enough), and every call in flight stops when it
/// is lost or fenced.
impl CallGate for HeldLease {
    fn may_start(&self) -> bool {
        self.may_process()
    }

    fn stopped(&self) -> &CancellationToken {
        self.lost()
    }

    fn lost_call_until(&self) -> Option<Instant> {
        HeldLease::lost_call_until(self)
    }
}

enum Applied {
    Continue,
    Rewind(Position),
}
