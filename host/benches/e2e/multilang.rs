//! The baseline consumer of the end-to-end benchmark: a daemon shaped like the KCL
//! MultiLangDaemon. It reads each shard with the same SDK, batch size and pacing as
//! shoal, checkpoints through shoal's own DynamoDB lease store, and hands every batch to
//! one child process per shard as a JSON line with base64 data, waiting for the child's
//! `checkpoint` request and `status` answer (the MultiLangDaemon protocol).
//!
//! It runs as its own process (the bench binary re-executed with `SHOAL_E2E_ROLE` set),
//! so its CPU and memory, and its children's, are measured like shoal's. It is a
//! generous baseline: no lease renewal, no shard sync, no JVM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use shoal::lease::dynamo::DynamoLeaseStore;
use shoal::lease::{Checkpoint, Lease, LeaseStore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

/// Set (to anything) when the bench binary is started as the baseline daemon.
pub const ROLE_VAR: &str = "SHOAL_E2E_ROLE";

/// What the daemon is told through its environment.
pub struct DaemonArgs {
    pub stream: String,
    pub table: String,
    pub kinesis_endpoint: String,
    pub dynamodb_endpoint: String,
    /// The child's command line (program first).
    pub child: Vec<String>,
    pub max_records: i32,
    pub idle_time_between_reads: Duration,
}

impl DaemonArgs {
    /// The environment that carries these arguments to the daemon process.
    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (ROLE_VAR.into(), "multilang-daemon".into()),
            ("E2E_STREAM".into(), self.stream.clone()),
            ("E2E_TABLE".into(), self.table.clone()),
            ("E2E_KINESIS".into(), self.kinesis_endpoint.clone()),
            ("E2E_DYNAMODB".into(), self.dynamodb_endpoint.clone()),
            ("E2E_CHILD".into(), self.child.join("\u{1f}")),
            ("E2E_MAX_RECORDS".into(), self.max_records.to_string()),
            (
                "E2E_IDLE_MS".into(),
                self.idle_time_between_reads.as_millis().to_string(),
            ),
        ]
    }

    fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} not set"));
        Ok(Self {
            stream: var("E2E_STREAM")?,
            table: var("E2E_TABLE")?,
            kinesis_endpoint: var("E2E_KINESIS")?,
            dynamodb_endpoint: var("E2E_DYNAMODB")?,
            child: var("E2E_CHILD")?
                .split('\u{1f}')
                .map(str::to_string)
                .collect(),
            max_records: var("E2E_MAX_RECORDS")?.parse()?,
            idle_time_between_reads: Duration::from_millis(var("E2E_IDLE_MS")?.parse()?),
        })
    }
}

/// The daemon's entry point; returns the process exit code.
pub fn main() -> i32 {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("multilang daemon: cannot start a runtime: {e}");
            return 1;
        }
    };
    match DaemonArgs::from_env().and_then(|args| runtime.block_on(run(args))) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multilang daemon: {e:#}");
            1
        }
    }
}

async fn run(args: DaemonArgs) -> Result<()> {
    let args = Arc::new(args);
    let config = shoal::aws::sdk_config(Some("us-east-1"), Some(&args.kinesis_endpoint)).await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let store = Arc::new(
        DynamoLeaseStore::connect(
            &args.table,
            Some("us-east-1"),
            Some(&args.dynamodb_endpoint),
        )
        .await,
    );
    store.prepare().await.context("preparing the lease table")?;
    let shards = kinesis
        .list_shards()
        .stream_name(&args.stream)
        .send()
        .await
        .context("ListShards")?;
    let stop = CancellationToken::new();
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signal.recv().await;
        on_signal.cancel();
    });
    let mut tasks = Vec::new();
    for shard in shards.shards() {
        tasks.push(tokio::spawn(consume_shard(
            kinesis.clone(),
            Arc::clone(&store),
            Arc::clone(&args),
            shard.shard_id().to_string(),
            stop.clone(),
        )));
    }
    for task in tasks {
        task.await.context("shard task panicked")??;
    }
    Ok(())
}

/// One record as the MultiLangDaemon sends it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonRecord<'a> {
    action: &'static str,
    data: String,
    partition_key: &'a str,
    sequence_number: &'a str,
    sub_sequence_number: u64,
    approximate_arrival_timestamp: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessRecords<'a> {
    action: &'static str,
    millis_behind_latest: i64,
    records: Vec<JsonRecord<'a>>,
}

/// One shard's child process and the lease the daemon holds for it.
struct ShardChild {
    shard_id: String,
    child: Child,
    to_child: ChildStdin,
    from_child: Lines<BufReader<ChildStdout>>,
    store: Arc<DynamoLeaseStore>,
    lease: Lease,
}

