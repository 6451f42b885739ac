//! Leases: who processes which shard, and how far it got. The `LeaseStore` trait is the
//! seam; DynamoDB (KCL 2.x schema, for several machines) and SQLite (one machine, several
//! processes) implement the same conditional-write semantics.
//!
//! Every write that a worker makes about a lease it holds (renew, checkpoint, release)
//! is conditional on `leaseOwner` = itself and `leaseCounter` = the value it last wrote,
//! and bumps the counter; a take is conditional on the counter the taker observed. The
//! counter is therefore a fencing token: once another worker has taken a lease, every
//! later write by the previous holder fails with `LeaseError::Conflict`.

pub mod coordinator;
pub mod dynamo;
pub mod held;
pub mod memory;
pub mod metered;
pub mod model;
pub mod sqlite;

pub use model::{BatchExtent, Checkpoint, Lease, compare_sequence_numbers};

/// Why a lease operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The condition failed: the lease changed (taken, renewed or checkpointed by someone
    /// else) since it was read. For a holder this means the lease is lost.
    #[error("lease {key} changed since it was read (owner or counter moved on)")]
    Conflict {
        /// The lease key.
        key: String,
    },
    /// No such lease.
    #[error("lease {key} does not exist")]
    NotFound {
        /// The lease key.
        key: String,
    },
    /// A transient failure (throttling, timeout, network, busy database): retry.
    #[error("lease store unavailable: {0}")]
    Transient(String),
    /// A failure that retrying will not fix (bad credentials, corrupt item, ...).
    #[error("lease store error: {0}")]
    Fatal(String),
}

impl LeaseError {
    /// Whether the caller should retry later.
    pub fn is_transient(&self) -> bool {
        matches!(self, LeaseError::Transient(_))
    }
}

/// Storage for leases with conditional writes.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// Create the table (or file) if missing and wait until it is usable.
    async fn prepare(&self) -> Result<(), LeaseError>;

    /// Every lease of the application. On DynamoDB the read is eventually consistent, so
    /// an item may be a moment stale: act on it only through a conditional write.
    async fn list(&self) -> Result<Vec<Lease>, LeaseError>;

    /// One lease.
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError>;

    /// Create `lease` unless one with its key exists; `true` if created.
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError>;

    /// Renew a held lease: owner and counter must match; bumps the counter.
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError>;

    /// Take a lease (expired, unowned, or stolen for balance) for `owner`: the counter
    /// must match what the taker observed; bumps the counter and, when the owner
    /// changes, `ownerSwitchesSinceCheckpoint`.
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError>;

    /// Record a checkpoint for a held lease: owner and counter must match; bumps the
    /// counter and resets `ownerSwitchesSinceCheckpoint`.
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint)
    -> Result<Lease, LeaseError>;

    /// Before delivering a batch (`consumer.stable_batches`): record `checkpoint` (what was
    /// processed before the batch; may be unchanged) and the batch's `extent`, in one write
    /// fenced like [`checkpoint`](Self::checkpoint) (owner and counter must match; bumps
    /// the counter; resets `ownerSwitchesSinceCheckpoint` when the checkpoint moves).
    async fn prepare_batch(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        extent: &BatchExtent,
    ) -> Result<Lease, LeaseError>;

    /// Give up a held lease (owner removed) so a peer can take it at once: owner and
    /// counter must match; bumps the counter. A pending hand-off request stays, reserving
    /// the lease for its requester (a take clears it).
    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError>;

    /// Ask the owner of `lease` to hand it to `requester` gracefully: conditional on the
    /// owner and counter `lease` shows; does not bump the counter (the owner's renewals
    /// must keep working while it finishes its batch).
    async fn request_handoff(&self, lease: &Lease, requester: &str) -> Result<(), LeaseError>;

    /// Record the child shards of a lease (metadata; not fenced).
    async fn set_child_shards(&self, key: &str, children: &[String]) -> Result<(), LeaseError>;

    /// Delete a lease if its counter still matches.
    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError>;
}
