//! The per-instance store data: WASI context, resource table, limiter, host budget,
//! outbound state, the guest's log, and the two imports shoal's world gives every
//! processor: `log` and `lease-token`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{FencingToken, LogLevel, ProcessorImports};
use super::budget::{FIELDS_BYTES, HostBudget};
use super::call_budget::CallBudget;
use super::guest_log::{GuestLog, LogTags};
use super::http::GuestHttp;
use super::limits::InstanceLimiter;
use super::outbound::Outbound;

/// Longest `log` message forwarded; longer ones are truncated (documented in the WIT).
const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// Everything one `Store` owns besides the guest itself.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table caps; also tracks peak memory for reporting.
    pub(crate) limiter: InstanceLimiter,
    /// What the guest makes the host hold, and its limits.
    pub(crate) budget: HostBudget,
    outbound: Outbound,
    http: WasiHttpCtx,
    http_hooks: GuestHttp,
    log: Arc<GuestLog>,
    /// The lease holding every call of this instance runs under.
    fencing: FencingToken,
    /// The call in flight: ticks to its deadline, and what interrupts it.
    pub(crate) call_budget: CallBudget,
}

impl HostState {
    /// Store data for one instance.
    pub fn new(
        wasi: WasiCtx,
        limiter: InstanceLimiter,
        budget: HostBudget,
        outbound: Outbound,
        deadline: std::time::Duration,
        log: Arc<GuestLog>,
        fencing: FencingToken,
    ) -> Self {
        let mut table = ResourceTable::new();
        budget.size_table(&mut table);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELDS_BYTES);
        Self {
            wasi,
            table,
            limiter,
            http,
            http_hooks: GuestHttp::new(outbound.clone(), deadline, Arc::clone(budget.in_flight())),
            budget,
            outbound,
            log,
            fencing,
            call_budget: CallBudget::default(),
        }
    }

    /// The instance's resource table (for host-defined resources such as name lookups).
    pub fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The table and the budget that limits it, borrowed together.
    pub fn table_and_budget(&mut self) -> (&mut ResourceTable, &HostBudget) {
        (&mut self.table, &self.budget)
    }

    /// The instance's outbound grants and what its lookups returned.
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// The guest's log lines and their rate limit.
    pub fn guest_log(&self) -> &Arc<GuestLog> {
        &self.log
    }

    /// A guest call starts: outbound I/O it starts ends with `call` (cancelled when the
    /// call returns).
    pub fn begin_call(&mut self, call: CancellationToken) {
        self.http_hooks.begin_call(call);
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
    fn lease_token(&mut self) -> FencingToken {
        self.fencing.clone()
    }

    fn log(&mut self, level: LogLevel, message: String) {
        if !self.log.admit() {
            return;
        }
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
        } = self.log.tags();
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
