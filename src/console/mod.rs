//! The operations console: live calls, calls, agents and dead letters in a browser, on its own
//! listener (`[console] listen`, off by default).
//!
//! Guarantees:
//! - **Access**: every page and API needs a session (the sign-in form takes `[console] token`
//!   and sets an `HttpOnly`, `SameSite=Strict` cookie) or `Authorization: Bearer <token>`.
//!   Without a token the console starts only on a loopback address (`config.rs`).
//! - **CSRF**: every state-changing request (`POST`) of a cookie session carries the session's
//!   CSRF token in a form field, and a cross-origin `Origin` is refused.
//! - **Escaping**: vendor strings reach the page only through [`pages::escape`] (server-rendered
//!   pages) or `textContent` (the Live page's script); the `Content-Security-Policy` allows no
//!   inline script, so a missed escape still could not run one.
//! - **Reads**: short indexed queries on a read-only connection ([`queries`]), on the blocking
//!   pool; dead letters are listed, shown and redriven through the same functions as
//!   `callhook dead-letters`.
//!
//! It is a listener of its own rather than pages on the admin listener: the admin listener is
//! for scrapers and probes, often reachable from the monitoring network without credentials,
//! while the console shows phone numbers to people and needs sign-in, cookies and CSRF.
//!
//! Live updates: the page subscribes to `/events` (Server-Sent Events), which sends a `change`
//! for every event the normalizer commits (from the process's tap) and a heartbeat; the page
//! then fetches `/api/live`, at most a few times a second.

pub mod bench;
pub mod config;
mod pages;
pub mod queries;
mod session;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use callhook_ingest::{AdminBody, ChannelBody, TapHub, TapKind};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{broadcast, mpsc};

use crate::config::Settings;
use config::ConsoleSettings;
use session::{Access, Sessions};
use stats::Stats;

/// Largest form body accepted (sign-in, redrive).
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Heartbeat of the event stream (keeps proxies from closing it, tells the page it is live).
const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

const STYLE_CSS: &str = include_str!("assets/style.css");
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// The console's state.
pub struct Console {
    settings: Arc<Settings>,
    console: ConsoleSettings,
    sessions: Sessions,
    tap: Arc<TapHub>,
    stats: Arc<Stats>,
}

