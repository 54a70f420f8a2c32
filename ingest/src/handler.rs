//! The push handler: route, authenticate, read the body within limits, append, acknowledge.
//!
//! Guarantee: a `200` is written only after [`LogAppender::append`] resolved `Ok`, i.e. after
//! the record is durable. Every other outcome stores nothing and answers a specific status
//! ([`IngestError::status`]); vendor data never causes a `500` or a panic. If the client goes
//! away while the append is pending, the append may still complete: the vendor then retries a
//! push we already hold, which downstream dedupe absorbs (at-least-once).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use callhook_rawlog::{AppendError, LogAppender};
use chrono::Utc;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};

use crate::auth::{self, AuthFailure, RequestHead};
use crate::config::{validate_source_name, ConfigError, IngestSettings, SourceSettings};
use crate::events::{PushAcked, PushRejected};
use crate::metrics::{metrics, SourceMetrics, UNKNOWN_SOURCE};
use crate::partition_key::partition_key;
use crate::rate_limit::{retry_after_seconds, TokenBucket};
use crate::record::{build_record, now_millis, RecordMeta};
use crate::request_id::next_request_id;
use crate::tap::{TapHub, TapItem, TapKind};

/// Why a push was refused. Nothing is stored for any of them.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The path is not `/hooks/{source}[/{token}]`, or has a token segment for a source that
    /// takes no token.
    #[error("no route for this path")]
    NotFound,
    /// The path names a source that is not configured.
    #[error("source is not configured")]
    UnknownSource,
    /// The method is neither `GET` nor `POST`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The source's authentication failed.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthFailure),
    /// The body is larger than the source's limit.
    #[error("request body exceeds {limit_bytes} bytes")]
    BodyTooLarge {
        /// The limit that applied.
        limit_bytes: u64,
    },
    /// The body did not arrive within the body read timeout.
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
    /// The body could not be read (the client closed the connection, bad chunk framing).
    #[error("request body could not be read")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The source is over its rate limit.
    #[error("source is over its rate limit; retry in {retry_after_seconds} s")]
    RateLimited {
        /// Whole seconds until the bucket has a token again (at least 1).
        retry_after_seconds: u64,
    },
    /// The raw log did not make the record durable.
    #[error(transparent)]
    Append(#[from] AppendError),
}

