//! Outbound I/O grants: the syntax of `plugin.sandbox.http`, `tcp` and `udp` entries and
//! every allow/deny decision about a processor's requests, connects and name lookups.
//!
//! Nothing is granted by default. An HTTP entry is `scheme://host[:port]` (the port
//! defaults to the scheme's); a TCP or UDP entry is `host:port`. A host is a DNS name,
//! `*.domain` (every name below the domain), an IP address, an address range
//! (`10.0.0.0/8`, `[fd00::/8]`) or, only with `allow_any_host = true`, a bare `*`; a port
//! is a number or `*`. A guest may look up only names an entry covers by name; an
//! address or range entry covers IP literals, and for HTTP (where shoal resolves the
//! name) a name whose address falls in the range only with `resolve_names_for_ranges`.
//! A range of every address (`0.0.0.0/0`) needs `allow_any_host`; the unspecified and
//! cloud metadata addresses are reached only through an entry naming exactly them.

mod grant;
mod policy;

pub use grant::{
    HostPattern, HttpGrant, PortPattern, Scheme, SocketGrant, guarded_address, normalize_name,
    parse_http, parse_socket,
};
pub use policy::{
    AddressCheck, EgressGrants, HttpDecision, LookedUp, MAX_REMEMBERED_ADDRESSES, Protocol,
    REMEMBERED_ADDRESS_BYTES, Refusal,
};
