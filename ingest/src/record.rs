//! Building the [`RawRecord`] of a push: exact bytes plus the request metadata worth keeping.

use std::net::SocketAddr;

use bytes::Bytes;
use callhook_rawlog::{header_value_text, RawRecord};
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::HeaderName;

/// What a record is built from, besides the request head.
pub(crate) struct RecordMeta<'a> {
    pub(crate) source: &'a str,
    pub(crate) peer: SocketAddr,
    pub(crate) request_id: &'a str,
    pub(crate) received_at: DateTime<Utc>,
    /// Headers to copy, in the configured allowlist.
    pub(crate) selected_headers: &'a [HeaderName],
    /// A query parameter holding a secret, removed from the stored query.
    pub(crate) secret_query_param: Option<&'a str>,
}

/// Builds the raw record. The body is stored as received; the query is stored as received
/// except that the secret token parameter, if the source uses one, is cut out (its other bytes
/// are untouched), because the log must not hold credentials.
pub(crate) fn build_record(parts: &Parts, body: Bytes, meta: &RecordMeta<'_>) -> RawRecord {
    let query = parts
        .uri
        .query()
        .map(|query| match meta.secret_query_param {
            Some(param) => strip_query_param(query, param),
            None => query.to_owned(),
        });
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|value| header_value_text(value.as_bytes()));
    RawRecord {
        source: meta.source.to_owned(),
        received_at: meta.received_at,
        method: parts.method.as_str().to_owned(),
        content_type,
        query,
        remote_addr: Some(meta.peer.to_string()),
        request_id: meta.request_id.to_owned(),
        headers: selected_headers(parts, meta.selected_headers),
        body,
    }
}

/// Returns the allowlisted headers in arrival order, each value exact: UTF-8 as is, other
/// bytes (a PBX that sends GBK in a header) base64 with a marker ([`header_value_text`]).
fn selected_headers(parts: &Parts, allowlist: &[HeaderName]) -> Vec<(String, String)> {
    parts
        .headers
        .iter()
        .filter(|(name, _)| allowlist.contains(name))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                header_value_text(value.as_bytes()),
            )
        })
        .collect()
}

/// Returns `query` without any `name=...` (or bare `name`) pair, keeping every other byte.
pub(crate) fn strip_query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != name)
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns the current time truncated to milliseconds, the precision the log keeps.
pub(crate) fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_strip_query_param() {
        assert_eq!(
            strip_query_param("a=%E5%8C%97&token=s3cr3t&b=2", "token"),
            "a=%E5%8C%97&b=2"
        );
        assert_eq!(strip_query_param("token=x", "token"), "");
        assert_eq!(strip_query_param("token&tokens=1", "token"), "tokens=1");
        assert_eq!(strip_query_param("a=1&&b", "token"), "a=1&&b");
    }

    #[test]
    fn test_build_record_keeps_exact_bytes() {
        let request = http::Request::post("/hooks/7moor?CallNo=1&token=t0k")
            .header("Content-Type", "application/json")
            .header("Authorization", "secret")
            .header("User-Agent", "vendor/1")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let body = Bytes::from_static(b"{\"a\": \"\xe5\x8c\x97\"}");
        let selected = [
            HeaderName::from_static("user-agent"),
            HeaderName::from_static("content-type"),
        ];
        let meta = RecordMeta {
            source: "7moor",
            peer: "127.0.0.1:9".parse().unwrap(),
            request_id: "00000000000000ff",
            received_at: now_millis(),
            selected_headers: &selected,
            secret_query_param: Some("token"),
        };
        let record = build_record(&parts, body.clone(), &meta);
        assert_eq!(record.body, body);
        assert_eq!(record.query.as_deref(), Some("CallNo=1"));
        assert_eq!(record.method, "POST");
        assert_eq!(record.content_type.as_deref(), Some("application/json"));
        assert_eq!(record.remote_addr.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(
            record.headers,
            vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("user-agent".to_owned(), "vendor/1".to_owned())
            ]
        );
        assert_eq!(record.received_at.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn test_header_bytes_that_are_not_utf8_are_kept_exactly() {
        let gbk_name = http::HeaderValue::from_bytes(b"\xd5\xc5\xc8\xfd").unwrap();
        let request = http::Request::post("/hooks/coocenter")
            .header("Content-Type", "text/plain; charset=gbk")
            .header("User-Agent", gbk_name)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let selected = [HeaderName::from_static("user-agent")];
        let meta = RecordMeta {
            source: "coocenter",
            peer: "127.0.0.1:9".parse().unwrap(),
            request_id: "00000000000000ff",
            received_at: now_millis(),
            selected_headers: &selected,
            secret_query_param: None,
        };
        let record = build_record(&parts, Bytes::new(), &meta);
        let (name, value) = &record.headers[0];
        assert_eq!(name, "user-agent");
        assert_eq!(
            callhook_rawlog::header_value_bytes(value).as_ref(),
            b"\xd5\xc5\xc8\xfd"
        );
        assert_eq!(
            record.content_type.as_deref(),
            Some("text/plain; charset=gbk")
        );
    }
}
