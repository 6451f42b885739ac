//! shoal's Prometheus metrics: one registry per process (every series carries the
//! consumer's `stream` as a constant label), typed families, and the per-shard handles a
//! shard worker keeps and gives back when it stops, so a shard that moved to another
//! process leaves no stale series here.
//!
//! Cardinality: five series per owned shard (records, bytes, lag, checkpoints, checkpoint
//! failures); everything else is per process, labelled only by small fixed sets
//! (operation, outcome, trap kind). A process owning 1,000 shards exports about 5,000
//! per-shard series.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of a per-shard series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    /// The shard id.
    pub shard: String,
}

/// Labels of a call to an AWS service (or the lease store).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The API operation, e.g. `GetRecords`, `renew`.
    pub operation: &'static str,
    /// `ok`, `throttled`, `error`, … (see each metric's help).
    pub outcome: &'static str,
}

/// Labels naming only an operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The API operation.
    pub operation: &'static str,
}

/// Labels naming a kind (of trap, guest error, lease loss).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: &'static str,
}

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: &'static str,
}

type SecondsGauge = Gauge<f64, AtomicU64>;

fn call_histogram() -> Histogram {
    // 1 ms … 24 s: local calls to AWS take a few ms, a throttled or hung one seconds.
    Histogram::new(exponential_buckets(0.001, 2.5, 12))
}

/// Every metric shoal exports.
pub struct Metrics {
    registry: Registry,
    records_processed: Family<ShardLabel, Counter>,
    bytes_processed: Family<ShardLabel, Counter>,
    behind_latest: Family<ShardLabel, SecondsGauge>,
    checkpoints: Family<ShardLabel, Counter>,
    checkpoint_failures: Family<ShardLabel, Counter>,
    /// Source (Kinesis, or the local files) requests by operation and outcome.
    pub source_requests: Family<CallLabels, Counter>,
    /// Source request latency by operation.
    pub source_request_seconds: Family<OperationLabel, Histogram>,
    /// Lease-store requests by operation and outcome.
    pub lease_store_requests: Family<CallLabels, Counter>,
    /// Lease-store request latency by operation.
    pub lease_store_request_seconds: Family<OperationLabel, Histogram>,
    /// DynamoDB capacity units the lease table consumed, by operation.
    pub lease_capacity_units: Family<OperationLabel, Counter<f64, AtomicU64>>,
    /// Guest `process` call latency.
    pub guest_call_seconds: Histogram,
    /// Guest traps by kind.
    pub guest_traps: Family<KindLabel, Counter>,
    /// Guest-reported errors by kind (`retry`, `fatal`).
    pub guest_errors: Family<KindLabel, Counter>,
    /// Batch attempts after a failed one.
    pub batch_retries: Counter,
    /// Batches that reached the poison policy.
    pub batches_poisoned: Counter,
    /// Batches written to the dead-letter directory.
    pub batches_dead_lettered: Counter,
    /// Instances replaced after a batch because their memory grew above `recycle_above`.
    pub instances_recycled: Counter,
    /// Guest log lines (`log`, stdout, stderr, refusal warnings) over an instance's
    /// `plugin.limits.log_rate`, not logged.
    pub guest_log_lines_suppressed: Counter,
    /// Outbound I/O a guest was refused, by kind (`http`, `tcp`, `udp`, `name-lookup`).
    pub guest_refusals: Family<KindLabel, Counter>,
    /// Guest requests refused because they would pass a host limit, by limit
    /// (`host_memory`, `descriptors`, `write_permit`, `poll_list`, `grant`).
    pub guest_limit_refusals: Family<KindLabel, Counter>,
    /// Log lines dropped because stderr did not take them fast enough.
    pub log_lines_dropped: Counter,
    /// The plugin generation in use.
    pub plugin_generation: Gauge,
    /// Plugin reloads by outcome (`accepted`, `rejected`).
    pub plugin_reloads: Family<OutcomeLabel, Counter>,
    /// Leases this process holds.
    pub leases_held: Gauge,
    /// Leases taken (unowned, released or expired).
    pub leases_taken: Counter,
    /// Leases taken from a live owner that did not hand them over.
    pub leases_stolen: Counter,
    /// Leases lost, by reason (`refused`: another worker took it; `fenced`: no renewal
    /// succeeded in time).
    pub leases_lost: Family<KindLabel, Counter>,
    /// Leases released (shutdown, shard end, a worker's failure).
    pub leases_released: Counter,
    /// Leases handed over to a worker that asked for them.
    pub leases_handed_off: Counter,
    /// Items of the lease table that are not leases shoal can read (another tool's
    /// items, or malformed ones): skipped by every scan, never written or deleted.
    pub lease_items_skipped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The handles one shard worker updates (cheap clones of the registered series).
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    /// Records processed (or dead-lettered).
    pub records: Counter,
    /// Their data bytes.
    pub bytes: Counter,
    /// How far behind the stream's tip the last read (GetRecords or fan-out event) was.
    pub behind_latest: SecondsGauge,
    /// Checkpoints written.
    pub checkpoints: Counter,
    /// Checkpoint writes that failed.
    pub checkpoint_failures: Counter,
}

