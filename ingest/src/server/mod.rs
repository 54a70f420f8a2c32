//! The accept loops of the receiver and admin listeners: connection limits, idle shedding,
//! per-connection timeouts and graceful shutdown (the mini-redis `server.rs` shape: the caller
//! passes the listener and a shutdown future, so tests bind `127.0.0.1:0`).
//!
//! # Guarantees
//!
//! - **Bounded connections.** At most `max_connections` connections are open. A connection
//!   is *waiting* while none of its bytes has arrived since it was accepted or since its last
//!   response (a fresh idle connection, a keep-alive connection between requests); it is
//!   *busy* from the first byte of a request head until its response is handed to hyper.
//! - **Idle connections and slow heads never keep a client out.** When `max_connections` are
//!   open, a new connection makes room: the connection whose request head has been arriving
//!   longest closes, if for longer than `header_read_timeout_at_capacity_ms` (a slowloris,
//!   possibly spread over many addresses; envoy's overload manager shortens its timeouts the
//!   same way), else the connection that has waited longest for a request (nginx reuses its
//!   idle keep-alive connections the same way). Slow heads go first: a vendor sends a head in
//!   one packet, while an idle keep-alive connection belongs to a client that completed
//!   requests. No request the handler has is ever closed: when every connection has one (or a
//!   head younger than that), the listener stops accepting and new connections wait in the
//!   kernel's listen backlog, which is safer for delivery than a refusal some vendors may drop
//!   (VENDORS.md: their retry behaviour is undocumented). Those requests end within bounded
//!   time: see the timeouts.
//! - **One address cannot take the listener.** At most `max_connections_per_ip` connections
//!   are open per client address (an IPv4 address or an IPv6 /64). At that limit a new
//!   connection from the address makes one of that address's connections close, chosen as
//!   above, or, when there is none to choose, is refused: closed at once, nothing read.
//! - **Nothing is lost by shedding.** A shed connection has no request in the handler: hyper's
//!   graceful shutdown closes a waiting one at once, and lets a request that raced the
//!   decision finish first; a slow head is dropped only if still incomplete. Refusals happen before any byte is read. One exception: bytes
//!   a client pipelined behind its previous request may already sit in hyper's buffer when
//!   the connection counts as waiting; a shed then closes with them unanswered (nothing
//!   stored), which RFC 9112 §9.3.2 tells pipelining clients to retry.
//! - **Timeouts.** A new connection's first byte must arrive within `header_read_timeout_ms`,
//!   then its request head within `header_read_timeout_ms` (hyper's timer, which also closes a
//!   keep-alive connection idle that long); the handler bounds the body with
//!   `body_read_timeout_ms`; a response the client does not read for
//!   `response_write_timeout_ms` closes the connection (hyper has no write timeout; see
//!   `stream`).
//! - **Bounded memory per connection.** A fresh connection is handed to hyper only once its
//!   first byte arrives (hyper allocates its read and write buffers then), so an idle one
//!   costs its socket and a small task. hyper's read buffer is capped at `max_header_bytes`
//!   (at least 8 KiB), which also bounds a pipelined flood: hyper holds one response at a time
//!   and reads no further while it cannot write. A head over `max_header_bytes` or with more
//!   than 100 header fields gets `431`, a malformed one `400`, and the connection closes.
//!
//! Each refusal, shed and timeout close counts in `callhook_ingest_connections_shed_total`
//! by reason ([`crate::metrics`]).
//!
//! # Shutdown
//!
//! When the shutdown future resolves the listener is dropped (no new connections), every open
//! connection is told to finish its in-flight request and close (waiting connections close at
//! once), and the call returns once all have closed: within the longest timeout above.

mod registry;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::AdminState;
use crate::events::ConnectionShed;
use crate::handler::Receiver;
use crate::metrics::{metrics, ConnectionGuard, ShedCounters, ShedReason};
use registry::{Admission, Limits, Registration, Registry, Slot, Victim};
use stream::ConnectionStream;

/// Connections the admin listener serves at once (scrapers and probes only, often from one
/// address, so it has no per-address limit of its own).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Header read timeout of the admin listener.
const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request head limit of the admin listener.
const ADMIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Response write timeout of the admin listener.
const ADMIN_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// hyper's smallest read buffer limit (it panics below).
const HYPER_MIN_BUF_SIZE: usize = 8 * 1024;

/// Serves pushes on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// and returns once every connection has closed.
pub async fn run(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    shutdown: impl Future<Output = ()>,
) {
    let settings = receiver.settings();
    let all = metrics();
    let options = ServeOptions {
        limits: Limits {
            max_connections: settings.max_connections.get(),
            max_per_address: settings.max_connections_per_ip.get(),
            shed_heads_after: settings.header_read_timeout_at_capacity,
        },
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes,
        write_timeout: settings.response_write_timeout,
        telemetry: Some(Telemetry {
            connections: all.connections.clone(),
            accepted: all.connections_accepted.clone(),
            shed: all.connections_shed.clone(),
        }),
    };
    let handler = move |request: Request<Incoming>, peer: SocketAddr| {
        let receiver = Arc::clone(&receiver);
        async move { receiver.handle(request, peer).await }
    };
    serve(listener, options, handler, shutdown).await;
}

