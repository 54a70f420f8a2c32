//! Errors of starting and closing the Kafka raw log. Append failures are
//! [`crate::AppendError`], the shape shared with the embedded log.

use rdkafka::error::KafkaError;

use super::admin::AdminError;
use super::config::ConfigError;
use crate::embedded::EmbeddedLogError;

/// Why the Kafka raw log could not start or close cleanly.
#[derive(Debug, thiserror::Error)]
pub enum KafkaLogError {
    /// The `[log.kafka]` config is invalid.
    #[error("invalid kafka raw log config: {0}")]
    Config(#[from] ConfigError),
    /// A producer could not be created (an invalid librdkafka property, usually).
    #[error("cannot create the kafka {role} producer: {source}")]
    Producer {
        /// `direct` or `forwarder`.
        role: &'static str,
        /// The client error.
        #[source]
        source: KafkaError,
    },
    /// The spool could not be opened or closed.
    #[error("spool: {0}")]
    Spool(#[from] EmbeddedLogError),
    /// The raw topic could not be created.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The forwarder thread could not be started.
    #[error("cannot start the spool forwarder thread: {0}")]
    SpawnForwarder(#[source] std::io::Error),
    /// The forwarder thread panicked.
    #[error("the spool forwarder thread panicked")]
    ForwarderPanicked,
    /// `start` was called outside a tokio runtime.
    #[error("the kafka raw log must be started inside a tokio runtime")]
    NoRuntime,
}

/// The result type of the Kafka raw log.
pub type Result<T> = std::result::Result<T, KafkaLogError>;

impl KafkaLogError {
    /// Returns whether retrying later may succeed (as opposed to a config or file problem).
    pub fn is_retryable(&self) -> bool {
        match self {
            KafkaLogError::Spool(error) => error.is_retryable(),
            KafkaLogError::Admin(AdminError::Request { .. }) => true,
            KafkaLogError::Config(_)
            | KafkaLogError::Producer { .. }
            | KafkaLogError::Admin(_)
            | KafkaLogError::SpawnForwarder(_)
            | KafkaLogError::ForwarderPanicked
            | KafkaLogError::NoRuntime => false,
        }
    }
}