impl ShardMetrics {
    /// Record a read's `MillisBehindLatest`.
    pub fn set_behind_latest(&self, millis: u64) {
        self.behind_latest
            .set(Duration::from_millis(millis).as_secs_f64());
    }
}

impl Metrics {
    /// A registry whose series all carry `stream` (when given) as a label.
    pub fn new(stream: Option<&str>) -> Self {
        let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = stream
            .map(|s| (Cow::Borrowed("stream"), Cow::Owned(s.to_string())))
            .into_iter()
            .collect();
        let mut registry = Registry::with_prefix_and_labels("shoal", labels.into_iter());
        let m = Self {
            records_processed: Family::default(),
            bytes_processed: Family::default(),
            behind_latest: Family::default(),
            checkpoints: Family::default(),
            checkpoint_failures: Family::default(),
            source_requests: Family::default(),
            source_request_seconds: Family::new_with_constructor(call_histogram),
            lease_store_requests: Family::default(),
            lease_store_request_seconds: Family::new_with_constructor(call_histogram),
            lease_capacity_units: Family::default(),
            // 50 µs … 13 s: a trivial guest call takes microseconds, the default deadline is 10 s.
            guest_call_seconds: Histogram::new(exponential_buckets(0.000_05, 4.0, 10)),
            guest_traps: Family::default(),
            guest_errors: Family::default(),
            batch_retries: Counter::default(),
            batches_poisoned: Counter::default(),
            batches_dead_lettered: Counter::default(),
            instances_recycled: Counter::default(),
            guest_log_lines_suppressed: Counter::default(),
            guest_refusals: Family::default(),
            guest_limit_refusals: Family::default(),
            log_lines_dropped: Counter::default(),
            plugin_generation: Gauge::default(),
            plugin_reloads: Family::default(),
            leases_held: Gauge::default(),
            leases_taken: Counter::default(),
            leases_stolen: Counter::default(),
            leases_lost: Family::default(),
            leases_released: Counter::default(),
            leases_handed_off: Counter::default(),
            lease_items_skipped: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "records_processed",
            "Records a processor finished (processed or dead-lettered), per shard",
            m.records_processed.clone(),
        );
        r.register_with_unit(
            "processed",
            "Data bytes of the records counted by shoal_records_processed_total, per shard",
            Unit::Bytes,
            m.bytes_processed.clone(),
        );
        r.register_with_unit(
            "behind_latest",
            "How far the last read of a shard (GetRecords or a fan-out event) was behind the tip of the stream (Kinesis' MillisBehindLatest, in seconds)",
            Unit::Seconds,
            m.behind_latest.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints written, per shard",
            m.checkpoints.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoint writes that failed (retried, or the lease was lost), per shard",
            m.checkpoint_failures.clone(),
        );
        r.register(
            "source_requests",
            "Requests to the stream (Kinesis API operations; the local source reports the same names) by operation and outcome (ok, throttled, expired_iterator, not_found, error, fatal)",
            m.source_requests.clone(),
        );
        r.register_with_unit(
            "source_request_duration",
            "Stream request latency by operation, retries of the SDK included",
            Unit::Seconds,
            m.source_request_seconds.clone(),
        );
        r.register(
            "lease_store_requests",
            "Lease-store (DynamoDB or SQLite) requests by operation and outcome (ok, conflict, not_found, error: throttled or unavailable, fatal)",
            m.lease_store_requests.clone(),
        );
        r.register_with_unit(
            "lease_store_request_duration",
            "Lease-store request latency by operation",
            Unit::Seconds,
            m.lease_store_request_seconds.clone(),
        );
        r.register(
            "lease_capacity_units",
            "DynamoDB capacity units the lease table consumed, as DynamoDB reported them, by operation (Scan and GetItem: read units; the updates: write units)",
            m.lease_capacity_units.clone(),
        );
        r.register_with_unit(
            "guest_call_duration",
            "Latency of the processor's process() calls",
            Unit::Seconds,
            m.guest_call_seconds.clone(),
        );
        r.register(
            "guest_traps",
            "Processor traps by kind (panic, deadline-exceeded, memory-cap-exceeded, …)",
            m.guest_traps.clone(),
        );
        r.register(
            "guest_errors",
            "Errors a processor returned, by kind (retry, fatal)",
            m.guest_errors.clone(),
        );
        r.register(
            "batch_retries",
            "Attempts at a batch after a failed one",
            m.batch_retries.clone(),
        );
        r.register(
            "batches_poisoned",
            "Batches that reached the poison policy (max_attempts failures, or fatal)",
            m.batches_poisoned.clone(),
        );
        r.register(
            "batches_dead_lettered",
            "Batches written to the dead-letter directory",
            m.batches_dead_lettered.clone(),
        );
        r.register(
            "instances_recycled",
            "Guest instances replaced by fresh ones after a batch because their memory grew above plugin.limits.recycle_above",
            m.instances_recycled.clone(),
        );
        r.register(
            "guest_log_lines_suppressed",
            "Guest log lines (log import, stdout, stderr, sandbox refusal warnings) over an instance's plugin.limits.log_rate, counted and not logged",
            m.guest_log_lines_suppressed.clone(),
        );
        r.register(
            "guest_refusals",
            "Outbound I/O a processor was refused by its grants, by kind (http, tcp, udp, name-lookup)",
            m.guest_refusals.clone(),
        );
        r.register(
            "guest_limit_refusals",
            "Processor requests refused because they would pass a host limit, by limit (host_memory, descriptors, write_permit, poll_list, grant)",
            m.guest_limit_refusals.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines dropped because the log output (stderr) did not take them fast enough",
            m.log_lines_dropped.clone(),
        );
        r.register(
            "plugin_generation",
            "The plugin generation in use (1 at start, +1 per accepted reload)",
            m.plugin_generation.clone(),
        );
        r.register(
            "plugin_reloads",
            "Plugin reloads by outcome (accepted, rejected)",
            m.plugin_reloads.clone(),
        );
        r.register(
            "leases_held",
            "Leases this process holds",
            m.leases_held.clone(),
        );
        r.register(
            "leases_taken",
            "Leases taken (unowned, released, expired or stolen)",
            m.leases_taken.clone(),
        );
        r.register(
            "leases_stolen",
            "Leases taken from a live owner that did not hand them over in time",
            m.leases_stolen.clone(),
        );
        r.register(
            "leases_lost",
            "Leases lost, by reason (refused: another worker took it; fenced: no renewal succeeded in time)",
            m.leases_lost.clone(),
        );
        r.register(
            "leases_released",
            "Leases released at shutdown, shard end or a worker failure",
            m.leases_released.clone(),
        );
        r.register(
            "leases_handed_off",
            "Leases handed over to the worker that asked for them",
            m.leases_handed_off.clone(),
        );
        r.register(
            "lease_items_skipped",
            "Lease-table items skipped by a scan because they are not leases (another tool's items) or cannot be read; never written or deleted",
            m.lease_items_skipped.clone(),
        );
        m.zero_known_series();
        Self { registry, ..m }
    }

