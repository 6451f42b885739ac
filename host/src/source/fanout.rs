//! Enhanced fan-out over aws-sdk-kinesis: registering the stream consumer once (found,
//! or registered and waited for until ACTIVE, by whichever worker gets there first) and
//! SubscribeToShard, whose pushed events become [`ShardEvent`]s.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};

use super::kinesis::{KinesisSource, source_error, source_record};
use super::{ShardEvent, ShardSubscriber, SourceError, StartPosition, Subscription};

/// Kinesis allows this many registered consumers per stream.
pub const CONSUMERS_PER_STREAM: usize = 20;
/// Longest a registration may stay `CREATING` before shoal gives up.
const REGISTRATION_WAIT: Duration = Duration::from_secs(300);
/// How often the consumer's status is asked while it is being created or deleted.
const STATUS_POLL: Duration = Duration::from_millis(500);

/// Subscriptions of one registered consumer.
#[derive(Debug, Clone)]
pub struct KinesisSubscriber {
    client: Client,
    consumer_arn: String,
}

impl KinesisSubscriber {
    /// The registered consumer's ARN.
    pub fn consumer_arn(&self) -> &str {
        &self.consumer_arn
    }

    /// Find the consumer `name` on `source`'s stream or register it, and wait until it is
    /// ACTIVE. Workers starting together race safely: a registration that finds one under
    /// way waits for it, so the stream gets one consumer, never two.
    pub async fn register(source: &KinesisSource, name: &str) -> Result<Self, SourceError> {
        let client = source.client().clone();
        let stream_arn = source.stream_arn().await?;
        let started = tokio::time::Instant::now();
        let mut announced = false;
        loop {
            match describe(&client, &stream_arn, name).await? {
                Some((arn, ConsumerStatus::Active)) => {
                    tracing::info!(consumer = name, consumer_arn = %arn, "enhanced fan-out consumer is ACTIVE");
                    return Ok(Self {
                        client,
                        consumer_arn: arn,
                    });
                }
                Some((_, status)) => {
                    if !announced {
                        tracing::info!(consumer = name, status = %status, "waiting for the enhanced fan-out consumer to become ACTIVE");
                        announced = true;
                    }
                }
                None => register(&client, &stream_arn, name).await?,
            }
            if started.elapsed() > REGISTRATION_WAIT {
                return Err(SourceError::Fatal(format!(
                    "the enhanced fan-out consumer {name} on {stream_arn} did not become ACTIVE within {}s",
                    REGISTRATION_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }
}

/// A stream consumer as `shoal check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerState {
    /// Registered, with this ARN and status (`ACTIVE`, `CREATING`, `DELETING`).
    Registered {
        /// Its ARN.
        arn: String,
        /// Its status.
        status: String,
    },
    /// Not registered; the stream has this many other consumers.
    Missing {
        /// Consumers registered on the stream.
        registered: usize,
    },
}

/// Look the consumer `name` up on `source`'s stream without registering it.
pub async fn consumer_state(
    source: &KinesisSource,
    name: &str,
) -> Result<ConsumerState, SourceError> {
    let client = source.client();
    let stream_arn = source.stream_arn().await?;
    if let Some((arn, status)) = describe(client, &stream_arn, name).await? {
        return Ok(ConsumerState::Registered {
            arn,
            status: status.as_str().to_string(),
        });
    }
    let registered = client
        .list_stream_consumers()
        .stream_arn(&stream_arn)
        .send()
        .await
        .map_err(|e| source_error("ListStreamConsumers", &e))?
        .consumers()
        .len();
    Ok(ConsumerState::Missing { registered })
}

/// The consumer's ARN and status, or `None` if the stream has no consumer of that name.
async fn describe(
    client: &Client,
    stream_arn: &str,
    name: &str,
) -> Result<Option<(String, ConsumerStatus)>, SourceError> {
    match client
        .describe_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .consumer_description()
            .map(|d| (d.consumer_arn().to_string(), d.consumer_status().clone()))),
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            // The stream itself may be what is missing: say which.
            match client
                .describe_stream_summary()
                .stream_arn(stream_arn)
                .send()
                .await
            {
                Ok(_) => Ok(None),
                Err(e) => Err(source_error("DescribeStreamSummary", &e)),
            }
        }
        Err(e) => Err(source_error("DescribeStreamConsumer", &e)),
    }
}

/// Register `name`; one being registered by another worker meanwhile is not an error.
async fn register(client: &Client, stream_arn: &str, name: &str) -> Result<(), SourceError> {
    match client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(consumer = name, "registered the enhanced fan-out consumer");
            Ok(())
        }
        // Another worker registered it first: wait for it like for our own.
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
        Err(e) if e.code() == Some("LimitExceededException") => {
            let registered = client
                .list_stream_consumers()
                .stream_arn(stream_arn)
                .send()
                .await
                .map(|out| out.consumers().len())
                .unwrap_or(0);
            if registered >= CONSUMERS_PER_STREAM {
                Err(SourceError::Fatal(format!(
                    "cannot register the enhanced fan-out consumer {name}: the stream already has {registered} registered consumers, Kinesis' limit; deregister one (aws kinesis deregister-stream-consumer), set consumer.consumer_name to one that exists, or use consumer.retrieval = \"polling\""
                )))
            } else {
                // Over the registration call rate: the caller asks again shortly.
                tracing::warn!(
                    consumer = name,
                    "RegisterStreamConsumer throttled; retrying"
                );
                Ok(())
            }
        }
        Err(e) => Err(source_error("RegisterStreamConsumer", &e)),
    }
}