impl ShardChild {
    /// Send one message and serve the child until it answers with `status`: each
    /// `checkpoint` request on the way is written to the lease table (`None` = through
    /// `last`, the batch's last record) and answered.
    async fn exchange(&mut self, message: &[u8], last: Option<&str>) -> Result<()> {
        self.to_child.write_all(message).await?;
        self.to_child.write_all(b"\n").await?;
        self.to_child.flush().await?;
        loop {
            let line = self
                .from_child
                .next_line()
                .await?
                .with_context(|| format!("{}: the child closed its output", self.shard_id))?;
            let answer: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}: not a protocol message: {line}", self.shard_id))?;
            match answer["action"].as_str() {
                Some("status") => return Ok(()),
                Some("checkpoint") => {
                    let sequence = answer["sequenceNumber"]
                        .as_str()
                        .or(last)
                        .context("a checkpoint with nothing to checkpoint")?
                        .to_string();
                    self.lease = self
                        .store
                        .checkpoint(
                            &self.lease,
                            &Checkpoint::Sequence {
                                sequence: sequence.clone(),
                                sub_sequence: 0,
                            },
                        )
                        .await
                        .context("checkpoint")?;
                    let reply = serde_json::json!({
                        "action": "checkpoint",
                        "sequenceNumber": sequence,
                        "subSequenceNumber": 0,
                        "error": null,
                    });
                    self.to_child
                        .write_all(format!("{reply}\n").as_bytes())
                        .await?;
                    self.to_child.flush().await?;
                }
                other => bail!("{}: unexpected message {other:?}: {line}", self.shard_id),
            }
        }
    }
}

async fn consume_shard(
    kinesis: aws_sdk_kinesis::Client,
    store: Arc<DynamoLeaseStore>,
    args: Arc<DaemonArgs>,
    shard_id: String,
    stop: CancellationToken,
) -> Result<()> {
    store
        .create_if_absent(&Lease::new(&shard_id, Checkpoint::TrimHorizon))
        .await?;
    let current = store.get(&shard_id).await?.context("lease vanished")?;
    let lease = store.take(&current, "multilang-daemon").await?;
    let mut child = tokio::process::Command::new(&args.child[0])
        .args(&args.child[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", args.child))?;
    let to_child = child.stdin.take().context("child stdin")?;
    let from_child = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let mut shard = ShardChild {
        shard_id: shard_id.clone(),
        child,
        to_child,
        from_child,
        store,
        lease,
    };
    let init = serde_json::json!({
        "action": "initialize",
        "shardId": shard_id,
        "sequenceNumber": "TRIM_HORIZON",
        "subSequenceNumber": 0,
    });
    shard.exchange(init.to_string().as_bytes(), None).await?;

    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(&args.stream)
        .shard_id(&shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .context("GetShardIterator")?
        .shard_iterator
        .context("no iterator")?;
    let mut message = Vec::with_capacity(16 << 20);
    let mut ended = false;
    while !stop.is_cancelled() {
        let called = Instant::now();
        let out = kinesis
            .get_records()
            .shard_iterator(&iterator)
            .limit(args.max_records)
            .send()
            .await
            .context("GetRecords")?;
        let millis_behind = out.millis_behind_latest().unwrap_or(0);
        let records = out.records();
        if let Some(last) = records.last() {
            let batch = ProcessRecords {
                action: "processRecords",
                millis_behind_latest: millis_behind,
                records: records
                    .iter()
                    .map(|r| JsonRecord {
                        action: "record",
                        data: BASE64.encode(r.data().as_ref()),
                        partition_key: r.partition_key().unwrap_or_default(),
                        sequence_number: r.sequence_number(),
                        sub_sequence_number: 0,
                        approximate_arrival_timestamp: r
                            .approximate_arrival_timestamp()
                            .map(|t| t.to_millis().unwrap_or(0)),
                    })
                    .collect(),
            };
            message.clear();
            serde_json::to_writer(&mut message, &batch)?;
            shard
                .exchange(&message, Some(last.sequence_number()))
                .await?;
        }
        match out.next_shard_iterator() {
            Some(next) => iterator = next.to_string(),
            None => {
                ended = true;
                break;
            }
        }
        let delay = shoal::retrieval::pacing::next_fetch_delay(
            records.len(),
            u64::try_from(millis_behind).unwrap_or(0),
            args.idle_time_between_reads,
            called.elapsed(),
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => {}
        }
    }
    let farewell = if ended {
        serde_json::json!({"action": "shardEnded", "checkpoint": "SHARD_END"})
    } else {
        serde_json::json!({"action": "shutdownRequested", "checkpoint": null})
    };
    let last = match &shard.lease.checkpoint {
        Checkpoint::Sequence { sequence, .. } => Some(sequence.clone()),
        _ => None,
    };
    shard
        .exchange(farewell.to_string().as_bytes(), last.as_deref())
        .await?;
    drop(shard.to_child);
    let status = shard.child.wait().await?;
    if !status.success() {
        bail!("{shard_id}: the child exited with {status}");
    }
    Ok(())
}
