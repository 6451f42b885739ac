//! The DynamoDB lease store, item-compatible with KCL 2.x: table keyed by `leaseKey` (S);
//! `leaseOwner` (S), `leaseCounter` (N), `checkpoint` (S), `checkpointSubSequenceNumber`
//! (N), `ownerSwitchesSinceCheckpoint` (N), `parentShardId` (SS), `childShardIds` (SS),
//! `startingHashKey` / `endingHashKey` (S). Writes are `UpdateItem`s that touch only these
//! attributes, so attributes written by other tools are preserved.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnConsumedCapacity, ReturnValue, ScalarAttributeType, TableStatus,
};

use super::{BatchExtent, Checkpoint, Lease, LeaseError, LeaseStore};
use crate::aws::{ErrorClass, Service, classify, classify_call, sdk_config};

/// How long `prepare` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

const KEY: &str = "leaseKey";
const OWNER: &str = "leaseOwner";
const COUNTER: &str = "leaseCounter";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
const PARENTS: &str = "parentShardId";
const CHILDREN: &str = "childShardIds";
const STARTING_HASH_KEY: &str = "startingHashKey";
const ENDING_HASH_KEY: &str = "endingHashKey";
/// shoal's own attribute for graceful hand-off requests (KCL ignores unknown attributes).
const HANDOFF_TO: &str = "shoalHandoffTo";
/// shoal's own attribute: the batch being delivered (`consumer.stable_batches`).
const PENDING_BATCH: &str = "shoalPendingBatch";

/// The owner a write on a held lease is conditional on; an unowned lease is not held.
fn held_owner(lease: &Lease) -> Result<String, LeaseError> {
    lease.owner.clone().ok_or_else(|| LeaseError::Conflict {
        key: lease.key.clone(),
    })
}

/// Leases in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
    /// Scan with `ConsistentRead` (twice the read units). Off by default: see `list`.
    consistent_scans: bool,
    /// Keys of skipped items already logged (see `skipped`).
    warned: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// How many skipped items are named in the log (each once); the count goes on.
const MAX_WARNED_ITEMS: usize = 64;

/// KCL 3.x marks items that are not shard leases with this attribute.
const ENTITY_TYPE: &str = "entityType";

/// A scanned item as a lease, or why it is not one: it carries another tool's
/// `entityType`, has no `leaseCounter`, or cannot be parsed.
fn lease_item(item: &HashMap<String, AttributeValue>) -> Result<Lease, String> {
    if let Some(kind) = item.get(ENTITY_TYPE) {
        return Err(format!("it is not a shard lease ({ENTITY_TYPE} {kind:?})"));
    }
    if !item.contains_key(COUNTER) {
        return Err(format!("it has no {COUNTER}"));
    }
    parse(item).map_err(|e| e.to_string())
}

impl DynamoLeaseStore {
    /// Connect with the default credential chain and optional overrides.
    pub async fn connect(table: &str, region: Option<&str>, endpoint: Option<&str>) -> Self {
        let config = sdk_config(region, endpoint).await;
        Self {
            client: Client::new(&config),
            table: table.to_string(),
            consistent_scans: false,
            warned: Default::default(),
        }
    }

