//! Classifies the result of every guest call in one place: ok, guest-reported error, or trap.
//!
//! Wasmtime reports two kinds of failure through different layers: the guest's own
//! `result<_, process-error>` (the *inner* error) and anything that aborted the call (the
//! *outer* error: a trap, a deadline, the memory cap). The two are never confused: a guest
//! error leaves the instance usable, a trap poisons it.

use std::fmt;

use wasmtime::component::ResourceTableError;
use wasmtime::{Trap, WasmBacktrace};

use super::bindings::ProcessError;
use super::budget::HostRefused;
use super::limits::{MemoryCapExceeded, TableCapExceeded};

/// What one guest call came to.
#[derive(Debug)]
pub enum CallOutcome<T> {
    /// The guest returned a value.
    Ok(T),
    /// The guest returned its own `process-error`; the instance is still usable.
    GuestError(GuestError),
    /// The call was aborted; the instance is poisoned and must be discarded.
    Trap(GuestTrap),
}

/// A failure the guest reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// Transient: retry the batch on the same instance after a back-off.
    Retry(String),
    /// The batch cannot be processed: apply the poison policy.
    Fatal(String),
}

impl From<ProcessError> for GuestError {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::Retry(m) => GuestError::Retry(m),
            ProcessError::Fatal(m) => GuestError::Fatal(m),
        }
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::Retry(m) => write!(f, "guest error retry: {m}"),
            GuestError::Fatal(m) => write!(f, "guest error fatal: {m}"),
        }
    }
}

/// Why a call was aborted, in the terms an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapKind {
    /// A Rust `panic!` (compiled as `abort` → `unreachable`), a C `abort()`, an
    /// uncaught exception in an interpreter guest, or a literal `unreachable`.
    Panic,
    /// A load or store outside linear memory (or a table).
    OutOfBounds,
    /// The guest exhausted its call stack (e.g. unbounded recursion).
    StackOverflow,
    /// The call ran past `plugin.limits.deadline`.
    DeadlineExceeded,
    /// The guest tried to grow memory (or a table) past `plugin.limits.memory`.
    MemoryCapExceeded,
    /// Arithmetic traps: division by zero, overflow, bad float→int conversion.
    Arithmetic,
    /// The guest asked the host for more than its limits or grants allow, where the
    /// interface has no error to answer with: a write past its stream's permit, a
    /// resource past `plugin.limits.host_memory` (a full resource table included), a
    /// `poll` of too many pollables, `wasi:http` without a `plugin.sandbox.http` grant.
    HostRefused,
    /// The host abandoned a call because the lease was lost or fenced (a waiting guest at
    /// once, a computing one at the next epoch tick): the batch is not retried here
    /// (another worker owns the shard).
    Abandoned,
    /// Any other trap, or a host-side failure while calling the guest (including a
    /// component that was already poisoned).
    Other,
}

impl TrapKind {
    /// Every kind, in declaration order.
    pub const ALL: [TrapKind; 9] = [
        TrapKind::Panic,
        TrapKind::OutOfBounds,
        TrapKind::StackOverflow,
        TrapKind::DeadlineExceeded,
        TrapKind::MemoryCapExceeded,
        TrapKind::Arithmetic,
        TrapKind::HostRefused,
        TrapKind::Abandoned,
        TrapKind::Other,
    ];

    /// A short stable label for logs, metrics and tests.
    pub fn label(self) -> &'static str {
        match self {
            TrapKind::Panic => "panic",
            TrapKind::OutOfBounds => "out-of-bounds",
            TrapKind::StackOverflow => "stack-overflow",
            TrapKind::DeadlineExceeded => "deadline-exceeded",
            TrapKind::MemoryCapExceeded => "memory-cap-exceeded",
            TrapKind::Arithmetic => "arithmetic",
            TrapKind::HostRefused => "host-refused",
            TrapKind::Abandoned => "abandoned",
            TrapKind::Other => "other",
        }
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A classified trap: kind, the underlying message and the guest backtrace if any.
#[derive(Debug, Clone)]
pub struct GuestTrap {
    /// The classification.
    pub kind: TrapKind,
    /// The full error chain as wasmtime reported it.
    pub message: String,
    /// The guest's stack at the trap, one frame per line, if wasmtime captured one.
    pub backtrace: Option<String>,
}

impl fmt::Display for GuestTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trap {}: {}", self.kind, self.message)
    }
}

