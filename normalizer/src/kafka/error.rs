//! Errors of the Kafka consume loop that a retry will not fix.

use callhook_sinks::KafkaSinkError;
use rdkafka::error::KafkaError;

/// Why the Kafka consume loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaPipelineError {
    /// The raw-topic consumer could not be created (an invalid librdkafka property).
    #[error("cannot create the raw-topic consumer: {0}")]
    Consumer(#[source] KafkaError),
    /// The subscription was refused.
    #[error("cannot subscribe to topic `{topic}`: {source}")]
    Subscribe {
        /// The raw topic.
        topic: String,
        /// The client error.
        source: KafkaError,
    },
    /// The Kafka sink cannot continue (fenced, misconfigured).
    #[error("kafka sink: {0}")]
    Sink(#[from] KafkaSinkError),
    /// An assignment arrived but the SQLite offsets to seek to could not be read.
    #[error("cannot take partitions of `{topic}`: {reason}")]
    Assignment {
        /// The raw topic.
        topic: String,
        /// What failed.
        reason: String,
    },
}
