//! The PostgreSQL sink: the SQLite sink's tables (`events`, `calls`, `agents`,
//! `dead_letters`, `consumer_offsets`) in a database that normalizers on several hosts share.
//!
//! # Guarantee: after any crash, each event is in the database exactly once
//!
//! [`PostgresSink::commit_batch`] writes a whole [`crate::SinkBatch`] in one transaction: the
//! events, the `agents` and `calls` rows they change, the dead letters, and the consumer's
//! next offsets. Either all of it commits or none of it does, and the consumer seeks to the
//! stored offsets on start and on every partition assignment, so it re-reads exactly the
//! records whose effects were lost. Beside the SQLite sink, each keeps its own offsets and
//! the consumer starts from the smaller ([`crate::projections`]); a batch whose offsets this
//! database already holds writes nothing (checked inside the transaction, under an advisory
//! lock per partition, so two normalizers that briefly both hold a partition during a
//! rebalance cannot both count it).
//!
//! Re-delivery is harmless: event ids are deterministic and `events.id` is unique, so a push
//! whose first event is stored is a re-send and is skipped; dead letters are unique by
//! `raw_ref`; the `calls` row is a fold of the call's stored events, recomputed under a
//! per-call advisory lock with the fold the SQLite sink uses ([`crate::calls_fold`]), so it is
//! the same row whatever the arrival order and whichever host wrote which event; an `agents`
//! row is only replaced by a greater `(time, id)`.
//!
//! # Failures
//!
//! - A lost connection, a serialization failure or deadlock, a statement timeout: the commit
//!   returns a retryable error, nothing is written, and the normalizer retries the batch with
//!   backoff (`/readyz` says `retrying` meanwhile); the next attempt reconnects.
//! - A value PostgreSQL refuses (a NUL character in text or JSON, a time outside its range,
//!   any SQLSTATE class 22 error): that push is stored as a dead letter with reason
//!   `sink_rejected` and the server's message, and the rest of the batch commits.
//!
//! # Threading
//!
//! A [`PostgresSink`] owns one connection of the synchronous `postgres` client (tokio-postgres
//! driven by its own small runtime) and every method blocks; like the SQLite sink it lives on
//! the normalizer's own thread.
//!
//! Modules: [`config`], [`schema`] (tables and versioned migrations), [`sink`], `writes` (the
//! batch's statements), [`metrics`], [`error`].

pub mod config;
pub mod error;
mod journey;
pub mod metrics;
pub mod schema;
mod sequence;
pub mod sink;
mod stale;
mod tls;
mod writes;

pub use config::{PostgresSinkConfig, PostgresSinkSettings, SslMode};
pub use error::{PostgresSinkError, Result};
pub use sink::PostgresSink;
pub use writes::SINK_REJECTED;
