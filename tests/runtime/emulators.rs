//! The local AWS emulators the consumer tests run against (started by `tests/run.sh`
//! through `tests/emulators.sh`), and test-side SDK clients for them: create streams and
//! lease tables, produce records, reshard, read the lease items.
//!
//! A test that needs an emulator and does not find it fails with how to start it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};

/// Credentials and settings every process talking to the emulators gets.
pub const TEST_CREDENTIALS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Which Kinesis emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinesis {
    /// kinesis-mock: the correctness reference (ChildShards, all iterator types).
    Mock,
    /// kinesalite: faster, no ChildShards.
    Kinesalite,
}

/// Endpoints of one Kinesis emulator and DynamoDB Local, checked to be answering.
pub struct Emulators {
    kinesis: String,
    dynamodb: String,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// The emulator tests share two CPU-heavy emulators on a small machine: run them one at
/// a time (the local-backend tests still run beside them).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn endpoint(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Fail loudly when nothing listens at `url`.
fn require(name: &str, url: &str) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let answered = addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        answered,
        "{name} is not answering at {url}. The consumer tests need the local emulators: run them \
         through `bash tests/run.sh` (which starts them), or start them with \
         `bash tests/emulators.sh start` before `cargo test`."
    );
}

impl Emulators {
    /// The emulators, with `kinesis` as the stream service.
    pub fn new(kinesis: Kinesis) -> Self {
        let dynamodb = endpoint("DYNAMODB_ENDPOINT", "http://127.0.0.1:8000");
        Self::with_dynamodb(kinesis, &dynamodb)
    }

    /// `kinesis` and a DynamoDB (Local) of the caller's at `dynamodb`.
    pub fn with_dynamodb(kinesis: Kinesis, dynamodb: &str) -> Self {
        let kinesis = match kinesis {
            Kinesis::Mock => {
                let url = endpoint("KINESIS_ENDPOINT", "http://127.0.0.1:4568");
                require("kinesis-mock", &url);
                url
            }
            Kinesis::Kinesalite => {
                let url = endpoint("KINESALITE_ENDPOINT", "http://127.0.0.1:4570");
                require("kinesalite", &url);
                url
            }
        };
        let dynamodb = dynamodb.to_string();
        require("DynamoDB Local", &dynamodb);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            kinesis,
            dynamodb,
            runtime: Arc::new(runtime),
        }
    }

    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb
    }

    pub fn kinesis_endpoint(&self) -> &str {
        &self.kinesis
    }

    /// A new stream of `shards` shards (ACTIVE), and a name for its lease table.
    pub fn create_stream(&self, shards: usize) -> AwsStream {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "shoal-test-{}-{}-{:04x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u16(..)
        );
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::Config::builder()
                .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
                .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .endpoint_url(&self.kinesis)
                .timeout_config(shoal::aws::timeouts())
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .endpoint_url(&self.dynamodb)
                .timeout_config(shoal::aws::timeouts())
                .build(),
        );
        let stream = AwsStream {
            table: format!("{name}-leases"),
            name,
            dynamodb_endpoint: self.dynamodb.clone(),
            kinesis,
            dynamodb,
            runtime: Arc::clone(&self.runtime),
            targets: Mutex::new(BTreeMap::new()),
        };
        stream.block_on(async {
            stream
                .kinesis
                .create_stream()
                .stream_name(&stream.name)
                .shard_count(i32::try_from(shards).expect("shard count"))
                .send()
                .await
                .expect("CreateStream");
        });
        stream.wait_active();
        stream
    }
}

/// One test's stream and lease table.
pub struct AwsStream {
    pub name: String,
    pub table: String,
    pub dynamodb_endpoint: String,
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    runtime: Arc<tokio::runtime::Runtime>,
    /// An explicit hash key inside each shard's range, to produce to a chosen shard.
    targets: Mutex<BTreeMap<String, String>>,
}

/// A shard as ListShards reports it.
#[derive(Debug, Clone)]
pub struct ListedShard {
    pub shard_id: String,
    pub parents: Vec<String>,
    pub starting_hash_key: u128,
    pub ending_hash_key: u128,
    pub closed: bool,
}

