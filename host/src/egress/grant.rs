//! The text of one outbound grant (`https://api.example.com`, `db.internal:5432`,
//! `10.0.0.0/8:6379`) parsed into a typed destination pattern, with plain-words errors.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_NAME: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;
/// Why a grant with a path, query or user name is refused.
const NO_PATH: &str = "a grant names a host and port only (no path, query or user name)";

/// Which hosts a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this DNS name (lowercase ASCII, no trailing dot).
    Name(String),
    /// Any name strictly below this domain: `*.example.com` covers `a.example.com` and
    /// `a.b.example.com`, not `example.com` itself.
    Subdomains(String),
    /// Exactly this address.
    Address(IpAddr),
    /// Any address in this range (`10.0.0.0/8`, `[fd00::/8]`).
    Range(IpNet),
    /// Every host (a bare `*`, accepted only with `allow_any_host = true`).
    Any,
}

impl HostPattern {
    /// Whether this pattern covers the DNS name `name` (already normalised by
    /// [`normalize_name`]). Address patterns never cover a name.
    pub fn covers_name(&self, name: &str) -> bool {
        match self {
            Self::Name(n) => n == name,
            Self::Subdomains(domain) => name
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            Self::Any => true,
            Self::Address(_) | Self::Range(_) => false,
        }
    }

    /// Whether this pattern covers the address `ip`. Name patterns never do: an address
    /// reached through a granted name is checked by the caller, who knows the name. A
    /// [guarded address](guarded_address) is covered only by an entry naming exactly it,
    /// never by a range or `*`.
    pub fn covers_address(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            Self::Address(a) => a.to_canonical() == ip,
            Self::Range(net) => net.contains(&ip) && guarded_address(ip).is_none(),
            Self::Any => guarded_address(ip).is_none(),
            Self::Name(_) | Self::Subdomains(_) => false,
        }
    }

    /// Whether this pattern is exactly the address `ip` (the only way a guarded address
    /// is granted).
    pub fn is_exactly(&self, ip: IpAddr) -> bool {
        matches!(self, Self::Address(a) if a.to_canonical() == ip.to_canonical())
    }

    /// Whether this pattern is an address or a range (so a name is checked by the
    /// address it resolves to).
    pub fn is_address(&self) -> bool {
        matches!(self, Self::Address(_) | Self::Range(_))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Subdomains(d) => write!(f, "*.{d}"),
            Self::Address(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Self::Address(a) => write!(f, "{a}"),
            Self::Range(IpNet::V6(n)) => write!(f, "[{n}]"),
            Self::Range(n) => write!(f, "{n}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// Why `ip` is an address no range, `*` or name grant reaches (only an entry naming exactly
/// this address does), or `None` for an ordinary address:
/// - the unspecified addresses `0.0.0.0` and `::`, which Linux connects to loopback;
/// - the cloud instance metadata and credential services, which hand out the host's own
///   credentials: IPv4 link-local `169.254.0.0/16` (AWS, GCP and Azure metadata at
///   169.254.169.254, ECS task credentials at 169.254.170.2, EKS pod identity at
///   169.254.170.23), AWS's IPv6 `fd00:ec2::/32` (metadata at fd00:ec2::254) and Alibaba
///   Cloud's `100.100.100.200`.
pub fn guarded_address(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            Some("the unspecified address, which connects to this host's loopback")
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            Some("the unspecified address, which connects to this host's loopback")
        }
        IpAddr::V4(v4) if v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200) => {
            Some("a cloud instance metadata or credentials address")
        }
        IpAddr::V6(v6) if v6.segments()[..2] == [0xfd00, 0x0ec2] => {
            Some("a cloud instance metadata or credentials address")
        }
        _ => None,
    }
}

/// Which ports a grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    /// Exactly this port.
    Port(u16),
    /// Every port (`:*`).
    Any,
}

impl PortPattern {
    /// Whether `port` is covered.
    pub fn covers(self, port: u16) -> bool {
        match self {
            Self::Port(p) => p == port,
            Self::Any => true,
        }
    }
}

