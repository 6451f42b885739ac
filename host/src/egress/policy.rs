//! Allow/deny decisions for one instance's outbound I/O: HTTP requests, TCP connects, UDP
//! sends and name lookups, each checked against the grants, with the missing grant named
//! in every refusal.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::grant::{HostPattern, HttpGrant, Scheme, SocketGrant, guarded_address, normalize_name};

/// Most addresses remembered from one instance's name lookups; beyond it the oldest
/// lookups are forgotten (a connect to an address learnt that long ago is refused).
pub const MAX_REMEMBERED_ADDRESSES: usize = 1024;
/// What one remembered address holds at most (the address, the set of names it was
/// looked up as, a name up to 253 bytes), for the instance's host budget.
pub const REMEMBERED_ADDRESS_BYTES: usize = 384;

/// The outbound destinations granted to a plugin. Empty (the default) grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressGrants {
    /// `plugin.sandbox.http`.
    pub http: Vec<HttpGrant>,
    /// `plugin.sandbox.tcp`.
    pub tcp: Vec<SocketGrant>,
    /// `plugin.sandbox.udp`.
    pub udp: Vec<SocketGrant>,
    /// `plugin.sandbox.resolve_names_for_ranges`: an HTTP request to a name that no entry
    /// names may still reach an address or range entry: shoal resolves the name (so the
    /// query leaves the host, whatever the name) and connects only to an address in the
    /// range. Off by default: then only names an entry names are ever looked up.
    pub resolve_names_for_ranges: bool,
}

impl EgressGrants {
    /// Whether anything at all is granted.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty() && self.udp.is_empty()
    }

    /// Whether the guest may look up `name`: only names that a grant covers by name
    /// (address and range entries match addresses, so they grant no lookups).
    pub fn may_look_up(&self, name: &str) -> Result<String, Refusal> {
        let Some(normal) = normalize_name(name) else {
            return Err(Refusal::new(
                Protocol::NameLookup,
                format!("`{name}` is not a DNS name"),
            ));
        };
        let named = self
            .http
            .iter()
            .map(|g| &g.host)
            .chain(self.tcp.iter().map(|g| &g.host))
            .chain(self.udp.iter().map(|g| &g.host));
        if named.into_iter().any(|h| h.covers_name(&normal)) {
            Ok(normal)
        } else {
            Err(Refusal::new(
                Protocol::NameLookup,
                format!(
                    "name lookup of `{normal}` refused: no [plugin.sandbox] http, tcp or udp entry names it"
                ),
            ))
        }
    }

    /// The first check of an HTTP request, before any name is resolved: which grants
    /// could cover `scheme://host:port`.
    pub fn http_request(&self, scheme: Scheme, host: &str, port: u16) -> HttpDecision {
        let candidates: Vec<&HttpGrant> = self
            .http
            .iter()
            .filter(|g| g.scheme == scheme && g.port.covers(port))
            .collect();
        let target = RequestHost::parse(host);
        // The words are built only when needed: an allowed request costs no allocation
        // beyond the candidate list.
        let url =
            |target: &RequestHost| format!("{}://{}:{port}", scheme.as_str(), target.shown(host));
        let refusal = |what: &str| {
            let suggestion = suggested_http(scheme, &target, host, port);
            HttpDecision::Refused(Refusal::new(
                Protocol::Http,
                format!(
                    "HTTP request to {} refused: {what}; grant it with `{suggestion}` in plugin.sandbox.http",
                    url(&target)
                ),
            ))
        };
        match &target {
            RequestHost::Address(ip) => {
                if candidates.iter().any(|g| g.host.covers_address(*ip)) {
                    HttpDecision::Allowed
                } else if let Some(why) = guarded_address(*ip) {
                    refusal(&format!(
                        "it is {why}, which only an entry naming exactly this address grants"
                    ))
                } else {
                    refusal("no entry grants this address")
                }
            }
            RequestHost::Name(name) => {
                let by_name = candidates.iter().any(|g| g.host.covers_name(name));
                let ranges: Vec<HostPattern> = candidates
                    .iter()
                    .filter(|g| g.host.is_address())
                    .map(|g| g.host.clone())
                    .collect();
                if !by_name && (ranges.is_empty() || !self.resolve_names_for_ranges) {
                    return if ranges.is_empty() {
                        refusal("no entry grants this host")
                    } else {
                        refusal(
                            "no entry names this host (address entries match addresses, and names are looked up only when an entry names them: to let names that resolve into a granted range through, set `resolve_names_for_ranges = true` in [plugin.sandbox])",
                        )
                    };
                }
                HttpDecision::Resolve(AddressCheck {
                    url: url(&target),
                    by_name,
                    ranges,
                })
            }
            RequestHost::Invalid => refusal("the host is not a DNS name or an IP address"),
        }
    }

    /// Whether a TCP connect to `addr` is granted, given the names this instance looked
    /// up (an address learnt from a granted name counts as that name).
    pub fn tcp_connect(&self, addr: SocketAddr, looked_up: &LookedUp) -> Result<(), Refusal> {
        socket_check(&self.tcp, Protocol::Tcp, addr, looked_up)
    }

    /// Whether sending UDP datagrams to `addr` is granted.
    pub fn udp_send(&self, addr: SocketAddr, looked_up: &LookedUp) -> Result<(), Refusal> {
        socket_check(&self.udp, Protocol::Udp, addr, looked_up)
    }
}