impl Console {
    /// Builds the console and starts its metrics sampler.
    pub fn new(
        settings: &Settings,
        console: &ConsoleSettings,
        tap: Arc<TapHub>,
    ) -> anyhow::Result<Console> {
        let stats = Arc::new(Stats::default());
        let sampler = Arc::clone(&stats);
        let mut closed = tap.closed();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(stats::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => sampler.sample(),
                    _ = closed.wait_for(|closed| *closed) => return,
                }
            }
        });
        Ok(Console {
            settings: Arc::new(settings.clone()),
            console: console.clone(),
            sessions: Sessions::new(console.token.clone()).context("cannot seed the sessions")?,
            tap,
            stats,
        })
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Response<AdminBody> {
        let mut response = match self.route(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "console request failed");
                pages::html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::error_page("The request failed; see the server log."),
                )
            }
        };
        pages::security_headers(response.headers_mut());
        response
    }

    async fn route(&self, request: Request<Incoming>) -> anyhow::Result<Response<AdminBody>> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/assets/style.css") => return Ok(asset("text/css", STYLE_CSS)),
            (&Method::GET, "/assets/console.js") => {
                return Ok(asset("text/javascript", CONSOLE_JS))
            }
            (&Method::GET, "/login") => {
                return Ok(pages::html_response(
                    StatusCode::OK,
                    pages::login_page(false),
                ))
            }
            (&Method::POST, "/login") => return self.login(request).await,
            _ => {}
        }
        let access = self.sessions.check(&request);
        let Some(access) = access else {
            return Ok(match path.starts_with("/api/") || path == "/events" {
                true => pages::text_response(StatusCode::UNAUTHORIZED, "sign in first"),
                false => redirect("/login", None),
            });
        };
        if method == Method::POST {
            return self.post(request, &access, &path).await;
        }
        if method != Method::GET {
            return Ok(pages::text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            ));
        }
        let query = request.uri().query().unwrap_or("").to_owned();
        match path.as_str() {
            "/" => Ok(pages::html_response(
                StatusCode::OK,
                pages::layout(&pages::live_page(), &access.csrf),
            )),
            "/api/live" => self.live_json().await,
            "/events" => Ok(self.events()),
            "/calls" => {
                let sources: Vec<String> = self.settings.map_sources.keys().cloned().collect();
                self.page(move |db| pages::calls_page(db, &query, &sources), &access)
                    .await
            }
            "/call" => {
                self.page(move |db| pages::call_page(db, &query), &access)
                    .await
            }
            "/agents" => {
                self.page(move |db| pages::agents_page(db, &query), &access)
                    .await
            }
            "/dead-letters" => {
                let settings = Arc::clone(&self.settings);
                let csrf = access.csrf.clone();
                let body = tokio::task::spawn_blocking(move || {
                    pages::dead_letters_page(&settings, &query, &csrf)
                })
                .await??;
                Ok(pages::html_response(StatusCode::OK, body))
            }
            _ => Ok(pages::html_response(
                StatusCode::NOT_FOUND,
                pages::error_page("Not found."),
            )),
        }
    }

    /// Renders a read-only page from the sink on the blocking pool.
    async fn page<F>(&self, render: F, access: &Access) -> anyhow::Result<Response<AdminBody>>
    where
        F: FnOnce(&rusqlite::Connection) -> anyhow::Result<pages::Page> + Send + 'static,
    {
        let path = self.settings.sqlite.path.clone();
        let csrf = access.csrf.clone();
        let body = tokio::task::spawn_blocking(move || {
            let connection = queries::open(&path).context("cannot open the database")?;
            render(&connection)
        })
        .await??;
        Ok(pages::html_response(
            StatusCode::OK,
            pages::layout(&body, &csrf),
        ))
    }

    async fn login(&self, request: Request<Incoming>) -> anyhow::Result<Response<AdminBody>> {
        let form: std::collections::HashMap<String, String> = read_form(request).await?;
        let presented = form.get("token").map(String::as_str).unwrap_or("");
        match self.sessions.sign_in(presented)? {
            Some(cookie) => Ok(redirect("/", Some(cookie))),
            None => Ok(pages::html_response(
                StatusCode::UNAUTHORIZED,
                pages::login_page(true),
            )),
        }
    }

    async fn post(
        &self,
        request: Request<Incoming>,
        access: &Access,
        path: &str,
    ) -> anyhow::Result<Response<AdminBody>> {
        if !session::same_origin(&request) {
            return Ok(pages::text_response(
                StatusCode::FORBIDDEN,
                "cross-origin request refused",
            ));
        }
        let from_cookie = access.by_cookie;
        let expected_csrf = access.csrf.clone();
        let form: std::collections::HashMap<String, String> = read_form(request).await?;
        let csrf_ok = form
            .get("csrf")
            .is_some_and(|csrf| session::constant_time_eq(csrf, &expected_csrf));
        if from_cookie && !csrf_ok {
            return Ok(pages::text_response(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token",
            ));
        }
        match path {
            "/logout" => {
                self.sessions.sign_out(&expected_csrf);
                Ok(redirect("/login", Some(session::EXPIRED_COOKIE.to_owned())))
            }
            "/dead-letters/redrive" => {
                let settings = Arc::clone(&self.settings);
                let message =
                    tokio::task::spawn_blocking(move || pages::redrive(&settings, &form)).await??;
                let location = format!(
                    "/dead-letters?message={}",
                    percent_encoding::utf8_percent_encode(
                        &message,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                Ok(redirect(&location, None))
            }
            _ => Ok(pages::html_response(
                StatusCode::NOT_FOUND,
                pages::error_page("Not found."),
            )),
        }
    }

    async fn live_json(&self) -> anyhow::Result<Response<AdminBody>> {
        let path = self.settings.sqlite.path.clone();
        let calls = tokio::task::spawn_blocking(move || {
            let connection = queries::open(&path).context("cannot open the database")?;
            anyhow::Ok(queries::live_calls(&connection, chrono::Utc::now())?)
        })
        .await??;
        let (sources, lag_records) = self.stats.figures(self.console.quiet_after);
        let body = serde_json::json!({
            "now": chrono::Utc::now(),
            "calls": calls,
            "sources": sources,
            "normalizer_lag_records": lag_records,
            "quiet_after_seconds": self.console.quiet_after.as_secs(),
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    /// The Server-Sent Events stream of the Live page.
    fn events(&self) -> Response<AdminBody> {
        let (sender, receiver) = mpsc::channel::<Bytes>(64);
        let events = self.tap.subscribe_events();
        let closed = self.tap.closed();
        tokio::spawn(stream_changes(events, closed, sender));
        let mut response = Response::new(ChannelBody::new(receiver).boxed());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Sends a `change` event per committed event or dead letter (type and source only: the page
/// fetches what it shows), and a heartbeat comment; ends at shutdown or when the page leaves.
async fn stream_changes(
    mut events: broadcast::Receiver<Arc<callhook_ingest::TapItem>>,
    mut closed: tokio::sync::watch::Receiver<bool>,
    sender: mpsc::Sender<Bytes>,
) {
    let _ = sender.send(Bytes::from_static(b"retry: 2000\n\n")).await;
    let mut heartbeat = tokio::time::interval(SSE_HEARTBEAT);
    loop {
        let message = tokio::select! {
            _ = closed.wait_for(|closed| *closed) => return,
            () = sender.closed() => return,
            _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            item = events.recv() => match item {
                Ok(item) => {
                    let kind = match item.kind {
                        TapKind::DeadLetter => "dead_letter",
                        _ => item.event_type.as_deref().unwrap_or("event"),
                    };
                    let data = serde_json::json!({"type": kind, "source": item.source});
                    Bytes::from(format!("event: change\ndata: {data}\n\n"))
                }
                // Fell behind: the page refetches anyway.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Bytes::from_static(b"event: change\ndata: {}\n\n")
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if sender.send(message).await.is_err() {
            return;
        }
    }
}

async fn read_form<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> anyhow::Result<T> {
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("form unreadable: {error}"))?
        .to_bytes();
    Ok(serde_urlencoded::from_bytes(&body)?)
}

fn asset(content_type: &'static str, text: &'static str) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}

fn redirect(location: &str, cookie: Option<String>) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    if let Some(value) = cookie.and_then(|cookie| HeaderValue::from_str(&cookie).ok()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}
