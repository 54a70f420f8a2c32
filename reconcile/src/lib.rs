//! `callhook-reconcile`: reconciliation with the 7moor v7 CDR query API.
//!
//! Webhooks get lost (the vendor gives up retrying, the endpoint is down longer than it
//! retries). For a 7moor source with `[sources.<name>.reconcile]`, a pass queries
//! `/openapi/v1/call/cdr/list` for the calls of a span, looks each one up in the SQLite sink
//! (`call.cdr` events of the source with that call id), and appends every missing CDR to the
//! raw log as a `cdr` push marked `x-callhook-origin: reconcile`. The normal path then maps,
//! dedupes and projects it; its dedupe key is the webhook's (`7moor.v7:cdr:<call id>`), so a
//! CDR is stored once whichever of the webhook and the backfill comes first.
//!
//! Limits honoured: queries span at most 7 days ([`windows`]), pages follow `data.count`,
//! at most 20 requests per minute per account ([`rate`]), rate-limit answers back off.
//!
//! Modules: [`config`] (the table, validated without I/O), [`sign`] (`m7-sign`), [`client`]
//! (the request and the response envelope), [`transport`] (HTTP/1.1 over TCP or TLS), [`windows`], [`rate`], [`known`] (the sink
//! lookup), [`backfill`] (query record to push), [`pass`] (one pass), [`runner`] (the periodic
//! loop of `serve`), [`telemetry`]. The signing rule and the field mapping are in
//! `normalizer/docs/7moor-reconcile.md`.

pub mod backfill;
pub mod client;
pub mod config;
pub mod known;
pub mod pass;
pub mod rate;
pub mod runner;
pub mod sign;
pub mod telemetry;
pub mod transport;
pub mod windows;

pub use config::{ReconcileConfig, ReconcileConfigError, ReconcileSettings};
pub use pass::{PassError, PassReport, Reconciler};