fn socket_check(
    grants: &[SocketGrant],
    protocol: Protocol,
    addr: SocketAddr,
    looked_up: &LookedUp,
) -> Result<(), Refusal> {
    let ip = addr.ip().to_canonical();
    let port = addr.port();
    let names = looked_up.names_of(ip);
    let guarded = guarded_address(ip);
    let granted = grants.iter().filter(|g| g.port.covers(port)).any(|g| {
        g.host.covers_address(ip)
            || (guarded.is_none() && names.iter().any(|n| g.host.covers_name(n)))
    });
    if granted {
        return Ok(());
    }
    let shown = SocketAddr::new(ip, port);
    let (key, action) = match protocol {
        Protocol::Udp => ("udp", "UDP send"),
        _ => ("tcp", "TCP connect"),
    };
    let via = match names.first() {
        Some(name) => format!(" (looked up as `{name}`)"),
        None => String::new(),
    };
    let suggestion = match names.first() {
        Some(name) => format!("{name}:{port}"),
        None => shown.to_string(),
    };
    if let Some(why) = guarded {
        return Err(Refusal::new(
            protocol,
            format!(
                "{action} to {shown}{via} refused: it is {why}, which only a plugin.sandbox.{key} entry naming exactly this address grants"
            ),
        ));
    }
    Err(Refusal::new(
        protocol,
        format!(
            "{action} to {shown}{via} refused: no plugin.sandbox.{key} entry grants it; grant it with `\"{suggestion}\"` in plugin.sandbox.{key}"
        ),
    ))
}

/// The outcome of [`EgressGrants::http_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpDecision {
    /// An address literal that an entry covers: connect to it.
    Allowed,
    /// A name that an entry covers (by name, or through an address entry with
    /// `resolve_names_for_ranges`): resolve it, and connect only to addresses
    /// [`AddressCheck::check`] accepts.
    Resolve(AddressCheck),
    /// No grant covers it.
    Refused(Refusal),
}

/// What the addresses a requested name resolves to must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressCheck {
    url: String,
    /// An entry names the host: any address will do, but a guarded one.
    by_name: bool,
    /// Address entries the address may fall into instead.
    ranges: Vec<HostPattern>,
}

impl AddressCheck {
    /// Accept `ip` if the name's grant covers it: any ordinary address for a name an
    /// entry names, an address in a range otherwise; a guarded address (unspecified,
    /// metadata service) only if an entry names exactly it.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if let Some(why) = guarded_address(ip) {
            if self.ranges.iter().any(|r| r.is_exactly(ip)) {
                return Ok(());
            }
            return Err(Refusal::new(
                Protocol::Http,
                format!(
                    "HTTP request to {} refused: the name resolves to {ip}, {why}, which only an entry naming exactly this address grants",
                    self.url
                ),
            ));
        }
        if self.by_name || self.ranges.iter().any(|r| r.covers_address(ip)) {
            return Ok(());
        }
        let granted: Vec<String> = self.ranges.iter().map(ToString::to_string).collect();
        Err(Refusal::new(
            Protocol::Http,
            format!(
                "HTTP request to {} refused: the name resolves to {}, outside the granted {}; grant the name itself in plugin.sandbox.http",
                self.url,
                ip,
                granted.join(", ")
            ),
        ))
    }
}