    /// Use an existing client (tests, or callers with their own SDK config).
    pub fn with_client(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
            consistent_scans: false,
            warned: Default::default(),
        }
    }

    /// Scan the table with strongly consistent reads (twice the read units) instead of
    /// eventually consistent ones. Nothing needs it (see `list`); the lease-cost
    /// benchmark uses it to measure what the eventually consistent scan saves.
    pub fn with_consistent_scans(mut self, consistent: bool) -> Self {
        self.consistent_scans = consistent;
        self
    }

    /// A scan found an item that is not a lease shoal can read: count it, and say so
    /// once per key (every scan sees it again).
    fn skipped(&self, item: &HashMap<String, AttributeValue>, why: &str) {
        crate::telemetry::metrics::metrics()
            .lease_items_skipped
            .inc();
        let key = item
            .get(KEY)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "(no leaseKey)".into());
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() < MAX_WARNED_ITEMS && warned.insert(key.clone()) {
            tracing::warn!(table = %self.table, item = %key, "skipping an item of the lease table: {why}; it is left as it is");
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SDK client (for tests that inspect items).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table's status (`ACTIVE`, `CREATING`, …), or `None` if it does not exist.
    pub async fn table_status(&self) -> Result<Option<String>, LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.table()
                    .and_then(|t| t.table_status())
                    .map_or_else(|| "unknown".to_string(), |s| s.as_str().to_string()),
            )),
            Err(e) => match classify(&e) {
                (ErrorClass::Service(code), _) if code == "ResourceNotFoundException" => Ok(None),
                _ => Err(lease_error("DescribeTable", &e)),
            },
        }
    }

    /// A conditional update of a lease. A failed condition is a conflict; for a take it
    /// is first settled by a consistent read, so an SDK retry of a take that did succeed
    /// is not mistaken for a lost race (the taker's fence counts from before the take was
    /// sent, so nothing is extended). A holder's own writes (renew, checkpoint, release)
    /// are settled by the holder, which knows which of its writes are unconfirmed (see
    /// `crate::lease::held`).
    async fn fenced_update(
        &self,
        operation: &'static str,
        lease: &Lease,
        update: &str,
        condition: &str,
        mut values: HashMap<String, AttributeValue>,
        names: &[(&str, &str)],
    ) -> Result<Lease, LeaseError> {
        let next = lease.counter + 1;
        values.insert(":next".into(), n(next));
        values.insert(":expected".into(), n(lease.counter));
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(&lease.key))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        match request.send().await {
            Ok(out) => {
                record_capacity(operation, out.consumed_capacity());
                parse(
                    out.attributes()
                        .ok_or_else(|| LeaseError::Fatal("UpdateItem returned no item".into()))?,
                )
            }
            Err(e) => {
                let (class, message) = classify_call(Service::DynamoDb, "UpdateItem", &e);
                match class {
                    ErrorClass::Service(code)
                        if code == "ConditionalCheckFailedException" && operation != "take" =>
                    {
                        Err(LeaseError::Conflict {
                            key: lease.key.clone(),
                        })
                    }
                    ErrorClass::Service(code) if code == "ConditionalCheckFailedException" => {
                        match self.get(&lease.key).await? {
                            None => Err(LeaseError::NotFound {
                                key: lease.key.clone(),
                            }),
                            // Our own take landed on an earlier attempt.
                            Some(now) if now.counter == next && now.owner == lease.owner => Ok(now),
                            Some(_) => Err(LeaseError::Conflict {
                                key: lease.key.clone(),
                            }),
                        }
                    }
                    ErrorClass::Service(code) if code == "ResourceNotFoundException" => {
                        Err(LeaseError::Fatal(message))
                    }
                    ErrorClass::Throttled | ErrorClass::Transient => {
                        Err(LeaseError::Transient(message))
                    }
                    _ => Err(LeaseError::Fatal(message)),
                }
            }
        }
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The write's condition did not hold (the lease changed, or is absent).
fn condition_failed<
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
>(
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    matches!(classify(e).0, ErrorClass::Service(code) if code == "ConditionalCheckFailedException")
}

fn lease_error<E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &str,
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> LeaseError {
    let (class, message) = classify_call(Service::DynamoDb, operation, e);
    match class {
        ErrorClass::Throttled | ErrorClass::Transient => LeaseError::Transient(message),
        _ => LeaseError::Fatal(message),
    }
}

