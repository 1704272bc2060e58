//! Who the client is: the TCP peer, or — only when the peer is a trusted proxy — the address
//! that proxy says it forwarded for.
//!
//! Owns: the trust decision. `CF-Connecting-IP` is used when present; otherwise
//! `X-Forwarded-For` is read from the right, skipping trusted proxies, and the first untrusted
//! address is the client (the left part of the list is whatever the client claimed).
//!
//! Must never: believe a forwarding header from a peer that is not in `web.trusted_proxies`
//! (anyone could then dodge the rate limit or forge the access log).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        })
}

/// The client address for a request that arrived from `peer`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    // PERF: the common case (no proxies configured) is one slice-emptiness check.
    if proxies.is_empty() || !trusted(proxies, peer) {
        return peer;
    }
    if let Some(ip) = headers
        .get("cf-connecting-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_ip)
    {
        return ip;
    }
    let mut leftmost = None;
    let mut hops: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        if let Ok(s) = v.to_str() {
            hops.extend(s.split(','));
        }
    }
    for hop in hops.iter().rev() {
        let Some(ip) = parse_ip(hop) else {
            // A garbled hop: nothing left of it can be trusted.
            return leftmost.unwrap_or(peer);
        };
        if !trusted(proxies, ip) {
            return ip;
        }
        leftmost = Some(ip);
    }
    leftmost.unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(peer, &xff("1.2.3.4"), &[]), peer);
        let proxies = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(resolve(peer, &xff("1.2.3.4"), &proxies), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            resolve(peer, &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"), &proxies),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let mut h = xff("6.6.6.6");
        h.insert("cf-connecting-ip", HeaderValue::from_static("192.0.2.44"));
        assert_eq!(
            resolve(peer, &h, &proxies),
            "192.0.2.44".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve(peer, &HeaderMap::new(), &proxies), peer);
    }
}
