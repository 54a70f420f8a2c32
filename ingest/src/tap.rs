//! The tap: a live, lossy copy of what flows through the process, streamed to `callhook tap`
//! (and the console) by the admin listener's `GET /tap`.
//!
//! Guarantee: the tap never slows the pipeline. Publishers (the receiver after a durable
//! append, the normalizer after a sink commit) `send` on a bounded `tokio::sync::broadcast`
//! channel, which never waits; they build an item only while someone listens. A subscriber
//! that falls more than [`TAP_CHANNEL_ITEMS`] behind loses the oldest items: the loss is counted
//! in `callhook_tap_dropped_total{stream}` and told to the client as a `{"kind":"dropped"}` line.
//!
//! `GET /tap?source=S&type=T&call=ID&raw=1` answers a stream of JSON lines, one per item (`kind`
//! is `raw`, `event` or `dead_letter`). It needs `Authorization: Bearer <[admin] tap_token>`;
//! without a token configured it is served only when the admin listener is on loopback (the
//! binary decides, [`TapAccess`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame};
use prometheus::{IntCounterVec, IntGauge, Opts};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tokio::sync::{broadcast, mpsc, watch};

/// Items a subscriber may fall behind before it loses the oldest.
pub const TAP_CHANNEL_ITEMS: usize = 4096;
/// Lines buffered per connected client between its forwarding task and its socket.
const CLIENT_BUFFER_LINES: usize = 256;

/// Which stream an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapKind {
    /// A raw push, as the receiver stored it.
    Raw,
    /// A canonical event the sink committed.
    Event,
    /// A record the sink committed as a dead letter.
    DeadLetter,
}

/// One item of the tap: a JSON line with the fields the filters look at.
#[derive(Debug, Clone)]
pub struct TapItem {
    /// Which stream.
    pub kind: TapKind,
    /// The configured source name.
    pub source: String,
    /// The canonical event type (`call.ringing`, ...) of an event.
    pub event_type: Option<String>,
    /// The vendor call id of an event.
    pub call_id: Option<String>,
    /// The JSON object of the item, on one line.
    pub json: String,
}

/// The process's tap: one broadcast channel for raw pushes, one for committed events and dead
/// letters, and a switch that ends every stream at shutdown.
pub struct TapHub {
    raw: broadcast::Sender<Arc<TapItem>>,
    events: broadcast::Sender<Arc<TapItem>>,
    closed: watch::Sender<bool>,
}

impl Default for TapHub {
    fn default() -> Self {
        TapHub {
            raw: broadcast::channel(TAP_CHANNEL_ITEMS).0,
            events: broadcast::channel(TAP_CHANNEL_ITEMS).0,
            closed: watch::channel(false).0,
        }
    }
}

impl TapHub {
    /// Returns whether anyone listens to raw pushes (publishers build nothing otherwise).
    pub fn wants_raw(&self) -> bool {
        self.raw.receiver_count() > 0
    }

    /// Returns whether anyone listens to events.
    pub fn wants_events(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Publishes an item; never waits.
    pub fn publish(&self, item: TapItem) {
        let channel = match item.kind {
            TapKind::Raw => &self.raw,
            TapKind::Event | TapKind::DeadLetter => &self.events,
        };
        // An error only means nobody listens any more.
        let _ = channel.send(Arc::new(item));
    }

    /// Subscribes to committed events and dead letters (the console's live view).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<TapItem>> {
        self.events.subscribe()
    }

    /// Ends every open stream (shutdown: a stream would otherwise keep its connection open).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Returns a receiver that turns `true` at [`TapHub::close`].
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// Who may open `/tap`.
#[derive(Clone)]
pub enum TapAccess {
    /// Anyone who reaches the admin listener (bound to loopback, no token configured).
    Open,
    /// Only a request with `Authorization: Bearer <token>`.
    Token(Arc<str>),
}

/// The `/tap` query.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct TapFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Only event types starting with this (`call.` for every call event).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only this call id (raw pushes: whose body or query contains it).
    pub call: Option<String>,
    /// Raw pushes instead of events (`1` or `true`).
    pub raw: Option<String>,
}

impl TapFilter {
    fn wants_raw(&self) -> bool {
        matches!(self.raw.as_deref(), Some("1" | "true" | "yes"))
    }

    /// Returns whether `item` passes the filter.
    pub fn matches(&self, item: &TapItem) -> bool {
        if self
            .source
            .as_ref()
            .is_some_and(|source| *source != item.source)
        {
            return false;
        }
        if let Some(wanted) = &self.event_type {
            let event_type = match item.kind {
                TapKind::DeadLetter => "dead_letter",
                _ => item.event_type.as_deref().unwrap_or(""),
            };
            if item.kind != TapKind::Raw && !event_type.starts_with(wanted.as_str()) {
                return false;
            }
        }
        match (&self.call, item.kind) {
            (None, _) => true,
            (Some(call), TapKind::Raw) => item.json.contains(call.as_str()),
            (Some(call), _) => item.call_id.as_deref() == Some(call.as_str()),
        }
    }
}

/// Metrics of the tap.
struct TapMetrics {
    dropped: IntCounterVec,
    clients: IntGauge,
}

