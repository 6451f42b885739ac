//! What shoal tells its operator: log set-up, the Prometheus metrics, and the health and
//! readiness state served with them over HTTP.

pub mod health;
pub mod log_writer;
pub mod logs;
pub mod metrics;
pub mod server;

pub use logs::{flush, init};
