//! Topic creation with the Kafka admin client, shared by the raw log (the raw topic) and the
//! normalizer side (canonical and dead-letter topics).
//!
//! [`ensure_topic`] is idempotent: a topic that already exists is left as it is (its partition
//! count is not changed, since that would move keys between partitions), so every process may
//! call it at start without coordination.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

/// How long [`ensure_topic`] waits for the broker.
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a topic could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin client could not be created (an invalid librdkafka property, usually).
    #[error("cannot create the kafka admin client: {0}")]
    Client(#[source] KafkaError),
    /// The request did not complete (broker unreachable, timeout).
    #[error("cannot create topic `{topic}`: {source}")]
    Request {
        /// The topic.
        topic: String,
        /// The client error.
        #[source]
        source: KafkaError,
    },
    /// The broker refused to create the topic.
    #[error("broker refused to create topic `{topic}`: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The partition count does not fit Kafka's `i32`.
    #[error("topic `{topic}` cannot have {partitions} partitions")]
    TooManyPartitions {
        /// The topic.
        topic: String,
        /// The count asked for.
        partitions: u32,
    },
}

/// What [`ensure_topic`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    /// The topic was created by this call.
    Created,
    /// The topic already existed and was left as it is.
    Existed,
}

/// A topic to create when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec<'a> {
    /// The topic name.
    pub name: &'a str,
    /// Partitions when created.
    pub partitions: u32,
    /// Replication factor when created; `-1` uses the broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// Topic configs set at creation (e.g. `cleanup.policy`); an existing topic keeps its own.
    pub configs: &'a [(&'a str, &'a str)],
}

/// Creates topic `name` with `partitions` partitions (broker-default replication) on the
/// cluster at `brokers` unless it exists. Waits at most [`DEFAULT_ADMIN_TIMEOUT`].
pub async fn ensure_topic(
    brokers: &str,
    name: &str,
    partitions: u32,
) -> Result<TopicStatus, AdminError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    let spec = TopicSpec {
        name,
        partitions,
        replication_factor: -1,
        configs: &[],
    };
    ensure_topic_with(&config, &spec, DEFAULT_ADMIN_TIMEOUT).await
}

/// Creates the topic of `spec` unless it exists, with an admin client built from
/// `client_config` (which carries `bootstrap.servers` and any security settings). Waits at
/// most `timeout` for the broker.
pub async fn ensure_topic_with(
    client_config: &ClientConfig,
    spec: &TopicSpec<'_>,
    timeout: Duration,
) -> Result<TopicStatus, AdminError> {
    let partitions = i32::try_from(spec.partitions).map_err(|_| AdminError::TooManyPartitions {
        topic: spec.name.to_owned(),
        partitions: spec.partitions,
    })?;
    // The admin client polls on its own librdkafka thread; the returned future only waits on
    // a channel, so awaiting it does not block the runtime.
    let admin: AdminClient<DefaultClientContext> =
        client_config.create().map_err(AdminError::Client)?;
    let mut topic = NewTopic::new(
        spec.name,
        partitions,
        TopicReplication::Fixed(spec.replication_factor),
    );
    for (key, value) in spec.configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|source| AdminError::Request {
            topic: spec.name.to_owned(),
            source,
        })?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(TopicStatus::Created),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(TopicStatus::Existed),
        Some(Err((topic, code))) => Err(AdminError::Refused { topic, code }),
        None => Err(AdminError::Request {
            topic: spec.name.to_owned(),
            source: KafkaError::AdminOpCreation("the broker returned no topic result".to_owned()),
        }),
    }
}