    /// Create the series whose label values are known in advance at 0, so a dashboard
    /// or alert sees `0`, not "no data", until the first event.
    fn zero_known_series(&self) {
        for kind in crate::plugin::TrapKind::ALL {
            self.guest_traps
                .get_or_create_owned(&KindLabel { kind: kind.label() });
        }
        for kind in ["retry", "fatal"] {
            self.guest_errors.get_or_create_owned(&KindLabel { kind });
        }
        for kind in ["refused", "fenced"] {
            self.leases_lost.get_or_create_owned(&KindLabel { kind });
        }
        for kind in crate::egress::Protocol::ALL {
            self.guest_refusals
                .get_or_create_owned(&KindLabel { kind: kind.label() });
        }
        for kind in crate::plugin::budget::Limit::ALL {
            self.guest_limit_refusals
                .get_or_create_owned(&KindLabel { kind: kind.key() });
        }
        for outcome in ["accepted", "rejected"] {
            self.plugin_reloads
                .get_or_create_owned(&OutcomeLabel { outcome });
        }
    }

    /// The handles for one shard's series (created on first use).
    pub fn shard(&self, shard: &str) -> ShardMetrics {
        let label = ShardLabel {
            shard: shard.to_string(),
        };
        ShardMetrics {
            records: self.records_processed.get_or_create_owned(&label),
            bytes: self.bytes_processed.get_or_create_owned(&label),
            behind_latest: self.behind_latest.get_or_create_owned(&label),
            checkpoints: self.checkpoints.get_or_create_owned(&label),
            checkpoint_failures: self.checkpoint_failures.get_or_create_owned(&label),
        }
    }