impl IngestError {
    /// Returns the HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::NotFound | IngestError::UnknownSource => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::Auth(_) => StatusCode::UNAUTHORIZED,
            IngestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::BodyRead(_) => StatusCode::BAD_REQUEST,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Append(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason labels of a refusal on a configured source, other than auth failures (as
    /// [`IngestError::reason`] returns them).
    pub const SOURCE_REASONS: [&'static str; 7] = [
        "method_not_allowed",
        "body_too_large",
        "body_timeout",
        "body_incomplete",
        "rate_limited",
        "overloaded",
        "unavailable",
    ];

    /// The reason labels of a refusal before a source is known (`_unknown` source).
    pub const UNKNOWN_SOURCE_REASONS: [&'static str; 3] =
        ["not_found", "unknown_source", "method_not_allowed"];

    /// Returns the bounded reason label used in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::NotFound => "not_found",
            IngestError::UnknownSource => "unknown_source",
            IngestError::MethodNotAllowed => "method_not_allowed",
            IngestError::Auth(failure) => failure.reason(),
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::BodyTimeout(_) => "body_timeout",
            IngestError::BodyRead(_) => "body_incomplete",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::Append(error) => error.reason(),
        }
    }

    /// Returns the response: a short text naming the class, plus `Allow`, `Retry-After` or
    /// `Connection: close` where they apply.
    fn to_response(&self) -> Response<Full<Bytes>> {
        let text = match self {
            IngestError::Auth(_) => "unauthorized",
            IngestError::Append(_) => "raw log unavailable, retry later",
            IngestError::RateLimited { .. } => "rate limited, retry later",
            _ => self.status().canonical_reason().unwrap_or("error"),
        };
        let mut response = text_response(self.status(), Bytes::from_static(text.as_bytes()));
        let headers = response.headers_mut();
        match self {
            IngestError::MethodNotAllowed => {
                headers.insert(ALLOW, HeaderValue::from_static("GET, POST"));
            }
            IngestError::Append(error) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(error.retry_after_seconds()));
            }
            IngestError::RateLimited {
                retry_after_seconds,
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            // The unread rest of the body makes the connection unusable.
            IngestError::BodyTooLarge { .. }
            | IngestError::BodyTimeout(_)
            | IngestError::BodyRead(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

fn text_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// One configured source at runtime.
struct Source {
    name: String,
    settings: SourceSettings,
    metrics: SourceMetrics,
    /// The token bucket of `settings.rate_limit`.
    bucket: Option<TokenBucket>,
}

/// The receiver state shared by every connection: settings, sources, and the raw log.
pub struct Receiver {
    settings: IngestSettings,
    sources: HashMap<String, Source>,
    appender: Arc<dyn LogAppender>,
    tap: Option<Arc<TapHub>>,
}

impl Receiver {
    /// Builds the receiver for the given sources (name -> settings) appending to `appender`.
    /// Fails when a source name is unusable as a path segment or metric label.
    pub fn new(
        settings: IngestSettings,
        sources: BTreeMap<String, SourceSettings>,
        appender: Arc<dyn LogAppender>,
    ) -> Result<Self, ConfigError> {
        let mut by_name = HashMap::with_capacity(sources.len());
        for (name, source_settings) in sources {
            validate_source_name(&name)?;
            let source = Source {
                metrics: metrics().for_source(&name),
                name: name.clone(),
                bucket: source_settings
                    .rate_limit
                    .map(|limit| TokenBucket::new(limit, Instant::now())),
                settings: source_settings,
            };
            by_name.insert(name, source);
        }
        Ok(Receiver {
            settings,
            sources: by_name,
            appender,
            tap: None,
        })
    }

    /// Publishes every acknowledged push on `hub`'s raw stream (while someone listens).
    pub fn with_tap(mut self, hub: Arc<TapHub>) -> Self {
        self.tap = Some(hub);
        self
    }

    /// Returns the receiver's settings.
    pub fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    /// Returns the configured source names, sorted.
    pub fn source_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.sources.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Answers one request. Never fails: every outcome is a response.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let request_id = next_request_id();
        let (source_label, result) = match self.find_source(&request) {
            Ok((source, path_token)) => {
                let result = self
                    .ingest(source, path_token, request, peer, &request_id)
                    .await;
                (source.name.as_str(), result)
            }
            Err(error) => (UNKNOWN_SOURCE, Err(error)),
        };
        let mut response = match result {
            Ok(()) => text_response(StatusCode::OK, Bytes::from_static(b"200")),
            Err(error) => {
                PushRejected {
                    source: source_label,
                    request_id: &request_id,
                    error: &error,
                }
                .emit();
                error.to_response()
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        response
    }

    /// Matches the route and method, and returns the source with the path token, if any.
    fn find_source(
        &self,
        request: &Request<Incoming>,
    ) -> Result<(&Source, Option<String>), IngestError> {
        let (name, path_token) = route(request.uri().path()).ok_or(IngestError::NotFound)?;
        if !matches!(*request.method(), Method::GET | Method::POST) {
            return Err(IngestError::MethodNotAllowed);
        }
        let source = self.sources.get(name).ok_or(IngestError::UnknownSource)?;
        Ok((source, path_token.map(str::to_owned)))
    }

    async fn ingest(
        &self,
        source: &Source,
        path_token: Option<String>,
        request: Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
    ) -> Result<(), IngestError> {
        let auth = &source.settings.auth;
        if path_token.is_some() && !auth.accepts_path_token() {
            return Err(IngestError::NotFound);
        }
        let (parts, body) = request.into_parts();
        let head = RequestHead {
            peer: peer.ip(),
            headers: &parts.headers,
            query: parts.uri.query(),
            path_token: path_token.as_deref(),
            now: Utc::now(),
        };
        auth::check_head(auth, &head)?;
        let limit_bytes = source
            .settings
            .max_body_bytes
            .unwrap_or(self.settings.max_body_bytes);
        let body = read_body(body, limit_bytes, self.settings.body_read_timeout).await?;
        let read_at = Instant::now();
        let meta = RecordMeta {
            source: &source.name,
            peer,
            request_id,
            received_at: now_millis(),
            selected_headers: &self.settings.selected_headers,
            secret_query_param: auth.token_query_param(),
        };
        auth::check_body(auth, &parts.headers, &body)?;
        // After auth (a client without the credentials cannot spend the vendor's budget) and
        // after the body is read (the connection stays usable for the retry).
        if let Some(bucket) = &source.bucket {
            bucket
                .try_take(Instant::now())
                .map_err(|wait| IngestError::RateLimited {
                    retry_after_seconds: retry_after_seconds(wait),
                })?;
        }
        let key = partition_key(&source.name, parts.uri.query(), &body);
        let body_bytes = body.len();
        let record = build_record(&parts, body, &meta);
        let tapped = self
            .tap
            .as_ref()
            .filter(|hub| hub.wants_raw())
            .map(|hub| (hub, record.clone()));
        let position = self.appender.append(key, record).await?;
        if let Some((hub, record)) = tapped {
            hub.publish(raw_tap_item(&record, position));
        }
        PushAcked {
            source: &source.name,
            metrics: &source.metrics,
            request_id,
            body_bytes,
            ack: read_at.elapsed(),
            position,
        }
        .emit();
        Ok(())
    }
}

/// The tap item of an acknowledged push: its metadata and its body as text (bytes that are
/// not UTF-8 replaced).
fn raw_tap_item(
    record: &callhook_rawlog::RawRecord,
    position: callhook_rawlog::Position,
) -> TapItem {
    let json = serde_json::json!({
        "kind": "raw",
        "source": record.source,
        "received_at": record.received_at,
        "position": position.to_string(),
        "request_id": record.request_id,
        "method": record.method,
        "content_type": record.content_type,
        "query": record.query,
        "remote_addr": record.remote_addr,
        "body": String::from_utf8_lossy(&record.body),
    });
    TapItem {
        kind: TapKind::Raw,
        source: record.source.clone(),
        event_type: None,
        call_id: None,
        json: json.to_string(),
    }
}

/// Splits `/hooks/{source}` or `/hooks/{source}/{token}` (one trailing `/` tolerated).
fn route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/hooks/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segments = rest.split('/');
    let source = segments.next().filter(|segment| !segment.is_empty())?;
    let token = segments.next();
    if segments.next().is_some() || token == Some("") {
        return None;
    }
    Some((source, token))
}

/// Reads the whole body, refusing it up front when `Content-Length` is over the limit and
/// while streaming when a chunked body grows past it.
async fn read_body(
    body: Incoming,
    limit_bytes: u64,
    timeout: Duration,
) -> Result<Bytes, IngestError> {
    let too_large = || IngestError::BodyTooLarge { limit_bytes };
    if body.size_hint().lower() > limit_bytes {
        return Err(too_large());
    }
    let limited = Limited::new(body, usize::try_from(limit_bytes).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_elapsed) => Err(IngestError::BodyTimeout(timeout)),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(IngestError::BodyRead(error)),
        Ok(Ok(collected)) => Ok(owned_bytes(collected.aggregate())),
    }
}

/// Copies a body into an allocation of its own size. A body that arrived in one read is a
/// slice of hyper's connection read buffer (8 KiB or more): kept as is, every record waiting
/// in the raw log's queue would pin a whole buffer (up to `max_pending_appends` of them).
fn owned_bytes(mut body: impl Buf) -> Bytes {
    let mut owned = Vec::with_capacity(body.remaining());
    while body.has_remaining() {
        let chunk = body.chunk();
        owned.extend_from_slice(chunk);
        let read = chunk.len();
        body.advance(read);
    }
    Bytes::from(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_route() {
        assert_eq!(route("/hooks/7moor"), Some(("7moor", None)));
        assert_eq!(route("/hooks/7moor/"), Some(("7moor", None)));
        assert_eq!(route("/hooks/7moor/tok"), Some(("7moor", Some("tok"))));
        assert_eq!(route("/hooks/7moor/tok/"), Some(("7moor", Some("tok"))));
        assert_eq!(route("/hooks/7moor/tok/x"), None);
        assert_eq!(route("/hooks/7moor//"), None);
        assert_eq!(route("/hooks/"), None);
        assert_eq!(route("/hooks"), None);
        assert_eq!(route("/other/7moor"), None);
    }

    #[test]
    fn test_statuses_and_reasons() {
        let cases = [
            (IngestError::NotFound, 404, "not_found"),
            (IngestError::UnknownSource, 404, "unknown_source"),
            (IngestError::MethodNotAllowed, 405, "method_not_allowed"),
            (AuthFailure::BadToken.into(), 401, "bad_token"),
            (
                IngestError::BodyTooLarge { limit_bytes: 1 },
                413,
                "body_too_large",
            ),
            (
                IngestError::BodyTimeout(Duration::from_secs(1)),
                408,
                "body_timeout",
            ),
            (
                IngestError::RateLimited {
                    retry_after_seconds: 2,
                },
                429,
                "rate_limited",
            ),
            (AppendError::Overloaded("pending").into(), 503, "overloaded"),
            (
                AppendError::Unavailable("disk".into()).into(),
                503,
                "unavailable",
            ),
        ];
        for (error, status, reason) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.reason(), reason);
        }
        let response = IngestError::from(AppendError::Unavailable("x".into())).to_response();
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        let response = IngestError::MethodNotAllowed.to_response();
        assert_eq!(response.headers()[ALLOW], "GET, POST");
    }

    #[test]
    fn test_owned_bytes_copies_out_of_a_larger_buffer() {
        let buffer = Bytes::from(vec![7u8; 8192]);
        let owned = owned_bytes(buffer.slice(10..20).chain(Bytes::from_static(b"!")));
        assert_eq!(&owned[..], &[7, 7, 7, 7, 7, 7, 7, 7, 7, 7, b'!']);
        // Its own allocation: the 8 KiB buffer is not kept alive through it.
        assert!(!std::ptr::eq(
            owned.as_ptr(),
            buffer.as_ptr().wrapping_add(10)
        ));
    }
}
