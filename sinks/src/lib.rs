//! Sinks for canonical events: where the normalizer's output comes to rest.
//!
//! The normalizer's consume loop maps raw pushes into [`callhook_schemas::CloudEvent`]s and
//! hands each batch, together with the raw-log offsets it consumed, to a sink as a
//! [`SinkBatch`]. Modules:
//!
//! - [`batch`]: the batch a sink commits ([`SinkBatch`], [`SinkItem`]) and what it reports back
//!   ([`CommitOutcome`]).
//! - [`sqlite`]: the embedded SQLite sink (`<data-dir>/callhook.db`): the `events` log, the
//!   order-independent `calls` and `agents` projections, dead letters, consumer offsets and the
//!   persistent half of the dedupe store.
//! - [`postgres`]: the PostgreSQL sink: the same tables with native types, for deployments
//!   whose normalizers run on several hosts; exactly once through offsets in the same
//!   transaction, as for SQLite.
//! - [`projections`]: the SQLite and PostgreSQL sinks side by side ([`ProjectionSinks`]), each
//!   with its own consumed offsets.
//! - [`calls_fold`] and [`agents`]: the pure `calls` and `agents` row rules both databases
//!   share, so their rows are equal for the same events; [`call_status`] the row's `status`.
//! - [`sequence`]: the per-call `sequence` of each event, assigned at first store.
//! - [`kafka`]: the Kafka sink (Kafka mode): canonical events as CloudEvents in Kafka binary
//!   mode keyed by subject, dead letters with the raw bytes; idempotent or transactional.
//! - [`metrics`]: the `callhook_sink_*` metric families every sink shares.
//!
//! Guarantee (SQLite sink): after any crash each event is in the sink exactly once. The events,
//! the pushes' dedupe keys, the dead letters and the consumer offsets of a batch are committed
//! in one fsync'd SQLite transaction, and the consumer resumes from
//! [`sqlite::SqliteSink::stored_offsets`]; see the [`sqlite`] module for how that is kept.

pub mod agents;
pub mod batch;
pub mod call_status;
pub mod calls_fold;
pub mod failpoints;
pub mod kafka;
pub mod metrics;
pub mod postgres;
pub mod projections;
pub mod sequence;
pub mod sqlite;

pub use batch::{CommitOutcome, EventKey, SinkBatch, SinkEvent, SinkItem};
pub use kafka::{KafkaSink, KafkaSinkConfig, KafkaSinkError, KafkaSinkSettings};
pub use postgres::{PostgresSink, PostgresSinkConfig, PostgresSinkError, PostgresSinkSettings};
pub use projections::{ProjectionSettings, ProjectionSinks, SinkError};
pub use sqlite::{SqliteSink, SqliteSinkConfig, SqliteSinkError, SqliteSinkSettings};
