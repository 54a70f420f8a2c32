//! Checks on who is calling: the client address and a shared secret token.

use std::net::IpAddr;

use ipnet::IpNet;
use subtle::ConstantTimeEq;

use super::{AuthFailure, IpAllowlist, Result, Secret};

/// Passes when the client address is in the allowlist.
///
/// The client is the TCP peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is
/// walked from the right, skipping trusted proxies, and the first other address is the
/// client (the entries to its left were written by the client itself and prove nothing).
pub(crate) fn check_ip(allowlist: &IpAllowlist, peer: IpAddr, forwarded_for: &str) -> Result<()> {
    let client = client_ip(peer, forwarded_for, &allowlist.trusted_proxies);
    if contains(&allowlist.allowed, client) {
        Ok(())
    } else {
        Err(AuthFailure::IpNotAllowed)
    }
}

/// Returns the client address as seen through trusted proxies.
pub(crate) fn client_ip(peer: IpAddr, forwarded_for: &str, trusted_proxies: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !contains(trusted_proxies, client) {
        return client;
    }
    for entry in forwarded_for.rsplit(',') {
        let Ok(hop) = entry.trim().parse::<IpAddr>() else {
            // A garbled entry ends the trusted chain; the last trusted hop stays the client,
            // which the allowlist normally does not contain.
            break;
        };
        client = hop.to_canonical();
        if !contains(trusted_proxies, client) {
            break;
        }
    }
    client
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(&ip))
}

/// Passes when `presented` equals the token, compared in constant time (only the length can
/// leak, and the configured length is not a secret worth protecting).
pub(crate) fn check_token(expected: &Secret, presented: Option<&str>) -> Result<()> {
    let presented = presented
        .filter(|token| !token.is_empty())
        .ok_or(AuthFailure::MissingToken)?;
    if bool::from(presented.as_bytes().ct_eq(expected.expose())) {
        Ok(())
    } else {
        Err(AuthFailure::BadToken)
    }
}

/// Returns the raw (not percent-decoded) value of the first query parameter named `name`.
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(entries: &[&str]) -> Vec<IpNet> {
        entries.iter().map(|entry| entry.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn test_ip_allowlist_on_peer() {
        let allowlist = IpAllowlist {
            allowed: nets(&["10.0.0.0/8", "2001:db8::/32"]),
            trusted_proxies: vec![],
        };
        assert_eq!(check_ip(&allowlist, ip("10.1.2.3"), ""), Ok(()));
        assert_eq!(check_ip(&allowlist, ip("2001:db8::1"), ""), Ok(()));
        assert_eq!(check_ip(&allowlist, ip("::ffff:10.9.9.9"), ""), Ok(()));
        assert_eq!(
            check_ip(&allowlist, ip("11.0.0.1"), "10.0.0.1"),
            Err(AuthFailure::IpNotAllowed),
            "forwarded-for from an untrusted peer is ignored"
        );
    }

    #[test]
    fn test_forwarded_for_only_through_trusted_proxies() {
        let trusted = nets(&["127.0.0.1/32", "172.16.0.0/12"]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), "10.0.0.5, 172.16.0.2", &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), "10.0.0.5, 8.8.8.8, 172.16.0.2", &trusted),
            ip("8.8.8.8"),
            "a client-written entry left of an untrusted hop is not believed"
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), "garbage", &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), "", &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn test_token_compare() {
        let secret = Secret::from("abcdefghijklmnop");
        assert_eq!(check_token(&secret, Some("abcdefghijklmnop")), Ok(()));
        assert_eq!(
            check_token(&secret, Some("abcdefghijklmnoq")),
            Err(AuthFailure::BadToken)
        );
        assert_eq!(
            check_token(&secret, Some("abc")),
            Err(AuthFailure::BadToken)
        );
        assert_eq!(
            check_token(&secret, Some("")),
            Err(AuthFailure::MissingToken)
        );
        assert_eq!(check_token(&secret, None), Err(AuthFailure::MissingToken));
    }

    #[test]
    fn test_query_param() {
        assert_eq!(query_param("a=1&token=xyz&b", "token"), Some("xyz"));
        assert_eq!(query_param("b&token", "token"), Some(""));
        assert_eq!(query_param("tokens=1", "token"), None);
        assert_eq!(query_param("", "token"), None);
    }
}
