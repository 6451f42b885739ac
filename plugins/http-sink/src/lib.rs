//! `http-sink`: POSTs each batch as one JSON document to an HTTP endpoint, with the
//! batch's first and last positions as its idempotency key, and checkpoints only after
//! the endpoint accepted it. The endpoint must be granted in `[plugin.sandbox] http`.
//!
//! Settings (`[plugin.settings]`):
//! - `url` (required): e.g. `https://ingest.example.com/v1/records`.
//! - `timeout_ms` (default 5000): connect, first-byte and between-bytes timeout (the host
//!   caps each at the call deadline).
//! - `max_redirects` (default 3): 3xx responses followed; each hop is a new request that
//!   the host checks against the grants again.
//!
//! The body: `{"stream", "shard_id", "first", "last", "records": [{"sequence_number",
//! "sub_sequence_number", "partition_key", "approximate_arrival_ms", "data_base64"}]}`; the
//! header `Idempotency-Key: <stream>/<shard>/<first>-<last>` (positions as
//! `sequence.sub-sequence`) is the same on every retry of a batch, so an endpoint that
//! honours it stores each batch once. With `consumer.stable_batches = true` in the host's
//! config it is also the same when the batch is delivered again after a crash or a lease
//! move (the host cuts the batch with the same first and last record), so the endpoint
//! stores each *record* once; without it such a re-delivery may cut the records
//! differently, under a new key. Outcomes: 2xx → `batch-end`; 5xx, a timeout or a
//! failed connection → `retry`; 4xx, a refused destination or too many redirects → `fatal`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shoal_sdk::http::{self, Error as HttpError};
use shoal_sdk::{Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo};

struct HttpSink {
    url: String,
    timeout: Duration,
    max_redirects: u32,
}

impl Processor for HttpSink {
    fn initialize(_shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        let url = settings
            .get("url")
            .ok_or_else(|| ProcessError::Fatal("setting `url` is required".into()))?
            .to_string();
        Ok(HttpSink {
            url,
            timeout: Duration::from_millis(settings.parse_or("timeout_ms", 5000)?),
            max_redirects: settings.parse_or("max_redirects", 3)?,
        })
    }

    fn process(&mut self, shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else {
            return Ok(CheckpointDirective::BatchEnd);
        };
        let position = |r: &shoal_sdk::KinesisRecord| format!("{}.{}", r.sequence_number, r.sub_sequence_number);
        let (first, last) = (position(first), position(last));
        let key = format!("{}/{}/{first}-{last}", shard.stream_name, shard.shard_id);
        let records: Vec<serde_json::Value> = batch
            .records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "sequence_number": r.sequence_number,
                    "sub_sequence_number": r.sub_sequence_number,
                    "partition_key": r.partition_key,
                    "approximate_arrival_ms": r.approximate_arrival_ms,
                    "data_base64": BASE64.encode(&r.data),
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "stream": shard.stream_name,
            "shard_id": shard.shard_id,
            "first": first,
            "last": last,
            "records": records,
        }))
        .map_err(|e| ProcessError::Fatal(format!("cannot encode the batch: {e}")))?;
        let headers: [(&str, &[u8]); 2] = [("content-type", b"application/json"), ("idempotency-key", key.as_bytes())];

        let mut url = self.url.clone();
        for _hop in 0..=self.max_redirects {
            let response = match http::post(&url, &headers, &body, Some(self.timeout)) {
                Ok(response) => response,
                Err(e @ (HttpError::Denied | HttpError::Invalid(_))) => {
                    return Err(ProcessError::Fatal(format!("POST {url}: {e}")));
                }
                Err(e) => return Err(ProcessError::Retry(format!("POST {url}: {e}"))),
            };
            match response.status {
                200..=299 => return Ok(CheckpointDirective::BatchEnd),
                300..=399 => match response.header("location") {
                    Some(next) => url = resolve_location(&url, &next),
                    None => return Err(ProcessError::Fatal(format!("POST {url}: {} without a Location", response.status))),
                },
                400..=499 => {
                    return Err(ProcessError::Fatal(format!(
                        "POST {url}: {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body).chars().take(200).collect::<String>()
                    )));
                }
                status => return Err(ProcessError::Retry(format!("POST {url}: {status}"))),
            }
        }
        Err(ProcessError::Fatal(format!("POST {}: more than {} redirects", self.url, self.max_redirects)))
    }
}

/// A `Location` value as an absolute URL (a path is taken relative to `current`'s origin).
fn resolve_location(current: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = current.find("://").map(|i| i + 3).and_then(|start| current[start..].find('/').map(|j| start + j)).unwrap_or(current.len());
    format!("{}{}", &current[..origin_end], location)
}

shoal_sdk::export_processor!(HttpSink);