fn tap_metrics() -> &'static TapMetrics {
    static METRICS: OnceLock<TapMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let dropped = IntCounterVec::new(
            Opts::new(
                "callhook_tap_dropped_total",
                "Tap items a slow subscriber lost (the pipeline never waits for a tap).",
            ),
            &["stream"],
        )
        .expect("valid metric");
        for stream in ["raw", "events"] {
            dropped.with_label_values(&[stream]);
        }
        let clients = IntGauge::new("callhook_tap_clients", "Open tap and console streams.")
            .expect("valid metric");
        for collector in [
            Box::new(dropped.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(clients.clone()),
        ] {
            if let Err(error) = prometheus::register(collector) {
                tracing::warn!(%error, "tap metric not registered on the default registry");
            }
        }
        TapMetrics { dropped, clients }
    })
}

/// The response body type of the admin listener (and the console).
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// Answers `GET /tap`.
pub(crate) fn handle<B>(
    hub: &TapHub,
    access: &TapAccess,
    request: &Request<B>,
) -> Response<AdminBody> {
    if let TapAccess::Token(token) = access {
        if !bearer_matches(request, token) {
            let mut response = plain(StatusCode::UNAUTHORIZED, "unauthorized");
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"callhook tap\""),
            );
            return response;
        }
    }
    let filter: TapFilter = match serde_urlencoded::from_str(request.uri().query().unwrap_or("")) {
        Ok(filter) => filter,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "bad tap query"),
    };
    let (stream, receiver) = match filter.wants_raw() {
        true => ("raw", hub.raw.subscribe()),
        false => ("events", hub.events.subscribe()),
    };
    let (lines, body) = mpsc::channel(CLIENT_BUFFER_LINES);
    tokio::spawn(forward(receiver, filter, lines, hub.closed(), stream));
    let mut response = Response::new(ChannelBody(body).boxed());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Returns whether the request carries `Authorization: Bearer <token>` (constant-time).
pub fn bearer_matches<B>(request: &Request<B>, token: &str) -> bool {
    let Some(presented) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    presented.ct_eq(token.as_bytes()).into()
}

/// Copies matching items to one client until it leaves or the hub closes.
async fn forward(
    mut receiver: broadcast::Receiver<Arc<TapItem>>,
    filter: TapFilter,
    lines: mpsc::Sender<Bytes>,
    mut closed: watch::Receiver<bool>,
    stream: &'static str,
) {
    let metrics = tap_metrics();
    metrics.clients.inc();
    // The first line tells the client the stream is attached (the headers alone may sit in a
    // buffer until the first item).
    let hello = format!("{{\"kind\":\"attached\",\"stream\":\"{stream}\"}}\n");
    let mut next_line = Some(Bytes::from(hello));
    loop {
        if let Some(line) = next_line.take() {
            tokio::select! {
                sent = lines.send(line) => if sent.is_err() { break },
                _ = closed.wait_for(|closed| *closed) => break,
            }
        }
        let item = tokio::select! {
            item = receiver.recv() => item,
            () = lines.closed() => break,
            _ = closed.wait_for(|closed| *closed) => break,
        };
        match item {
            Ok(item) if filter.matches(&item) => {
                let mut line = String::with_capacity(item.json.len() + 1);
                line.push_str(&item.json);
                line.push('\n');
                next_line = Some(Bytes::from(line));
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(count)) => {
                metrics.dropped.with_label_values(&[stream]).inc_by(count);
                let line = format!("{{\"kind\":\"dropped\",\"count\":{count}}}\n");
                next_line = Some(Bytes::from(line));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    metrics.clients.dec();
}

/// A streaming response body fed from a channel; it ends when the sender is dropped (the
/// tap's lines, the console's Server-Sent Events).
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// Returns a body that yields what is sent on the other end of `receiver`.
    pub fn new(receiver: mpsc::Receiver<Bytes>) -> Self {
        ChannelBody(receiver)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<AdminBody> {
    let mut response =
        Response::new(http_body_util::Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, event_type: &str, call: &str) -> TapItem {
        TapItem {
            kind: TapKind::Event,
            source: source.into(),
            event_type: Some(event_type.into()),
            call_id: Some(call.into()),
            json: "{}".into(),
        }
    }

    #[test]
    fn test_filter() {
        let filter = TapFilter {
            source: Some("7moor".into()),
            event_type: Some("call.".into()),
            call: Some("c1".into()),
            raw: None,
        };
        assert!(filter.matches(&event("7moor", "call.ringing", "c1")));
        assert!(!filter.matches(&event("uincall", "call.ringing", "c1")));
        assert!(!filter.matches(&event("7moor", "agent.status_changed", "c1")));
        assert!(!filter.matches(&event("7moor", "call.ringing", "c2")));
        let raw = TapItem {
            kind: TapKind::Raw,
            source: "7moor".into(),
            event_type: None,
            call_id: None,
            json: r#"{"body":"callUniqueId=c1"}"#.into(),
        };
        assert!(filter.matches(&raw));
        assert!(TapFilter::default().matches(&raw));
    }

    #[test]
    fn test_bearer() {
        let request = Request::get("/tap")
            .header(AUTHORIZATION, "Bearer secret-token")
            .body(())
            .unwrap();
        assert!(bearer_matches(&request, "secret-token"));
        assert!(!bearer_matches(&request, "secret-tokem"));
        assert!(!bearer_matches(
            &Request::get("/tap").body(()).unwrap(),
            "x"
        ));
    }

    #[tokio::test]
    async fn test_a_slow_subscriber_loses_items_and_the_publisher_never_waits() {
        let hub = TapHub::default();
        let mut receiver = hub.events.subscribe();
        for _ in 0..TAP_CHANNEL_ITEMS + 10 {
            hub.publish(event("7moor", "call.ringing", "c1"));
        }
        assert!(matches!(
            receiver.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
    }
}
