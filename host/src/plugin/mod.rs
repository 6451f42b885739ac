//! The plugin runtime: the per-process engine, per-generation plugins, per-shard
//! instances, their sandbox and limits, classified outcomes, and hot reload.
#![deny(missing_docs)]

#[allow(missing_docs)]
pub mod bindings;
pub mod budget;
pub mod cache;
pub mod call_budget;
pub mod engine;
pub mod guard_http;
pub mod guard_wasi;
pub mod guest_log;
pub mod host;
pub mod http;
pub mod inspect;
pub mod instance;
pub mod limits;
pub mod name_lookup;
pub mod outbound;
pub mod outcome;
#[allow(clippy::module_inception)]
pub mod plugin;
pub mod reload;
pub mod resolver;
pub mod sandbox;
pub mod stdio;

pub use engine::PluginEngine;
pub use instance::{InstanceConfig, ProcessorInstance};
pub use outcome::{CallOutcome, GuestError, GuestTrap, TrapKind};
pub use plugin::{Plugin, PluginLoadError};
