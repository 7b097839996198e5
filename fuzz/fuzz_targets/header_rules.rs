//! The proxy's header rules on any header block: `strip_hop_by_hop`,
//! `set_forwarded_headers` and `client_ip` never panic, and:
//! - no hop-by-hop header, no `Proxy-*` header and no header named in `Connection` is
//!   left, and every other header keeps all its values in order;
//! - `X-Forwarded-For` is one value, one hop: the client address (the peer, from an
//!   untrusted peer); `-Proto` and `-Host` are ours unless a trusted proxy sent them;
//! - the client address is the peer, or one of the `X-Forwarded-For` hops when the peer is
//!   a trusted proxy: the rightmost one that is not trusted, and the peer when the rightmost
//!   hop cannot be read (never a hop to its left).
//!
//! Input: a first line `PEER [tls]` (an IP address; trusted proxies are 10.0.0.0/8 and
//! ::1), then `Name: value` lines.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use threepid_sidecar::proxy;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let head = lines.next().unwrap_or_default();
    let head = String::from_utf8_lossy(head);
    let mut words = head.split_ascii_whitespace();
    let peer: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let tls = words.any(|w| w == "tls");
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let trusted_proxies: Vec<IpNet> =
        vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let trusted = proxy::is_trusted(peer, &trusted_proxies);
    assert_eq!(
        trusted,
        trusted_proxies.iter().any(|n| n.contains(&canonical(peer)))
    );

    // client_ip reads the headers as they came.
    let client = proxy::client_ip(&headers, peer, &trusted_proxies);
    let all_text = headers
        .get_all("x-forwarded-for")
        .iter()
        .all(|v| v.to_str().is_ok());
    if trusted && !all_text {
        assert_eq!(client, canonical(peer), "an X-Forwarded-For that is not text");
    } else if trusted {
        let texts: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter(|h| !h.trim().is_empty())
            .collect();
        let hops: Vec<Option<IpAddr>> = texts
            .iter()
            .map(|h| proxy::parse_hop(h).map(canonical))
            .collect();
        assert!(
            client == canonical(peer) || hops.contains(&Some(client)),
            "{client}"
        );
        match hops.last() {
            Some(None) => assert_eq!(client, canonical(peer), "an unreadable client hop"),
            Some(Some(last)) if !proxy::is_trusted(*last, &trusted_proxies) => {
                assert_eq!(client, *last, "the rightmost hop, untrusted")
            }
            _ => {}
        }
    } else {
        assert_eq!(client, canonical(peer), "an untrusted peer is the client");
    }

    let original = headers.clone();
    let host = original.get(header::HOST).cloned();
    proxy::strip_hop_by_hop(&mut headers);
    let named: Vec<HeaderName> = original
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let removed = |name: &HeaderName| {
        HOP_BY_HOP.contains(&name.as_str())
            || name.as_str().starts_with("proxy-")
            || named.contains(name)
    };
    for name in original.keys() {
        if removed(name) {
            assert!(!headers.contains_key(name), "{name} was left");
        } else {
            assert!(
                headers
                    .get_all(name)
                    .iter()
                    .eq(original.get_all(name).iter()),
                "{name} changed"
            );
        }
    }
    assert!(headers.keys().all(|name| original.contains_key(name)));

    let stripped = headers.clone();
    proxy::set_forwarded_headers(&mut headers, client, trusted, tls, host.as_ref());
    let forwarded_for: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(forwarded_for.len(), 1, "one X-Forwarded-For");
    let forwarded_for = forwarded_for[0].to_str().expect("text");
    assert_eq!(forwarded_for, canonical(client).to_string(), "one hop, the client");
    let proto = headers
        .get("x-forwarded-proto")
        .expect("X-Forwarded-Proto is set");
    if !(trusted && stripped.contains_key("x-forwarded-proto")) {
        assert_eq!(proto, if tls { "https" } else { "http" });
    }
    if !(trusted && stripped.contains_key("x-forwarded-host")) {
        assert_eq!(headers.get("x-forwarded-host"), host.as_ref());
    }
    for name in stripped.keys() {
        if !name.as_str().starts_with("x-forwarded-") {
            assert!(
                headers
                    .get_all(name)
                    .iter()
                    .eq(stripped.get_all(name).iter())
            );
        }
    }
});
