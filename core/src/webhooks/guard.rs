//! The SSRF guard: which webhook targets Latchkey may contact (SPEC §8).
//!
//! A webhook URL is chosen by a store's admin, but the request comes from Latchkey's network, so
//! a URL must not reach anything a stranger could not: loopback, private networks, link-local
//! (cloud metadata at 169.254.169.254), unique-local, unspecified, and the other special ranges
//! below. URLs are parsed the way browsers parse them (WHATWG, the `url` crate), which turns
//! disguised hosts such as `2130706433`, `0x7f.1` or `①②⑦.0.0.1` into the address they mean
//! before any check. Names are resolved when a request is sent, every address they resolve to
//! must pass, and the connection goes only to those checked addresses (no second lookup that
//! DNS rebinding could answer differently).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

use url::{Host, Url};

/// Longest URL accepted.
pub(crate) const MAX_URL: usize = 2_048;

/// Why `ip` may not be contacted, or `None` for a public unicast address.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, ..) => "unspecified (this network)",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared address space (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved or broadcast",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // Forms that carry an IPv4 address are judged by that address: mapped (::ffff:a.b.c.d),
    // the deprecated compatible form (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:ab:cd::).
    let embedded = match segments {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4_of(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(v4_of(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4_of(hi, lo)),
        _ => None,
    };
    if let Some(v4) = embedded {
        return refused_v4(v4);
    }
    Some(match segments {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0, 0, 0, 0, 0, 0, 0, _] => "reserved (IPv4-compatible)",
        [0x64, 0xff9b, 1, ..] => "NAT64 local use",
        [0x100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0, ..] => "Teredo tunnel",
        [0x2001, 0xdb8, ..] => "documentation",
        [s, ..] if s & 0xfe00 == 0xfc00 => "unique-local",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Parses and checks a webhook URL's shape: `http`/`https`, a host, no credentials, no fragment.
/// The result is the normalised URL (what is stored and contacted).
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    let text = text.trim();
    if text.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let url = Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    Ok(url)
}

/// Why this URL's host may not be contacted, judging by the host as written: an address
/// literal, or a name reserved for the local machine. `None` when a lookup must decide.
pub(crate) fn refused_host(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Ipv4(ip) => refused_v4(ip).map(|why| format!("{ip} is a {why} address")),
        Host::Ipv6(ip) => refused_v6(ip).map(|why| format!("{ip} is a {why} address")),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            // RFC 6761: `localhost` and its subdomains are the local machine, whatever DNS says.
            (name == "localhost" || name.ends_with(".localhost"))
                .then(|| format!("{name} is the local machine"))
        }
    }
}

/// Why a target cannot be contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The host is, or resolves to, an address the guard refuses.
    Refused(String),
    /// The host has no usable address right now.
    Unresolved(String),
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::Refused(why) => write!(f, "refused: {why}"),
            Blocked::Unresolved(why) => f.write_str(why),
        }
    }
}

/// Where a request to `url` may connect: every address its host resolves to, each checked.
/// One refused address refuses the target (a name must not mix public and internal answers).
pub(crate) fn resolve(
    url: &Url,
    allow_private: bool,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Blocked> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Blocked::Unresolved("the URL has no port".into()))?;
    if !allow_private && let Some(why) = refused_host(url) {
        return Err(Blocked::Refused(why));
    }
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => lookup(name, port, timeout).map_err(Blocked::Unresolved)?,
        None => return Err(Blocked::Unresolved("the URL names no host".into())),
    };
    if !allow_private {
        let host = url.host_str().unwrap_or_default();
        for address in &addresses {
            if let Some(why) = refused_address(address.ip()) {
                return Err(Blocked::Refused(format!(
                    "{host} resolves to {}, a {why} address",
                    address.ip()
                )));
            }
        }
    }
    Ok(addresses)
}

/// A name lookup that gives up after `timeout` (the system resolver has no deadline of its own).
fn lookup(name: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = mpsc::sync_channel(1);
    let query = name.to_owned();
    std::thread::Builder::new()
        .name("latchkey-resolve".into())
        .spawn(move || {
            let result = (query.as_str(), port)
                .to_socket_addrs()
                .map(|found| found.collect::<Vec<_>>());
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot look up {name}: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(found)) if !found.is_empty() => Ok(found),
        Ok(Ok(_)) => Err(format!("{name} has no address")),
        Ok(Err(e)) => Err(format!("cannot resolve {name}: {e}")),
        Err(_) => Err(format!("looking up {name} took longer than {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_pass_and_special_ones_are_named() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(refused_address(ip), None, "{public}");
        }
        for (special, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("2002:c0a8:101::", "private"),
            ("::127.0.0.1", "loopback"),
        ] {
            let ip: IpAddr = special.parse().unwrap();
            assert_eq!(refused_address(ip), Some(why), "{special}");
        }
        // The edges of 172.16.0.0/12 and 100.64.0.0/10.
        assert_eq!(refused_address("172.15.255.255".parse().unwrap()), None);
        assert_eq!(refused_address("172.32.0.0".parse().unwrap()), None);
        assert_eq!(refused_address("100.63.255.255".parse().unwrap()), None);
        assert!(refused_address("100.127.255.255".parse().unwrap()).is_some());
    }

    #[test]
    fn disguised_hosts_are_normalised_before_the_check() {
        for disguised in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://%31%32%37.0.0.1/",
            "http://①②⑦.0.0.1/",
            "http://[::ffff:7f00:1]/",
            "http://LocalHost./",
        ] {
            let url = parse_url(disguised).unwrap();
            assert!(refused_host(&url).is_some(), "{disguised} -> {url}");
        }
    }
}
