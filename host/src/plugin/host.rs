//! The per-instance store data: WASI context, resource table, limiter, outbound state,
//! and the `log` import that shoal's world gives every processor.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{LogLevel, ProcessorImports};
use super::call_budget::CallBudget;
use super::http::GuestHttp;
use super::limits::InstanceLimiter;
use super::outbound::Outbound;
use super::stdio::LogTags;

/// Longest `log` message forwarded; longer ones are truncated (documented in the WIT).
const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// Everything one `Store` owns besides the guest itself.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table caps; also tracks peak memory for reporting.
    pub(crate) limiter: InstanceLimiter,
    outbound: Outbound,
    http: WasiHttpCtx,
    http_hooks: GuestHttp,
    tags: LogTags,
    /// The call in flight: ticks to its deadline, and what interrupts it.
    pub(crate) budget: CallBudget,
}

impl HostState {
    /// Store data for one instance.
    pub fn new(
        wasi: WasiCtx,
        limiter: InstanceLimiter,
        outbound: Outbound,
        deadline: std::time::Duration,
        tags: LogTags,
    ) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            http: WasiHttpCtx::new(),
            http_hooks: GuestHttp::new(outbound.clone(), deadline),
            outbound,
            tags,
            budget: CallBudget::default(),
        }
    }

    /// The instance's resource table (for host-defined resources such as name lookups).
    pub fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The instance's outbound grants and what its lookups returned.
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// The `types` interface has no functions; the trait is a marker.
impl super::bindings::shoal::processor::types::Host for HostState {}

impl ProcessorImports for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("… (truncated)");
        }
        let LogTags {
            stream,
            shard,
            generation,
        } = &self.tags;
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "shoal::guest", stream = %stream, shard = %shard, generation, "{message}")
            };
        }
        match level {
            LogLevel::Trace => emit!(trace),
            LogLevel::Debug => emit!(debug),
            LogLevel::Info => emit!(info),
            LogLevel::Warn => emit!(warn),
            LogLevel::Error => emit!(error),
        }
    }
}
