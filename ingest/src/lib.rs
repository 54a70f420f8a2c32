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
//! | `503` | the raw log refused the append ([`callhook_rawlog::AppendError`]) | `Retry-After` |
//!
//! Vendor data never yields a `500` or a panic. Every response carries `x-request-id`, the id
//! also stored in the record. Headers that take longer than `header_read_timeout_ms` close
//! the connection.
//!
//! # Modules
//!
//! - [`config`]: the `[ingest]` table and per-source settings, validated without I/O;
//! - [`auth`]: per-source token, IP allowlist, HMAC, Standard Webhooks, CooCenter checks;
//! - `handler`: routing, limits, the record and the ack; `server`: accept loops, connection
//!   cap, graceful shutdown, and [`serve_connection`] (one connection over any byte stream,
//!   for the fuzz harness); `admin`: `/metrics`, `/healthz`, `/readyz`;
//! - `metrics` and `events`: the `callhook_ingest_*` metrics and the typed events that update
//!   them; `partition_key`, `record`, `request_id`: helpers of the handler.

mod admin;
pub mod auth;
pub mod config;
mod events;
mod handler;
mod metrics;
mod partition_key;
mod record;
mod request_id;
mod server;

pub use admin::AdminState;
pub use auth::{
    AuthFailure, CooCenterWebkeyConfig, HmacConfig, Secret, SignatureEncoding, SourceAuth,
    SourceAuthConfig, StandardWebhooksConfig,
};
pub use config::{ConfigError, IngestConfig, IngestSettings, SourceSettings};
pub use handler::{IngestError, Receiver};
pub use server::{run, run_admin, serve_connection};
