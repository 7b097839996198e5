//! Forwarding to the homeserver (DESIGN §6): the header rules (hop-by-hop,
//! `X-Forwarded-*`, `Host`) as small pure functions, the forwarding itself, and the mapping
//! of upstream trouble to Matrix bodies; the pooled client is in `upstream.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use ipnet::IpNet;

use crate::matrix::{Body, MatrixError};
use crate::metrics::Metrics;

mod upstream;

use upstream::error_chain;
pub use upstream::{MAX_READ_BUF, Upstream, UpstreamError};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client connection is TLS (sets `X-Forwarded-Proto: https`).
    pub tls: bool,
}

/// Turns a client request into the request the homeserver gets: upstream URI, HTTP/1.1,
/// hop-by-hop headers gone, `Host` kept, `X-Forwarded-*` set.
pub fn prepare_request(
    request: Request<Body>,
    upstream: &Upstream,
    conn: &ConnInfo,
    trusted_proxies: &[IpNet],
) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    // HTTP/2 carries the host in :authority; the upstream speaks HTTP/1.1 and needs Host.
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    // Our own server already answered any `Expect: 100-continue`.
    parts.headers.remove(header::EXPECT);
    // Kept even when a `Connection` header named it (or absent: from :authority).
    if let Some(host) = &original_host
        && !parts.headers.contains_key(header::HOST)
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    let trusted = is_trusted(conn.peer.ip(), trusted_proxies);
    let client = if trusted {
        client_ip(&parts.headers, conn.peer.ip(), trusted_proxies)
    } else {
        conn.peer.ip()
    };
    set_forwarded_headers(
        &mut parts.headers,
        client,
        trusted,
        conn.tls,
        original_host.as_ref(),
    );
    parts.uri = upstream.uri_for(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Cleans the homeserver's response for the client.
pub fn prepare_response(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}

const HOPS: usize = 8;

/// Headers that concern one connection only (RFC 9110 §7.6.1), never forwarded.
/// `Connection` first (see [`strip_hop_by_hop`]).
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where a (lower-case) header name is in [`HOP_BY_HOP`]: a string match, which the compiler
/// turns into a length and byte comparison (cheaper than comparing `HeaderName`s).
fn hop_index(name: &str) -> Option<usize> {
    let i = match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "te" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        _ => return None,
    };
    debug_assert_eq!(HOP_BY_HOP[i].as_str(), name);
    Some(i)
}

/// Removes the hop-by-hop headers, every header named in `Connection`, and any other
/// `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name says which are there: nearly every message has none of them, or
    // only `Connection: keep-alive`, and then nothing is allocated.
    let mut found = [false; HOPS];
    let mut proxy_other = false;
    for name in headers.keys() {
        match hop_index(name.as_str()) {
            Some(i) => found[i] = true,
            None => proxy_other |= name.as_str().starts_with("proxy-"),
        }
    }
    if found[0] {
        // `Connection`'s tokens that name a header present (`keep-alive`, `close`: usually none).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty() && headers.contains_key(*name))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, there)| *there) {
        headers.remove(name);
    }
    if proxy_other {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

pub fn is_trusted(peer: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    let peer = canonical_ip(peer);
    trusted_proxies.iter().any(|net| net.contains(&peer))
}

/// `::ffff:10.0.0.1` is 10.0.0.1.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `X-Forwarded-For` is one hop: the client's address as [`client_ip`] worked it out (the
/// peer, or behind a trusted proxy the rightmost hop it did not write itself). Legacy
/// homeservers (Synapse ≤ 1.3 with `x_forwarded`) take the leftmost hop, so a hop a client
/// wrote must never reach them. `X-Forwarded-Proto` and `-Host` are ours unless a trusted
/// proxy set them.
pub fn set_forwarded_headers(
    headers: &mut HeaderMap,
    client: IpAddr,
    trusted: bool,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    headers.insert(X_FORWARDED_FOR, address_value(canonical_ip(client)));
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// An address as header text, written without `fmt` (this is done for every forwarded
/// request): IPv4 by hand, IPv6 through `Display` (rarer, and its compression rules are
/// worth not repeating).
fn address_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an address is valid header text");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&text[..len]).expect("digits and dots are valid header text")
}

/// One `X-Forwarded-For` hop as an address: `203.0.113.9`, `2001:db8::1`, and with a port
/// as some proxies write them, `203.0.113.9:443` and `[2001:db8::1]:443`.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    // `[v6]` without a port.
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The client's address as the rate limits see it, and as the homeserver is told. Behind
/// trusted proxies it is the rightmost `X-Forwarded-For` hop that is not itself a trusted
/// proxy: each trusted proxy appends the address it saw, so hops further left were written by
/// the client and can be anything (taking the first hop would let a client pick its own
/// rate-limit bucket). A hop that does not parse where the client's should be stops the walk:
/// the peer (the proxy) stands in, never a hop to its left.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = canonical_ip(peer);
    if !is_trusted(peer, trusted_proxies) {
        return peer;
    }
    let mut leftmost = None;
    let Ok(lines) = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::to_str)
        .collect::<Result<Vec<&str>, _>>()
    else {
        return peer; // not text: nothing in it can be believed
    };
    for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        if hop.trim().is_empty() {
            continue;
        }
        let Some(ip) = parse_hop(hop).map(canonical_ip) else {
            return peer;
        };
        if !is_trusted(ip, trusted_proxies) {
            return ip;
        }
        leftmost = Some(ip);
    }
    // Every hop is a trusted proxy: the first one is as close to the client as we know.
    leftmost.unwrap_or(peer)
}

