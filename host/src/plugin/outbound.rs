//! One instance's outbound I/O state: its grants, the addresses its name lookups returned,
//! and the log of what it was refused (one warning per distinct refusal, naming the
//! missing grant, up to [`MAX_REMEMBERED_REFUSALS`] of them; repeats and the rest at
//! debug level; warnings draw from the instance's log rate limit; every refusal counted
//! in `shoal_guest_refusals_total`).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use wasmtime_wasi::sockets::SocketAddrUse;

use super::guest_log::{GuestLog, LogTags};
use crate::egress::{EgressGrants, LookedUp, Refusal};
use crate::telemetry::metrics::{KindLabel, metrics};

/// Distinct refusals that get a warning of their own, per instance; later distinct ones
/// are logged at debug level (a guest varying its requests cannot flood the log).
pub const MAX_REMEMBERED_REFUSALS: usize = 64;

/// Shared by the socket check, the name lookup and the HTTP sender of one instance.
/// Cloning shares the state.
#[derive(Debug, Clone)]
pub struct Outbound {
    grants: Arc<EgressGrants>,
    looked_up: LookedUp,
    refused: Arc<Mutex<HashSet<String>>>,
    log: Arc<GuestLog>,
    /// The instance's lookups queued or running (see [`super::resolver`]).
    lookup_slots: Arc<tokio::sync::Semaphore>,
}

impl Outbound {
    /// The outbound state of a new instance.
    pub fn new(grants: &EgressGrants, log: &Arc<GuestLog>) -> Self {
        Self {
            grants: Arc::new(grants.clone()),
            looked_up: LookedUp::default(),
            refused: Arc::default(),
            log: Arc::clone(log),
            lookup_slots: super::resolver::instance_slots(),
        }
    }

    /// Resolve `name` (already checked against the grants) on the lookup threads, in one
    /// of this instance's slots, waiting at most `timeout`.
    pub async fn resolve(
        &self,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<IpAddr>, super::resolver::LookupError> {
        super::resolver::Resolver::global()
            .lookup(name, &self.lookup_slots, timeout)
            .await
    }

    /// The grants.
    pub fn grants(&self) -> &EgressGrants {
        &self.grants
    }

    /// Remember what a granted lookup of `name` returned.
    pub fn record_lookup(&self, name: &str, addresses: &[IpAddr]) {
        self.looked_up.record(name, addresses);
    }

    /// Log a refusal: a warning the first time this instance is refused this way (while
    /// the log rate allows), else a debug line; always counted.
    pub fn log_refusal(&self, refusal: &Refusal) {
        metrics()
            .guest_refusals
            .get_or_create(&KindLabel {
                kind: refusal.protocol.label(),
            })
            .inc();
        let first = {
            let mut seen = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            seen.len() < MAX_REMEMBERED_REFUSALS && seen.insert(refusal.message.clone())
        };
        let LogTags {
            stream,
            shard,
            generation,
        } = self.log.tags();
        if first && self.log.admit() {
            tracing::warn!(target: "shoal::sandbox", stream = %stream, shard = %shard, generation, "guest {refusal}");
        } else {
            tracing::debug!(target: "shoal::sandbox", stream = %stream, shard = %shard, generation, "guest {refusal} (again)");
        }
    }

    /// The decision behind `WasiCtxBuilder::socket_addr_check`. Binds are allowed only
    /// as the implicit bind of an outgoing socket (wildcard address, any port the OS
    /// picks) and only for a protocol with grants; listening and accepting never are.
    pub fn allows_socket(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        let implicit_bind = addr.ip().is_unspecified() && addr.port() == 0;
        let decision = match usage {
            SocketAddrUse::TcpBind => return implicit_bind && !self.grants.tcp.is_empty(),
            SocketAddrUse::UdpBind => return implicit_bind && !self.grants.udp.is_empty(),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => return false,
            SocketAddrUse::TcpConnect => self.grants.tcp_connect(addr, &self.looked_up),
            SocketAddrUse::UdpSend => self.grants.udp_send(addr, &self.looked_up),
            // A datagram from a destination the guest may send to; others are dropped
            // silently (wasmtime-wasi never hands them to the guest).
            SocketAddrUse::UdpReceive => {
                return self.grants.udp_send(addr, &self.looked_up).is_ok();
            }
        };
        match decision {
            Ok(()) => true,
            Err(refusal) => {
                self.log_refusal(&refusal);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::parse_socket;

    fn outbound(tcp: &[&str]) -> Outbound {
        let grants = EgressGrants {
            tcp: tcp
                .iter()
                .map(|t| parse_socket(t, false).expect("grant"))
                .collect(),
            ..EgressGrants::default()
        };
        let tags = LogTags {
            stream: Arc::from("s"),
            shard: Arc::from("shardId-0"),
            generation: 1,
        };
        Outbound::new(&grants, &Arc::new(GuestLog::new(tags, 100, 100)))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn only_implicit_binds_of_a_granted_protocol_pass() {
        let none = outbound(&[]);
        assert!(!none.allows_socket(addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        let some = outbound(&["127.0.0.1:6379"]);
        assert!(some.allows_socket(addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(some.allows_socket(addr("[::]:0"), SocketAddrUse::TcpBind));
        assert!(!some.allows_socket(addr("0.0.0.0:8080"), SocketAddrUse::TcpBind));
        assert!(!some.allows_socket(addr("127.0.0.1:0"), SocketAddrUse::TcpBind));
        assert!(!some.allows_socket(addr("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert!(!some.allows_socket(addr("0.0.0.0:0"), SocketAddrUse::TcpListen));
        assert!(!some.allows_socket(addr("127.0.0.1:6379"), SocketAddrUse::TcpAccept));
    }

    #[test]
    fn connects_follow_the_grants_and_the_lookups() {
        let o = outbound(&["127.0.0.1:6379", "cache.local:6380"]);
        assert!(o.allows_socket(addr("127.0.0.1:6379"), SocketAddrUse::TcpConnect));
        assert!(!o.allows_socket(addr("127.0.0.1:6380"), SocketAddrUse::TcpConnect));
        o.record_lookup("cache.local", &["127.0.0.1".parse().expect("ip")]);
        assert!(o.allows_socket(addr("127.0.0.1:6380"), SocketAddrUse::TcpConnect));
        assert!(!o.allows_socket(addr("127.0.0.1:6379"), SocketAddrUse::UdpSend));
    }
}