impl AwsStream {
    /// Run SDK calls on the stream's runtime (the clients belong to it).
    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// Wait until the stream is ACTIVE again (after create, split or merge).
    pub fn wait_active(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.block_on(async {
                self.kinesis
                    .describe_stream_summary()
                    .stream_name(&self.name)
                    .send()
                    .await
                    .ok()
                    .and_then(|r| {
                        r.stream_description_summary()
                            .map(|d| d.stream_status().clone())
                    })
            });
            if status == Some(StreamStatus::Active) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {} not ACTIVE after 60 s ({status:?})",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every shard, with paging.
    pub fn shards(&self) -> Vec<ListedShard> {
        self.block_on(async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let request = match &token {
                    Some(t) => self.kinesis.list_shards().next_token(t),
                    None => self.kinesis.list_shards().stream_name(&self.name),
                };
                let page = request.send().await.expect("ListShards");
                for s in page.shards() {
                    let range = s.hash_key_range();
                    out.push(ListedShard {
                        shard_id: s.shard_id().to_string(),
                        parents: s
                            .parent_shard_id()
                            .into_iter()
                            .chain(s.adjacent_parent_shard_id())
                            .map(str::to_string)
                            .collect(),
                        starting_hash_key: range
                            .map_or(0, |r| r.starting_hash_key().parse().expect("hash key")),
                        ending_hash_key: range
                            .map_or(0, |r| r.ending_hash_key().parse().expect("hash key")),
                        closed: s
                            .sequence_number_range()
                            .is_some_and(|r| r.ending_sequence_number().is_some()),
                    });
                }
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    return out;
                }
            }
        })
    }

    fn target(&self, shard: &str) -> String {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if !targets.contains_key(shard) {
            for s in self.shards() {
                let middle = s.starting_hash_key / 2 + s.ending_hash_key / 2;
                targets.insert(s.shard_id, middle.to_string());
            }
        }
        targets
            .get(shard)
            .unwrap_or_else(|| panic!("no shard {shard} in {}", self.name))
            .clone()
    }

    /// Put `(partition key, data)` records into one shard (explicit hash key), in order;
    /// returns their sequence numbers.
    pub fn put_to_shard(&self, shard: &str, records: Vec<(String, String)>) -> Vec<String> {
        self.put_bytes_to_shard(
            shard,
            records
                .into_iter()
                .map(|(pk, data)| (pk, data.into_bytes()))
                .collect(),
        )
    }

    /// Put `(partition key, bytes)` records (KPL aggregates, say) into one shard, in order;
    /// returns their sequence numbers.
    pub fn put_bytes_to_shard(&self, shard: &str, records: Vec<(String, Vec<u8>)>) -> Vec<String> {
        let hash = self.target(shard);
        self.put(
            records
                .into_iter()
                .map(|(pk, data)| (pk, data, Some(hash.clone())))
                .collect(),
        )
    }

    /// Put `(partition key, data)` records routed by partition key, in order.
    pub fn put_by_key(&self, records: Vec<(String, String)>) {
        let _ = self.put(
            records
                .into_iter()
                .map(|(pk, data)| (pk, data.into_bytes(), None))
                .collect(),
        );
    }

    fn put(&self, records: Vec<(String, Vec<u8>, Option<String>)>) -> Vec<String> {
        self.block_on(async {
            let mut sequence_numbers = Vec::new();
            for chunk in records.chunks(500) {
                let entries = chunk
                    .iter()
                    .map(|(pk, data, hash)| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(pk)
                            .data(Blob::new(data.clone()))
                            .set_explicit_hash_key(hash.clone())
                            .build()
                            .expect("entry")
                    })
                    .collect();
                let out = self
                    .kinesis
                    .put_records()
                    .stream_name(&self.name)
                    .set_records(Some(entries))
                    .send()
                    .await
                    .expect("PutRecords");
                // A retried subset would break the order the tests assert on; the
                // emulators never throttle, so a failure here is a harness problem.
                assert_eq!(
                    out.failed_record_count(),
                    Some(0),
                    "PutRecords partially failed"
                );
                sequence_numbers.extend(
                    out.records()
                        .iter()
                        .map(|r| r.sequence_number().unwrap_or_default().to_string()),
                );
            }
            sequence_numbers
        })
    }

    /// Split `shard` in the middle of its hash key range; waits until ACTIVE.
    pub fn split(&self, shard: &str) {
        let listed = self
            .shards()
            .into_iter()
            .find(|s| s.shard_id == shard)
            .expect("shard to split");
        let middle = listed.starting_hash_key / 2 + listed.ending_hash_key / 2;
        self.block_on(async {
            self.kinesis
                .split_shard()
                .stream_name(&self.name)
                .shard_to_split(shard)
                .new_starting_hash_key(middle.to_string())
                .send()
                .await
                .expect("SplitShard");
        });
        self.wait_active();
    }

    /// Merge two adjacent shards; waits until ACTIVE.
    pub fn merge(&self, shard: &str, adjacent: &str) {
        self.block_on(async {
            self.kinesis
                .merge_shards()
                .stream_name(&self.name)
                .shard_to_merge(shard)
                .adjacent_shard_to_merge(adjacent)
                .send()
                .await
                .expect("MergeShards");
        });
        self.wait_active();
    }

    /// Every item of the lease table, raw (a failed Scan fails the test).
    pub fn lease_items(&self) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.block_on(async {
            let mut items = Vec::new();
            let mut start = None;
            loop {
                let page = self
                    .dynamodb
                    .scan()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .expect("Scan the lease table");
                items.extend(page.items().iter().cloned());
                start = page.last_evaluated_key().cloned();
                if start.is_none() {
                    return items;
                }
            }
        })
    }
}
