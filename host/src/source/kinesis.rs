//! The Kinesis source over aws-sdk-kinesis: ListShards (paged; optionally filtered to the
//! shards open at a time), GetShardIterator and GetRecords, with errors classified for
//! the shard readers (throttling, expired iterator, not found, transient, fatal).

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardFilter, ShardFilterType, ShardIteratorType};

use super::{Fetched, ShardDescription, ShardSource, SourceError, SourceRecord, StartPosition};
use crate::aws::{ErrorClass, Service, classify_call, sdk_config};

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
            client: Client::from_conf(super::kinesis_http::client_config(&config)),
            stream_name: stream_name.map(str::to_string),
            stream_arn: stream_arn.map(str::to_string),
            display_name,
        }
    }

    /// The stream's ARN: as configured, or from DescribeStreamSummary.
    pub async fn stream_arn(&self) -> Result<String, SourceError> {
        if let Some(arn) = &self.stream_arn {
            return Ok(arn.clone());
        }
        let out = self
            .client
            .describe_stream_summary()
            .set_stream_name(self.stream_name.clone())
            .send()
            .await
            .map_err(|e| source_error("DescribeStreamSummary", &e))?;
        out.stream_description_summary()
            .map(|d| d.stream_arn().to_string())
            .ok_or_else(|| {
                SourceError::Transient("DescribeStreamSummary returned no stream".into())
            })
    }

    /// The SDK client (for harnesses that also produce).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every page of ListShards, optionally filtered (the filter goes with the first
    /// page; the paging token carries it on).
    async fn list_pages(&self, filter: Option<ShardFilter>) -> Result<Vec<Shard>, SourceError> {
        let mut shards: Vec<Shard> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The stream may not be named together with a paging token.
            let request = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self
                    .client
                    .list_shards()
                    .set_stream_name(self.stream_name.clone())
                    .set_stream_arn(self.stream_arn.clone())
                    .set_shard_filter(filter.clone()),
            };
            let out = request
                .send()
                .await
                .map_err(|e| source_error("ListShards", &e))?;
            let more = !out.shards().is_empty();
            let next = out.next_token().map(str::to_string);
            shards.extend(out.shards.unwrap_or_default());
            match next {
                Some(t) if !t.is_empty() && more => token = Some(t),
                _ => break,
            }
        }
        // kinesalite ignores paging: drop duplicates it may repeat.
        shards.sort_by(|a, b| a.shard_id().cmp(b.shard_id()));
        shards.dedup_by(|a, b| a.shard_id() == b.shard_id());
        Ok(shards)
    }
}

/// A listed shard as the source describes it.
fn describe(s: &Shard) -> ShardDescription {
    ShardDescription {
        shard_id: s.shard_id().to_string(),
        parent_shard_id: s.parent_shard_id().map(str::to_string),
        adjacent_parent_shard_id: s.adjacent_parent_shard_id().map(str::to_string),
        starting_hash_key: s
            .hash_key_range()
            .map(|h| h.starting_hash_key().to_string()),
        ending_hash_key: s.hash_key_range().map(|h| h.ending_hash_key().to_string()),
        ending_sequence_number: s
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .map(str::to_string),
    }
}

/// A record as the SDK returns it (GetRecords and SubscribeToShard alike).
pub(crate) fn source_record(r: aws_sdk_kinesis::types::Record) -> SourceRecord {
    SourceRecord {
        approximate_arrival_ms: r
            .approximate_arrival_timestamp
            .and_then(|t| t.to_millis().ok())
            .unwrap_or(0),
        sequence_number: r.sequence_number,
        partition_key: r.partition_key.unwrap_or_default(),
        explicit_hash_key: None,
        data: r.data.into_inner(),
    }
}

