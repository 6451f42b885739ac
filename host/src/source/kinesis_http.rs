//! The Kinesis client's HTTP layer: the SDK's default HTTPS client, except that the
//! answer to a GetRecords call made through [`get_records`] is read as it streams in
//! ([`crate::get_records_body`]) straight into the source's records, which reach the caller
//! through a slot the call carries. The SDK still signs, retries and times out the call and
//! reads every other member of the answer; other operations, error answers and GetRecords
//! calls made without a slot pass through untouched.
//!
//! Why: the SDK buffers a GetRecords body whole (up to ~14 MB of JSON for 10 MB of data),
//! copies it once more to make it contiguous, copies every base64 payload into a string
//! before decoding it, and copies each payload again when it leaves the SDK's `Blob`. Read
//! as it arrives, a fetch holds the decoded records and one network chunk, and each payload
//! is written once, from the bytes received.

use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;

use super::SourceRecord;
use super::kinesis::source_record;
use crate::get_records_body::{GetRecordsBody, ParsedGetRecords};

/// The `X-Amz-Target` of GetRecords.
const GET_RECORDS_TARGET: &str = "Kinesis_20131202.GetRecords";

/// A Kinesis client config from `sdk`, whose GetRecords answers [`get_records`] reads as
/// they stream in.
pub fn client_config(sdk: &aws_config::SdkConfig) -> aws_sdk_kinesis::Config {
    let inner = sdk.http_client().unwrap_or_else(default_https_client);
    aws_sdk_kinesis::config::Builder::from(sdk)
        .http_client(StreamedGetRecords::wrapping(inner))
        .build()
}

/// GetRecords: the SDK's output (its `records` empty when they were streamed) and the
/// records, streamed through a client from [`client_config`] or, from any other client,
/// converted from the SDK's own reading.
pub async fn get_records(
    client: &Client,
    iterator: &str,
    limit: i32,
) -> Result<(GetRecordsOutput, Vec<SourceRecord>), SdkError<GetRecordsError>> {
    let slot = RecordsSlot::for_limit(limit);
    let carried = slot.clone();
    let mut output = client
        .get_records()
        .shard_iterator(iterator)
        .limit(limit)
        .customize()
        // Every attempt's request (a retry's too) carries the slot to the connector.
        .mutate_request(move |request| request.add_extension(carried.clone()))
        .send()
        .await?;
    let records = match slot.take() {
        Some(streamed) => streamed,
        None => std::mem::take(&mut output.records)
            .into_iter()
            .map(source_record)
            .collect(),
    };
    Ok((output, records))
}

/// The SDK's default HTTPS client (hyper 1, rustls with aws-lc, proxy settings from the
/// environment), built as `aws-smithy-runtime` builds it when none is configured.
fn default_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The fewest bytes one record takes in an answer's JSON: its 56-digit sequence number
/// and the four member names alone are more. Only sizes the record list up front.
const MIN_RECORD_JSON_BYTES: usize = 100;

/// Where the connector leaves one call's streamed records (a request extension must be
/// `Clone`). Emptied at the start of every attempt, so it only ever holds the records of
/// the attempt whose answer the SDK read last.
#[derive(Debug, Clone)]
struct RecordsSlot {
    records: Arc<Mutex<Option<Vec<SourceRecord>>>>,
    /// The call's `Limit`: no answer holds more records.
    limit: usize,
}

impl RecordsSlot {
    fn for_limit(limit: i32) -> Self {
        Self {
            records: Arc::default(),
            limit: usize::try_from(limit).unwrap_or(0),
        }
    }

    /// How many records an answer of `content_length` bytes can hold, at most.
    fn room_for(&self, content_length: Option<usize>) -> usize {
        content_length.map_or(0, |bytes| (bytes / MIN_RECORD_JSON_BYTES).min(self.limit))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<SourceRecord>>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, records: Option<Vec<SourceRecord>>) {
        *self.lock() = records;
    }

    fn take(&self) -> Option<Vec<SourceRecord>> {
        self.lock().take()
    }
}

/// An HTTP client whose connectors stream GetRecords answers into the call's slot.
#[derive(Debug, Clone)]
pub struct StreamedGetRecords {
    inner: SharedHttpClient,
}

impl StreamedGetRecords {
    /// `inner`, with GetRecords answers streamed into the call's slot.
    pub fn wrapping(inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(Self { inner })
    }
}