/// Serves `/metrics`, `/healthz`, `/readyz` (and `/tap`) on `listener` until `shutdown` resolves.
pub async fn run_admin(
    listener: TcpListener,
    admin: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |request: Request<Incoming>, _peer: SocketAddr| {
        let admin = Arc::clone(&admin);
        async move { admin.handle(request).await }
    };
    serve(listener, admin_options(), handler, shutdown).await;
}

/// Serves any other HTTP service on `listener` with the admin listener's limits (a few
/// private clients: the console) until `shutdown` resolves.
pub async fn run_service<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, admin_options(), handler, shutdown).await;
}

fn admin_options() -> ServeOptions {
    ServeOptions {
        limits: Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_per_address: ADMIN_MAX_CONNECTIONS,
            shed_heads_after: ADMIN_HEADER_READ_TIMEOUT,
        },
        header_read_timeout: ADMIN_HEADER_READ_TIMEOUT,
        max_header_bytes: ADMIN_MAX_HEADER_BYTES,
        write_timeout: ADMIN_WRITE_TIMEOUT,
        telemetry: None,
    }
}

struct ServeOptions {
    limits: Limits,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    write_timeout: Duration,
    /// The receiver's connection metrics; `None` for the admin listener.
    telemetry: Option<Telemetry>,
}

struct Telemetry {
    connections: IntGauge,
    accepted: IntCounter,
    shed: ShedCounters,
}

/// What the accept loop and every connection task of one listener share.
struct Listener<H> {
    handler: H,
    builder: http1::Builder,
    header_read_timeout: Duration,
    write_timeout: Duration,
    telemetry: Option<Telemetry>,
}

impl<H> Listener<H> {
    fn shed(&self, reason: ShedReason, peer: IpAddr) {
        ConnectionShed {
            counters: self.telemetry.as_ref().map(|telemetry| &telemetry.shed),
            reason,
            peer,
        }
        .emit();
    }
}

async fn serve<H, F, B>(
    listener: TcpListener,
    options: ServeOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let registry = Registry::new(options.limits);
    let shared = Arc::new(Listener {
        handler,
        builder: http1_builder(&options),
        header_read_timeout: options.header_read_timeout,
        write_timeout: options.write_timeout,
        telemetry: options.telemetry,
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Some(telemetry) = &shared.telemetry {
            telemetry.accepted.inc();
        }
        let registration = tokio::select! {
            () = &mut shutdown => break,
            admitted = admit(&registry, &shared, peer.ip()) => admitted,
        };
        // Refused: dropping the stream closes it before anything was read.
        let Some(registration) = registration else {
            continue;
        };
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            registration,
            Arc::clone(&shared),
        ));
    }
    drop(listener);
    registry.close_all();
    registry.all_closed().await;
}

/// Serves one connection of the receiver over any byte stream, with the HTTP/1 settings of
/// [`run`] (but no connection limits: there is one connection), and returns when it closes.
/// It is for harnesses that feed raw bytes without a socket (the fuzz targets); `run` is the
/// production path.
pub async fn serve_io<I>(
    receiver: Arc<Receiver>,
    io: I,
    peer: SocketAddr,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = receiver.settings();
    let options = ServeOptions {
        limits: Limits {
            max_connections: 1,
            max_per_address: 1,
            shed_heads_after: settings.header_read_timeout_at_capacity,
        },
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes,
        write_timeout: settings.response_write_timeout,
        telemetry: None,
    };
    let service = hyper::service::service_fn(move |request| {
        let receiver = Arc::clone(&receiver);
        async move { Ok::<_, std::convert::Infallible>(receiver.handle(request, peer).await) }
    });
    http1_builder(&options)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
}

fn http1_builder(options: &ServeOptions) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(options.max_header_bytes)
        // The read buffer holds a head or a slice of a body (the handler collects bodies), so
        // it never needs more than the head limit; hyper's default is ~400 KiB per connection.
        .max_buf_size(options.max_header_bytes.max(HYPER_MIN_BUF_SIZE))
        .keep_alive(true);
    builder
}

