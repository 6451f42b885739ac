//! shoal: a Kinesis consumer host that runs record processors as sandboxed WebAssembly
//! components.
//!
//! # Layout
//! - [`config`]: TOML file structs → validated [`config::Settings`]; errors name file, line, key.
//! - [`plugin`]: the WebAssembly runtime — [`plugin::PluginEngine`] (per process),
//!   [`plugin::Plugin`] (per .wasm generation), [`plugin::ProcessorInstance`] (per shard);
//!   sandbox, limits, classified outcomes, artifact cache, hot reload.
//! - [`delivery`]: one shard's batches through the guest: retries, back-off, instance
//!   rebuilds, the poison policy, generation switches at batch boundaries.
//! - [`archive_format`]: the JSON-lines record format of `archive`, dead letters and replay.
//! - [`replay`]: `shoal replay`, the offline edit-run loop for plugin authors.
//! - [`telemetry`]: tracing set-up.

pub mod archive_format;
pub mod config;
pub mod delivery;
pub mod plugin;
pub mod replay;
pub mod telemetry;
