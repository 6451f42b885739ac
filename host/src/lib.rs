//! shoal: a Kinesis consumer host that runs record processors as sandboxed WebAssembly
//! components.
//!
//! # Layout
//! - [`config`]: TOML file structs → validated [`config::Settings`]; errors name file, line, key.
//! - [`consumer`]: `shoal run`: builds the clients, runs shard sync, the coordinator and workers.
//! - [`plugin`]: the WebAssembly runtime — [`plugin::PluginEngine`] (per process),
//!   [`plugin::Plugin`] (per .wasm generation), [`plugin::ProcessorInstance`] (per shard);
//!   sandbox, limits, classified outcomes, artifact cache, hot reload.
//! - [`egress`]: outbound HTTP / TCP / UDP grants and the allow/deny decision for each request.
//! - [`delivery`]: one shard's batches through the guest: retries, back-off, instance
//!   rebuilds, the poison policy, generation switches at batch boundaries.
//! - [`source`]: where records come from: the `ShardSource` trait, Kinesis and local files.
//! - [`lease`]: the `LeaseStore` trait (KCL 2.x schema), DynamoDB and SQLite.
//! - [`kpl`]: KPL aggregate de-aggregation.
//! - [`get_records_body`]: a GetRecords answer read as it streams in (records decoded once).
//! - [`aws`]: SDK config and error classification shared by Kinesis and DynamoDB.
//! - [`archive_format`]: the JSON-lines record format of `archive`, dead letters and replay.
//! - [`replay`]: `shoal replay`, the offline edit-run loop for plugin authors.
//! - [`shard_sync`]: leases for every shard, with lineage; cleanup of finished ones.
//! - [`worker`]: one task per owned shard: fetch, de-aggregate, deliver, checkpoint, pace.
//! - [`telemetry`]: logs (text or JSON), Prometheus metrics, health and readiness, and
//!   the HTTP endpoint serving them.
//! - [`ops`]: commands that inspect rather than consume (`shoal check`).
//!
//! Without the default `engine` feature only the parsers of outside input are built
//! ([`config`], [`egress`], [`kpl`], [`archive_format`], [`get_records_body`]): what the
//! fuzz targets need.

pub mod archive_format;
#[cfg(feature = "engine")]
pub mod aws;
pub mod config;
#[cfg(feature = "engine")]
pub mod consumer;
#[cfg(feature = "engine")]
pub mod delivery;
pub mod egress;
pub mod get_records_body;
pub mod kpl;
#[cfg(feature = "engine")]
pub mod lease;
#[cfg(feature = "engine")]
pub mod ops;
#[cfg(feature = "engine")]
pub mod plugin;
#[cfg(feature = "engine")]
pub mod replay;
#[cfg(feature = "engine")]
pub mod retrieval;
#[cfg(feature = "engine")]
pub mod shard_sync;
#[cfg(feature = "engine")]
pub mod source;
pub mod source_record;
#[cfg(feature = "engine")]
pub mod telemetry;
#[cfg(feature = "engine")]
pub mod worker;