/// Which kind of outbound I/O was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `wasi:http/outgoing-handler`.
    Http,
    /// `wasi:sockets` TCP.
    Tcp,
    /// `wasi:sockets` UDP.
    Udp,
    /// `wasi:sockets/ip-name-lookup`.
    NameLookup,
}

impl Protocol {
    /// Every kind, in declaration order.
    pub const ALL: [Protocol; 4] = [
        Protocol::Http,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::NameLookup,
    ];

    /// A short stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::NameLookup => "name-lookup",
        }
    }
}

/// A refused outbound operation, in words that name the missing grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused.
    pub protocol: Protocol,
    /// The sentence for the log.
    pub message: String,
}

impl Refusal {
    fn new(protocol: Protocol, message: String) -> Self {
        Self { protocol, message }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The host of a request URL.
enum RequestHost {
    Name(String),
    Address(IpAddr),
    Invalid,
}

impl RequestHost {
    fn parse(host: &str) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Self::Address(ip.to_canonical());
        }
        normalize_name(host).map_or(Self::Invalid, Self::Name)
    }

    fn shown(&self, raw: &str) -> String {
        match self {
            Self::Name(n) => n.clone(),
            Self::Address(IpAddr::V6(a)) => format!("[{a}]"),
            Self::Address(a) => a.to_string(),
            Self::Invalid => raw.to_string(),
        }
    }
}

fn suggested_http(scheme: Scheme, target: &RequestHost, raw: &str, port: u16) -> String {
    let host = target.shown(raw);
    if port == scheme.default_port() {
        format!("\"{}://{host}\"", scheme.as_str())
    } else {
        format!("\"{}://{host}:{port}\"", scheme.as_str())
    }
}

/// The addresses one instance's granted name lookups returned, so that a connect to
/// such an address is judged by the name it was looked up as. Shared between the
/// lookup and the socket check of one instance (never between instances).
#[derive(Debug, Clone, Default)]
pub struct LookedUp {
    inner: Arc<Mutex<LookedUpInner>>,
}

#[derive(Debug, Default)]
struct LookedUpInner {
    names: HashMap<IpAddr, BTreeSet<String>>,
    order: VecDeque<IpAddr>,
}

