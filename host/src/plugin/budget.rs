//! What a guest makes the host hold, counted per instance against two limits:
//! `plugin.limits.host_memory` (resource-table entries, the streams, HTTP objects,
//! directory listings and in-flight requests behind them, log line buffers and remembered
//! lookups) and `plugin.limits.descriptors` (files and directories the guest opened, its
//! sockets, its HTTP connections).
//!
//! The budget is split once, when the instance is built: a fixed share buys plain
//! resource-table entries ([`HostBudget::table_capacity`] of them, at [`ENTRY_BYTES`]
//! each; the table's capacity is set to it and never raised, so a slot freed and reused
//! still counts within it), and the rest pays for what an entry holds beyond itself. That
//! part is measured, not tracked: [`HostBudget::usage`] walks the resource table and
//! charges each entry by its type at the most it can hold (a stream its 64 KiB buffer, a
//! `fields` twice its size limit, an unsent request its headers, body buffer and
//! trailers), plus the requests in flight, which the HTTP sender counts itself. Every
//! import that creates something holding more than a table entry asks first
//! ([`HostBudget::admit`]), so the sum stays within `host_memory` whatever mix the guest
//! asks for. A refusal is [`HostRefused`]: an error the guest sees where its interface has
//! one, else a `host-refused` trap.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::DirectoryEntryStream;
use wasmtime_wasi::p2::bindings::sockets::{tcp::TcpSocket, udp::UdpSocket};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;

use crate::telemetry::metrics::{KindLabel, metrics};

/// What one resource-table entry costs the host, at most, besides what its type adds:
/// the table slot, the boxed value and its bookkeeping.
pub const ENTRY_BYTES: usize = 512;
/// What a stream may buffer: wasmtime-wasi reads at most 64 KiB at a time and every
/// output stream's write permit is 64 KiB.
pub const STREAM_BYTES: usize = 64 << 10;
/// The size limit of one `wasi:http` `fields` (headers or trailers) map: what its names
/// and values may add up to.
pub const FIELDS_BYTES: usize = 64 << 10;
/// What one `fields` map is charged: a map full to its limit takes more than its content
/// in memory (the header map's own tables, one allocation per value). Charged at its
/// limit, 247 maps of 60 KiB of 1 KiB values grew the host by 22 MiB in the hostile suite;
/// at twice it, by 12–13 MiB under the 16 MiB default.
pub const FIELDS_CHARGE: usize = 2 * FIELDS_BYTES;
/// Largest write into an outgoing HTTP body.
pub const BODY_CHUNK_BYTES: usize = 64 << 10;
/// What an outgoing body buffers on the host: its channel holds two chunks.
pub const BODY_BUFFER_BYTES: usize = 2 * BODY_CHUNK_BYTES;
/// The read buffer of one HTTP connection (hyper's `max_buf_size`).
pub const RESPONSE_BUFFER_BYTES: usize = 64 << 10;
/// An unsent request: its headers, its body buffer once it has a body, and the trailers
/// `outgoing-body.finish` may move into that body.
pub const UNSENT_REQUEST_BYTES: usize = FIELDS_CHARGE + BODY_BUFFER_BYTES + FIELDS_CHARGE;
/// A request in flight: its body buffer and trailers, the connection's read buffer and
/// one response frame waiting for the guest.
pub const IN_FLIGHT_BYTES: usize = BODY_BUFFER_BYTES + FIELDS_CHARGE + 2 * RESPONSE_BUFFER_BYTES;
/// The share of `host_memory` that buys plain resource-table entries: one eighth (4,096
/// entries of 512 bytes under the 16 MiB default).
pub const TABLE_SHARE: usize = 8;
/// A directory listing (`read-directory` reads a directory whole) is charged this much,
/// and an instance may keep [`MAX_DIRECTORY_STREAMS`] of them at once.
pub const DIRECTORY_LISTING_BYTES: usize = 64 << 10;
/// Directory listings one instance may hold at once.
pub const MAX_DIRECTORY_STREAMS: usize = 2;
/// Held for every instance whatever it does: its stdout and stderr partial lines and the
/// addresses its lookups returned.
pub const RESERVED_BYTES: usize = 2 * crate::plugin::stdio::MAX_LINE
    + crate::egress::MAX_REMEMBERED_ADDRESSES * crate::egress::REMEMBERED_ADDRESS_BYTES;
/// The smallest `host_memory` accepted.
pub const MIN_HOST_MEMORY: usize = crate::config::defaults::MIN_HOST_MEMORY_BYTES;