fn parse(item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
    let text =
        |name: &str| -> Option<String> { item.get(name).and_then(|v| v.as_s().ok()).cloned() };
    let number = |name: &str| -> Result<u64, LeaseError> {
        match item.get(name) {
            None => Ok(0),
            Some(v) => v.as_n().ok().and_then(|n| n.parse().ok()).ok_or_else(|| {
                LeaseError::Fatal(format!("lease attribute {name} is not a number: {v:?}"))
            }),
        }
    };
    let set = |name: &str| -> Vec<String> {
        item.get(name)
            .map(|v| match v {
                AttributeValue::Ss(list) => list.clone(),
                AttributeValue::S(one) => vec![one.clone()],
                _ => Vec::new(),
            })
            .unwrap_or_default()
    };
    let key = text(KEY).ok_or_else(|| LeaseError::Fatal("lease item without leaseKey".into()))?;
    let checkpoint = Checkpoint::from_attributes(
        &text(CHECKPOINT).unwrap_or_else(|| "TRIM_HORIZON".into()),
        number(CHECKPOINT_SUB)?,
    )
    .map_err(|e| LeaseError::Fatal(format!("lease {key}: {e}")))?;
    let known = [
        KEY,
        OWNER,
        COUNTER,
        CHECKPOINT,
        CHECKPOINT_SUB,
        OWNER_SWITCHES,
        PARENTS,
        CHILDREN,
        STARTING_HASH_KEY,
        ENDING_HASH_KEY,
        PENDING_BATCH,
    ];
    let extra = item
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), format!("{v:?}")))
        .collect();
    let mut parents = set(PARENTS);
    parents.sort();
    let mut children = set(CHILDREN);
    children.sort();
    Ok(Lease {
        owner: text(OWNER),
        counter: number(COUNTER)?,
        checkpoint,
        owner_switches_since_checkpoint: number(OWNER_SWITCHES)?,
        parent_shard_ids: parents,
        child_shard_ids: children,
        starting_hash_key: text(STARTING_HASH_KEY),
        ending_hash_key: text(ENDING_HASH_KEY),
        handoff_to: text(HANDOFF_TO),
        pending_batch: text(PENDING_BATCH).and_then(|v| {
            BatchExtent::from_attribute(&v)
                .map_err(|e| tracing::warn!(lease = %key, "ignoring {PENDING_BATCH}: {e}"))
                .ok()
        }),
        extra,
        key,
    })
}

