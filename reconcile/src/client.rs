//! The client of `POST /openapi/v1/call/cdr/list` (seed 001, §2.13).
//!
//! hyper's own HTTP/1.1 client connection ([`crate::transport`]) rather than a new HTTP client
//! crate: callhook already builds hyper for its server, the API is one JSON POST, and the whole
//! exchange (signing headers, one body, a size-capped read) is a few lines on top of it. TLS
//! (`https://`) is rustls, as in the PostgreSQL sink.
//!
//! Request body: `startTime`, `endTime` (`yyyy-MM-dd HH:mm:ss` in the account's zone, the
//! call's start time, at most 7 days apart), `page` (from 1), `pageSize`. Response:
//! `{"success": true, "code": "200", "message": ..., "data": {"list": [...], "count": N}}`; any
//! other `code` is an error of §4 (50010/50020: over the rate limit; 50002, 50012–50019: the
//! signature or its headers were refused).

use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDateTime;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use crate::config::ReconcileSettings;
use crate::sign::signed_headers;
use crate::transport::Transport;

/// The API path, appended to `base_url`.
pub const CDR_LIST_PATH: &str = "/openapi/v1/call/cdr/list";
/// The time format of the query's bounds.
pub const QUERY_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No HTTP answer: connection refused or reset, DNS, timeout.
    #[error("7moor API unreachable: {0}")]
    Unreachable(String),
    /// Over the account's request limit (HTTP 429 or code 50010/50020).
    #[error("7moor API rate limit reached (code {0})")]
    RateLimited(String),
    /// The signature or its headers were refused: a configuration problem.
    #[error("7moor API refused the request signature (code {code}: {message}); check `appkey`, `secret` and the clock")]
    Auth {
        /// The API's code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// An HTTP status other than 200, without an API code.
    #[error("7moor API answered HTTP {0}")]
    Status(u16),
    /// A body that is not the documented envelope.
    #[error("7moor API answered an unexpected body: {0}")]
    BadResponse(String),
    /// Another API error code (§4).
    #[error("7moor API error code {code}: {message}")]
    Api {
        /// The API's code.
        code: String,
        /// The API's message.
        message: String,
    },
}

impl ApiError {
    /// Every [`ApiError::reason`] label.
    pub const REASONS: [&'static str; 6] = [
        "unreachable",
        "rate_limited",
        "auth",
        "http_status",
        "bad_response",
        "api_code",
    ];

    /// Returns the bounded label of the `callhook_reconcile_api_errors_total` counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Unreachable(_) => "unreachable",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Auth { .. } => "auth",
            ApiError::Status(_) => "http_status",
            ApiError::BadResponse(_) => "bad_response",
            ApiError::Api { .. } => "api_code",
        }
    }

    /// Returns true when retrying later may succeed (not a configuration problem).
    pub fn is_transient(&self) -> bool {
        !matches!(self, ApiError::Auth { .. })
    }
}

/// One page of records.
#[derive(Debug, Clone)]
pub struct CdrPage {
    /// The records, as the API sent them.
    pub records: Vec<Map<String, Value>>,
    /// The total number of records the query matches (`data.count`).
    pub count: u64,
}

/// A signing client of one account.
pub struct CdrClient {
    transport: Transport,
    appkey: String,
    secret: crate::config::Secret,
    timeout: Duration,
}

impl CdrClient {
    /// Builds the client of a reconcile section; fails only on a TLS set-up error.
    pub fn new(settings: &ReconcileSettings) -> Result<CdrClient, String> {
        Ok(CdrClient {
            transport: Transport::new(&settings.base_url)?,
            appkey: settings.appkey.clone(),
            secret: settings.secret.clone(),
            timeout: settings.request_timeout,
        })
    }

    /// Fetches one page of the calls started in `[start, end]` (local times of the account).
    pub async fn page(
        &self,
        start: NaiveDateTime,
        end: NaiveDateTime,
        page: u32,
        page_size: u32,
    ) -> Result<CdrPage, ApiError> {
        let body = json!({
            "startTime": start.format(QUERY_TIME_FORMAT).to_string(),
            "endTime": end.format(QUERY_TIME_FORMAT).to_string(),
            "page": page,
            "pageSize": page_size,
        });
        let headers = signed_headers(
            self.secret.expose(),
            &self.appkey,
            chrono::Utc::now().timestamp(),
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri(CDR_LIST_PATH)
            .header("host", self.transport.host_header())
            .header("content-type", "application/json")
            .header("m7-appkey", &headers.appkey)
            .header("m7-timestamp", &headers.timestamp)
            .header("m7-nonce", &headers.nonce)
            .header("m7-sign", &headers.sign)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| ApiError::BadResponse(format!("cannot build the request: {error}")))?;
        let exchange = self.transport.exchange(request);
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ApiError::Unreachable(format!("no answer within {:?}", self.timeout)))??;
        parse_response(status, &body)
    }
}