/// A host limit a guest request can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `plugin.limits.host_memory`.
    HostMemory,
    /// `plugin.limits.descriptors`.
    Descriptors,
    /// A stream's write permit (`check-write`).
    WritePermit,
    /// The longest `poll` list.
    PollList,
    /// An interface used without the grant it needs (`wasi:http` without
    /// `plugin.sandbox.http`).
    Grant,
}

impl Limit {
    /// Every limit, in declaration order.
    pub const ALL: [Limit; 5] = [
        Limit::HostMemory,
        Limit::Descriptors,
        Limit::WritePermit,
        Limit::PollList,
        Limit::Grant,
    ];

    /// The label in `shoal_guest_limit_refusals_total` (the config key where there is one).
    pub fn key(self) -> &'static str {
        match self {
            Limit::HostMemory => "host_memory",
            Limit::Descriptors => "descriptors",
            Limit::WritePermit => "write_permit",
            Limit::PollList => "poll_list",
            Limit::Grant => "grant",
        }
    }
}

/// The host refused what a guest asked for because it would pass a limit. Where the
/// interface has an error the guest gets that error; elsewhere the call traps with this
/// as its root cause, classified `host-refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostRefused {
    /// Which limit.
    pub limit: Limit,
    /// The sentence for the log and the trap: what was asked, what the limit is.
    pub message: String,
}

impl HostRefused {
    /// A refusal, counted in `shoal_guest_limit_refusals_total`.
    pub fn new(limit: Limit, message: String) -> Self {
        metrics()
            .guest_limit_refusals
            .get_or_create(&KindLabel { kind: limit.key() })
            .inc();
        Self { limit, message }
    }
}

/// What an instance holds on the host now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged (see the module docs).
    pub bytes: usize,
    /// OS descriptors: files and directories, sockets, HTTP connections.
    pub descriptors: usize,
    /// Resource-table entries.
    pub entries: usize,
    /// Directory listings.
    pub directory_streams: usize,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} KiB in {} resources, {} descriptors",
            self.bytes.div_ceil(1024),
            self.entries,
            self.descriptors
        )
    }
}

/// The requests one instance has in flight: counted by the HTTP sender's futures, which
/// live outside the resource table (the send task, the connection, the response body).
#[derive(Debug, Default)]
pub struct InFlight {
    exchanges: AtomicUsize,
    connections: AtomicUsize,
}

