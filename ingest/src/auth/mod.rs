//! Per-source authentication of pushes: pure functions over the request, no I/O.
//!
//! A source may combine several checks; every configured check must pass, and a source with
//! none configured is open (the default: the vendors in VENDORS.md sign nothing). The checks:
//!
//! - a secret token in the last path segment or a query parameter (`network::check_token`);
//! - an IP/CIDR allowlist on the client address, optionally trusting `X-Forwarded-For` from
//!   configured proxies (`network::check_ip`);
//! - an HMAC-SHA256 body signature in a header (`signature::check_hmac`);
//! - Standard Webhooks signatures with key rotation (`signature::check_standard_webhooks`);
//! - the ZYCOO CooCenter daily `md5(WEBKEY + date)` key (`signature::check_coocenter`).
//!
//! Guarantees: secrets are compared in constant time (`subtle`, `Mac::verify_slice`); a failure
//! is a value ([`AuthFailure`]) with a bounded reason label; secrets never appear in `Debug`.
//! Checks that need only the request head (`check_head`) run before the body is read, so an
//! unauthorised client cannot make us buffer its body; body signatures run in `check_body`.

mod config;
mod network;
mod signature;

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use serde::Deserialize;

pub use config::{CooCenterWebkeyConfig, HmacConfig, SourceAuthConfig, StandardWebhooksConfig};

/// A secret (token, key, webkey): compared in constant time, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Returns the secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How an HMAC signature is written in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Hexadecimal, either case.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Why a push failed authentication. Each maps to `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// A token is configured but the request carries none.
    #[error("no token in the path or query")]
    MissingToken,
    /// The request's token does not match.
    #[error("token does not match")]
    BadToken,
    /// The client address is not in the allowlist.
    #[error("client address is not allowed")]
    IpNotAllowed,
    /// A signature (or the headers it needs) is absent.
    #[error("signature or its headers are missing")]
    MissingSignature,
    /// No presented signature matches.
    #[error("signature does not match")]
    BadSignature,
    /// The signed timestamp is not a number of seconds.
    #[error("signature timestamp is malformed")]
    BadTimestamp,
    /// The signed timestamp is outside the tolerance.
    #[error("signature timestamp is outside the tolerance")]
    StaleTimestamp,
}

impl AuthFailure {
    /// Every reason label [`AuthFailure::reason`] returns.
    pub const REASONS: [&'static str; 7] = [
        "missing_token",
        "bad_token",
        "ip_not_allowed",
        "missing_signature",
        "bad_signature",
        "bad_timestamp",
        "stale_timestamp",
    ];

    /// Returns the bounded reason label used in `callhook_ingest_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::BadToken => "bad_token",
            AuthFailure::IpNotAllowed => "ip_not_allowed",
            AuthFailure::MissingSignature => "missing_signature",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::BadTimestamp => "bad_timestamp",
            AuthFailure::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// Result alias for auth checks.
pub type Result<T> = std::result::Result<T, AuthFailure>;

/// The validated authentication of one source. `Default` is open (no checks).
#[derive(Debug, Clone, Default)]
pub struct SourceAuth {
    pub(crate) token: Option<TokenAuth>,
    pub(crate) ip: Option<IpAllowlist>,
    pub(crate) hmac: Option<HmacAuth>,
    pub(crate) standard_webhooks: Option<StandardWebhooksAuth>,
    pub(crate) coocenter: Option<CooCenterAuth>,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenAuth {
    pub(crate) token: Secret,
    pub(crate) query_param: String,
}

#[derive(Debug, Clone)]
pub(crate) struct IpAllowlist {
    pub(crate) allowed: Vec<IpNet>,
    pub(crate) trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub(crate) struct HmacAuth {
    pub(crate) secret: Secret,
    pub(crate) header: HeaderName,
    pub(crate) encoding: SignatureEncoding,
    pub(crate) prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct StandardWebhooksAuth {
    pub(crate) secrets: Vec<Secret>,
    pub(crate) tolerance: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct CooCenterAuth {
    pub(crate) webkey: Secret,
    pub(crate) utc_offset: FixedOffset,
    pub(crate) grace: Duration,
}

/// What the head checks look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    /// The TCP peer.
    pub(crate) peer: IpAddr,
    /// The request headers.
    pub(crate) headers: &'a HeaderMap,
    /// The raw query string.
    pub(crate) query: Option<&'a str>,
    /// The token path segment (`/hooks/{source}/{token}`), if present.
    pub(crate) path_token: Option<&'a str>,
    /// The receiver's clock.
    pub(crate) now: DateTime<Utc>,
}

impl SourceAuth {
    /// Returns whether no check is configured.
    pub fn is_open(&self) -> bool {
        self.token.is_none()
            && self.ip.is_none()
            && self.hmac.is_none()
            && self.standard_webhooks.is_none()
            && self.coocenter.is_none()
    }

    /// Returns whether the source accepts a token as a path segment.
    pub(crate) fn accepts_path_token(&self) -> bool {
        self.token.is_some()
    }

    /// Returns the query parameter that carries the token, to strip from the stored query.
    pub(crate) fn token_query_param(&self) -> Option<&str> {
        self.token.as_ref().map(|token| token.query_param.as_str())
    }
}

/// Runs the checks that need only the request head: IP, token, CooCenter key, and the
/// presence and freshness of Standard Webhooks headers.
pub(crate) fn check_head(auth: &SourceAuth, head: &RequestHead<'_>) -> Result<()> {
    if let Some(ip) = &auth.ip {
        network::check_ip(ip, head.peer, &forwarded_for(head.headers))?;
    }
    if let Some(token) = &auth.token {
        let presented = head
            .path_token
            .or_else(|| network::query_param(head.query?, &token.query_param));
        network::check_token(&token.token, presented)?;
    }
    if let Some(coocenter) = &auth.coocenter {
        let header = header_str(head.headers, "authorization")
            .or_else(|| header_str(head.headers, "authentication"));
        signature::check_coocenter(coocenter, header, head.now)?;
    }
    if let Some(standard) = &auth.standard_webhooks {
        let timestamp = standard_webhooks_headers(head.headers)?.1;
        signature::check_timestamp(timestamp, standard.tolerance, head.now)?;
    }
    Ok(())
}

/// Runs the checks that sign the body: HMAC and Standard Webhooks signatures.
pub(crate) fn check_body(auth: &SourceAuth, headers: &HeaderMap, body: &[u8]) -> Result<()> {
    if let Some(hmac) = &auth.hmac {
        signature::check_hmac(hmac, header_str(headers, hmac.header.as_str()), body)?;
    }
    if let Some(standard) = &auth.standard_webhooks {
        let (id, timestamp, signatures) = standard_webhooks_headers(headers)?;
        signature::check_standard_webhooks(standard, id, timestamp, signatures, body)?;
    }
    Ok(())
}

fn standard_webhooks_headers(headers: &HeaderMap) -> Result<(&str, &str, &str)> {
    match (
        header_str(headers, "webhook-id"),
        header_str(headers, "webhook-timestamp"),
        header_str(headers, "webhook-signature"),
    ) {
        (Some(id), Some(timestamp), Some(signatures)) => Ok((id, timestamp, signatures)),
        _ => Err(AuthFailure::MissingSignature),
    }
}

/// Returns a header as text; a non-ASCII value counts as absent (no scheme uses one).
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Joins every `X-Forwarded-For` header, in order, into one comma-separated list.
fn forwarded_for(headers: &HeaderMap) -> String {
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    values.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            peer: "192.0.2.1".parse().unwrap(),
            headers,
            query,
            path_token: None,
            now: Utc::now(),
        }
    }

