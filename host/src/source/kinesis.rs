//! The Kinesis source over aws-sdk-kinesis: ListShards (paged), GetShardIterator and
//! GetRecords, with errors classified for the fetch loop (throttling, expired iterator,
//! not found, transient, fatal).

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;

use super::{Fetched, ShardDescription, ShardSource, SourceError, SourceRecord, StartPosition};
use crate::aws::{ErrorClass, classify, sdk_config};

/// A Kinesis stream.
#[derive(Debug, Clone)]
pub struct KinesisSource {
    client: Client,
    stream_name: Option<String>,
    stream_arn: Option<String>,
    display_name: String,
}

impl KinesisSource {
    /// Connect with the default credential chain and optional overrides.
    pub async fn connect(
        stream_name: Option<&str>,
        stream_arn: Option<&str>,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> Self {
        let config = sdk_config(region, endpoint).await;
        let display_name = stream_name
            .map(str::to_string)
            .or_else(|| {
                stream_arn
                    .and_then(|a| a.rsplit('/').next())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Self {
            client: Client::new(&config),
            stream_name: stream_name.map(str::to_string),
            stream_arn: stream_arn.map(str::to_string),
            display_name,
        }
    }

    /// The SDK client (for harnesses that also produce).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn source_error<E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static>(
    err: &aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> SourceError {
    let (class, message) = classify(err);
    match class {
        ErrorClass::Throttled => SourceError::Throttled(message),
        ErrorClass::Transient => SourceError::Transient(message),
        ErrorClass::Service(code) => match code.as_str() {
            "ExpiredIteratorException" => SourceError::ExpiredIterator,
            "ResourceNotFoundException" => SourceError::NotFound(message),
            "ResourceInUseException" => SourceError::Transient(message),
            _ => SourceError::Fatal(message),
        },
        ErrorClass::Fatal => SourceError::Fatal(message),
    }
}

#[async_trait::async_trait]
impl ShardSource for KinesisSource {
    fn stream_name(&self) -> &str {
        &self.display_name
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The stream may not be named together with a paging token.
            let request = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self
                    .client
                    .list_shards()
                    .set_stream_name(self.stream_name.clone())
                    .set_stream_arn(self.stream_arn.clone()),
            };
            let out = request.send().await.map_err(|e| source_error(&e))?;
            for s in out.shards() {
                shards.push(ShardDescription {
                    shard_id: s.shard_id().to_string(),
                    parent_shard_id: s.parent_shard_id().map(str::to_string),
                    adjacent_parent_shard_id: s.adjacent_parent_shard_id().map(str::to_string),
                    starting_hash_key: s
                        .hash_key_range()
                        .map(|h| h.starting_hash_key().to_string()),
                    ending_hash_key: s.hash_key_range().map(|h| h.ending_hash_key().to_string()),
                });
            }
            match out.next_token() {
                Some(t) if !t.is_empty() && !out.shards().is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        // kinesalite ignores paging: drop duplicates it may repeat.
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        shards.dedup_by(|a, b| a.shard_id == b.shard_id);
        Ok(shards)
    }

    async fn iterator(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String, SourceError> {
        let request = self
            .client
            .get_shard_iterator()
            .set_stream_name(self.stream_name.clone())
            .set_stream_arn(self.stream_arn.clone())
            .shard_id(shard_id);
        let request = match position {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtTimestamp(ms) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
            StartPosition::AtSequence(s) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(s),
            StartPosition::AfterSequence(s) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(s),
        };
        let out = request.send().await.map_err(|e| source_error(&e))?;
        out.shard_iterator()
            .map(str::to_string)
            .ok_or_else(|| SourceError::Transient("GetShardIterator returned no iterator".into()))
    }

    async fn fetch(&self, iterator: &str, limit: usize) -> Result<Fetched, SourceError> {
        let limit = i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| source_error(&e))?;
        let millis_behind_latest =
            u64::try_from(out.millis_behind_latest().unwrap_or(0)).unwrap_or(0);
        let next_iterator = out.next_shard_iterator().map(str::to_string);
        let child_shards = out
            .child_shards()
            .iter()
            .map(|c| c.shard_id().to_string())
            .collect();
        let records = out
            .records
            .into_iter()
            .map(|r| SourceRecord {
                approximate_arrival_ms: r
                    .approximate_arrival_timestamp
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
                sequence_number: r.sequence_number,
                partition_key: r.partition_key.unwrap_or_default(),
                explicit_hash_key: None,
                data: r.data.into_inner(),
            })
            .collect();
        Ok(Fetched {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}
