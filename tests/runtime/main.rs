//! Integration tests of the plugin runtime against real components built from
//! `plugins/` (one test binary, one module per concern).

mod cluster;
mod conformance;
mod emulators;
mod fake_dns;
mod fixtures;
mod guest_log;
mod holding_relay;
mod http_server;
mod redis;
mod watchdog;

mod consumer_aws;
mod consumer_local;
mod directives;
mod fan_out;
mod fault_proxy;
mod faults;
mod fencing;
mod hostile;
mod hot_swap;
mod http;
mod http_exactly_once;
mod http_sinks;
mod inspect;
mod lease_faults;
mod limits;
mod new_project;
mod operate;
mod replay;
mod sandbox;
mod scenarios;
mod shard_end;
mod shutdown_timeout;
mod sinks;
mod soak;
mod waits;
mod worker_tasks;