impl InFlight {
    /// Requests between `handle` and the guest dropping their response body.
    pub fn exchanges(&self) -> usize {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// Connections open (or being opened).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Count one request until the returned guard (and every clone of it) is dropped.
    pub fn exchange(self: &Arc<Self>) -> Arc<Counted> {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        Arc::new(Counted {
            owner: Arc::clone(self),
            which: Which::Exchange,
        })
    }

    /// Count one connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> Counted {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Counted {
            owner: Arc::clone(self),
            which: Which::Connection,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Exchange,
    Connection,
}

/// One counted request or connection; dropping it uncounts it.
#[derive(Debug)]
pub struct Counted {
    owner: Arc<InFlight>,
    which: Which,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = match self.which {
            Which::Exchange => &self.owner.exchanges,
            Which::Connection => &self.owner.connections,
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance's host budget.
#[derive(Debug, Clone)]
pub struct HostBudget {
    host_memory: usize,
    descriptors: usize,
    in_flight: Arc<InFlight>,
    /// Table slots of the directories the guest opened itself (`open-at`): the only
    /// directory entries that hold a descriptor of their own (a preopen handed out by
    /// `get-directories` is another handle on the instance's one descriptor).
    opened_dirs: Arc<Mutex<HashSet<u32>>>,
}

impl HostBudget {
    /// A budget of `host_memory` bytes (at least [`MIN_HOST_MEMORY`]) and `descriptors`.
    pub fn new(host_memory: usize, descriptors: usize) -> Self {
        Self {
            host_memory: host_memory.max(MIN_HOST_MEMORY),
            descriptors,
            in_flight: Arc::default(),
            opened_dirs: Arc::default(),
        }
    }

    /// How many entries the resource table may hold: set once, never raised.
    pub fn table_capacity(&self) -> usize {
        self.host_memory / TABLE_SHARE / ENTRY_BYTES
    }

    /// What is held whatever the guest does: the log line buffers, the remembered
    /// lookups, and the table's share.
    fn reserved(&self) -> usize {
        RESERVED_BYTES + self.table_capacity() * ENTRY_BYTES
    }

    /// Give the table its capacity (when the instance is built).
    pub fn size_table(&self, table: &mut ResourceTable) {
        table.set_max_capacity(self.table_capacity());
    }

    /// The guest opened a directory at table slot `rep`: it holds a descriptor.
    pub fn opened_dir(&self, rep: u32) {
        self.opened_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rep);
    }

    /// The requests in flight, shared with the HTTP sender.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// `plugin.limits.descriptors`.
    pub fn descriptor_limit(&self) -> usize {
        self.descriptors
    }

    /// What the instance holds now (one pass over its resource table).
    pub fn usage(&self, table: &mut ResourceTable) -> Usage {
        let mut usage = Usage {
            bytes: self.reserved() + self.in_flight.exchanges() * IN_FLIGHT_BYTES,
            descriptors: self.in_flight.connections(),
            ..Usage::default()
        };
        for entry in table.iter_mut() {
            let entry: &dyn std::any::Any = entry;
            usage.entries += 1;
            if entry.is::<DynInputStream>() || entry.is::<DynOutputStream>() {
                usage.bytes += STREAM_BYTES;
            } else if entry.is::<FieldMap>() {
                usage.bytes += FIELDS_CHARGE;
            } else if let Some(request) = entry.downcast_ref::<HostOutgoingRequest>() {
                usage.bytes += if request.body.is_some() {
                    UNSENT_REQUEST_BYTES
                } else {
                    FIELDS_CHARGE
                };
            } else if entry.is::<DirectoryEntryStream>() {
                usage.bytes += DIRECTORY_LISTING_BYTES;
                usage.directory_streams += 1;
            } else if matches!(
                entry.downcast_ref::<Descriptor>(),
                Some(Descriptor::File(_))
            ) {
                usage.descriptors += 1;
            } else if entry.is::<TcpSocket>() || entry.is::<UdpSocket>() {
                usage.descriptors += 1;
                // A UDP socket's datagram streams buffer up to 16 datagrams each way.
                if entry.is::<UdpSocket>() {
                    usage.bytes += 2 * STREAM_BYTES;
                }
            }
        }
        // Directories the guest opened, still at their slot (a slot since freed, or reused
        // by something else, no longer counts).
        let mut opened = self.opened_dirs.lock().unwrap_or_else(|p| p.into_inner());
        opened.retain(|rep| {
            table.get_any_mut(*rep).is_ok_and(|entry| {
                matches!(entry.downcast_ref::<Descriptor>(), Some(Descriptor::Dir(_)))
            })
        });
        usage.descriptors += opened.len();
        usage
    }

    /// Admit something that will hold `bytes` more on the host beyond its table entries
    /// (those are paid for by the table's share), or refuse with what the instance holds
    /// and the limit. `what` names it for the message ("an HTTP request body").
    pub fn admit(
        &self,
        table: &mut ResourceTable,
        bytes: usize,
        what: &str,
    ) -> Result<(), HostRefused> {
        let usage = self.usage(table);
        self.fits(usage, bytes, what)
    }

    /// Whether `bytes` more fit beside `usage`, else the refusal naming the limit.
    fn fits(&self, usage: Usage, bytes: usize, what: &str) -> Result<(), HostRefused> {
        if usage.bytes.saturating_add(bytes) > self.host_memory {
            return Err(HostRefused::new(
                Limit::HostMemory,
                format!(
                    "refused {what} ({} KiB): the instance already holds {usage} on the host, and plugin.limits.host_memory is {} KiB",
                    bytes.div_ceil(1024),
                    self.host_memory / 1024
                ),
            ));
        }
        Ok(())
    }

    /// Admit one more OS descriptor (and `bytes` that come with it), or refuse.
    pub fn admit_descriptor(
        &self,
        table: &mut ResourceTable,
        bytes: usize,
        what: &str,
    ) -> Result<(), HostRefused> {
        let usage = self.usage(table);
        if usage.descriptors >= self.descriptors {
            return Err(HostRefused::new(
                Limit::Descriptors,
                format!(
                    "refused {what}: the instance already holds {} descriptors (files, sockets, HTTP connections), and plugin.limits.descriptors is {}",
                    usage.descriptors, self.descriptors
                ),
            ));
        }
        self.fits(usage, bytes, what)
    }

    /// Admit one more directory listing, or refuse.
    pub fn admit_directory_listing(&self, table: &mut ResourceTable) -> Result<(), HostRefused> {
        let usage = self.usage(table);
        if usage.directory_streams >= MAX_DIRECTORY_STREAMS {
            return Err(HostRefused::new(
                Limit::HostMemory,
                format!(
                    "refused a directory listing: the instance already holds {MAX_DIRECTORY_STREAMS} (a listing holds the whole directory); drop one first"
                ),
            ));
        }
        self.admit(
            table,
            DIRECTORY_LISTING_BYTES + ENTRY_BYTES,
            "a directory listing",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn fields() -> FieldMap {
        FieldMap::new_mutable(FIELDS_BYTES)
    }

    #[test]
    fn usage_charges_each_entry_by_its_type_beyond_the_tables_share() {
        let budget = HostBudget::new(16 * MIB, 8);
        assert_eq!(budget.table_capacity(), 4096);
        let mut table = ResourceTable::new();
        let empty = budget.usage(&mut table);
        assert_eq!(empty.bytes, RESERVED_BYTES + 4096 * ENTRY_BYTES);
        assert_eq!((empty.entries, empty.descriptors), (0, 0));
        table.push(fields()).expect("push");
        table.push(42u32).expect("push");
        let usage = budget.usage(&mut table);
        assert_eq!(usage.entries, 2);
        assert_eq!(usage.bytes, budget.reserved() + FIELDS_CHARGE);
    }

    #[test]
    fn in_flight_requests_count_until_every_guard_is_gone() {
        let budget = HostBudget::new(16 * MIB, 8);
        let mut table = ResourceTable::new();
        let exchange = budget.in_flight().exchange();
        let body_side = Arc::clone(&exchange);
        let connection = budget.in_flight().connection();
        let usage = budget.usage(&mut table);
        assert_eq!(usage.bytes, budget.reserved() + IN_FLIGHT_BYTES);
        assert_eq!(usage.descriptors, 1);
        drop(connection);
        drop(exchange);
        assert_eq!(
            budget.usage(&mut table).bytes,
            budget.reserved() + IN_FLIGHT_BYTES
        );
        drop(body_side);
        assert_eq!(
            budget.usage(&mut table),
            Usage {
                bytes: budget.reserved(),
                ..Usage::default()
            }
        );
    }

    #[test]
    fn admission_refuses_what_would_pass_host_memory_and_names_the_limit() {
        let budget = HostBudget::new(MIB, 8);
        let mut table = ResourceTable::new();
        budget.size_table(&mut table);
        let mut admitted = 0;
        while budget.admit(&mut table, FIELDS_CHARGE, "a fields").is_ok() {
            table.push(fields()).expect("push");
            admitted += 1;
        }
        assert_eq!(admitted, (MIB - budget.reserved()) / FIELDS_CHARGE);
        let err = budget
            .admit(&mut table, FIELDS_CHARGE, "a fields")
            .unwrap_err();
        assert_eq!(err.limit, Limit::HostMemory);
        assert!(
            err.message
                .contains("plugin.limits.host_memory is 1024 KiB"),
            "{err}"
        );
    }

    #[test]
    fn the_table_never_holds_more_than_its_share_even_through_freed_slots() {
        let budget = HostBudget::new(MIB, 8);
        let mut table = ResourceTable::new();
        budget.size_table(&mut table);
        let fill = |table: &mut ResourceTable| {
            let mut pushed = Vec::new();
            while let Ok(entry) = table.push(0u8) {
                pushed.push(entry);
            }
            pushed
        };
        let first = fill(&mut table);
        assert_eq!(first.len(), budget.table_capacity());
        // Freed slots are reused without a capacity check: since the capacity is never
        // raised, the table still holds no more than its share.
        for entry in first {
            table.delete(entry).expect("delete");
        }
        assert_eq!(fill(&mut table).len(), budget.table_capacity());
        // What an entry holds beyond itself is admitted from the rest of the budget,
        // which a full table does not touch.
        assert!(budget.admit(&mut table, FIELDS_CHARGE, "a fields").is_ok());
    }

    #[test]
    fn descriptors_are_files_sockets_connections_and_directories_the_guest_opened() {
        let budget = HostBudget::new(16 * MIB, 2);
        let mut table = ResourceTable::new();
        let _a = budget.in_flight().connection();
        assert!(budget.admit_descriptor(&mut table, 0, "a socket").is_ok());
        let _b = budget.in_flight().connection();
        let err = budget
            .admit_descriptor(&mut table, 0, "a socket")
            .unwrap_err();
        assert_eq!(err.limit, Limit::Descriptors);
        assert!(
            err.message.contains("plugin.limits.descriptors is 2"),
            "{err}"
        );
        // A slot recorded as an opened directory no longer counts once it holds
        // something else.
        let entry = table.push(7u8).expect("push");
        budget.opened_dir(entry.rep());
        assert_eq!(budget.usage(&mut table).descriptors, 2);
    }
}
