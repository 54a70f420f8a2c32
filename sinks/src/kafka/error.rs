//! The Kafka sink's error type.

use std::time::Duration;

use rdkafka::error::KafkaError;

/// The result type of the Kafka sink.
pub type Result<T> = std::result::Result<T, KafkaSinkError>;

/// Why the Kafka sink could not be built, or a batch was not confirmed. A batch that failed is
/// retried as a whole: the consumed offsets never move past it.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The configuration is unusable.
    #[error("invalid kafka sink config: {0}")]
    InvalidConfig(String),
    /// librdkafka refused the producer config.
    #[error("cannot create the kafka producer: {0}")]
    Create(#[source] KafkaError),
    /// An event could not be encoded as JSON.
    #[error("cannot encode event `{id}`: {source}")]
    Encode {
        /// The event id.
        id: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// librdkafka refused to enqueue a record (other than a full queue, which is waited out).
    #[error("cannot enqueue a record for topic `{topic}`: {source}")]
    Enqueue {
        /// The topic.
        topic: String,
        /// The librdkafka error.
        source: KafkaError,
    },
    /// Some records of the batch were not delivered.
    #[error("{failed} of {sent} records were not delivered; first error: {first}")]
    Delivery {
        /// Records whose delivery report was an error.
        failed: u64,
        /// Records sent in the batch.
        sent: u64,
        /// The first delivery error.
        first: String,
    },
    /// The delivery reports did not all arrive in time.
    #[error("delivery reports did not all arrive within {0:?}")]
    DeliveryTimeout(Duration),
    /// A transaction step failed; `fatal` when the producer cannot be used again (fenced by a
    /// newer instance with the same `transactional.id`, or a fatal idempotence error).
    #[error("kafka transaction step `{step}` failed: {source}")]
    Transaction {
        /// `init`, `begin`, `send_offsets`, `commit` or `abort`.
        step: &'static str,
        /// The librdkafka error.
        source: KafkaError,
        /// Whether the producer is unusable from now on.
        fatal: bool,
    },
}

impl KafkaSinkError {
    /// Returns true when retrying the batch may succeed (the cluster was unreachable, a
    /// delivery timed out, a transaction was aborted); false when the config or the producer
    /// is unusable and the process should stop (a supervisor restarts it).
    pub fn is_retryable(&self) -> bool {
        match self {
            KafkaSinkError::InvalidConfig(_)
            | KafkaSinkError::Create(_)
            | KafkaSinkError::Encode { .. } => false,
            KafkaSinkError::Enqueue { .. }
            | KafkaSinkError::Delivery { .. }
            | KafkaSinkError::DeliveryTimeout(_) => true,
            KafkaSinkError::Transaction { fatal, .. } => !fatal,
        }
    }

    /// Builds a [`KafkaSinkError::Transaction`], classifying the error as fatal or not.
    pub(crate) fn transaction(step: &'static str, source: KafkaError) -> KafkaSinkError {
        let fatal = match &source {
            KafkaError::Transaction(error) => error.is_fatal(),
            _ => false,
        };
        KafkaSinkError::Transaction {
            step,
            source,
            fatal,
        }
    }
}
