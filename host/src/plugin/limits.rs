//! Per-instance resource limits: the memory cap, enforced by a `ResourceLimiter` whose
//! refusal is a typed error (so a cap hit is classified by type, never by string matching).

use wasmtime::ResourceLimiter;

/// A guest tried to grow its memory (or tables) past the configured cap.
///
/// Returned from the limiter as the error that aborts the guest's `memory.grow`, so it
/// reaches the caller as the root cause of the failed call and can be downcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "guest memory cap exceeded: wanted {requested} bytes, limit is {limit} bytes (plugin.limits.memory)"
)]
pub struct MemoryCapExceeded {
    /// Bytes the guest asked its linear memory to grow to.
    pub requested: usize,
    /// The configured cap in bytes.
    pub limit: usize,
}

/// A guest tried to grow a table past the configured element cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest table cap exceeded: wanted {requested} elements, limit is {limit}")]
pub struct TableCapExceeded {
    /// Elements the guest asked a table to grow to.
    pub requested: usize,
    /// The cap.
    pub limit: usize,
}

/// Caps every linear memory of one instance at `memory_bytes` and every table at
/// `table_elements`.
///
/// The cap applies per memory, like wasmtime's own `StoreLimits`; components made by
/// most toolchains have one memory that holds all guest data.
#[derive(Debug, Clone)]
pub struct InstanceLimiter {
    memory_bytes: usize,
    table_elements: usize,
    /// The largest memory size granted so far: reported as the instance's peak memory.
    peak_memory_bytes: usize,
}

impl InstanceLimiter {
    /// A limiter with the given caps.
    pub fn new(memory_bytes: usize, table_elements: usize) -> Self {
        Self {
            memory_bytes,
            table_elements,
            peak_memory_bytes: 0,
        }
    }

    /// The largest linear memory this instance has had, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.peak_memory_bytes
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                requested: desired,
                limit: self.memory_bytes,
            }));
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(TableCapExceeded {
                requested: desired,
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_within_the_cap_is_granted_and_tracked() {
        let mut limiter = InstanceLimiter::new(1 << 20, 100);
        assert!(limiter.memory_growing(0, 65536, None).is_ok_and(|ok| ok));
        assert!(
            limiter
                .memory_growing(65536, 1 << 20, None)
                .is_ok_and(|ok| ok)
        );
        assert_eq!(limiter.peak_memory_bytes(), 1 << 20);
    }

    #[test]
    fn growth_past_the_cap_is_a_typed_error_naming_the_limit() {
        let mut limiter = InstanceLimiter::new(1 << 20, 100);
        let err = limiter
            .memory_growing(1 << 20, (1 << 20) + 65536, None)
            .unwrap_err();
        let cap = err
            .downcast_ref::<MemoryCapExceeded>()
            .expect("typed error");
        assert_eq!(
            cap,
            &MemoryCapExceeded {
                requested: (1 << 20) + 65536,
                limit: 1 << 20
            }
        );
        assert!(err.to_string().contains("limit is 1048576 bytes"));
        let err = limiter.table_growing(0, 101, None).unwrap_err();
        assert!(err.downcast_ref::<TableCapExceeded>().is_some());
    }
}