#[async_trait::async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn prepare(&self) -> Result<(), LeaseError> {
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) => match classify(&e) {
                (ErrorClass::Service(code), _) if code == "ResourceNotFoundException" => false,
                _ => return Err(lease_error("DescribeTable", &e)),
            },
        };
        if !exists {
            let created = self
                .client
                .create_table()
                .table_name(&self.table)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(KEY)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| LeaseError::Fatal(e.to_string()))?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(KEY)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| LeaseError::Fatal(e.to_string()))?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(table = %self.table, "created the lease table (on-demand billing)")
                }
                Err(e) => match classify(&e) {
                    // Another worker created it first.
                    (ErrorClass::Service(code), _) if code == "ResourceInUseException" => {}
                    _ => return Err(lease_error("CreateTable", &e)),
                },
            }
        }
        let started = tokio::time::Instant::now();
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| lease_error("DescribeTable", &e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if started.elapsed() > TABLE_ACTIVE_TIMEOUT {
                return Err(LeaseError::Fatal(format!(
                    "lease table {} did not become ACTIVE within {TABLE_ACTIVE_TIMEOUT:?}",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// An eventually consistent Scan (as KCL's): half the read units of a consistent
    /// one, and safe, because nothing acts on it without a conditional write. A take is
    /// conditional on the counter the taker saw; a stale item can make a take fail, or
    /// make expiry be judged later (a taker's clock starts when it first sees a counter
    /// value, and a value can only be seen after it was written), never sooner.
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(self.consistent_scans)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| lease_error("Scan", &e))?;
            record_capacity("list", out.consumed_capacity());
            for item in out.items() {
                match lease_item(item) {
                    Ok(lease) => leases.push(lease),
                    Err(why) => self.skipped(item, &why),
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| lease_error("GetItem", &e))?;
        record_capacity("get", out.consumed_capacity());
        out.item().map(parse).transpose()
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut item = HashMap::from([
            (KEY.to_string(), s(&lease.key)),
            (COUNTER.to_string(), n(lease.counter)),
            (CHECKPOINT.to_string(), s(lease.checkpoint.as_attribute())),
            (
                CHECKPOINT_SUB.to_string(),
                n(lease.checkpoint.sub_sequence()),
            ),
            (
                OWNER_SWITCHES.to_string(),
                n(lease.owner_switches_since_checkpoint),
            ),
        ]);
        if let Some(owner) = &lease.owner {
            item.insert(OWNER.into(), s(owner));
        }
        if !lease.parent_shard_ids.is_empty() {
            item.insert(
                PARENTS.into(),
                AttributeValue::Ss(lease.parent_shard_ids.clone()),
            );
        }
        if !lease.child_shard_ids.is_empty() {
            item.insert(
                CHILDREN.into(),
                AttributeValue::Ss(lease.child_shard_ids.clone()),
            );
        }
        if let Some(h) = &lease.starting_hash_key {
            item.insert(STARTING_HASH_KEY.into(), s(h));
        }
        if let Some(h) = &lease.ending_hash_key {
            item.insert(ENDING_HASH_KEY.into(), s(h));
        }
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(leaseKey)")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                record_capacity("create", out.consumed_capacity());
                Ok(true)
            }
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(lease_error("PutItem", &e)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let owner = held_owner(lease)?;
        self.fenced_update(
            "renew",
            lease,
            "SET leaseCounter = :next",
            "leaseOwner = :owner AND leaseCounter = :expected",
            HashMap::from([(":owner".to_string(), s(&owner))]),
            &[],
        )
        .await
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let switch = lease
            .owner
            .as_deref()
            .is_some_and(|previous| previous != owner);
        let update = if switch {
            "SET leaseOwner = :owner, leaseCounter = :next ADD ownerSwitchesSinceCheckpoint :one REMOVE shoalHandoffTo"
        } else {
            "SET leaseOwner = :owner, leaseCounter = :next REMOVE shoalHandoffTo"
        };
        let mut values = HashMap::from([(":owner".to_string(), s(owner))]);
        if switch {
            values.insert(":one".into(), n(1));
        }
        let mut target = lease.clone();
        target.owner = Some(owner.to_string());
        self.fenced_update(
            "take",
            &target,
            update,
            "attribute_exists(leaseKey) AND leaseCounter = :expected",
            values,
            &[],
        )
        .await
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, LeaseError> {
        let owner = held_owner(lease)?;
        self.fenced_update(
            "checkpoint",
            lease,
            "SET #cp = :cp, checkpointSubSequenceNumber = :sub, ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next",
            "leaseOwner = :owner AND leaseCounter = :expected",
            HashMap::from([
                (":owner".to_string(), s(&owner)),
                (":cp".to_string(), s(checkpoint.as_attribute())),
                (":sub".to_string(), n(checkpoint.sub_sequence())),
                (":zero".to_string(), n(0)),
            ]),
            &[("#cp", CHECKPOINT)],
        )
        .await
    }

    async fn prepare_batch(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        extent: &BatchExtent,
    ) -> Result<Lease, LeaseError> {
        let owner = held_owner(lease)?;
        let mut values = HashMap::from([
            (":owner".to_string(), s(&owner)),
            (":cp".to_string(), s(checkpoint.as_attribute())),
            (":sub".to_string(), n(checkpoint.sub_sequence())),
            (":pending".to_string(), s(&extent.as_attribute())),
        ]);
        // As a checkpoint write does, a checkpoint that moves resets the owner switches.
        let update = if lease.checkpoint == *checkpoint {
            "SET #cp = :cp, checkpointSubSequenceNumber = :sub, #pending = :pending, leaseCounter = :next"
        } else {
            values.insert(":zero".to_string(), n(0));
            "SET #cp = :cp, checkpointSubSequenceNumber = :sub, #pending = :pending, ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next"
        };
        self.fenced_update(
            "prepare_batch",
            lease,
            update,
            "leaseOwner = :owner AND leaseCounter = :expected",
            values,
            &[("#cp", CHECKPOINT), ("#pending", PENDING_BATCH)],
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let owner = held_owner(lease)?;
        self.fenced_update(
            "release",
            lease,
            "SET leaseCounter = :next REMOVE leaseOwner",
            "leaseOwner = :owner AND leaseCounter = :expected",
            HashMap::from([(":owner".to_string(), s(&owner))]),
            &[],
        )
        .await
    }

    async fn request_handoff(&self, lease: &Lease, requester: &str) -> Result<(), LeaseError> {
        let owner = held_owner(lease)?;
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(&lease.key))
            .update_expression("SET shoalHandoffTo = :to")
            .condition_expression("leaseOwner = :owner AND leaseCounter = :expected")
            .expression_attribute_values(":to", s(requester))
            .expression_attribute_values(":owner", s(&owner))
            .expression_attribute_values(":expected", n(lease.counter))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                record_capacity("request_handoff", out.consumed_capacity());
                Ok(())
            }
            Err(e) if condition_failed(&e) => Err(LeaseError::Conflict {
                key: lease.key.clone(),
            }),
            Err(e) => Err(lease_error("UpdateItem", &e)),
        }
    }

    async fn set_child_shards(&self, key: &str, children: &[String]) -> Result<(), LeaseError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .condition_expression("attribute_exists(leaseKey)");
        let request = if children.is_empty() {
            request.update_expression("REMOVE childShardIds")
        } else {
            request
                .update_expression("SET childShardIds = :c")
                .expression_attribute_values(":c", AttributeValue::Ss(children.to_vec()))
        };
        match request
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                record_capacity("set_child_shards", out.consumed_capacity());
                Ok(())
            }
            Err(e) if condition_failed(&e) => Err(LeaseError::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(lease_error("UpdateItem", &e)),
        }
    }

    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        match self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, s(&lease.key))
            .condition_expression("attribute_not_exists(leaseKey) OR leaseCounter = :expected")
            .expression_attribute_values(":expected", n(lease.counter))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                record_capacity("delete", out.consumed_capacity());
                Ok(())
            }
            Err(e) if condition_failed(&e) => Err(LeaseError::Conflict {
                key: lease.key.clone(),
            }),
            Err(e) => Err(lease_error("DeleteItem", &e)),
        }
    }
}