/// Returns the page of a response, or the error it says.
pub fn parse_response(status: StatusCode, body: &[u8]) -> Result<CdrPage, ApiError> {
    let envelope: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let Some(mut envelope) = envelope else {
        return Err(match status {
            StatusCode::TOO_MANY_REQUESTS => ApiError::RateLimited("429".to_owned()),
            StatusCode::OK => ApiError::BadResponse("not a JSON object".to_owned()),
            other => ApiError::Status(other.as_u16()),
        });
    };
    let code = envelope.get("code").map(scalar_text).unwrap_or_default();
    let message = envelope.get("message").map(scalar_text).unwrap_or_default();
    match code.as_str() {
        "200" if status == StatusCode::OK => {}
        "50010" | "50020" => return Err(ApiError::RateLimited(code)),
        "50002" | "50012" | "50013" | "50014" | "50015" | "50016" | "50018" | "50019" | "6706"
        | "6717" | "6718" => return Err(ApiError::Auth { code, message }),
        _ if status == StatusCode::TOO_MANY_REQUESTS => {
            return Err(ApiError::RateLimited("429".to_owned()))
        }
        "" | "200" if status != StatusCode::OK => return Err(ApiError::Status(status.as_u16())),
        "" => return Err(ApiError::BadResponse("no `code`".to_owned())),
        _ => return Err(ApiError::Api { code, message }),
    }
    let Some(Value::Object(mut data)) = envelope.remove("data") else {
        return Err(ApiError::BadResponse("no `data` object".to_owned()));
    };
    let Some(Value::Array(list)) = data.remove("list") else {
        return Err(ApiError::BadResponse("no `data.list` array".to_owned()));
    };
    let records = list
        .into_iter()
        .map(|record| match record {
            Value::Object(record) => Ok(record),
            _ => Err(ApiError::BadResponse(
                "a `data.list` item is not an object".to_owned(),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = match data.get("count") {
        Some(value) => scalar_text(value)
            .parse()
            .map_err(|_| ApiError::BadResponse("`data.count` is not a number".to_owned()))?,
        None => records.len() as u64,
    };
    Ok(CdrPage { records, count })
}

/// A string as is, a number or boolean as written; anything else empty.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_the_documented_envelope() {
        let body = br#"{"success": true, "code": "200", "message": "requestSuccess",
            "data": {"list": [{"_id": "1"}, {"_id": "2"}], "count": 7}}"#;
        let page = parse_response(StatusCode::OK, body).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.count, 7);
        let numeric = br#"{"code": 200, "data": {"list": [], "count": "0"}}"#;
        assert_eq!(parse_response(StatusCode::OK, numeric).unwrap().count, 0);
    }

    #[test]
    fn test_errors_are_classified() {
        let reason = |status: u16, body: &[u8]| {
            parse_response(StatusCode::from_u16(status).unwrap(), body)
                .unwrap_err()
                .reason()
        };
        assert_eq!(
            reason(
                200,
                br#"{"code": "50015", "message": "headers sign error"}"#
            ),
            "auth"
        );
        assert_eq!(
            reason(401, br#"{"code": "50002", "message": "auth failed"}"#),
            "auth"
        );
        assert_eq!(
            reason(200, br#"{"code": "50010", "message": "limit error"}"#),
            "rate_limited"
        );
        assert_eq!(reason(429, b"slow down"), "rate_limited");
        assert_eq!(reason(502, b"<html>bad gateway</html>"), "http_status");
        assert_eq!(reason(200, b"<html>"), "bad_response");
        assert_eq!(
            reason(200, br#"{"code": "200", "data": {}}"#),
            "bad_response"
        );
        assert_eq!(
            reason(200, br#"{"code": "40000", "message": "param error"}"#),
            "api_code"
        );
        let auth = parse_response(
            StatusCode::OK,
            br#"{"code": "50015", "message": "headers sign error"}"#,
        )
        .unwrap_err();
        assert!(!auth.is_transient());
        assert!(auth.to_string().contains("50015"), "{auth}");
        assert!(auth.to_string().contains("`secret`"), "{auth}");
    }
}