impl fmt::Display for PortPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port(p) => write!(f, "{p}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// An HTTP URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (default port 80).
    Http,
    /// HTTP over TLS (default port 443).
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    /// The scheme's name as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// One `plugin.sandbox.http` entry: `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The scheme.
    pub scheme: Scheme,
    /// The hosts.
    pub host: HostPattern,
    /// The ports (the scheme's default when the entry names none).
    pub port: PortPattern,
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

/// One `plugin.sandbox.tcp` or `plugin.sandbox.udp` entry: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGrant {
    /// The hosts.
    pub host: HostPattern,
    /// The ports.
    pub port: PortPattern,
}

impl fmt::Display for SocketGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Parse an HTTP grant. `allow_any_host` permits a bare `*` host.
pub fn parse_http(text: &str, allow_any_host: bool) -> Result<HttpGrant, String> {
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        format!("`{text}` is not an HTTP destination: write `https://host[:port]` or `http://host[:port]`")
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "`{text}`: the scheme must be `http` or `https`, not `{other}` (other protocols go in `plugin.sandbox.tcp` as host:port)"
            ));
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['?', '#', '@']) {
        return Err(format!("`{text}`: {NO_PATH}"));
    }
    let (host, port) = split_host_port(rest).map_err(|e| format!("`{text}`: {e}"))?;
    let host = parse_host(host, allow_any_host).map_err(|e| format!("`{text}`: {e}"))?;
    let port = match port {
        Some(p) => parse_port(p).map_err(|e| format!("`{text}`: {e}"))?,
        None => PortPattern::Port(scheme.default_port()),
    };
    Ok(HttpGrant { scheme, host, port })
}

/// Parse a TCP or UDP grant (`host:port`). `allow_any_host` permits a bare `*` host.
pub fn parse_socket(text: &str, allow_any_host: bool) -> Result<SocketGrant, String> {
    if text.contains("://") {
        return Err(format!(
            "`{text}`: a socket grant is `host:port` with no scheme (HTTP destinations go in `plugin.sandbox.http`)"
        ));
    }
    let (host, port) = split_host_port(text).map_err(|e| format!("`{text}`: {e}"))?;
    let port = port.ok_or_else(|| {
        format!("`{text}`: name the port, e.g. `{text}:5432` (or `{text}:*` for every port)")
    })?;
    Ok(SocketGrant {
        host: parse_host(host, allow_any_host).map_err(|e| format!("`{text}`: {e}"))?,
        port: parse_port(port).map_err(|e| format!("`{text}`: {e}"))?,
    })
}

/// A DNS name as compared against grants: ASCII lowercase, without a trailing dot.
/// `None` if it is not a valid name.
pub fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let valid = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    valid.then(|| name.to_ascii_lowercase())
}

/// Split `host[:port]`, where an IPv6 host is bracketed.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if text.is_empty() {
        return Err("the host is missing".into());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address opened with `[` has no closing `]`")?;
        return match after {
            "" => Ok((&text[..inner.len() + 2], None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((&text[..inner.len() + 2], Some(port))),
                None => Err(format!("unexpected `{after}` after the IPv6 address")),
            },
        };
    }
    match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(
            "an IPv6 address must be written in brackets, e.g. `[::1]:6379` or `[fd00::/8]:443`"
                .into(),
        ),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((text, None)),
    }
}

fn parse_port(text: &str) -> Result<PortPattern, String> {
    if text.contains('/') {
        return Err(NO_PATH.into());
    }
    if text == "*" {
        return Ok(PortPattern::Any);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "`{text}` is not a port: write a number from 1 to 65535, or `*` for every port"
        )),
        Ok(p) => Ok(PortPattern::Port(p)),
    }
}

