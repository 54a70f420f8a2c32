//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` answers `200 ok` while the process serves HTTP. `/readyz` answers `200 ready`
//! while the raw log takes writes ([`LogAppender::check_writable`]), followed by `: <detail>`
//! when the log reports a degraded state ([`LogAppender::status_detail`], e.g. the Kafka log's
//! spool in use), and `503` with the reason otherwise, so a load balancer stops sending pushes
//! we would refuse. `/metrics` is the Prometheus text of the default registry.

use std::sync::Arc;

use bytes::Bytes;
use callhook_rawlog::LogAppender;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus::{Encoder as _, TextEncoder};

use crate::metrics::metrics;

/// State of the admin listener.
pub struct AdminState {
    appender: Arc<dyn LogAppender>,
}

impl AdminState {
    /// Builds the admin state over the raw log whose writability `/readyz` reports.
    pub fn new(appender: Arc<dyn LogAppender>) -> Self {
        AdminState { appender }
    }

    /// Answers one admin request.
    pub(crate) async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return text(StatusCode::NOT_FOUND, "not found".into());
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
            let allow = HeaderValue::from_static("GET, HEAD");
            response.headers_mut().insert(ALLOW, allow);
            return response;
        }
        match path {
            "/metrics" => render_metrics(),
            "/healthz" => text(StatusCode::OK, "ok".into()),
            _ => self.readiness().await,
        }
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        let appender = Arc::clone(&self.appender);
        // The trait does not promise a non-blocking check (a log may look at its disk), and
        // the runtime must not block, so it runs on the blocking pool.
        let writable = tokio::task::spawn_blocking(move || {
            appender.check_writable().map(|()| appender.status_detail())
        })
        .await;
        match writable {
            Ok(Ok(None)) => text(StatusCode::OK, "ready".into()),
            Ok(Ok(Some(detail))) => text(StatusCode::OK, format!("ready: {detail}")),
            Ok(Err(reason)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: writability check failed".into(),
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