/// Waits until a connection from `peer` may be registered, shedding idle connections to make
/// room; returns `None` when it is refused.
async fn admit<H>(
    registry: &Arc<Registry>,
    listener: &Listener<H>,
    peer: IpAddr,
) -> Option<Registration> {
    let _pending = registry.admission_pending();
    loop {
        // Registered before the check, so a change in between is not missed.
        let changed = registry.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let decision = registry.admit(peer);
        match decision.shed_for_address {
            Some(Victim::Idle) => listener.shed(ShedReason::IdleAtIpLimit, peer),
            Some(Victim::SlowHead) => listener.shed(ShedReason::SlowHeadAtIpLimit, peer),
            None => {}
        }
        match decision.shed_for_capacity {
            Some(Victim::Idle) => listener.shed(ShedReason::IdleAtCapacity, peer),
            Some(Victim::SlowHead) => listener.shed(ShedReason::SlowHeadAtCapacity, peer),
            None => {}
        }
        match decision.admission {
            Admission::Admitted(registration) => return Some(registration),
            Admission::Refused => {
                listener.shed(ShedReason::IpLimit, peer);
                return None;
            }
            Admission::Full { retry_in: None } => changed.await,
            // A head in progress becomes old enough to shed then, with no event to say so.
            Admission::Full {
                retry_in: Some(retry_in),
            } => {
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(retry_in) => {}
                }
            }
        }
    }
}

/// How a connection's first bytes went.
enum FirstBytes {
    /// A request started.
    Arrived,
    /// A request started, and the connection was told to close: serve that one request.
    ArrivedWhileClosing,
    /// The client closed, or the connection was told to close before any byte arrived.
    Closed,
    /// Nothing arrived within the header read timeout.
    TimedOut,
}

/// Serves one connection until it closes; its registration is dropped last, once the socket
/// is closed, so open sockets never outnumber the limit.
async fn serve_connection<H, F, B>(
    stream: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    listener: Arc<Listener<H>>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _open = listener
        .telemetry
        .as_ref()
        .map(|telemetry| ConnectionGuard::open(&telemetry.connections));
    let slot = Arc::clone(registration.slot());
    let closing = match first_bytes(&stream, &slot, listener.header_read_timeout).await {
        FirstBytes::Arrived => false,
        FirstBytes::ArrivedWhileClosing => true,
        FirstBytes::Closed => return,
        FirstBytes::TimedOut => {
            listener.shed(ShedReason::HeaderTimeout, peer.ip());
            return;
        }
    };
    slot.mark_receiving();
    let io = TokioIo::new(ConnectionStream::new(
        stream,
        Arc::clone(&slot),
        listener.write_timeout,
    ));
    let service = {
        let listener = Arc::clone(&listener);
        let slot = Arc::clone(&slot);
        service_fn(move |request| {
            slot.mark_handling();
            let response = (listener.handler)(request, peer);
            let slot = Arc::clone(&slot);
            async move {
                let response = response.await;
                slot.mark_waiting();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = listener.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut close_signalled = closing;
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = slot.close_requested(), if !close_signalled => {
                // Shed for a slow head and still in it: drop the connection, nothing of a
                // request reached the handler (this task is the one that would hand it over).
                if slot.abort_head_requested() && slot.is_receiving() {
                    return;
                }
                close_signalled = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(error) = result {
        let reason = if slot.write_timed_out() {
            Some(ShedReason::WriteTimeout)
        } else if error.is_timeout() {
            Some(ShedReason::HeaderTimeout)
        } else if error.is_parse() {
            Some(ShedReason::HeadRejected)
        } else {
            None
        };
        match reason {
            Some(reason) => listener.shed(reason, peer.ip()),
            None => tracing::debug!(%error, %peer, "connection ended with an error"),
        }
    }
}

/// Waits for the first byte of the first request without reading it, so that hyper, which
/// allocates its buffers at its first read, only gets connections that sent something. The
/// connection becomes sheddable (waiting) only once its socket was seen empty.
async fn first_bytes(stream: &TcpStream, slot: &Slot, timeout: Duration) -> FirstBytes {
    if bytes_waiting(stream) {
        return FirstBytes::Arrived;
    }
    slot.mark_waiting();
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = stream.peek(&mut byte) => match peeked {
            Ok(0) | Err(_) => FirstBytes::Closed,
            Ok(_) => FirstBytes::Arrived,
        },
        () = slot.close_requested() => {
            // The request arrived just as the decision was made: it is served, then closed.
            if bytes_waiting(stream) {
                FirstBytes::ArrivedWhileClosing
            } else {
                FirstBytes::Closed
            }
        }
        () = tokio::time::sleep(timeout) => FirstBytes::TimedOut,
    }
}

/// Returns true when bytes wait in the socket's receive queue, asking the kernel without
/// waiting (tokio's own peek first consults its readiness cache, which a socket accepted a
/// moment ago may not have filled yet).
#[cfg(unix)]
fn bytes_waiting(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a non-blocking `recv` of at most one byte into `byte`, which we own, on a
    // descriptor `stream` keeps open for the duration of the call.
    let received = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::addr_of_mut!(byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    received > 0
}

/// Without `MSG_PEEK | MSG_DONTWAIT`, tokio's cached readiness is the best guess.
#[cfg(not(unix))]
fn bytes_waiting(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    matches!(stream.poll_peek(&mut cx, &mut buf), std::task::Poll::Ready(Ok(n)) if n > 0)
}