fn parse_host(text: &str, allow_any_host: bool) -> Result<HostPattern, String> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if let Ok(a) = inner.parse::<Ipv6Addr>() {
            return Ok(HostPattern::Address(IpAddr::V6(a)));
        }
        return match inner.parse::<ipnet::Ipv6Net>() {
            Ok(net) => range(IpNet::V6(net), allow_any_host),
            Err(_) => Err(format!("`{inner}` is not an IPv6 address or range")),
        };
    }
    if text == "*" {
        return if allow_any_host {
            Ok(HostPattern::Any)
        } else {
            Err(
                "a bare `*` grants every host on every network; name the hosts (`*.example.com` \
                 covers its subdomains), or set `allow_any_host = true` in [plugin.sandbox] if \
                 every host is really meant"
                    .into(),
            )
        };
    }
    if let Ok(a) = text.parse::<Ipv4Addr>() {
        return Ok(HostPattern::Address(IpAddr::V4(a)));
    }
    if let Some((address, _)) = text.split_once('/') {
        if address.parse::<Ipv4Addr>().is_err() {
            return Err(NO_PATH.into());
        }
        return match text.parse::<ipnet::Ipv4Net>() {
            Ok(net) => range(IpNet::V4(net), allow_any_host),
            Err(_) => Err(format!(
                "`{text}` is not an address range: write e.g. `10.0.0.0/8` or `[fd00::/8]`"
            )),
        };
    }
    if let Some(domain) = text.strip_prefix("*.") {
        return match normalize_name(domain) {
            Some(d) if d.contains('.') => Ok(HostPattern::Subdomains(d)),
            Some(d) => Err(format!(
                "`*.{d}` would cover a whole top-level domain; name a registered domain, e.g. `*.example.{d}`"
            )),
            None => Err(format!("`{domain}` is not a DNS name")),
        };
    }
    if text.contains('*') {
        return Err(format!(
            "`{text}`: `*` is allowed only as a whole leading label (`*.example.com`) or as the whole host"
        ));
    }
    if !text.is_ascii() {
        return Err(format!(
            "`{text}` is not ASCII: write an international name in its ASCII (punycode) form, e.g. `xn--…`"
        ));
    }
    normalize_name(text)
        .map(HostPattern::Name)
        .ok_or_else(|| format!("`{text}` is not a DNS name, an IP address or an address range"))
}