    #[test]
    fn test_open_source_passes_everything() {
        let headers = HeaderMap::new();
        let auth = SourceAuth::default();
        assert!(auth.is_open());
        assert_eq!(check_head(&auth, &head(&headers, None)), Ok(()));
        assert_eq!(check_body(&auth, &headers, b"x"), Ok(()));
    }

    #[test]
    fn test_token_from_query_or_path() {
        let auth = SourceAuthConfig {
            token: Some("abcdefghijklmnop".into()),
            ..SourceAuthConfig::default()
        }
        .validate()
        .unwrap();
        let headers = HeaderMap::new();
        let query_ok = head(&headers, Some("a=1&token=abcdefghijklmnop"));
        assert_eq!(check_head(&auth, &query_ok), Ok(()));
        let missing = head(&headers, Some("a=1"));
        assert_eq!(check_head(&auth, &missing), Err(AuthFailure::MissingToken));
        let path_bad = RequestHead {
            path_token: Some("abcdefghijklmnoX"),
            ..head(&headers, None)
        };
        assert_eq!(check_head(&auth, &path_bad), Err(AuthFailure::BadToken));
    }

    #[test]
    fn test_standard_webhooks_head_needs_all_headers() {
        let auth = SourceAuthConfig {
            standard_webhooks: Some(StandardWebhooksConfig {
                secrets: vec!["whsec_c2VjcmV0".into()],
                tolerance_seconds: 300,
            }),
            ..SourceAuthConfig::default()
        }
        .validate()
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        let now = Utc::now().timestamp().to_string();
        headers.insert("webhook-timestamp", HeaderValue::from_str(&now).unwrap());
        assert_eq!(
            check_head(&auth, &head(&headers, None)),
            Err(AuthFailure::MissingSignature)
        );
        headers.insert("webhook-signature", HeaderValue::from_static("v1,AAAA"));
        assert_eq!(check_head(&auth, &head(&headers, None)), Ok(()));
        assert_eq!(
            check_body(&auth, &headers, b"{}"),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn test_reasons_are_distinct() {
        let all = [
            AuthFailure::MissingToken,
            AuthFailure::BadToken,
            AuthFailure::IpNotAllowed,
            AuthFailure::MissingSignature,
            AuthFailure::BadSignature,
            AuthFailure::BadTimestamp,
            AuthFailure::StaleTimestamp,
        ];
        let reasons: std::collections::BTreeSet<_> = all.iter().map(AuthFailure::reason).collect();
        assert_eq!(reasons.len(), all.len());
        let listed: std::collections::BTreeSet<_> = AuthFailure::REASONS.into_iter().collect();
        assert_eq!(reasons, listed, "REASONS lists every reason");
    }
}