impl HttpClient for StreamedGetRecords {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(StreamedConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct StreamedConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for StreamedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let slot = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t == GET_RECORDS_TARGET)
            .then(|| request.extension::<RecordsSlot>().cloned())
            .flatten();
        let call = self.inner.call(request);
        let Some(slot) = slot else {
            return call;
        };
        slot.put(None);
        HttpConnectorFuture::new(async move {
            let mut response = call.await?;
            if response.status().as_u16() != 200 || !is_json(&response) {
                return Ok(response);
            }
            let content_length = response
                .headers()
                .get("content-length")
                .and_then(|n| n.parse::<usize>().ok());
            let expected = slot.room_for(content_length);
            let parsed = read_as_it_arrives(response.take_body(), expected).await?;
            let rest_len = parsed.rest.len();
            *response.body_mut() = SdkBody::from(parsed.rest);
            response
                .headers_mut()
                .insert("content-length", rest_len.to_string());
            slot.put(Some(parsed.records));
            Ok(response)
        })
    }
}

/// JSON (the Rust SDK asks for awsJson; a CBOR answer is left to the SDK).
fn is_json(response: &HttpResponse) -> bool {
    response
        .headers()
        .get("content-type")
        .is_none_or(|t| t.contains("json"))
}

/// Read `body` chunk by chunk into records and the rest of the answer.
async fn read_as_it_arrives(
    mut body: SdkBody,
    expected_records: usize,
) -> Result<ParsedGetRecords, ConnectorError> {
    let mut reader = GetRecordsBody::expecting(expected_records);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ConnectorError::io)?;
        if let Ok(data) = frame.into_data() {
            reader
                .feed(&data)
                .map_err(|e| ConnectorError::other(e.into(), None))?;
        }
    }
    reader
        .finish()
        .map_err(|e| ConnectorError::other(e.into(), None))
}