/// Count the capacity units DynamoDB reports for one request (a refused conditional
/// write consumes units too, but its error does not say how many).
fn record_capacity(
    operation: &'static str,
    consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>,
) {
    if let Some(units) = consumed.and_then(|c| c.capacity_units()) {
        crate::telemetry::metrics::metrics().lease_capacity(operation, units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_scan_reads_leases_and_names_why_other_items_are_not_ones() {
        let lease = item(&[
            (KEY, s("shardId-0")),
            (COUNTER, n(3)),
            (CHECKPOINT, s("TRIM_HORIZON")),
        ]);
        assert_eq!(lease_item(&lease).expect("a lease").counter, 3);
        let cases = [
            (
                item(&[(KEY, s("worker-1")), (ENTITY_TYPE, s("WORKER_METRICS"))]),
                "not a shard lease",
            ),
            (item(&[(KEY, s("note"))]), "no leaseCounter"),
            (
                item(&[(KEY, s("shardId-1")), (COUNTER, s("seven"))]),
                "not a number",
            ),
            (
                item(&[
                    (KEY, s("shardId-2")),
                    (COUNTER, n(1)),
                    (CHECKPOINT, s("not-a-position")),
                ]),
                "shardId-2",
            ),
            (item(&[(COUNTER, n(1))]), "without leaseKey"),
        ];
        for (item, why) in cases {
            let refused = lease_item(&item).expect_err("not a lease");
            assert!(refused.contains(why), "{item:?}: {refused}");
        }
    }

    #[test]
    fn a_pending_batch_is_read_and_a_malformed_one_ignored_not_fatal() {
        let with = |value: &str| {
            lease_item(&item(&[
                (KEY, s("shardId-0")),
                (COUNTER, n(3)),
                (PENDING_BATCH, s(value)),
            ]))
            .expect("a lease")
        };
        let lease = with("100/0 250/2");
        assert_eq!(
            lease.pending_batch.map(|e| e.as_attribute()).as_deref(),
            Some("100/0 250/2")
        );
        assert!(lease.extra.is_empty(), "not kept as a foreign attribute");
        assert_eq!(with("garbage").pending_batch, None);
    }
}