/// Classify the outer error of a failed guest call (or instantiation).
pub fn classify_trap(error: &wasmtime::Error) -> GuestTrap {
    let kind = if error.downcast_ref::<WaitedPastDeadline>().is_some() {
        TrapKind::DeadlineExceeded
    } else if error.downcast_ref::<CallAbandoned>().is_some() {
        TrapKind::Abandoned
    } else if error.downcast_ref::<MemoryCapExceeded>().is_some()
        || error.downcast_ref::<TableCapExceeded>().is_some()
    {
        TrapKind::MemoryCapExceeded
    } else if error.downcast_ref::<HostRefused>().is_some()
        || matches!(
            error.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    {
        TrapKind::HostRefused
    } else if let Some(trap) = error.downcast_ref::<Trap>() {
        trap_kind(*trap)
    } else {
        TrapKind::Other
    };
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(format_backtrace);
    // The root cause first; wasmtime's context lines (e.g. "error while executing at
    // wasm backtrace") carry the backtrace, which is reported separately.
    let message = match error.downcast_ref::<ResourceTableError>() {
        Some(ResourceTableError::Full) => "the instance's resource table is full: its host resources reached plugin.limits.host_memory (drop handles it no longer needs, or raise the limit)".to_string(),
        _ => error.root_cause().to_string(),
    };
    GuestTrap {
        kind,
        message,
        backtrace,
    }
}

/// A call abandoned because the guest was still waiting in a host call (a sleep, a
/// socket, a file, a poll) when its deadline passed; the epoch deadline only stops
/// running wasm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitedPastDeadline {
    /// The call's deadline.
    pub deadline: std::time::Duration,
}

impl fmt::Display for WaitedPastDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the guest was still waiting in a host call (sleep, socket, file or poll) when its deadline of {} passed; the call was abandoned",
            humantime::format_duration(self.deadline)
        )
    }
}

impl std::error::Error for WaitedPastDeadline {}

/// A call stopped because the lease was lost or fenced (see [`TrapKind::Abandoned`]): a
/// waiting guest is dropped at once, a computing one interrupted at the next epoch tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallAbandoned;

impl fmt::Display for CallAbandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the lease was lost (or this worker stopped renewing it) during the call; the call was abandoned",
        )
    }
}

impl std::error::Error for CallAbandoned {}

/// Classify a whole call result: outer error = trap, inner error = guest error.
pub fn classify<T>(result: wasmtime::Result<Result<T, ProcessError>>) -> CallOutcome<T> {
    match result {
        Ok(Ok(value)) => CallOutcome::Ok(value),
        Ok(Err(guest)) => CallOutcome::GuestError(guest.into()),
        Err(error) => CallOutcome::Trap(classify_trap(&error)),
    }
}

fn trap_kind(trap: Trap) -> TrapKind {
    match trap {
        Trap::UnreachableCodeReached => TrapKind::Panic,
        Trap::MemoryOutOfBounds
        | Trap::TableOutOfBounds
        | Trap::HeapMisaligned
        | Trap::StringOutOfBounds
        | Trap::ListOutOfBounds => TrapKind::OutOfBounds,
        Trap::StackOverflow => TrapKind::StackOverflow,
        Trap::Interrupt => TrapKind::DeadlineExceeded,
        Trap::IntegerOverflow | Trap::IntegerDivisionByZero | Trap::BadConversionToInteger => {
            TrapKind::Arithmetic
        }
        _ => TrapKind::Other,
    }
}

fn format_backtrace(bt: &WasmBacktrace) -> String {
    let mut out = String::new();
    for (i, frame) in bt.frames().iter().enumerate() {
        let name = frame.func_name().unwrap_or("<unknown>");
        let location = frame
            .symbols()
            .iter()
            .find_map(|s| Some(format!(" at {}:{}", s.file()?, s.line()?)))
            .unwrap_or_default();
        out.push_str(&format!("  {i}: {}{location}\n", demangle(name)));
    }
    out
}

/// Frame names as people read them: Rust symbols (legacy and v0 mangling) demangled
/// without their hash, other names (C, Go, interpreters) as they are.
fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_errors_are_not_traps() {
        let r: wasmtime::Result<Result<u8, ProcessError>> =
            Ok(Err(ProcessError::Retry("db down".into())));
        assert!(
            matches!(classify(r), CallOutcome::GuestError(GuestError::Retry(m)) if m == "db down")
        );
        let r: wasmtime::Result<Result<u8, ProcessError>> =
            Ok(Err(ProcessError::Fatal("bad".into())));
        assert!(matches!(
            classify(r),
            CallOutcome::GuestError(GuestError::Fatal(_))
        ));
    }

    #[test]
    fn traps_are_classified_by_type() {
        for (trap, kind) in [
            (Trap::UnreachableCodeReached, TrapKind::Panic),
            (Trap::MemoryOutOfBounds, TrapKind::OutOfBounds),
            (Trap::StackOverflow, TrapKind::StackOverflow),
            (Trap::Interrupt, TrapKind::DeadlineExceeded),
            (Trap::IntegerDivisionByZero, TrapKind::Arithmetic),
            (Trap::CannotEnterComponent, TrapKind::Other),
        ] {
            let err = wasmtime::Error::new(trap);
            assert_eq!(classify_trap(&err).kind, kind, "{trap:?}");
        }
    }

    #[test]
    fn the_memory_cap_is_recognised_through_context() {
        let err = wasmtime::Error::new(MemoryCapExceeded {
            requested: 2,
            limit: 1,
        })
        .context("error while executing at wasm backtrace");
        let trap = classify_trap(&err);
        assert_eq!(trap.kind, TrapKind::MemoryCapExceeded);
        assert!(
            trap.message.contains("limit is 1 bytes"),
            "{}",
            trap.message
        );
    }
}
