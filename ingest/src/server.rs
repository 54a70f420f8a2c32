//! The accept loops of the receiver and admin listeners, with connection limits and graceful
//! shutdown (the mini-redis `server.rs` shape: the caller passes the listener and a shutdown
//! future, so tests bind `127.0.0.1:0`).
//!
//! Connection limit: a semaphore permit is taken *before* `accept`. When all permits are in
//! use, new connections wait in the kernel's listen backlog and are served as soon as one
//! closes, instead of being accepted and refused. The vendors' retry behaviour is undocumented
//! (VENDORS.md), so a short wait is safer for delivery than a `503` some of them may drop.
//! Memory stays bounded by the permit count. No client holds a permit for long: hyper's header
//! read timer also runs while a keep-alive connection waits for its next request, so idle
//! connections close after `header_read_timeout_ms`, and a stalled body ends at
//! `body_read_timeout_ms`.
//!
//! Shutdown: when the shutdown future resolves the listener is dropped (no new connections),
//! every open connection is told to finish its in-flight request and close (idle keep-alive
//! connections close at once), and the call returns once all have closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::AdminState;
use crate::handler::Receiver;
use crate::metrics::{metrics, ConnectionGuard};

/// Connections the admin listener serves at once (scrapers and probes only).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Header read timeout of the admin listener.
const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves pushes on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// and returns once every connection has closed.
pub async fn run(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    shutdown: impl Future<Output = ()>,
) {
    let settings = receiver.settings();
    let options = ServeOptions {
        max_connections: settings.max_connections.get(),
        header_read_timeout: settings.header_read_timeout,
        connection_gauge: Some(metrics().connections.clone()),
    };
    let handler = move |request: Request<Incoming>, peer: SocketAddr| {
        let receiver = Arc::clone(&receiver);
        async move { receiver.handle(request, peer).await }
    };
    serve(listener, options, handler, shutdown).await;
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn run_admin(
    listener: TcpListener,
    admin: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let options = ServeOptions {
        max_connections: ADMIN_MAX_CONNECTIONS,
        header_read_timeout: ADMIN_HEADER_READ_TIMEOUT,
        connection_gauge: None,
    };
    let handler = move |request: Request<Incoming>, _peer: SocketAddr| {
        let admin = Arc::clone(&admin);
        async move { admin.handle(request).await }
    };
    serve(listener, options, handler, shutdown).await;
}

/// Serves one connection of the receiver over any byte stream, with the HTTP/1 settings of
/// [`run`], and returns when the connection closes. It is for harnesses that feed raw bytes
/// without a socket (the fuzz targets); `run` is the production path.
pub async fn serve_connection<I>(
    receiver: Arc<Receiver>,
    io: I,
    peer: SocketAddr,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = http1_builder(receiver.settings().header_read_timeout);
    let service = service_fn(move |request| {
        let receiver = Arc::clone(&receiver);
        async move { Ok::<_, Infallible>(receiver.handle(request, peer).await) }
    });
    builder.serve_connection(TokioIo::new(io), service).await
}

fn http1_builder(header_read_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    builder
}

struct ServeOptions {
    max_connections: usize,
    header_read_timeout: Duration,
    connection_gauge: Option<IntGauge>,
}

async fn serve<H, F>(
    listener: TcpListener,
    options: ServeOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let builder = http1_builder(options.header_read_timeout);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break, // never closed; ends the loop rather than panicking
            },
        };
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
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let gauge = options.connection_gauge.as_ref().map(ConnectionGuard::open);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(gauge);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
