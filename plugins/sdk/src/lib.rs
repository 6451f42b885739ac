//! The Rust guest SDK for shoal: implement [`Processor`] for a type and export it with
//! [`export_processor!`]; the SDK generates the `shoal:processor@0.1.0` bindings, keeps
//! one value of your type per instance (one instance per shard), and routes the host's
//! calls to it.
//!
//! ```ignore
//! use shoal_sdk::{Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo};
//!
//! struct Count(u64);
//!
//! impl Processor for Count {
//!     fn initialize(_shard: &ShardInfo, _settings: &Settings) -> Result<Self, ProcessError> {
//!         Ok(Count(0))
//!     }
//!     fn process(&mut self, shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
//!         self.0 += batch.records.len() as u64;
//!         shoal_sdk::info!("{}: {} records so far", shard.shard_id, self.0);
//!         Ok(CheckpointDirective::BatchEnd)
//!     }
//! }
//!
//! shoal_sdk::export_processor!(Count);
//! ```

#[doc(hidden)]
/// Blocking HTTP requests over `wasi:http` (feature `http`).
#[cfg(feature = "http")]
pub mod http;

pub mod bindings {
    wit_bindgen::generate!({
        world: "processor",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_processor_world",
        default_bindings_module: "shoal_sdk::bindings",
    });
}

pub use bindings::{
    Batch, CheckpointDirective, FencingToken, KinesisRecord, LogLevel, Position, ProcessError,
    ShardInfo, ShutdownReason,
};

/// A record processor: one value per shard instance.
pub trait Processor: Sized + 'static {
    /// Build the processor for one shard. `settings` is the `[plugin.settings]` table of
    /// the host's config.
    fn initialize(shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError>;

    /// Process one batch and say how far the host may checkpoint.
    fn process(&mut self, shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError>;

    /// The host stops delivering batches to this instance. Default: nothing to do.
    fn shutdown(&mut self, _shard: &ShardInfo, _reason: ShutdownReason) {}
}

/// The `[plugin.settings]` key/value pairs.
#[derive(Debug, Clone, Default)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    /// Wrap the pairs the host passed.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default`.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key` parsed as `T`, or `default` if unset; a value that does not
    /// parse is a `fatal` error naming the key.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, ProcessError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ProcessError::Fatal(format!("setting {key} = {v:?} is not valid"))),
        }
    }

    /// All pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Write a line to the host log at `level`.
pub fn log(level: LogLevel, message: &str) {
    bindings::log(level, message);
}

/// The fencing token of the lease this instance's calls run under: the same for every
/// call of one instance, larger for every later holder of the shard's lease. A sink
/// that keeps the highest `epoch` it accepted per stream and shard, and refuses a
/// lower one in the same atomic step as the write, refuses late writes from a holder
/// that lost the lease (the `redis-sink` plugin does this). `epoch` is 0 when the
/// calls run under no lease (`shoal replay`).
pub fn lease_token() -> FencingToken {
    bindings::lease_token()
}

/// Log at info level with `format!` syntax.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log($crate::LogLevel::Info, &format!($($t)*)) } }
/// Log at warn level with `format!` syntax.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log($crate::LogLevel::Warn, &format!($($t)*)) } }
/// Log at error level with `format!` syntax.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log($crate::LogLevel::Error, &format!($($t)*)) } }
/// Log at debug level with `format!` syntax.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log($crate::LogLevel::Debug, &format!($($t)*)) } }

impl Batch {
    /// The position of the last record (for `CheckpointDirective::At`), if any.
    pub fn last_position(&self) -> Option<Position> {
        self.records.last().map(KinesisRecord::position)
    }
}

impl KinesisRecord {
    /// This record's position.
    pub fn position(&self) -> Position {
        Position { sequence_number: self.sequence_number.clone(), sub_sequence_number: self.sub_sequence_number }
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;

    /// Per-instance state: the component instance is single-threaded, so a
    /// thread-local `RefCell` is the whole story.
    pub struct Slot<P>(pub RefCell<Option<P>>);

    impl<P: Processor> Slot<P> {
        pub fn initialize(&self, shard: ShardInfo, settings: Vec<(String, String)>) -> Result<(), ProcessError> {
            let processor = P::initialize(&shard, &Settings::new(settings))?;
            *self.0.borrow_mut() = Some(processor);
            Ok(())
        }

        pub fn process(&self, shard: ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
            let mut slot = self.0.borrow_mut();
            let processor = slot
                .as_mut()
                .ok_or_else(|| ProcessError::Fatal("process called before initialize".to_string()))?;
            processor.process(&shard, batch)
        }

        pub fn shutdown(&self, shard: ShardInfo, reason: ShutdownReason) {
            if let Some(mut processor) = self.0.borrow_mut().take() {
                processor.shutdown(&shard, reason);
            }
        }
    }
}

/// Export a [`Processor`] implementation as the component's `shoal:processor` world.
#[macro_export]
macro_rules! export_processor {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static SLOT: $crate::__private::Slot<$ty> = $crate::__private::Slot(::std::cell::RefCell::new(None));
            }
            struct ShoalExport;
            impl $crate::bindings::Guest for ShoalExport {
                fn initialize(
                    shard: $crate::ShardInfo,
                    settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), $crate::ProcessError> {
                    SLOT.with(|s| s.initialize(shard, settings))
                }
                fn process(
                    shard: $crate::ShardInfo,
                    batch: $crate::Batch,
                ) -> ::std::result::Result<$crate::CheckpointDirective, $crate::ProcessError> {
                    SLOT.with(|s| s.process(shard, batch))
                }
                fn shutdown(shard: $crate::ShardInfo, reason: $crate::ShutdownReason) {
                    SLOT.with(|s| s.shutdown(shard, reason))
                }
            }
            $crate::bindings::__export_processor_world!(ShoalExport with_types_in $crate::bindings);
        };
    };
}