/// Long-poll endpoints hold the response for the client's `timeout` (ms): that much is
/// added to the response timeout so `/sync` is never cut short.
pub fn long_poll_allowance(path: &str, query: Option<&str>) -> Duration {
    const MAX: Duration = Duration::from_secs(600);
    let long_poll = path.ends_with("/sync") || path.ends_with("/events");
    if !long_poll {
        return Duration::ZERO;
    }
    query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "timeout")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .map_or(Duration::ZERO, |ms| Duration::from_millis(ms).min(MAX))
}

/// Forwards a request unchanged (but for the header rules) and streams the answer back.
pub async fn forward(
    upstream: &Upstream,
    metrics: &Metrics,
    trusted_proxies: &[IpNet],
    conn: &ConnInfo,
    request: Request<Body>,
) -> Response<Body> {
    let extra = long_poll_allowance(request.uri().path(), request.uri().query());
    let matrix_path = request.uri().path().starts_with("/_matrix/");
    let request = prepare_request(request, upstream, conn, trusted_proxies);
    match upstream.send(request, extra, metrics).await {
        Ok(response) if matrix_path && upstream.compat.is_active() => {
            unrecognized_as_404(prepare_response(response)).await
        }
        Ok(response) => prepare_response(response),
        Err(e @ (UpstreamError::BodyStalled(_) | UpstreamError::Busy)) => {
            tracing::debug!(error = %e, "not forwarded");
            e.into_matrix().into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            e.into_matrix().into_response()
        }
    }
}

/// The most of a `400` answer read to see whether it is `M_UNRECOGNIZED`.
const MAX_UNRECOGNIZED_BYTES: usize = 16 * 1024;

/// What a legacy homeserver answers for an endpoint it does not have, as today's clients
/// expect it (DESIGN §6): its `400 M_UNRECOGNIZED` (Synapse ≤ 1.3 for an unknown path under
/// a prefix it serves) or a page that is not JSON with 404/405 (Twisted's "No Such
/// Resource" for a prefix it does not serve) becomes `404 M_UNRECOGNIZED`, with the CORS
/// headers a web client needs to read it. Every other answer passes unchanged.
pub async fn unrecognized_as_404(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let json = is_json(response.headers());
    if matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) && !json
    {
        drain(response.into_body(), MAX_UNRECOGNIZED_BYTES).await;
        return MatrixError::unrecognized().into_response();
    }
    if status != StatusCode::BAD_REQUEST || !json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match crate::matrix::read_up_to(body, MAX_UNRECOGNIZED_BYTES).await {
        Ok(crate::matrix::Read::Whole(bytes)) => bytes,
        Ok(crate::matrix::Read::Partial(body)) => return Response::from_parts(parts, body),
        Err(e) => {
            return UpstreamError::Protocol(error_chain(&e))
                .into_matrix()
                .into_response();
        }
    };
    let errcode = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("errcode")?.as_str().map(str::to_owned));
    if errcode.as_deref() == Some("M_UNRECOGNIZED") {
        return MatrixError::unrecognized().into_response();
    }
    Response::from_parts(parts, crate::matrix::full(bytes))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// Reads and drops a small body, so that its upstream connection goes back to the pool.
