//! The normalizer as a Kafka consumer-group member: the raw topic in, the projection sinks
//! (SQLite, PostgreSQL, or both) and (optionally) the Kafka sink out.
//!
//! # Guarantee: each event is in each projection sink exactly once; in the Kafka topics at
//! # least once, or exactly once with transactions
//!
//! Below, "SQLite" stands for the projection sinks ([`callhook_sinks::ProjectionSinks`]):
//! each of SQLite and PostgreSQL commits a batch with its own offsets in one transaction, a
//! partition is assigned at the smaller of their offsets, and a sink skips a batch it holds
//! (see `callhook_sinks::projections`). PostgreSQL is how normalizers on several hosts share
//! one database; the compacted calls topic gets each touched call's new row in the Kafka step
//! ([`produce`]).
//!
//! - **In order per partition.** One `BaseConsumer` on the loop's own thread reads the
//!   partitions this member is assigned (`enable.auto.commit=false`,
//!   `enable.auto.offset.store=false`); a batch is records of several partitions, each in
//!   offset order, mapped by the same code as the embedded loop
//!   ([`crate::pipeline::records`]).
//! - **SQLite is authoritative for where to resume.** On every assignment each partition is
//!   assigned *at* the SQLite sink's stored offset for this consumer (`<group>@<topic>`), or
//!   at its start when none is stored. The SQLite sink commits a batch's events, dedupe keys,
//!   dead letters and next offsets in one transaction, so a record is either wholly in SQLite
//!   or read again; re-reads are dropped by the dedupe keys and the unique event ids.
//! - **Every sink confirms before the offsets move.** A batch goes to the Kafka sink first
//!   and the loop waits for every delivery report (or the transaction's commit); only then
//!   does the SQLite sink commit the batch with its offsets; only then are the offsets
//!   committed to the consumer group (for lag tooling). A batch that any sink refuses is
//!   abandoned, the partitions are sought back to its first records, and it is read again
//!   after a backoff: offsets never pass an unconfirmed record.
//! - **Rebalances.** The callback runs inside `poll`, between batches, so nothing is half
//!   committed when it runs; records read since the last commit are abandoned and read again
//!   by the partition's next owner from the SQLite offsets ([`rebalance`]).
//! - **Kafka topics.** Records below the group's committed offset (read at assignment) are
//!   already in the topics and are not produced again; a push whose dedupe key SQLite already
//!   holds is a vendor's re-send and is not produced either. Without transactions a crash
//!   between Kafka's confirmation and the SQLite commit re-sends that batch (at least once,
//!   same `ce_id`s); with `transactional_id` the records and the consumed offsets commit in
//!   one Kafka transaction before SQLite commits, so neither store ever holds a batch twice.
//!
//! The reasoning, including the rule between the two offset stores, is in `design.md` beside
//! this file. Modules: [`config`] (`[normalizer.kafka]`), [`consumer`] (the loop),
//! [`rebalance`] (the callback), [`batch`], [`produce`] (the Kafka-sink step), [`metrics`],
//! [`replay`] (`callhook replay` in Kafka mode: the raw topic re-produced as events).

pub mod batch;
pub mod config;
pub mod consumer;
pub mod error;
pub mod isolation;
pub mod metrics;
pub mod produce;
pub mod rebalance;
pub mod replay;

pub use config::{KafkaConsumerConfig, KafkaConsumerSettings};
pub use consumer::KafkaNormalizer;
pub use error::KafkaPipelineError;
