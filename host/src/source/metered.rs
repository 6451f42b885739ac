//! A source that measures every call (`shoal_source_requests_total` and
//! `shoal_source_request_duration_seconds`, by API operation and outcome) and tells the
//! health state when the source answered, around any other source.

use std::sync::Arc;
use std::time::Instant;

use super::{Fetched, ShardDescription, ShardSource, SourceError, StartPosition};
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

    fn record<T>(
        &self,
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
            self.health.source_answered();
        }
        metrics().source_request(operation, outcome, started.elapsed());
    }
}

#[async_trait::async_trait]
impl ShardSource for MeteredSource {
    fn stream_name(&self) -> &str {
        self.inner.stream_name()
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let started = Instant::now();
        let result = self.inner.list_shards().await;
        self.record("ListShards", started, &result);
        result
    }

    async fn shards_open_at(&self, at_ms: i64) -> Result<Option<Vec<String>>, SourceError> {
        let started = Instant::now();
        let result = self.inner.shards_open_at(at_ms).await;
        self.record("ListShards", started, &result);
        result
    }

    async fn iterator(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, SourceError> {
        let started = Instant::now();
        let result = self.inner.iterator(shard_id, position).await;
        self.record("GetShardIterator", started, &result);
        result
    }

    async fn fetch(&self, iterator: &str, limit: usize) -> Result<Fetched, SourceError> {
        let started = Instant::now();
        let result = self.inner.fetch(iterator, limit).await;
        self.record("GetRecords", started, &result);
        result
    }
}
