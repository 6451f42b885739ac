//! A lease store that measures every call (`shoal_lease_store_requests_total`,
//! `shoal_lease_store_request_duration_seconds`) and tells the health state when the
//! store answered, around any other store.

use std::sync::Arc;
use std::time::Instant;

use super::{BatchExtent, Checkpoint, Lease, LeaseError, LeaseStore};
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

    /// Run `call`, then count and time it as `operation`.
    async fn measured<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        let started = Instant::now();
        let result = call.await;
        self.record(operation, started, &result);
        result
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

#[async_trait::async_trait]
impl LeaseStore for MeteredLeaseStore {
    async fn prepare(&self) -> Result<(), LeaseError> {
        self.measured("prepare", self.inner.prepare()).await
    }
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.measured("list", self.inner.list()).await
    }
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.measured("get", self.inner.get(key)).await
    }
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.measured("create", self.inner.create_if_absent(lease))
            .await
    }
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.measured("renew", self.inner.renew(lease)).await
    }
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.measured("take", self.inner.take(lease, owner)).await
    }
    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, LeaseError> {
        self.measured("checkpoint", self.inner.checkpoint(lease, checkpoint))
            .await
    }
    async fn prepare_batch(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        extent: &BatchExtent,
    ) -> Result<Lease, LeaseError> {
        self.measured(
            "prepare_batch",
            self.inner.prepare_batch(lease, checkpoint, extent),
        )
        .await
    }
    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.measured("release", self.inner.release(lease)).await
    }
    async fn request_handoff(&self, lease: &Lease, requester: &str) -> Result<(), LeaseError> {
        self.measured(
            "request_handoff",
            self.inner.request_handoff(lease, requester),
        )
        .await
    }
    async fn set_child_shards(&self, key: &str, children: &[String]) -> Result<(), LeaseError> {
        self.measured(
            "set_child_shards",
            self.inner.set_child_shards(key, children),
        )
        .await
    }
    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.measured("delete", self.inner.delete(lease)).await
    }
}
