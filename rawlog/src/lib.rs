//! The raw push log.
//!
//! Every push the receiver acknowledges is first appended here, byte for byte, with its request
//! metadata. The log has Kafka-topic semantics (partitions, per-partition offsets, keys,
//! headers, committed offsets per consumer group) so that the normalizer consumes the embedded
//! log and a Kafka topic through the same shape of API.
//!
//! Guarantee: [`LogAppender::append`] resolves `Ok` only once the record is durable (for the
//! embedded log: committed to SQLite in WAL mode with `synchronous=FULL`, i.e. fsync'd, by a
//! group commit that covers many appends). A record that was acknowledged survives a crash.
//!
//! Modules: [`record`] (the record and its metadata), [`embedded`] (the SQLite implementation),
//! [`kafka`] (the Kafka implementation with its local spool), [`kafka_codec`] (the record on the
//! raw topic).

pub mod embedded;
pub mod kafka;
pub mod kafka_codec;
pub mod record;

use std::future::Future;
use std::pin::Pin;

pub use record::{header_value_bytes, header_value_text, Position, RawRecord, StoredRecord};

/// A boxed future returned by the object-safe log traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an append was not made durable. Every variant maps to `503` with `Retry-After`.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The log holds as many unconsumed records (or pending appends) as it is allowed to.
    #[error("raw log is over its bound ({0})")]
    Overloaded(&'static str),
    /// The log cannot take writes (disk full, I/O error, broker down, shutting down).
    #[error("raw log unavailable: {0}")]
    Unavailable(String),
}

impl AppendError {
    /// Returns the bounded reason label used in metrics (`overloaded` or `unavailable`).
    pub fn reason(&self) -> &'static str {
        match self {
            AppendError::Overloaded(_) => "overloaded",
            AppendError::Unavailable(_) => "unavailable",
        }
    }

    /// Returns the number of seconds a client should wait before retrying.
    pub fn retry_after_seconds(&self) -> u32 {
        match self {
            AppendError::Overloaded(_) => 1,
            AppendError::Unavailable(_) => 5,
        }
    }
}

/// The write side of a raw log, shared by every receiver connection.
pub trait LogAppender: Send + Sync + 'static {
    /// Appends one record and resolves once it is durable. `key` picks the partition (the call
    /// id when the receiver finds one cheaply, else the source name).
    fn append(
        &self,
        key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, Result<Position, AppendError>>;

    /// Returns `Ok(())` while the log takes writes, else the reason it does not (for `/readyz`).
    fn check_writable(&self) -> Result<(), String>;

    /// Returns a note on a degraded but writable state for `/readyz` (the Kafka log says when
    /// its spool is in use and how deep it is); `None` when there is nothing to say.
    fn status_detail(&self) -> Option<String> {
        None
    }
}
