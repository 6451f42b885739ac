//! Captures what guests write through the `log` import (tracing target `shoal::guest`)
//! and what the sandbox refused them (`shoal::sandbox`), per shard, so tests can assert
//! on a processor's own words and on the host's refusals.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One guest log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLine {
    /// `shoal::guest` (the guest's own words) or `shoal::sandbox` (a refusal).
    pub target: &'static str,
    pub level: tracing::Level,
    pub message: String,
}

type Lines = Mutex<HashMap<String, Vec<GuestLine>>>;

fn lines() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        // The test binary's only global subscriber; every test reads its own shards.
        let _ = tracing::subscriber::set_global_default(subscriber);
        Mutex::new(HashMap::new())
    })
}

/// Start capturing (idempotent). Call before the processors of a test run.
pub fn install() {
    let _ = lines();
}

/// Every line the guests of `shard` logged so far, in order.
pub fn of(shard: &str) -> Vec<GuestLine> {
    lines()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(shard)
        .cloned()
        .unwrap_or_default()
}

struct Capture;

#[derive(Default)]
struct Fields {
    shard: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "shard" => self.shard = Some(format!("{value:?}")),
            "message" => self.message = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "shard" => self.shard = Some(value.to_string()),
            "message" => self.message = Some(value.to_string()),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target != "shoal::guest" && target != "shoal::sandbox" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (Some(shard), Some(message)) = (fields.shard, fields.message) {
            let line = GuestLine {
                target,
                level: *event.metadata().level(),
                message,
            };
            lines()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(shard)
                .or_default()
                .push(line);
        }
    }
}
