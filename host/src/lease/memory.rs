//! An in-memory lease store with the same conditional-write semantics as SQLite and
//! DynamoDB, and faults to inject per operation: the coordinator's decisions are tested
//! against it under tokio's controllable clock (a store on another thread would let the
//! paused clock run ahead while it works).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{BatchExtent, Checkpoint, Lease, LeaseError, LeaseStore};

/// How an operation behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Fail with a transient error (a 500, throttling, a timeout).
    Fail,
    /// Never answer (a hung connection).
    Hang,
    /// Apply the write, then answer with a transient error (a 500 or a reset connection
    /// after DynamoDB applied it): the caller cannot tell it landed.
    ApplyThenFail,
}

/// Which operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// `renew`.
    Renew,
    /// `checkpoint`.
    Checkpoint,
    /// `list`.
    List,
    /// `release`.
    Release,
}

/// Leases in a map; see the module docs.
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    leases: Mutex<BTreeMap<String, Lease>>,
    faults: Mutex<BTreeMap<Operation, Fault>>,
}

impl MemoryLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `operation` behave as `fault` from now on.
    pub fn inject(&self, operation: Operation, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operation, fault);
    }

    fn fault(&self, operation: Operation) -> Fault {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&operation)
            .copied()
            .unwrap_or_default()
    }

    /// The fault's part before the operation runs (fail or hang instead).
    async fn apply_fault(&self, operation: Operation) -> Result<(), LeaseError> {
        match self.fault(operation) {
            Fault::None | Fault::ApplyThenFail => Ok(()),
            Fault::Fail => Err(LeaseError::Transient(format!(
                "injected failure of {operation:?}"
            ))),
            Fault::Hang => std::future::pending().await,
        }
    }

    /// Run a write under the fault for `operation`: `ApplyThenFail` applies it and
    /// loses the answer.
    async fn write(
        &self,
        operation: Operation,
        write: impl FnOnce() -> Result<Lease, LeaseError>,
    ) -> Result<Lease, LeaseError> {
        self.apply_fault(operation).await?;
        let result = write();
        match (self.fault(operation), result) {
            (Fault::ApplyThenFail, Ok(_)) => Err(LeaseError::Transient(format!(
                "injected failure of {operation:?} after it was applied"
            ))),
            (_, result) => result,
        }
    }

    /// Apply `change` to the stored lease if `condition` holds for it; bump the counter
    /// when `bump`.
    fn conditional(
        &self,
        key: &str,
        condition: impl FnOnce(&Lease) -> bool,
        change: impl FnOnce(&mut Lease),
        bump: bool,
    ) -> Result<Lease, LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stored) = leases.get_mut(key) else {
            return Err(LeaseError::NotFound { key: key.into() });
        };
        if !condition(stored) {
            return Err(LeaseError::Conflict { key: key.into() });
        }
        change(stored);
        if bump {
            stored.counter += 1;
        }
        Ok(stored.clone())
    }
}

/// The holder's condition: same owner, same counter.
fn held_as(lease: &Lease) -> impl FnOnce(&Lease) -> bool + '_ {
    move |stored| stored.owner == lease.owner && stored.counter == lease.counter
}

#[async_trait::async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn prepare(&self) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.apply_fault(Operation::List).await?;
        Ok(self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        Ok(self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.contains_key(&lease.key) {
            return Ok(false);
        }
        leases.insert(lease.key.clone(), lease.clone());
        Ok(true)
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.write(Operation::Renew, || {
            self.conditional(&lease.key, held_as(lease), |_| {}, true)
        })
        .await
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let expected = lease.counter;
        self.conditional(
            &lease.key,
            |stored| stored.counter == expected,
            |stored| {
                if stored.owner.as_deref().is_some_and(|o| o != owner) {
                    stored.owner_switches_since_checkpoint += 1;
                }
                stored.owner = Some(owner.to_string());
                stored.handoff_to = None;
            },
            true,
        )
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, LeaseError> {
        self.write(Operation::Checkpoint, || {
            self.conditional(
                &lease.key,
                held_as(lease),
                |stored| {
                    stored.checkpoint = checkpoint.clone();
                    stored.owner_switches_since_checkpoint = 0;
                },
                true,
            )
        })
        .await
    }

    async fn prepare_batch(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        extent: &BatchExtent,
    ) -> Result<Lease, LeaseError> {
        // Faults for checkpoints apply: it is the same kind of write.
        self.write(Operation::Checkpoint, || {
            self.conditional(
                &lease.key,
                held_as(lease),
                |stored| {
                    if stored.checkpoint != *checkpoint {
                        stored.owner_switches_since_checkpoint = 0;
                    }
                    stored.checkpoint = checkpoint.clone();
                    stored.pending_batch = Some(extent.clone());
                },
                true,
            )
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.write(Operation::Release, || {
            self.conditional(
                &lease.key,
                held_as(lease),
                |stored| stored.owner = None,
                true,
            )
        })
        .await
    }

    async fn request_handoff(&self, lease: &Lease, requester: &str) -> Result<(), LeaseError> {
        self.conditional(
            &lease.key,
            held_as(lease),
            |stored| stored.handoff_to = Some(requester.to_string()),
            false,
        )
        .map(|_| ())
    }

    async fn set_child_shards(&self, key: &str, children: &[String]) -> Result<(), LeaseError> {
        self.conditional(
            key,
            |_| true,
            |stored| stored.child_shard_ids = children.to_vec(),
            false,
        )
        .map(|_| ())
    }

    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get(&lease.key) {
            Some(stored) if stored.counter == lease.counter => {
                leases.remove(&lease.key);
                Ok(())
            }
            Some(_) => Err(LeaseError::Conflict {
                key: lease.key.clone(),
            }),
            None => Ok(()),
        }
    }
}
