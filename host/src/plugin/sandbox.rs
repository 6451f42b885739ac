//! Builds each instance's WASI context from the validated sandbox settings: deny by
//! default, grant only what the config lists.
//!
//! Defaults (what a guest gets when the config grants nothing): no preopened
//! directories, no environment variables, no arguments, stdin closed, TCP, UDP and name
//! lookup disabled, stdout/stderr forwarded line by line to the host log; wall and
//! monotonic clocks and random numbers are WASI's defaults. TCP and UDP are switched on
//! only when the config lists destinations for them, and then every address is checked
//! by [`Outbound::allows_socket`]; name lookups go through shoal's own
//! [`super::name_lookup`], which resolves only granted names.

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::outbound::Outbound;
use std::sync::Arc;

use super::guest_log::GuestLog;
use super::stdio::{GuestStream, TracingOutput};
use crate::config::{DirMode, SandboxSettings};

/// Most bytes one `get-random-bytes` (or `get-insecure-random-bytes`) call returns; a
/// larger request traps.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// A WASI context for one instance.
pub fn wasi_context(
    sandbox: &SandboxSettings,
    outbound: &Outbound,
    log: &Arc<GuestLog>,
) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    let check = outbound.clone();
    builder
        .allow_tcp(!sandbox.egress.tcp.is_empty())
        .allow_udp(!sandbox.egress.udp.is_empty())
        // wasmtime-wasi's own lookup stays off: shoal links its own (`name_lookup`).
        .allow_ip_name_lookup(false)
        .socket_addr_check(move |addr, usage| {
            let allowed = check.allows_socket(addr, usage);
            Box::pin(async move { allowed })
        })
        // File I/O goes through the blocking pool, so a read the OS cannot abort (a
        // FIFO with no writer) costs one pool thread, not the shard: the guest call is
        // still abandoned at its deadline.
        .allow_blocking_current_thread(false)
        .stdout(TracingOutput::new(GuestStream::Stdout, Arc::clone(log)))
        .stderr(TracingOutput::new(GuestStream::Stderr, Arc::clone(log)))
        // wasmtime-wasi's default lets one call make the host generate and copy 64 MiB
        // byte by byte; a guest that needs more asks in several calls.
        .max_random_size(MAX_RANDOM_BYTES);
    for (key, value) in &sandbox.env {
        builder.env(key, value);
    }
    for dir in &sandbox.dirs {
        let perms = match dir.mode {
            DirMode::ReadOnly => FsPerms::ReadOnly,
            DirMode::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot grant directory {} to the guest as {}: {e:#}",
                    dir.host.display(),
                    dir.guest
                )
            })?;
    }
    Ok(builder.build())
}
