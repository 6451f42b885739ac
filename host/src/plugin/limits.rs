//! Per-instance limits on what the guest itself holds: one memory cap for the sum of all
//! linear memories and tables of the instance, a cap on table elements, and caps on how
//! many memories, tables and core instances a component may create, enforced by a
//! `ResourceLimiter` whose refusal is a typed error (so a cap hit is classified by type,
//! never by string matching).

use wasmtime::ResourceLimiter;

/// Most core instances one component may create (interpreter guests such as
/// componentize-py create a dozen or so).
pub const MAX_CORE_INSTANCES: usize = 64;
/// Most linear memories one component may have.
pub const MAX_MEMORIES: usize = 4;
/// Most tables one component may have.
pub const MAX_TABLES: usize = 64;
/// Cap on table elements (function references), per table.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// What one table element holds on the host (a function reference is one pointer), as
/// counted against the memory cap.
pub const TABLE_ELEMENT_BYTES: usize = 8;

/// A guest tried to grow its memories and tables past the configured cap.
///
/// Returned from the limiter as the error that aborts the guest's `memory.grow` (or
/// `table.grow`, or instantiation), so it reaches the caller as the root cause of the
/// failed call and can be downcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "guest memory cap exceeded: wanted {requested} bytes in all memories and tables, limit is {limit} bytes (plugin.limits.memory)"
)]
pub struct MemoryCapExceeded {
    /// Bytes all memories and tables of the instance would hold after the growth.
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

/// Caps the sum of every linear memory and table of one instance at `memory_bytes`, and
/// every table at `table_elements`.
///
/// A component may have several memories (one per core module that defines one, up to
/// [`MAX_MEMORIES`]): capping each one would let it hold that many times the cap, with
/// pooling or without, so the limiter keeps the running sum. Every growth (and every
/// memory or table created at instantiation, which wasmtime reports as a growth from 0)
/// is added when granted and taken back if wasmtime then fails it.
#[derive(Debug, Clone)]
pub struct InstanceLimiter {
    memory_bytes: usize,
    table_elements: usize,
    /// Bytes the instance's memories and tables hold now.
    held_bytes: usize,
    /// The largest `held_bytes` so far: reported as the instance's peak memory.
    peak_bytes: usize,
    /// The last growth granted, taken back if wasmtime reports that it failed.
    last_growth: usize,
}

impl InstanceLimiter {
    /// A limiter with the given caps.
    pub fn new(memory_bytes: usize, table_elements: usize) -> Self {
        Self {
            memory_bytes,
            table_elements,
            held_bytes: 0,
            peak_bytes: 0,
            last_growth: 0,
        }
    }

    /// The most this instance's memories and tables have held together, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Grant a growth of `delta` bytes if the sum stays within the cap.
    fn grow(&mut self, delta: usize) -> wasmtime::Result<bool> {
        let requested = self.held_bytes.saturating_add(delta);
        if requested > self.memory_bytes {
            self.last_growth = 0;
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                requested,
                limit: self.memory_bytes,
            }));
        }
        self.held_bytes = requested;
        self.peak_bytes = self.peak_bytes.max(requested);
        self.last_growth = delta;
        Ok(true)
    }

    /// wasmtime could not carry out the growth just granted (a memory's own maximum, a
    /// pool slot's size): it does not count.
    fn undo_last_growth(&mut self) {
        self.held_bytes = self.held_bytes.saturating_sub(self.last_growth);
        self.last_growth = 0;
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last_growth();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(TableCapExceeded {
                requested: desired,
                limit: self.table_elements,
            }));
        }
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last_growth();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn growth_within_the_cap_is_granted_and_tracked() {
        let mut limiter = InstanceLimiter::new(MIB, 100);
        assert!(limiter.memory_growing(0, 65536, None).is_ok_and(|ok| ok));
        assert!(limiter.memory_growing(65536, MIB, None).is_ok_and(|ok| ok));
        assert_eq!(limiter.peak_memory_bytes(), MIB);
    }

    #[test]
    fn growth_past_the_cap_is_a_typed_error_naming_the_limit() {
        let mut limiter = InstanceLimiter::new(MIB, 100);
        limiter.memory_growing(0, MIB, None).expect("within");
        let err = limiter.memory_growing(MIB, MIB + 65536, None).unwrap_err();
        let cap = err
            .downcast_ref::<MemoryCapExceeded>()
            .expect("typed error");
        assert_eq!(
            cap,
            &MemoryCapExceeded {
                requested: MIB + 65536,
                limit: MIB
            }
        );
        assert!(err.to_string().contains("limit is 1048576 bytes"));
        let err = limiter.table_growing(0, 101, None).unwrap_err();
        assert!(err.downcast_ref::<TableCapExceeded>().is_some());
    }

    #[test]
    fn the_cap_holds_for_the_sum_of_every_memory_and_table() {
        // Four memories of 3/8 of the cap each: the third one's growth passes the cap,
        // although each memory alone stays far below it.
        let mut limiter = InstanceLimiter::new(8 * MIB, MAX_TABLE_ELEMENTS);
        for _ in 0..2 {
            assert!(limiter.memory_growing(0, 3 * MIB, None).is_ok_and(|ok| ok));
        }
        let err = limiter.memory_growing(0, 3 * MIB, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<MemoryCapExceeded>(),
            Some(&MemoryCapExceeded {
                requested: 9 * MIB,
                limit: 8 * MIB
            })
        );
        assert_eq!(limiter.peak_memory_bytes(), 6 * MIB);
        // Tables count at a pointer per element: 2 MiB / 8 elements fit, one more does not.
        let elements = 2 * MIB / TABLE_ELEMENT_BYTES;
        assert!(limiter.table_growing(0, elements, None).is_ok_and(|ok| ok));
        assert_eq!(limiter.peak_memory_bytes(), 8 * MIB);
        assert!(limiter.table_growing(elements, elements + 1, None).is_err());
    }

    #[test]
    fn a_growth_wasmtime_fails_after_granting_it_is_not_counted() {
        let mut limiter = InstanceLimiter::new(4 * MIB, 100);
        assert!(limiter.memory_growing(0, 3 * MIB, None).is_ok_and(|ok| ok));
        limiter
            .memory_grow_failed(wasmtime::format_err!("pool slot too small"))
            .expect("reported");
        // The failed 3 MiB left room for a full 4 MiB memory.
        assert!(limiter.memory_growing(0, 4 * MIB, None).is_ok_and(|ok| ok));
    }

    #[test]
    fn a_component_may_create_only_so_many_memories_tables_and_instances() {
        let limiter = InstanceLimiter::new(MIB, 100);
        assert_eq!(limiter.memories(), MAX_MEMORIES);
        assert_eq!(limiter.tables(), MAX_TABLES);
        assert_eq!(limiter.instances(), MAX_CORE_INSTANCES);
    }
}