/// A Kinesis client over canned answers, with or without the streamed reading: the tests'
/// way to compare it with the SDK's own.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::http::http_client_fn;
    use aws_smithy_runtime_api::http::StatusCode;
    use bytes::Bytes;
    use http_body::Frame;

    use super::*;

    /// One canned answer, sent in chunks of `chunk` bytes.
    #[derive(Debug, Clone)]
    pub struct Canned {
        pub status: u16,
        pub body: Vec<u8>,
        pub chunk: usize,
    }

    /// A body that yields its chunks one by one (an `Err` as a connection broken midway).
    struct Chunks(VecDeque<Result<Bytes, std::io::Error>>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| c.map(Frame::data)))
        }
    }

    /// An answer of `status` whose body is `chunks`.
    fn answer(status: u16, chunks: VecDeque<Result<Bytes, std::io::Error>>) -> HttpConnectorFuture {
        let mut response = HttpResponse::new(
            StatusCode::try_from(status).expect("status"),
            SdkBody::from_body_1_x(Chunks(chunks)),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.1");
        HttpConnectorFuture::ready(Ok(response))
    }

    fn chunked(body: &[u8], chunk: usize) -> VecDeque<Result<Bytes, std::io::Error>> {
        body.chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    impl HttpConnector for Canned {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            answer(self.status, chunked(&self.body, self.chunk))
        }
    }

    /// The first call's body breaks after half of `body`; every later call gets all of it.
    #[derive(Debug, Clone)]
    pub struct BrokenOnce {
        pub body: Vec<u8>,
        pub calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl HttpConnector for BrokenOnce {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if call == 0 {
                let mut chunks = chunked(&self.body[..self.body.len() / 2], 100);
                chunks.push_back(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset midway",
                )));
                answer(200, chunks)
            } else {
                answer(200, chunked(&self.body, 100))
            }
        }
    }

    /// A client answering every call with `canned`; `streamed` installs this module's layer.
    pub fn client(canned: Canned, streamed: bool) -> Client {
        client_over(canned, streamed)
    }

    /// A client over `connector`; `streamed` installs this module's layer.
    pub fn client_over(connector: impl HttpConnector + Clone + 'static, streamed: bool) -> Client {
        let http = http_client_fn(move |_, _| SharedHttpConnector::new(connector.clone()));
        let builder = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9");
        let config = if streamed {
            builder.http_client(StreamedGetRecords::wrapping(http))
        } else {
            builder.http_client(http)
        };
        Client::from_conf(config.build())
    }

    /// What the SDK itself makes of a GetRecords answer.
    pub async fn sdk_reading(body: &[u8]) -> Result<GetRecordsOutput, String> {
        let canned = Canned {
            status: 200,
            body: body.to_vec(),
            chunk: body.len(),
        };
        client(canned, false)
            .get_records()
            .shard_iterator("it")
            .send()
            .await
            .map_err(|e| {
                format!(
                    "{}",
                    aws_smithy_types::error::display::DisplayErrorContext(e)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::error::ProvideErrorMetadata;

    use super::get_records;
    use super::test_support::{BrokenOnce, Canned, client, client_over};
    use crate::get_records_body::tests::varied_answer;

    #[tokio::test]
    async fn streamed_records_equal_the_sdk_reading() {
        let body = varied_answer(false, 40_000);
        for chunk in [1, 100, 16 * 1024] {
            let canned = Canned {
                status: 200,
                body: body.clone(),
                chunk,
            };
            let (plain, plain_records) = get_records(&client(canned.clone(), false), "it", 100)
                .await
                .expect("the SDK's reading");
            let (streamed, streamed_records) = get_records(&client(canned, true), "it", 100)
                .await
                .expect("the streamed reading");
            assert_eq!(plain_records.len(), 3);
            assert!(
                streamed.records.is_empty(),
                "the records came through the slot"
            );
            assert_eq!(streamed_records, plain_records, "chunks of {chunk}");
            assert_eq!(streamed.next_shard_iterator, plain.next_shard_iterator);
            assert_eq!(streamed.millis_behind_latest, plain.millis_behind_latest);
            assert_eq!(streamed.child_shards, plain.child_shards);
        }
    }

    /// A connection broken in the middle of an answer fails that attempt only: the SDK
    /// retries, and the records are the retry's, once.
    #[tokio::test]
    async fn a_body_broken_midway_is_retried_and_only_the_retry_counts() {
        let body = varied_answer(false, 3000);
        let broken = BrokenOnce {
            body: body.clone(),
            calls: Default::default(),
        };
        let (_, records) = get_records(&client_over(broken.clone(), true), "it", 100)
            .await
            .expect("the retry succeeds");
        assert_eq!(
            broken.calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one broken attempt, one retry"
        );
        let whole = Canned {
            status: 200,
            body,
            chunk: 100,
        };
        let (_, expected) = get_records(&client(whole, false), "it", 100)
            .await
            .expect("the SDK's reading");
        assert_eq!(records, expected);
    }

    /// A GetRecords call made without [`get_records`] (no slot) is the SDK's own.
    #[tokio::test]
    async fn a_get_records_call_without_a_slot_is_the_sdks_own() {
        let canned = Canned {
            status: 200,
            body: varied_answer(false, 300),
            chunk: 50,
        };
        let output = client(canned, true)
            .get_records()
            .shard_iterator("it")
            .send()
            .await
            .expect("GetRecords");
        assert_eq!(output.records.len(), 3);
    }

    #[tokio::test]
    async fn error_answers_and_other_operations_reach_the_sdk_untouched() {
        let expired = Canned {
            status: 400,
            body: br#"{"__type":"ExpiredIteratorException","message":"Iterator expired"}"#.to_vec(),
            chunk: 10,
        };
        let error = get_records(&client(expired, true), "it", 100)
            .await
            .expect_err("an error answer");
        assert_eq!(error.code(), Some("ExpiredIteratorException"));

        let shards = Canned {
            status: 200,
            body: br#"{"Shards":[{"ShardId":"shardId-000000000000","HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"1"},"SequenceNumberRange":{"StartingSequenceNumber":"1"}}]}"#.to_vec(),
            chunk: 7,
        };
        let listed = client(shards, true)
            .list_shards()
            .stream_name("s")
            .send()
            .await
            .expect("ListShards");
        assert_eq!(listed.shards().len(), 1);
        assert_eq!(listed.shards()[0].shard_id(), "shardId-000000000000");
    }

    /// A record the layer cannot read fails the call (and the caller retries the same
    /// iterator): it never comes back as an answer with fewer records.
    #[tokio::test]
    async fn an_unreadable_record_fails_the_call_instead_of_vanishing() {
        let canned = Canned {
            status: 200,
            body: br#"{"Records":[{"SequenceNumber":"1","Data":"not base64!"}],"NextShardIterator":"next","MillisBehindLatest":0}"#.to_vec(),
            chunk: 16,
        };
        let error = get_records(&client(canned, true), "it", 100)
            .await
            .expect_err("an unreadable answer is an error");
        let text = format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(&error)
        );
        assert!(text.contains("base64"), "{text}");
    }
}
