//! The Kafka sink: canonical events and dead letters to Kafka topics.
//!
//! # Guarantee: a batch is confirmed only when Kafka has every record of it
//!
//! The normalizer sends a whole batch (every record enqueued at once, many in flight) and
//! calls [`KafkaSink::commit_batch`], which returns `Ok` only when:
//!
//! - without `transactional_id`: every record's delivery report arrived and none failed. The
//!   producer is idempotent (`enable.idempotence=true`; acks and retries are librdkafka's), so
//!   records of one partition stay in order and a retry inside librdkafka never duplicates.
//!   The consumer stores its offsets only after that, so the topics are **at least once**: a
//!   crash between the delivery reports and the offset commit re-sends the batch (with the
//!   same deterministic `ce_id`s).
//! - with `transactional_id`: the batch's records **and the consumed raw-topic offsets** were
//!   committed in one Kafka transaction ([`KafkaSink::commit_batch`] with the consumer's
//!   group metadata) — **exactly once** into the topics for `read_committed` consumers.
//!
//! A batch that fails (or is abandoned on a rebalance) is aborted with
//! [`KafkaSink::abort_batch`] and retried whole; the consumed offsets never pass it.
//!
//! The record layout (CloudEvents binary mode; dead letters with the raw bytes) is in
//! [`encode`]. Modules: [`config`] (`[sink.kafka]`), [`encode`], [`sink`], [`metrics`],
//! [`error`].

pub mod config;
pub mod encode;
pub mod error;
pub mod metrics;
pub mod sink;

pub use config::{
    KafkaSinkConfig, KafkaSinkSettings, DEFAULT_DEAD_LETTERS_TOPIC, DEFAULT_EVENTS_TOPIC,
};
pub use encode::{header, KafkaDeadLetter};
pub use error::{KafkaSinkError, Result};
pub use sink::KafkaSink;