    /// Drop a shard's series: this process no longer owns it.
    pub fn forget_shard(&self, shard: &str) {
        let label = ShardLabel {
            shard: shard.to_string(),
        };
        self.records_processed.remove(&label);
        self.bytes_processed.remove(&label);
        self.behind_latest.remove(&label);
        self.checkpoints.remove(&label);
        self.checkpoint_failures.remove(&label);
    }

    /// Count one request to the stream.
    pub fn source_request(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.source_requests
            .get_or_create(&CallLabels { operation, outcome })
            .inc();
        self.source_request_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
    }

    /// Count one request to the lease store.
    pub fn lease_store_request(
        &self,
        operation: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.lease_store_requests
            .get_or_create(&CallLabels { operation, outcome })
            .inc();
        self.lease_store_request_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
    }

    /// Add the capacity units one lease-table request consumed.
    pub fn lease_capacity(&self, operation: &'static str, units: f64) {
        self.lease_capacity_units
            .get_or_create(&OperationLabel { operation })
            .inc_by(units);
    }

    /// Count one lease loss.
    pub fn lease_lost(&self, reason: &'static str) {
        self.leases_lost
            .get_or_create(&KindLabel { kind: reason })
            .inc();
    }

    /// The Prometheus text exposition (OpenMetrics 1.0, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Label every series with `stream`: call once, before anything is recorded (`shoal
/// run` does). Later calls, and a first call after something was recorded, change
/// nothing.
pub fn install(stream: &str) {
    let _ = METRICS.set(Metrics::new(Some(stream)));
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_the_stream_and_shard_and_a_forgotten_shard_leaves_none() {
        let m = Metrics::new(Some("orders"));
        let shard = m.shard("shardId-000000000001");
        shard.records.inc_by(3);
        shard.bytes.inc_by(300);
        shard.set_behind_latest(1_500);
        m.source_request("GetRecords", "throttled", Duration::from_millis(4));
        m.lease_lost("fenced");
        let text = m.encode();
        for line in [
            r#"shoal_records_processed_total{stream="orders",shard="shardId-000000000001"} 3"#,
            r#"shoal_processed_bytes_total{stream="orders",shard="shardId-000000000001"} 300"#,
            r#"shoal_behind_latest_seconds{stream="orders",shard="shardId-000000000001"} 1.5"#,
            r#"shoal_source_requests_total{stream="orders",operation="GetRecords",outcome="throttled"} 1"#,
            r#"shoal_guest_traps_total{stream="orders",kind="deadline-exceeded"} 0"#,
            r#"shoal_plugin_reloads_total{stream="orders",outcome="rejected"} 0"#,
            r#"shoal_leases_lost_total{stream="orders",kind="fenced"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");

        m.forget_shard("shardId-000000000001");
        let text = m.encode();
        assert!(!text.contains("shardId-000000000001"), "{text}");
    }
}