pub(super) fn source_error<
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
>(
    operation: &str,
    err: &aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> SourceError {
    let (class, message) = classify_call(Service::Kinesis, operation, err);
    match class {
        ErrorClass::Throttled => SourceError::Throttled(message),
        ErrorClass::Transient => SourceError::Transient(message),
        ErrorClass::Service(code) => match code.as_str() {
            "ExpiredIteratorException" => SourceError::ExpiredIterator,
            "ResourceNotFoundException" => SourceError::NotFound(message),
            "ResourceInUseException" => SourceError::Transient(message),
            // A ListShards paging token older than 5 minutes: the next listing starts over.
            "ExpiredNextTokenException" => SourceError::Transient(message),
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
        let shards = self.list_pages(None).await?;
        Ok(shards.iter().map(describe).collect())
    }

    /// ListShards with `ShardFilter` `AT_TIMESTAMP`, as the KCL lists a new stream
    /// (`HierarchicalShardSyncer.getShardListAtInitialPosition`). kinesis-mock supports
    /// this filter too (second precision; a time before the stream's creation lists
    /// every shard, which only makes more shards start at the timestamp).
    async fn shards_open_at(&self, at_ms: i64) -> Result<Option<Vec<String>>, SourceError> {
        let filter = ShardFilter::builder()
            .r#type(ShardFilterType::AtTimestamp)
            .timestamp(DateTime::from_millis(at_ms))
            .build()
            .map_err(|e| SourceError::Fatal(format!("cannot build the shard filter: {e}")))?;
        let shards = self.list_pages(Some(filter)).await?;
        Ok(Some(
            shards.iter().map(|s| s.shard_id().to_string()).collect(),
        ))
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
        let out = request
            .send()
            .await
            .map_err(|e| source_error("GetShardIterator", &e))?;
        out.shard_iterator()
            .map(str::to_string)
            .ok_or_else(|| SourceError::Transient("GetShardIterator returned no iterator".into()))
    }

    async fn fetch(&self, iterator: &str, limit: usize) -> Result<Fetched, SourceError> {
        let limit = i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
        let (out, records) = super::kinesis_http::get_records(&self.client, iterator, limit)
            .await
            .map_err(|e| source_error("GetRecords", &e))?;
        let millis_behind_latest =
            u64::try_from(out.millis_behind_latest().unwrap_or(0)).unwrap_or(0);
        let next_iterator = out.next_shard_iterator().map(str::to_string);
        let child_shards = out
            .child_shards()
            .iter()
            .map(|c| c.shard_id().to_string())
            .collect();
        Ok(Fetched {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange};

    fn shard(id: &str, parents: &[&str], ending: Option<&str>) -> Shard {
        let range = SequenceNumberRange::builder()
            .starting_sequence_number("49590338271490256608559692538361571095921575989136588898")
            .set_ending_sequence_number(ending.map(str::to_string))
            .build()
            .expect("range");
        let hash = HashKeyRange::builder()
            .starting_hash_key("0")
            .ending_hash_key("340282366920938463463374607431768211455")
            .build()
            .expect("hash range");
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parents.first().map(|p| p.to_string()))
            .set_adjacent_parent_shard_id(parents.get(1).map(|p| p.to_string()))
            .hash_key_range(hash)
            .sequence_number_range(range)
            .build()
            .expect("shard")
    }

    #[test]
    fn a_listed_shard_says_whether_it_is_closed_and_who_its_parents_are() {
        let closed = describe(&shard(
            "shardId-000000000004",
            &["shardId-000000000002", "shardId-000000000003"],
            Some("49590338271490256608559692540925702759324208523137515618"),
        ));
        assert!(closed.is_closed());
        assert_eq!(
            closed.ending_sequence_number.as_deref(),
            Some("49590338271490256608559692540925702759324208523137515618")
        );
        assert_eq!(
            closed.parents(),
            vec![
                "shardId-000000000002".to_string(),
                "shardId-000000000003".to_string()
            ]
        );
        assert_eq!(closed.starting_hash_key.as_deref(), Some("0"));

        let open = describe(&shard("shardId-000000000000", &[], None));
        assert!(!open.is_closed());
        assert!(open.parents().is_empty());
    }

    use aws_sdk_kinesis::operation::list_shards::ListShardsError;

    /// What the shard sync and the shard readers do with each ListShards answer: a paging
    /// token that expired is retried (the next sync starts over); a missing stream is
    /// "not found" (the caller checks what is gone); a bad request or denied access ends
    /// the run.
    #[test]
    fn list_shards_errors_are_classified_for_their_callers() {
        let class = |code| {
            source_error(
                "ListShards",
                &crate::aws::test_service_error(code, 400, ListShardsError::generic),
            )
        };
        assert!(matches!(
            class("ExpiredNextTokenException"),
            SourceError::Transient(_)
        ));
        assert!(matches!(
            class("ResourceInUseException"),
            SourceError::Transient(_)
        ));
        assert!(matches!(
            class("ResourceNotFoundException"),
            SourceError::NotFound(_)
        ));
        for fatal in [
            "AccessDeniedException",
            "InvalidArgumentException",
            "ValidationException",
        ] {
            assert!(
                matches!(class(fatal), SourceError::Fatal(ref m) if m.contains(fatal)),
                "{fatal}"
            );
        }
    }
}
