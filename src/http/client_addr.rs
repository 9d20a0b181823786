//! The client's address: the TCP peer, unless the peer is a trusted proxy
//! (`TRUSTED_PROXIES`), in which case the rightmost untrusted hop of the one forwarding
//! header the proxies write (`FORWARDED_HEADER`: `X-Forwarded-For` by default, or RFC
//! 7239 `Forwarded`). The other header is never read: a proxy that appends to one passes
//! a client's own copy of the other through untouched. A request from anyone else has
//! both ignored, so nobody picks their own address for the lockout and rate limits.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ForwardedHeader;

/// The client address of the current request (a request extension set by the HTTP
/// middleware for every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&ip))
}

/// One `for=` value of a `Forwarded` element: `192.0.2.1`, `"[2001:db8::1]:4711"`,
/// `"192.0.2.1:80"`. Obfuscated identifiers and `unknown` are not addresses.
fn forwarded_for(value: &str) -> Option<IpAddr> {
    let value = value.trim().trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    value.parse().ok().or_else(|| value.rsplit_once(':').and_then(|(host, _port)| host.parse().ok()))
}

/// The hops the header reports, leftmost (farthest) first; `None` marks a hop that is not
/// an address.
fn reported_hops(headers: &HeaderMap, which: ForwardedHeader) -> Vec<Option<IpAddr>> {
    if which == ForwardedHeader::Forwarded {
        return headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|line| line.split(','))
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("for").then(|| forwarded_for(value))?
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(forwarded_for)
        .collect()
}

/// The client address of a request from `peer` with `headers`.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet], which: ForwardedHeader) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    for hop in reported_hops(headers, which).into_iter().rev() {
        match hop {
            Some(ip) if trusted(ip, proxies) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_trusted_proxies;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let proxies = parse_trusted_proxies("10.0.0.0/8, 192.0.2.10").unwrap();
        let xff = ForwardedHeader::XForwardedFor;
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_addr(ip("198.51.100.4"), &spoofed, &proxies, xff), ip("198.51.100.4"), "untrusted peer");
        assert_eq!(client_addr(ip("10.1.2.3"), &spoofed, &proxies, xff), ip("203.0.113.9"));
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client_addr(ip("192.0.2.10"), &chain, &proxies, xff), ip("203.0.113.9"), "rightmost untrusted hop");
        assert_eq!(client_addr(ip("10.1.2.3"), &HeaderMap::new(), &proxies, xff), ip("10.1.2.3"), "no header");
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]);
        assert_eq!(client_addr(ip("10.1.2.3"), &all_trusted, &proxies, xff), ip("10.0.0.7"));
        assert_eq!(client_addr(ip("10.1.2.3"), &spoofed, &[], xff), ip("10.1.2.3"), "no trusted proxies at all");
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let proxies = parse_trusted_proxies("10.0.0.0/8").unwrap();
        let both = headers(&[
            ("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        let forwarded = ForwardedHeader::Forwarded;
        assert_eq!(client_addr(ip("10.0.0.1"), &both, &proxies, forwarded), ip("2001:db8:cafe::17"));
        assert_eq!(
            client_addr(ip("10.0.0.1"), &both, &proxies, ForwardedHeader::XForwardedFor),
            ip("198.51.100.1"),
            "a client's own Forwarded header, passed through by an X-Forwarded-For proxy, is ignored"
        );
        let obfuscated = headers(&[("forwarded", "for=_hidden, for=10.0.0.9")]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &obfuscated, &proxies, forwarded),
            ip("10.0.0.9"),
            "stop at a non-address"
        );
        assert_eq!("Forwarded".parse::<ForwardedHeader>(), Ok(forwarded));
        assert!("via".parse::<ForwardedHeader>().is_err());
        assert_eq!(forwarded_for("\"192.0.2.1:80\""), Some(ip("192.0.2.1")));
    }

    #[test]
    fn bad_proxy_lists_are_refused_clearly() {
        assert!(parse_trusted_proxies("10.0.0.0/33").unwrap_err().contains("10.0.0.0/33"));
        assert_eq!(parse_trusted_proxies("").unwrap(), Vec::<IpNet>::new());
        assert!(parse_trusted_proxies("::1, fd00::/8").is_ok());
    }
}