impl LookedUp {
    /// Remember that `name` resolved to `addresses`.
    pub fn record(&self, name: &str, addresses: &[IpAddr]) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        for ip in addresses {
            let ip = ip.to_canonical();
            let names = inner.names.entry(ip).or_default();
            if names.is_empty() {
                inner.order.push_back(ip);
            }
            names.insert(name.to_string());
        }
        while inner.order.len() > MAX_REMEMBERED_ADDRESSES {
            if let Some(oldest) = inner.order.pop_front() {
                inner.names.remove(&oldest);
            }
        }
    }

    /// The names `ip` was looked up as, sorted.
    pub fn names_of(&self, ip: IpAddr) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .names
            .get(&ip.to_canonical())
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::grant::{parse_http, parse_socket};
    use super::*;

    fn grants(http: &[&str], tcp: &[&str]) -> EgressGrants {
        EgressGrants {
            http: http
                .iter()
                .map(|t| parse_http(t, true).expect("http grant"))
                .collect(),
            tcp: tcp
                .iter()
                .map(|t| parse_socket(t, true).expect("tcp grant"))
                .collect(),
            udp: Vec::new(),
            resolve_names_for_ranges: false,
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let none = EgressGrants::default();
        assert!(none.is_empty());
        let refused = none.http_request(Scheme::Https, "api.example.com", 443);
        let HttpDecision::Refused(r) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(
            r.message,
            "HTTP request to https://api.example.com:443 refused: no entry grants this host; grant it with `\"https://api.example.com\"` in plugin.sandbox.http"
        );
        let err = none
            .tcp_connect(addr("127.0.0.1:6379"), &LookedUp::default())
            .unwrap_err();
        assert_eq!(
            err.message,
            "TCP connect to 127.0.0.1:6379 refused: no plugin.sandbox.tcp entry grants it; grant it with `\"127.0.0.1:6379\"` in plugin.sandbox.tcp"
        );
        assert!(none.may_look_up("db.internal").is_err());
    }

    #[test]
    fn http_requests_match_scheme_host_and_port() {
        let g = grants(&["https://api.example.com", "http://*.svc.local:8080"], &[]);
        let by_name = |d: HttpDecision| matches!(d, HttpDecision::Resolve(c) if c.by_name);
        assert!(by_name(g.http_request(
            Scheme::Https,
            "API.example.com.",
            443
        )));
        for (scheme, host, port) in [
            (Scheme::Http, "api.example.com", 443),
            (Scheme::Https, "api.example.com", 8443),
            (Scheme::Https, "evil.example.com", 443),
            (Scheme::Http, "svc.local", 8080),
        ] {
            assert!(
                matches!(g.http_request(scheme, host, port), HttpDecision::Refused(_)),
                "{host}:{port}"
            );
        }
        assert!(by_name(g.http_request(
            Scheme::Http,
            "orders.svc.local",
            8080
        )));
    }

    #[test]
    fn an_ip_literal_needs_an_address_entry() {
        let g = grants(&["http://localhost:8080", "http://10.0.0.0/8:80"], &[]);
        assert!(matches!(
            g.http_request(Scheme::Http, "127.0.0.1", 8080),
            HttpDecision::Refused(_)
        ));
        assert_eq!(
            g.http_request(Scheme::Http, "10.1.2.3", 80),
            HttpDecision::Allowed
        );
        let HttpDecision::Refused(r) = g.http_request(Scheme::Http, "[::1]", 80) else {
            panic!("an IPv6 literal outside every range")
        };
        assert!(r.message.contains("`\"http://[::1]\"`"), "{r}");
    }

    #[test]
    fn a_name_under_an_address_entry_is_refused_unless_ranges_resolve_names() {
        // The finding: under `http://127.0.0.1:8080` any requested name used to be resolved
        // (the query carrying whatever the guest put in the name) before it was refused.
        let g = grants(&["http://127.0.0.1:8080", "http://10.0.0.0/8:80"], &[]);
        for (host, port) in [
            ("secret-0123abcd.attacker.example", 8080),
            ("localhost", 8080),
            ("search.internal", 80),
        ] {
            let HttpDecision::Refused(r) = g.http_request(Scheme::Http, host, port) else {
                panic!("{host}: a name no entry names must be refused before any lookup")
            };
            assert!(
                r.message.contains("set `resolve_names_for_ranges = true`"),
                "{r}"
            );
        }
        assert!(matches!(
            g.http_request(Scheme::Http, "nothing.example", 9999),
            HttpDecision::Refused(r) if r.message.contains("no entry grants this host")
        ));
    }

    #[test]
    fn a_name_under_a_range_entry_is_judged_by_its_address() {
        let g = EgressGrants {
            resolve_names_for_ranges: true,
            ..grants(&["http://10.0.0.0/8:80"], &[])
        };
        let HttpDecision::Resolve(check) = g.http_request(Scheme::Http, "search.internal", 80)
        else {
            panic!("a name must be resolved and its address checked")
        };
        assert!(check.check("10.9.8.7".parse().expect("ip")).is_ok());
        let err = check
            .check("93.184.215.14".parse().expect("ip"))
            .unwrap_err();
        assert!(
            err.message
                .contains("resolves to 93.184.215.14, outside the granted 10.0.0.0/8"),
            "{err}"
        );
    }

    #[test]
    fn a_granted_name_may_resolve_anywhere_but_to_a_guarded_address() {
        let g = grants(&["https://*.example.com"], &[]);
        let HttpDecision::Resolve(check) = g.http_request(Scheme::Https, "api.example.com", 443)
        else {
            panic!("a granted name is resolved")
        };
        assert!(check.check("93.184.215.14".parse().expect("ip")).is_ok());
        // A wildcard grant whose DNS a third party controls must not reach the metadata
        // service or, through the unspecified address, this host's loopback.
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "::",
        ] {
            let err = check.check(ip.parse().expect("ip")).unwrap_err();
            assert!(
                err.message
                    .contains("only an entry naming exactly this address"),
                "{ip}: {err}"
            );
        }
        let exact = grants(&["https://*.example.com", "https://169.254.169.254"], &[]);
        let HttpDecision::Resolve(check) =
            exact.http_request(Scheme::Https, "api.example.com", 443)
        else {
            panic!("a granted name is resolved")
        };
        assert!(check.check("169.254.169.254".parse().expect("ip")).is_ok());
        assert!(check.check("169.254.170.2".parse().expect("ip")).is_err());
    }

    #[test]
    fn guarded_addresses_are_never_covered_by_a_range_or_a_star() {
        let g = grants(
            &["http://*:*", "http://169.254.0.0/16:80", "http://[::/1]:80"],
            &[],
        );
        for ip in ["169.254.169.254", "0.0.0.0", "[::]"] {
            let HttpDecision::Refused(r) = g.http_request(Scheme::Http, ip, 80) else {
                panic!("{ip} must be refused")
            };
            assert!(
                r.message
                    .contains("only an entry naming exactly this address"),
                "{r}"
            );
        }
        assert_eq!(
            g.http_request(Scheme::Http, "10.1.1.1", 80),
            HttpDecision::Allowed
        );
        let exact = grants(&["http://169.254.169.254"], &["169.254.169.254:80"]);
        assert_eq!(
            exact.http_request(Scheme::Http, "169.254.169.254", 80),
            HttpDecision::Allowed
        );
        assert!(
            exact
                .tcp_connect(addr("169.254.169.254:80"), &LookedUp::default())
                .is_ok()
        );
        // A TCP name grant whose lookup returned a guarded address does not reach it.
        let named = grants(&[], &["*.example.com:80"]);
        let looked_up = LookedUp::default();
        looked_up.record("x.example.com", &["169.254.169.254".parse().expect("ip")]);
        let err = named
            .tcp_connect(addr("169.254.169.254:80"), &looked_up)
            .unwrap_err();
        assert!(err.message.contains("cloud instance metadata"), "{err}");
        looked_up.record("y.example.com", &["0.0.0.0".parse().expect("ip")]);
        assert!(named.tcp_connect(addr("0.0.0.0:80"), &looked_up).is_err());
    }

    #[test]
    fn tcp_to_a_granted_name_is_allowed_at_the_addresses_it_was_looked_up_as() {
        let g = grants(&[], &["db.internal:5432", "127.0.0.1:6379"]);
        let looked_up = LookedUp::default();
        let db = addr("10.0.0.5:5432");
        assert!(g.tcp_connect(db, &looked_up).is_err(), "not looked up yet");
        assert_eq!(g.may_look_up("DB.internal"), Ok("db.internal".into()));
        looked_up.record("db.internal", &[db.ip()]);
        assert!(g.tcp_connect(db, &looked_up).is_ok());
        let err = g.tcp_connect(addr("10.0.0.5:22"), &looked_up).unwrap_err();
        assert!(
            err.message
                .starts_with("TCP connect to 10.0.0.5:22 (looked up as `db.internal`) refused"),
            "{err}"
        );
        assert!(err.message.contains("`\"db.internal:22\"`"), "{err}");
        assert!(g.tcp_connect(addr("127.0.0.1:6379"), &looked_up).is_ok());
        assert!(
            g.tcp_connect(addr("[::ffff:127.0.0.1]:6379"), &looked_up)
                .is_ok()
        );
        assert!(g.tcp_connect(addr("127.0.0.1:6380"), &looked_up).is_err());
    }

    #[test]
    fn name_lookup_is_granted_only_for_names_an_entry_names() {
        let g = grants(
            &["https://*.example.com", "http://10.0.0.0/8:80"],
            &["cache:6379"],
        );
        assert!(g.may_look_up("a.example.com").is_ok());
        assert!(g.may_look_up("cache").is_ok());
        let err = g.may_look_up("exfiltrate-this.attacker.net").unwrap_err();
        assert_eq!(
            err.message,
            "name lookup of `exfiltrate-this.attacker.net` refused: no [plugin.sandbox] http, tcp or udp entry names it"
        );
        assert!(g.may_look_up("not a name").is_err());
    }

    #[test]
    fn remembered_addresses_are_bounded() {
        let looked_up = LookedUp::default();
        for i in 0..(MAX_REMEMBERED_ADDRESSES as u32 + 10) {
            looked_up.record("many", &[IpAddr::from(i.to_be_bytes())]);
        }
        assert!(
            looked_up
                .names_of(IpAddr::from(0u32.to_be_bytes()))
                .is_empty()
        );
        let last = MAX_REMEMBERED_ADDRESSES as u32 + 9;
        assert_eq!(
            looked_up.names_of(IpAddr::from(last.to_be_bytes())),
            vec!["many"]
        );
    }
}
