//! `callhook-ingest`: the HTTP receiver of vendor pushes.
//!
//! It accepts `GET` or `POST /hooks/{source}` (and `/hooks/{source}/{token}` for sources that
//! authenticate with a path token), exactly as the vendors send: 7moor v2 puts the payload in
//! the query string of a `GET`; others `POST` JSON, form-encoded, text or untyped bodies,
//! chunked or not. Each push becomes a [`callhook_rawlog::RawRecord`] holding the exact body
//! bytes and raw query, appended to the raw log through [`callhook_rawlog::LogAppender`].
//!
//! # Ack guarantee
//!
//! The receiver answers `200` with the body `200` (7moor v2 expects that literal) only after
//! the append resolved `Ok`, i.e. after the record is durable. Every other answer stores
//! nothing, and each error class has its own status:
//!
//! | status | when | header |
//! |---|---|---|
//! | `404` | path is not `/hooks/{source}[/{token}]`, or the source is not configured | |
//! | `405` | method other than `GET`/`POST` | `Allow: GET, POST` |
//! | `401` | the source's authentication failed ([`auth`]) | |
//! | `413` | body over `max_body_bytes`, by `Content-Length` or while streaming | `Connection: close` |
//! | `408` | body not received within `body_read_timeout_ms` | `Connection: close` |
//! | `400` | body unreadable (client hung up, broken chunking) | `Connection: close` |
//! | `429` | the source is over its `rate_limit` ([`rate_limit`]) | `Retry-After` |
//! | `503` | the raw log refused the append ([`callhook_rawlog::AppendError`]) | `Retry-After` |
//!
//! Vendor data never yields a `500` or a panic. Every response carries `x-request-id`, the id
//! also stored in the record. hyper itself answers a head it cannot accept, without calling the
//! handler, and closes the connection: `431` over `max_header_bytes` or over 100 header fields,
//! `414` for a URI over 65 534 bytes in a head within the limit, `400` when malformed. Headers
//! that take longer than `header_read_timeout_ms` close the connection.
//!
//! # Hostile clients
//!
//! Connection limits, idle shedding and per-connection timeouts keep slow, idle, oversized and
//! pipelining clients from starving well-behaved ones: see the `server` module's guarantees.
//! [`raise_fd_limit`] lifts the process's open-file soft limit so that the kernel's default
//! (often 1024) is not reached before `max_connections`.
//!
//! # Modules
//!
//! - [`config`]: the `[ingest]` table and per-source settings, validated without I/O;
//! - [`auth`]: per-source token, IP allowlist, HMAC, Standard Webhooks, CooCenter checks;
//! - [`rate_limit`]: the per-source token bucket behind `429`;
//! - `handler`: routing, limits, the record and the ack; `server`: accept loops, connection
//!   limits and idle shedding, timeouts, graceful shutdown, and [`serve_io`] (one connection
//!   over any byte stream, for the fuzz harness); `admin`: `/metrics`, `/healthz`, `/readyz`,
//!   `/tap`; [`tap`]: the lossy live fan-out behind `callhook tap` and the console;
//!   `fd_limit`: [`raise_fd_limit`];
//! - `metrics` and `events`: the `callhook_ingest_*` metrics and the typed events that update
//!   them; `partition_key`, `record`, `request_id`: helpers of the handler.

mod admin;
pub mod auth;
pub mod config;
mod events;
mod fd_limit;
mod handler;
mod metrics;
mod partition_key;
pub mod rate_limit;
mod record;
mod request_id;
mod server;
pub mod tap;

pub use admin::{AdminState, LogReadiness, Readiness};
pub use auth::{
    AuthFailure, CooCenterWebkeyConfig, HmacConfig, Secret, SignatureEncoding, SourceAuth,
    SourceAuthConfig, StandardWebhooksConfig,
};
pub use config::{ConfigError, IngestConfig, IngestSettings, SourceSettings};
pub use fd_limit::raise_fd_limit;
pub use handler::{IngestError, Receiver};
pub use rate_limit::{RateLimit, RateLimitConfig};
pub use server::{run, run_admin, run_service, serve_io};
pub use tap::{AdminBody, ChannelBody, TapAccess, TapFilter, TapHub, TapItem, TapKind};
