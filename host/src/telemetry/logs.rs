//! Tracing set-up: events on stderr, as text for people or as one JSON object per line
//! for log pipelines, filtered by `RUST_LOG` (default `info`). Both formats carry the
//! spans an event happened in: `consumer{worker, stream}`, `worker{shard}` and
//! `shard{generation}`, so every line says which process, shard and plugin generation it
//! is about. Lines reach stderr through [`super::log_writer`]'s queue, so a stderr that
//! stops draining drops lines instead of blocking whoever logs.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use super::log_writer::{LogSink, QUEUE_BYTES};

/// The process's sink, kept for [`flush`].
static SINK: OnceLock<LogSink> = OnceLock::new();

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`),
    /// `target`, `span` (the innermost) and `spans` (outermost first).
    Json,
}

/// Install the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let sink = SINK
        .get_or_init(|| LogSink::start(std::io::stderr(), QUEUE_BYTES))
        .clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Wait (at most `timeout`) for the lines logged so far to reach stderr: call before the
/// process exits.
pub fn flush(timeout: Duration) {
    if let Some(sink) = SINK.get() {
        sink.flush(timeout);
    }
}