/// A range written with host bits set (`10.1.2.3/8`) means its network. A range of every
/// address (`0.0.0.0/0`, `[::/0]`) is `*` by another name: it needs `allow_any_host`.
fn range(net: IpNet, allow_any_host: bool) -> Result<HostPattern, String> {
    let net = net.trunc();
    if net.prefix_len() == 0 && !allow_any_host {
        return Err(format!(
            "`{}` covers every address on every network; name the ranges you mean (e.g. \
             `10.0.0.0/8`), or set `allow_any_host = true` in [plugin.sandbox] if every host is \
             really meant",
            HostPattern::Range(net)
        ));
    }
    Ok(if net.prefix_len() == net.max_prefix_len() {
        HostPattern::Address(net.addr())
    } else {
        HostPattern::Range(net)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(text: &str) -> HttpGrant {
        parse_http(text, false).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn socket(text: &str) -> SocketGrant {
        parse_socket(text, false).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_range_of_every_address_needs_allow_any_host() {
        for text in [
            "http://0.0.0.0/0:80",
            "http://[::/0]:80",
            "http://10.0.0.0/0:80",
        ] {
            let err = parse_http(text, false).unwrap_err();
            assert!(err.contains("allow_any_host = true"), "{text}: {err}");
            assert!(parse_http(text, true).is_ok(), "{text}");
        }
        let err = parse_socket("0.0.0.0/0:6379", false).unwrap_err();
        assert!(err.contains("covers every address"), "{err}");
        assert!(
            parse_socket("0.0.0.0/1:6379", false).is_ok(),
            "only a catch-all needs it"
        );
    }

    #[test]
    fn guarded_addresses_are_the_unspecified_and_metadata_ones() {
        for ip in [
            "0.0.0.0",
            "::",
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            assert!(guarded_address(ip.parse().expect("ip")).is_some(), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "100.100.100.201",
            "fd00::1",
            "::1",
            "93.184.215.14",
        ] {
            assert!(guarded_address(ip.parse().expect("ip")).is_none(), "{ip}");
        }
    }

    #[test]
    fn http_entries_take_the_default_port_of_their_scheme() {
        let g = http("https://API.Example.com");
        assert_eq!(g.scheme, Scheme::Https);
        assert_eq!(g.host, HostPattern::Name("api.example.com".into()));
        assert_eq!(g.port, PortPattern::Port(443));
        assert_eq!(http("http://127.0.0.1").port, PortPattern::Port(80));
        assert_eq!(http("http://127.0.0.1:8080/").port, PortPattern::Port(8080));
        assert_eq!(http("https://*.example.com:*").port, PortPattern::Any);
        assert_eq!(g.to_string(), "https://api.example.com:443");
    }

    #[test]
    fn host_forms_parse_to_their_patterns() {
        assert_eq!(
            http("https://*.example.com").host,
            HostPattern::Subdomains("example.com".into())
        );
        assert_eq!(
            http("http://10.0.0.0/8:9200").host,
            HostPattern::Range("10.0.0.0/8".parse().expect("net"))
        );
        assert_eq!(
            http("http://[fd00::/8]:80").host,
            HostPattern::Range("fd00::/8".parse().expect("net"))
        );
        assert_eq!(
            socket("[::1]:6379").host,
            HostPattern::Address("::1".parse().expect("ip"))
        );
        assert_eq!(
            socket("10.1.2.3/8:6379").host,
            HostPattern::Range("10.0.0.0/8".parse().expect("net")),
            "host bits are cut to the network"
        );
        assert_eq!(
            socket("10.1.2.3/32:6379").host,
            HostPattern::Address("10.1.2.3".parse().expect("ip"))
        );
        assert_eq!(
            socket("db.internal.:5432").host,
            HostPattern::Name("db.internal".into())
        );
        assert_eq!(socket("db.internal:*").port, PortPattern::Any);
    }

    #[test]
    fn a_bare_star_needs_allow_any_host() {
        let err = parse_http("https://*", false).unwrap_err();
        assert!(err.contains("allow_any_host = true"), "{err}");
        assert_eq!(
            parse_http("https://*", true).map(|g| g.host),
            Ok(HostPattern::Any)
        );
        assert!(parse_socket("*:5432", false).is_err());
        assert_eq!(
            parse_socket("*:5432", true).map(|g| g.host),
            Ok(HostPattern::Any)
        );
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        for (text, expect) in [
            ("api.example.com", "is not an HTTP destination"),
            ("ftp://files.example.com", "must be `http` or `https`"),
            ("https://api.example.com/v1/items", "no path"),
            ("https://api.example.com:8443/v1", "no path"),
            ("https://user@api.example.com", "no path"),
            ("https://api.example.com:0", "is not a port"),
            ("https://api.example.com:70000", "is not a port"),
            ("https://a*.example.com", "whole leading label"),
            ("https://*.com", "top-level domain"),
            ("https://bücher.example", "punycode"),
            ("https://-bad-.example", "is not a DNS name"),
            ("https://", "host is missing"),
            ("http://10.0.0.0/33", "not an address range"),
            ("http://[::1", "no closing"),
        ] {
            let err = parse_http(text, false).expect_err(text);
            assert!(err.contains(expect), "{text}: {err}");
        }
        for (text, expect) in [
            ("db.internal", "name the port"),
            ("redis://cache:6379", "no scheme"),
            ("::1:6379", "in brackets"),
            ("[::1]6379", "unexpected"),
        ] {
            let err = parse_socket(text, false).expect_err(text);
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn subdomain_patterns_cover_names_below_the_domain_only() {
        let p = HostPattern::Subdomains("example.com".into());
        assert!(p.covers_name("a.example.com"));
        assert!(p.covers_name("a.b.example.com"));
        assert!(!p.covers_name("example.com"));
        assert!(!p.covers_name("badexample.com"));
        assert!(!p.covers_name(".example.com"));
        assert!(!p.covers_address("93.184.215.14".parse().expect("ip")));
    }

    #[test]
    fn address_patterns_compare_canonical_addresses() {
        let p = HostPattern::Address("127.0.0.1".parse().expect("ip"));
        assert!(p.covers_address("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!p.covers_address("127.0.0.2".parse().expect("ip")));
        assert!(!p.covers_name("localhost"));
        let r = HostPattern::Range("10.0.0.0/8".parse().expect("net"));
        assert!(r.covers_address("10.255.0.1".parse().expect("ip")));
        assert!(!r.covers_address("11.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn names_normalise_case_and_the_trailing_dot() {
        assert_eq!(normalize_name("DB.Internal."), Some("db.internal".into()));
        assert_eq!(
            normalize_name("_srv.example.com"),
            Some("_srv.example.com".into())
        );
        assert_eq!(normalize_name("a..b"), None);
        assert_eq!(normalize_name(""), None);
        assert_eq!(normalize_name(&"a".repeat(64)), None);
    }
}
