//! The normalizer: vendor pushes in, canonical call events out.
//!
//! - [`map_push`] maps one raw push ([`RawPush`]) from a configured source ([`SourceContext`])
//!   to its dedupe key and zero or more [`callhook_schemas::CloudEvent`]s, or a typed
//!   [`MapError`] with a bounded reason code. Mapping is pure and never panics.
//! - `vendors/` holds one mapper per dialect: `sevenmoor` (v7 JSON and legacy v2 query
//!   strings, told apart by shape), `coocenter`, `uincall`.
//! - Shared pieces: [`payload`] (query + body into one field map: JSON, JSON5, JS literals,
//!   forms), [`fields`] (consuming typed access; leftovers become `vendor_fields`), [`time`]
//!   (every vendor time format), [`phone`] (raw + E.164), [`build`] (ids, envelopes, dedupe keys).
//! - [`stale`]: stale calls: the sweep that finds calls with no terminal event, the notices it
//!   appends to the raw log, and their `call.stale` events.
//! - The consume-map-sink loops: [`pipeline`] over the embedded raw log, [`kafka`] as a member
//!   of a Kafka consumer group over the raw topic (SQLite sink, optional Kafka sink); both map,
//!   dedupe and dead-letter through [`pipeline::records`].

pub mod build;
mod config;
pub mod dedupe;
pub mod error;
pub mod failpoints;
pub mod fields;
pub mod kafka;
pub mod lenient;
pub mod limits;
pub mod mapping;
pub mod payload;
pub mod phone;
pub mod pipeline;
pub mod push;
pub mod replay;
pub mod stale;
pub mod supervisor;
pub mod tap;
mod telemetry;
pub mod time;
pub mod vendors;

pub use build::{Draft, Mapped};
pub use error::MapError;
pub use kafka::{KafkaConsumerConfig, KafkaConsumerSettings, KafkaNormalizer};
pub use mapping::{map_push, mapping_version, MAPPING_VERSION};
pub use pipeline::{Normalizer, NormalizerConfig, NormalizerSettings, PipelineError};
pub use push::{china_offset, Dialect, RawPush, SourceContext};