/// The SDK's form of a start position.
fn starting_position(position: &StartPosition) -> Result<StartingPosition, SourceError> {
    let builder = StartingPosition::builder();
    let builder = match position {
        StartPosition::TrimHorizon => builder.r#type(ShardIteratorType::TrimHorizon),
        StartPosition::Latest => builder.r#type(ShardIteratorType::Latest),
        StartPosition::AtTimestamp(ms) => builder
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from_millis(*ms)),
        StartPosition::AtSequence(s) => builder
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(s),
        StartPosition::AfterSequence(s) => builder
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(s),
    };
    builder
        .build()
        .map_err(|e| SourceError::Fatal(format!("cannot build a starting position: {e}")))
}

#[async_trait::async_trait]
impl ShardSubscriber for KinesisSubscriber {
    async fn subscribe(
        &self,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<Box<dyn Subscription>, SourceError> {
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(shard_id)
            .starting_position(starting_position(position)?)
            .send()
            .await
            .map_err(|e| match e.code() {
                // Another subscription to this shard is still open (the previous holder's,
                // or ours within 5 s), or the call rate was exceeded: retry later.
                Some("ResourceInUseException") | Some("LimitExceededException") => {
                    SourceError::Throttled(format!(
                        "SubscribeToShard: {}",
                        e.message().unwrap_or("subscription limit")
                    ))
                }
                _ => source_error("SubscribeToShard", &e),
            })?;
        Ok(Box::new(SdkSubscription {
            events: out.event_stream,
        }))
    }
}

struct SdkSubscription {
    events: aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        SubscribeToShardEventStream,
        aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
    >,
}

#[async_trait::async_trait]
impl Subscription for SdkSubscription {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, SourceError> {
        loop {
            let event = match self.events.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => event,
                // A kind of event this SDK does not know: not records, skip it.
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(None),
                Err(e) => {
                    let message = format!(
                        "SubscribeToShard event stream: {}",
                        e.message().or(e.code()).unwrap_or("connection ended")
                    );
                    return Err(match e.code() {
                        Some("ResourceNotFoundException") => SourceError::NotFound(message),
                        Some(code)
                            if code.starts_with("Kms") && code != "KmsThrottlingException" =>
                        {
                            SourceError::Fatal(message)
                        }
                        _ => SourceError::Transient(message),
                    });
                }
            };
            let continuation =
                Some(event.continuation_sequence_number().to_string()).filter(|c| !c.is_empty());
            let child_shards = event
                .child_shards()
                .iter()
                .map(|c| c.shard_id().to_string())
                .collect();
            return Ok(Some(ShardEvent {
                millis_behind_latest: u64::try_from(event.millis_behind_latest()).unwrap_or(0),
                continuation,
                child_shards,
                records: event.records.into_iter().map(source_record).collect(),
            }));
        }
    }
}
