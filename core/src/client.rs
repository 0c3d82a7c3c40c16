//! Who sent a request: the rule every front end (server, ASGI and Express middleware) applies
//! to find the client address the per-IP limits and allowlists see.

use std::net::IpAddr;

use ipnet::IpNet;

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
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

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
