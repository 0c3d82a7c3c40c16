//! Who sent a request: the rule every front end (server, ASGI and Express middleware) applies
//! to find the client address the per-IP limits and allowlists see.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Parses an IP address exactly as `IpAddr::from_str` does, with a fast path for the common
/// dotted-quad IPv4 form (the bindings parse the client address on every verify, and the
/// standard parser costs ≈ 20 ns there). Anything the fast path does not take — IPv6, leading
/// zeros, stray characters — goes to the standard parser, which decides.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    match dotted_quad(text.as_bytes()) {
        Some(v4) => Some(IpAddr::V4(v4)),
        None => text.parse().ok(),
    }
}

/// A client address given as an argument (`ip`), or the problem to name: the one wording
/// of a bad `ip` for verify, recorded requests and both bindings.
pub fn parse_ip_argument(text: &str) -> Result<IpAddr, String> {
    parse_ip(text).ok_or_else(|| format!("ip: `{}` is not an IP address", text.escape_debug()))
}

/// `a.b.c.d` with each part 0–255 in 1–3 digits and no leading zero; `None` otherwise.
fn dotted_quad(bytes: &[u8]) -> Option<Ipv4Addr> {
    if !(7..=15).contains(&bytes.len()) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if bytes.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while i < bytes.len() && i - start < 3 && bytes[i].is_ascii_digit() {
            value = value * 10 + u32::from(bytes[i] - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == bytes.len()).then(|| Ipv4Addr::from(octets))
}

/// The client's address: the socket peer, or — only when the peer is a trusted proxy — the
/// nearest address of `X-Forwarded-For` (all of its header lines, in order) that is not itself
/// a trusted proxy. A client behind an untrusted peer cannot choose its address; a malformed
/// hop ends what can be believed. IPv4-mapped IPv6 addresses are read as IPv4.
pub fn client_ip<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|line| line.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_ip(hop.trim()) {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            None => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The fast path never disagrees with the standard parser, on near-addresses too.
        #[test]
        fn parse_ip_agrees_with_the_standard_parser(text in "[0-9.:a-f ]{0,18}") {
            prop_assert_eq!(parse_ip(&text), text.parse::<IpAddr>().ok());
        }

        #[test]
        fn every_ipv4_address_parses(a: u8, b: u8, c: u8, d: u8) {
            let text = format!("{a}.{b}.{c}.{d}");
            prop_assert_eq!(dotted_quad(text.as_bytes()), Some(Ipv4Addr::new(a, b, c, d)));
        }
    }

    #[test]
    fn parse_ip_edge_cases() {
        for bad in [
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            "256.1.1.1",
            "1.2.3.4 ",
            "1..2.3",
            "1234.1.1.1",
            "",
        ] {
            assert_eq!(parse_ip(bad), None, "{bad}");
        }
        assert_eq!(parse_ip("0.0.0.0"), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(
            parse_ip("255.255.255.255"),
            Some(IpAddr::V4(Ipv4Addr::BROADCAST))
        );
        assert_eq!(
            parse_ip("::1"),
            Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
        );
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // An untrusted peer cannot choose its address.
        assert_eq!(
            client_ip(ip("203.0.113.9"), ["1.2.3.4"], &trusted),
            ip("203.0.113.9")
        );
        // Behind a trusted proxy: the nearest untrusted hop.
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                ["1.2.3.4, 198.51.100.7, 10.0.0.2"],
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Header lines are read in order, as one list.
        assert_eq!(
            client_ip(ip("10.0.0.1"), ["1.2.3.4", "198.51.100.7"], &trusted),
            ip("198.51.100.7")
        );
        // A malformed hop ends the chain at the last believable address.
        assert_eq!(
            client_ip(ip("10.0.0.1"), ["1.2.3.4, junk"], &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), [], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(None, ["1.2.3.4"], &trusted), None);
    }
}
