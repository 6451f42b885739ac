//! A source (and a subscriber) that measures every call (`shoal_source_requests_total`
//! and `shoal_source_request_duration_seconds`, by API operation and outcome) and tells
//! the health state when the source answered, around any other source. Each event a
//! subscription pushes counts as an answer too.

use std::sync::Arc;
use std::time::Instant;

use super::{
    Fetched, ShardDescription, ShardEvent, ShardSource, ShardSubscriber, SourceError,
    StartPosition, Subscription,
};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::metrics;

/// See the module docs.
#[derive(Debug)]
pub struct MeteredSource {
    inner: Arc<dyn ShardSource>,
    health: Arc<Health>,
}

impl MeteredSource {
    /// Measure `inner`, stamping `health` on every answer.
    pub fn new(inner: Arc<dyn ShardSource>, health: Arc<Health>) -> Self {
        Self { inner, health }
    }

    /// Run `call`, then count and time it as `operation`.
    async fn measured<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let started = Instant::now();
        let result = call.await;
        record(&self.health, operation, started, &result);
        result
    }
}

/// Count and time one call, and stamp `health` if the service answered.
fn record<T>(
    health: &Health,
    operation: &'static str,
    started: Instant,
    result: &Result<T, SourceError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(SourceError::Throttled(_)) => "throttled",
        Err(SourceError::ExpiredIterator) => "expired_iterator",
        Err(SourceError::NotFound(_)) => "not_found",
        Err(SourceError::Transient(_)) => "error",
        Err(SourceError::Fatal(_)) => "fatal",
    };
    // Throttling, an expired iterator and "not found" are answers: the service is up.
    if !matches!(
        result,
        Err(SourceError::Transient(_) | SourceError::Fatal(_))
    ) {
        health.source_answered();
    }
    metrics().source_request(operation, outcome, started.elapsed());
}

/// A subscriber whose SubscribeToShard calls are measured and whose events stamp health.
#[derive(Debug)]
pub struct MeteredSubscriber {
    inner: Arc<dyn ShardSubscriber>,
    health: Arc<Health>,
}

impl MeteredSubscriber {
    /// Measure `inner`, stamping `health` on every answer and event.
    pub fn new(inner: Arc<dyn ShardSubscriber>, health: Arc<Health>) -> Self {
        Self { inner, health }
    }
}

#[async_trait::async_trait]
impl ShardSubscriber for MeteredSubscriber {
    async fn subscribe(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<Box<dyn Subscription>, SourceError> {
        let started = Instant::now();
        let result = self.inner.subscribe(shard_id, position).await;
        record(&self.health, "SubscribeToShard", started, &result);
        let inner = result?;
        Ok(Box::new(MeteredSubscription {
            inner,
            health: Arc::clone(&self.health),
        }))
    }
}

struct MeteredSubscription {
    inner: Box<dyn Subscription>,
    health: Arc<Health>,
}

#[async_trait::async_trait]
impl Subscription for MeteredSubscription {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, SourceError> {
        let event = self.inner.next_event().await;
        if let Ok(Some(_)) = &event {
            self.health.source_answered();
        }
        event
    }
}

#[async_trait::async_trait]
impl ShardSource for MeteredSource {
    fn stream_name(&self) -> &str {
        self.inner.stream_name()
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        self.measured("ListShards", self.inner.list_shards()).await
    }

    async fn shards_open_at(&self, at_ms: i64) -> Result<Option<Vec<String>>, SourceError> {
        self.measured("ListShards", self.inner.shards_open_at(at_ms))
            .await
    }

    async fn iterator(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, SourceError> {
        self.measured("GetShardIterator", self.inner.iterator(shard_id, position))
            .await
    }

    async fn fetch(&self, iterator: &str, limit: usize) -> Result<Fetched, SourceError> {
        self.measured("GetRecords", self.inner.fetch(iterator, limit))
            .await
    }
}
