//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` answers `200 ok` while the process serves HTTP. `/readyz` answers `200 ready`
//! while the process's [`Readiness`] says so (for a receiver: the raw log takes writes; for a
//! normalizer: its loop runs), followed by `: <detail>` for a degraded but ready state (e.g.
//! the Kafka log's spool in use), and `503 not ready: <reason>` otherwise, so a load balancer
//! stops sending pushes we would refuse and a supervisor sees a stalled normalizer.
//! `/metrics` is the Prometheus text of the default registry. `/tap` streams the tap
//! ([`crate::tap`]) when the process has one.

use std::sync::Arc;

use bytes::Bytes;
use callhook_rawlog::LogAppender;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use prometheus::{Encoder as _, TextEncoder};

use crate::metrics::metrics;
use crate::tap::{self, AdminBody, TapAccess, TapHub};

/// What `/readyz` reports.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok(None)` when ready, `Ok(Some(note))` when ready in a degraded state worth saying,
    /// `Err(reason)` when not ready. It may look at a disk: `/readyz` calls it on the blocking
    /// pool.
    fn readiness(&self) -> Result<Option<String>, String>;
}

/// The readiness of a raw log: ready while it takes writes.
pub struct LogReadiness(pub Arc<dyn LogAppender>);

impl Readiness for LogReadiness {
    fn readiness(&self) -> Result<Option<String>, String> {
        self.0.check_writable().map(|()| self.0.status_detail())
    }
}

/// State of the admin listener.
pub struct AdminState {
    readiness: Arc<dyn Readiness>,
    tap: Option<(Arc<TapHub>, TapAccess)>,
}

impl AdminState {
    /// Builds the admin state over what `/readyz` reports.
    pub fn new(readiness: Arc<dyn Readiness>) -> Self {
        AdminState {
            readiness,
            tap: None,
        }
    }

    /// Serves `/tap` from `hub` to the clients `access` lets in.
    pub fn with_tap(mut self, hub: Arc<TapHub>, access: TapAccess) -> Self {
        self.tap = Some((hub, access));
        self
    }

    /// Answers one admin request.
    pub(crate) async fn handle<B>(&self, request: Request<B>) -> Response<AdminBody> {
        let path = request.uri().path();
        let tap = self.tap.as_ref().filter(|_| path == "/tap");
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") && tap.is_none() {
            return text(StatusCode::NOT_FOUND, "not found".into()).map(|body| body.boxed());
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
            let allow = HeaderValue::from_static("GET, HEAD");
            response.headers_mut().insert(ALLOW, allow);
            return response.map(|body| body.boxed());
        }
        if let Some((hub, access)) = tap {
            return tap::handle(hub, access, &request);
        }
        let response = match path {
            "/metrics" => render_metrics(),
            "/healthz" => text(StatusCode::OK, "ok".into()),
            _ => self.readiness().await,
        };
        response.map(|body| body.boxed())
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        let readiness = Arc::clone(&self.readiness);
        // The trait does not promise a non-blocking check (a log may look at its disk), and
        // the runtime must not block, so it runs on the blocking pool.
        let writable = tokio::task::spawn_blocking(move || readiness.readiness()).await;
        match writable {
            Ok(Ok(None)) => text(StatusCode::OK, "ready".into()),
            Ok(Ok(Some(detail))) => text(StatusCode::OK, format!("ready: {detail}")),
            Ok(Err(reason)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: readiness check failed".into(),
            ),
        }
    }
}

fn render_metrics() -> Response<Full<Bytes>> {
    // Registers the ingest metrics even before the first push, so dashboards see them.
    let _ = metrics();
    let encoder = TextEncoder::new();
    let mut buffer = Vec::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut buffer) {
        tracing::warn!(%error, "metrics could not be encoded");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics unavailable".into(),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(buffer)));
    if let Ok(content_type) = HeaderValue::from_str(encoder.format_type()) {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
