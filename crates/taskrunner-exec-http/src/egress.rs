//! The egress policy of `builtin:http` (SPEC §7): which `host:port` a request may reach and
//! which resolved addresses it may connect to.
//!
//! - `sealed` with an empty allowlist: no HTTP at all.
//! - `networked` with an empty allowlist: any host whose addresses are all public.
//! - a non-empty allowlist (either mode): only listed hosts (`host` = any port, `host:port`).
//!   A listed **name** may only resolve to public addresses (so a name cannot be pointed at
//!   the host's loopback or private network by DNS), except `localhost`, which may resolve to
//!   loopback. A listed **IP address** is reachable whatever its class: loopback, link-local
//!   and private addresses are reachable only when listed explicitly like this.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use taskrunner_exec::NetworkMode;
use url::Host;

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: EntryHost,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryHost {
    Name(String),
    Ip(IpAddr),
}

/// A parsed allowlist plus the network mode.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    mode: NetworkMode,
    entries: Vec<Entry>,
}

/// Where a request may connect to, after the checks.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The host name to pin (`None` for an IP literal).
    pub(crate) name: Option<String>,
    /// The addresses to connect to (all allowed).
    pub(crate) addrs: Vec<SocketAddr>,
}

impl EgressPolicy {
    /// Parses `egressAllowlist` entries (`host`, `host:port`, `[v6]:port`, `v4`, `v6`).
    pub fn new(mode: NetworkMode, allowlist: &[String]) -> Result<EgressPolicy, String> {
        let entries = allowlist
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy { mode, entries })
    }

    /// Checks a URL's host and port, resolves it (for names) and checks every address.
    pub(crate) async fn admit<S: AsRef<str>>(
        &self,
        host: &Host<S>,
        port: u16,
    ) -> Result<Target, String> {
        let shown = match host {
            Host::Domain(d) => format!("{}:{port}", d.as_ref()),
            Host::Ipv4(ip) => format!("{ip}:{port}"),
            Host::Ipv6(ip) => format!("[{ip}]:{port}"),
        };
        if self.entries.is_empty() && self.mode == NetworkMode::Sealed {
            return Err(format!(
                "{shown} is not allowed: the pack is sealed and its egressAllowlist is empty"
            ));
        }
        let (name, literal): (Option<String>, Option<IpAddr>) = match host {
            Host::Domain(d) => (Some(normalise(d.as_ref())), None),
            Host::Ipv4(ip) => (None, Some(IpAddr::V4(*ip))),
            Host::Ipv6(ip) => (None, Some(IpAddr::V6(*ip))),
        };
        let matched = self.entries.iter().find(|e| {
            e.port.is_none_or(|p| p == port)
                && match (&e.host, &name, literal) {
                    (EntryHost::Name(n), Some(name), _) => n == name,
                    (EntryHost::Ip(ip), _, Some(lit)) => *ip == lit,
                    _ => false,
                }
        });
        if !self.entries.is_empty() && matched.is_none() {
            return Err(format!("{shown} is not in the egressAllowlist"));
        }
        let explicit_ip = matches!(
            matched,
            Some(Entry {
                host: EntryHost::Ip(_),
                ..
            })
        );
        let is_localhost = name.as_deref() == Some("localhost") && matched.is_some();
        let addrs: Vec<SocketAddr> = match (literal, &name) {
            (Some(ip), _) => vec![SocketAddr::new(ip, port)],
            (None, Some(name)) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .collect(),
            (None, None) => return Err(format!("{shown} has no host")),
        };
        if addrs.is_empty() {
            return Err(format!("{shown} resolves to no address"));
        }
        for addr in &addrs {
            let ip = canonical(addr.ip());
            let allowed = is_public(ip) || explicit_ip || (is_localhost && ip.is_loopback());
            if !allowed {
                return Err(format!(
                    "{shown} resolves to {ip}, a {} address, which is reachable only when listed explicitly in the egressAllowlist",
                    class(ip)
                ));
            }
        }
        Ok(Target { name, addrs })
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_entry(text: &str) -> Result<Entry, String> {
    let bad = || format!("egressAllowlist entry {text:?} is not `host` or `host:port`");
    let text = text.trim();
    if text.is_empty() || text.contains(['/', '@', ' ', '?', '#']) {
        return Err(bad());
    }
    // `[v6]` or `[v6]:port`
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?,
            ),
        };
        return Ok(Entry {
            host: EntryHost::Ip(IpAddr::V6(ip)),
            port,
        });
    }
    // A bare IPv6 address (several colons) has no port.
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Entry {
            host: EntryHost::Ip(ip),
            port: None,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| bad())?)),
        None => (text, None),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let host = match host.parse::<Ipv4Addr>() {
        Ok(ip) => EntryHost::Ip(IpAddr::V4(ip)),
        Err(_) => EntryHost::Name(normalise(host)),
    };
    Ok(Entry { host, port })
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable unicast (not loopback, private, link-local, CGNAT, multicast,
/// documentation, benchmarking, reserved or unspecified).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)) // NAT64 (may embed anything)
        }
    }
}

fn class(ip: IpAddr) -> &'static str {
    match ip {
        _ if ip.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "private",
        _ => "non-public",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let e = parse_entry("API.example.com.:443").unwrap();
        assert_eq!(e.host, EntryHost::Name("api.example.com".into()));
        assert_eq!(e.port, Some(443));
        assert_eq!(parse_entry("10.0.0.1").unwrap().port, None);
        assert_eq!(parse_entry("[::1]:8080").unwrap().port, Some(8080));
        assert!(matches!(parse_entry("::1").unwrap().host, EntryHost::Ip(_)));
        for bad in ["", "http://x", "x:port", ":80", "[::1", "a b", "x:70000"] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn address_classes() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn admission_rules() {
        let host = |h: &'static str| Host::parse(h).unwrap();
        let sealed_empty = EgressPolicy::new(NetworkMode::Sealed, &[]).unwrap();
        assert!(sealed_empty.admit(&host("1.1.1.1"), 443).await.is_err());

        let networked_empty = EgressPolicy::new(NetworkMode::Shared, &[]).unwrap();
        assert!(networked_empty.admit(&host("1.1.1.1"), 443).await.is_ok());
        let err = networked_empty
            .admit(&host("127.0.0.1"), 80)
            .await
            .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let err = networked_empty
            .admit(&host("localhost"), 80)
            .await
            .unwrap_err();
        assert!(err.contains("listed explicitly"), "{err}");

        let listed = EgressPolicy::new(
            NetworkMode::Sealed,
            &["127.0.0.1:8080".into(), "localhost".into()],
        )
        .unwrap();
        assert!(listed.admit(&host("127.0.0.1"), 8080).await.is_ok());
        assert!(listed.admit(&host("127.0.0.1"), 8081).await.is_err());
        assert!(listed.admit(&host("localhost"), 9).await.is_ok());
        assert!(listed.admit(&host("1.1.1.1"), 443).await.is_err());
    }
}
