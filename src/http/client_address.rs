//! The address a request comes from, as throttling, the refusal counts and
//! the audit trail see it: the TCP peer, unless the peer is one of the
//! `trusted_proxies`, in which case the address that proxy says it served.
//!
//! Only a trusted proxy's word is taken: a header from anyone else would let
//! a client choose its own address, and so its own throttling budget. Of the
//! addresses a proxy chain lists, the rightmost that is not itself a trusted
//! proxy is the client: everything left of it was written by the client or
//! by proxies nobody vouches for.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderName};

/// RFC 7239 §4.
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// The older, unstandardised form of the same list.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address: `ip:port` of the TCP peer, or the forwarded IP
/// address when the peer is a trusted proxy; `None` where the server did
/// not record the peer (the router called directly).
pub(super) fn of<B>(request: &axum::http::Request<B>, trusted_proxies: &[IpAddr]) -> Option<String> {
    of_parts(request.headers(), request.extensions(), trusted_proxies)
}

/// [`of`], from a request's headers and extensions.
pub(super) fn of_parts(headers: &HeaderMap, extensions: &Extensions, trusted_proxies: &[IpAddr]) -> Option<String> {
    let ConnectInfo(peer) = extensions.get::<ConnectInfo<SocketAddr>>()?;
    let forwarded =
        if is_trusted(peer.ip(), trusted_proxies) { forwarded_client(headers, trusted_proxies) } else { None };
    Some(forwarded.map_or_else(|| peer.to_string(), |ip| ip.to_string()))
}

fn is_trusted(ip: IpAddr, trusted_proxies: &[IpAddr]) -> bool {
    let ip = canonical(ip);
    trusted_proxies.iter().any(|proxy| canonical(*proxy) == ip)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The client a trusted proxy names: from `Forwarded` when it lists any
/// `for=`, else from `X-Forwarded-For`. `None` when neither names one, or
/// when the node that would be the client is not an IP address (`unknown`,
/// an obfuscated identifier): the peer is then all that is known.
fn forwarded_client(headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let mut nodes = for_nodes(headers);
    if nodes.is_empty() {
        nodes = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|node| node.trim().to_owned())
            .filter(|node| !node.is_empty())
            .collect();
    }
    let mut client = None;
    for node in nodes.iter().rev() {
        let ip = parse_node(node)?;
        client = Some(ip);
        if !is_trusted(ip, trusted_proxies) {
            break;
        }
    }
    // A chain of trusted proxies only: the leftmost is the client.
    client.map(canonical)
}

/// The `for=` values of every `Forwarded` header, in order (RFC 7239 §4:
/// elements separated by commas, pairs by semicolons, a value a token or
/// a quoted string).
fn for_nodes(headers: &HeaderMap) -> Vec<String> {
    let mut nodes = Vec::new();
    for value in headers.get_all(FORWARDED).iter().filter_map(|value| value.to_str().ok()) {
        for element in split_outside_quotes(value, ',') {
            for pair in split_outside_quotes(element, ';') {
                let Some((name, node)) = pair.split_once('=') else { continue };
                if name.trim().eq_ignore_ascii_case("for") {
                    let node = node.trim();
                    let node = node.strip_prefix('"').and_then(|node| node.strip_suffix('"')).unwrap_or(node);
                    nodes.push(node.replace('\\', ""));
                }
            }
        }
    }
    nodes
}

/// `text` split at `separator` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, character) in text.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if character == separator && !quoted => {
                parts.push(text.get(start..index).unwrap_or_default());
                start = index + character.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    parts
}

/// A node's IP address: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`, or a bare IPv6 address (as `X-Forwarded-For` has it).
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    // RFC 7239 §6: a bracketed IPv6 address, with or without a port
    // (which may be obfuscated, so it is not parsed).
    let inside = node.strip_prefix('[')?.split(']').next()?;
    inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = axum::http::Request::post("/token");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let peer: SocketAddr = peer.parse().unwrap();
        builder.extension(ConnectInfo(peer)).body(Body::empty()).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let proxies = ips(&["10.0.0.1"]);
        let header = [("x-forwarded-for", "198.51.100.7")];
        assert_eq!(of(&request("10.0.0.1:5000", &header), &proxies).as_deref(), Some("198.51.100.7"));
        assert_eq!(of(&request("10.0.0.2:5000", &header), &proxies).as_deref(), Some("10.0.0.2:5000"));
        assert_eq!(of(&request("10.0.0.1:5000", &header), &[]).as_deref(), Some("10.0.0.1:5000"));
        assert_eq!(of(&request("10.0.0.1:5000", &[]), &proxies).as_deref(), Some("10.0.0.1:5000"));
        let unrecorded = axum::http::Request::post("/").header("x-forwarded-for", "1.2.3.4").body(Body::empty());
        assert_eq!(of(&unrecorded.unwrap(), &proxies), None);
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let proxies = ips(&["10.0.0.1", "10.0.0.9"]);
        // The client wrote 6.6.6.6 itself; the proxies appended the rest.
        let chain = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.9")];
        assert_eq!(of(&request("10.0.0.1:1", &chain), &proxies).as_deref(), Some("198.51.100.7"));
        let split = [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.7")];
        assert_eq!(of(&request("10.0.0.1:1", &split), &proxies).as_deref(), Some("198.51.100.7"));
        let all_proxies = [("x-forwarded-for", "10.0.0.9")];
        assert_eq!(of(&request("10.0.0.1:1", &all_proxies), &proxies).as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn forwarded_comes_before_x_forwarded_for() {
        let proxies = ips(&["10.0.0.1", "::1"]);
        let both = [
            ("forwarded", r#"for=6.6.6.6;proto=https, for="[2001:db8:cafe::17]:4711";by=10.0.0.1"#),
            ("x-forwarded-for", "203.0.113.5"),
        ];
        assert_eq!(of(&request("10.0.0.1:1", &both), &proxies).as_deref(), Some("2001:db8:cafe::17"));
        let upper = [("forwarded", "For=192.0.2.60:8080;Proto=http")];
        assert_eq!(of(&request("[::1]:1", &upper), &proxies).as_deref(), Some("192.0.2.60"));
        // No `for=` at all: the older header.
        let by_only = [("forwarded", "proto=https"), ("x-forwarded-for", "203.0.113.5")];
        assert_eq!(of(&request("10.0.0.1:1", &by_only), &proxies).as_deref(), Some("203.0.113.5"));
        // The client's node unknown: only the peer is known.
        let unknown = [("forwarded", "for=unknown")];
        assert_eq!(of(&request("10.0.0.1:1", &unknown), &proxies).as_deref(), Some("10.0.0.1:1"));
        let garbage = [("forwarded", r#"for="\"[;,"#)];
        assert_eq!(of(&request("10.0.0.1:1", &garbage), &proxies).as_deref(), Some("10.0.0.1:1"));
    }
}