async fn drain(mut body: Body, limit: usize) {
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, bytes::Bytes::len);
        if read > limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer keep-me"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.0.2.7",
            "100.9.10.99",
            "::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_value(ip), ip.to_string().as_str());
        }
    }

    #[test]
    fn every_hop_by_hop_name_is_found_where_it_is_listed() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name.as_str()), Some(i));
        }
        assert_eq!(hop_index("proxy-connection"), None);
        assert_eq!(hop_index("content-type"), None);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut h = headers(&[
            ("host", "example.org"),
            ("x-repeat", "1"),
            ("x-repeat", "2"),
            ("content-length", "3"),
        ]);
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn connection_tokens_that_name_no_header_remove_only_the_hop_by_hop_ones() {
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("connection", "close"),
            ("content-type", "application/json"),
            ("close", "a header named like the token"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn connection_header_names_are_removed_case_insensitively() {
        let mut h = headers(&[
            ("connection", "X-Secret-Hop, close"),
            ("connection", " x-other "),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("x-end-to-end", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("x-other").is_none());
        assert_eq!(h["x-end-to-end"], "3");
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_x_forwarded_headers() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let host = HeaderValue::from_static("matrix.example.org");
        set_forwarded_headers(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            false,
            false,
            Some(&host),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "matrix.example.org");
    }

    #[test]
    fn a_trusted_proxy_keeps_its_proto_and_host_and_the_homeserver_gets_one_hop() {
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "matrix.example.org"),
        ]);
        let host = HeaderValue::from_static("internal:8080");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted);
        set_forwarded_headers(&mut h, client, true, false, Some(&host));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "matrix.example.org");
    }

    #[test]
    fn hops_with_ports_are_read_and_an_unreadable_one_is_never_skipped() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let ip = |xff: &str| client_ip(&headers(&[("x-forwarded-for", xff)]), peer, &trusted);
        assert_eq!(
            ip("1.2.3.4, 198.51.100.7:443"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("1.2.3.4, [2001:db8::1]:443"),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("1.2.3.4, [2001:db8::1]"),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("1.2.3.4,198.51.100.7, 10.9.9.9:80"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // The client's hop is garbage: the proxy stands in, never 1.2.3.4 to its left.
        assert_eq!(ip("1.2.3.4, unknown"), peer);
        assert_eq!(ip("1.2.3.4, 198.51.100.7:x"), peer);
        // Every hop a trusted proxy, or none at all.
        assert_eq!(
            ip("10.1.1.1, 10.2.2.2"),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ip(""), peer);
    }

    #[test]
    fn tls_connections_are_forwarded_as_https() {
        let mut h = HeaderMap::new();
        set_forwarded_headers(&mut h, "::1".parse().unwrap(), false, true, None);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn a_client_cannot_choose_its_address_by_prepending_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client wrote 1.1.1.1 itself; the ingress (10.1.1.1) saw 203.0.113.9.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_client_ip_is_the_first_hop_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&h, "192.0.2.1".parse().unwrap(), &trusted),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // An IPv4 peer seen through an IPv6 socket is still trusted.
        assert!(is_trusted("::ffff:10.0.0.2".parse().unwrap(), &trusted));
    }

    #[test]
    fn long_polls_get_their_timeout_added() {
        let sync = long_poll_allowance("/_matrix/client/r0/sync", Some("since=s1&timeout=30000"));
        assert_eq!(sync, Duration::from_secs(30));
        assert_eq!(
            long_poll_allowance("/_matrix/client/r0/rooms/x/messages", Some("timeout=30000")),
            Duration::ZERO
        );
        assert_eq!(
            long_poll_allowance("/_matrix/client/v3/sync", None),
            Duration::ZERO
        );
        assert_eq!(
            long_poll_allowance("/_matrix/client/v3/sync", Some("timeout=99999999")),
            Duration::from_secs(600)
        );
    }
}
