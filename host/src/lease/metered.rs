//! A lease store that measures every call (`shoal_lease_store_requests_total`,
//! `shoal_lease_store_request_duration_seconds`) and tells the health state when the
//! store answered, around any other store.

use std::sync::Arc;
use std::time::Instant;

use super::{Checkpoint, Lease, LeaseError, LeaseStore};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::metrics;

/// See the module docs.
#[derive(Debug)]
pub struct MeteredLeaseStore {
    inner: Arc<dyn LeaseStore>,
    health: Arc<Health>,
}

impl MeteredLeaseStore {
    /// Measure `inner`, stamping `health` on every answer.
    pub fn new(inner: Arc<dyn LeaseStore>, health: Arc<Health>) -> Self {
        Self { inner, health }
    }

    fn record<T>(&self, operation: &'static str, started: Instant, result: &Result<T, LeaseError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(LeaseError::Conflict { .. }) => "conflict",
            Err(LeaseError::NotFound { .. }) => "not_found",
            Err(LeaseError::Transient(_)) => "error",
            Err(LeaseError::Fatal(_)) => "fatal",
        };
        // A refused condition is an answer too: the store is up.
        if !matches!(result, Err(LeaseError::Transient(_) | LeaseError::Fatal(_))) {
            self.health.lease_store_answered();
        }
        metrics().lease_store_request(operation, outcome, started.elapsed());
    }
}

macro_rules! metered {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($operation, started, &result);
        result
    }};
}

#[async_trait::async_trait]
impl LeaseStore for MeteredLeaseStore {
    async fn prepare(&self) -> Result<(), LeaseError> {
        metered!(self, "prepare", self.inner.prepare())
    }
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        metered!(self, "list", self.inner.list())
    }
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        metered!(self, "get", self.inner.get(key))
    }
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        metered!(self, "create", self.inner.create_if_absent(lease))
    }
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        metered!(self, "renew", self.inner.renew(lease))
    }
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        metered!(self, "take", self.inner.take(lease, owner))
    }
    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, LeaseError> {
        metered!(self, "checkpoint", self.inner.checkpoint(lease, checkpoint))
    }
    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        metered!(self, "release", self.inner.release(lease))
    }
    async fn request_handoff(&self, lease: &Lease, requester: &str) -> Result<(), LeaseError> {
        metered!(
            self,
            "request_handoff",
            self.inner.request_handoff(lease, requester)
        )
    }
    async fn set_child_shards(&self, key: &str, children: &[String]) -> Result<(), LeaseError> {
        metered!(
            self,
            "set_child_shards",
            self.inner.set_child_shards(key, children)
        )
    }
    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        metered!(self, "delete", self.inner.delete(lease))
    }
}
