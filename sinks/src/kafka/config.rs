//! The Kafka sink's configuration (`[sink.kafka]`) and its validation into
//! [`KafkaSinkSettings`].
//!
//! The cluster (`bootstrap.servers` and the shared client properties) is not configured here:
//! it is the raw log's (`[log.kafka] brokers` and `client`), passed to
//! [`KafkaSinkConfig::validate`] as a [`ClientConfig`]. Validation does no I/O and rejects
//! producer overrides that conflict with a typed option or weaken a guarantee
//! ([`GUARDED_PRODUCER_PROPERTIES`]), naming the key.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::error::{KafkaSinkError, Result};

/// The default topic of canonical events.
pub const DEFAULT_EVENTS_TOPIC: &str = "callhook.events";

/// The default topic of dead letters.
pub const DEFAULT_DEAD_LETTERS_TOPIC: &str = "callhook.deadletters";

/// The default compacted topic of `calls` rows.
pub const DEFAULT_CALLS_TOPIC: &str = "callhook.calls";

/// Topic configs of the calls topic when callhook creates it: compacted (the latest row per
/// call is kept), segments rolled hourly so compaction can reach them, and compacted once a
/// tenth of the log is superseded rows.
pub const CALLS_TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.ms", "3600000"),
    ("min.cleanable.dirty.ratio", "0.1"),
];

/// The longest `delivery_timeout_ms` accepted (one hour).
const MAX_DELIVERY_TIMEOUT_MS: u64 = 3_600_000;

/// The largest partition count accepted for a topic callhook creates.
const MAX_TOPIC_PARTITIONS: u32 = 10_000;

/// The largest `max.in.flight.requests.per.connection` that keeps idempotent ordering.
const MAX_IN_FLIGHT_FOR_IDEMPOTENCE: u32 = 5;

/// librdkafka producer properties callhook sets itself, with why they cannot be overridden.
pub const GUARDED_PRODUCER_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "is set from `[log.kafka] brokers`"),
    ("metadata.broker.list", "is set from `[log.kafka] brokers`"),
    (
        "enable.idempotence",
        "must stay `true`: it keeps per-partition order and avoids duplicates on retries",
    ),
    (
        "acks",
        "is chosen by librdkafka for the idempotent producer (`all`)",
    ),
    (
        "request.required.acks",
        "is chosen by librdkafka for the idempotent producer (`all`)",
    ),
    ("transactional.id", "is set from `transactional_id`"),
    (
        "retries",
        "is left to librdkafka (the idempotent producer needs its retries)",
    ),
    (
        "message.send.max.retries",
        "is left to librdkafka (the idempotent producer needs its retries)",
    ),
    ("message.timeout.ms", "is set from `delivery_timeout_ms`"),
    ("delivery.timeout.ms", "is set from `delivery_timeout_ms`"),
    (
        "delivery.report.only.error",
        "would suppress the delivery reports the consumed offsets wait for",
    ),
    (
        "partitioner",
        "must be the Java-compatible `murmur2_random` so every producer keys a subject to the same partition",
    ),
];

/// `[sink.kafka]`: canonical events and dead letters to Kafka topics (Kafka mode only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Produce canonical events and dead letters to Kafka. Needs `[log] kind = "kafka"`;
    /// default `false`.
    pub enabled: bool,
    /// The topic of canonical events (CloudEvents, Kafka binary mode, keyed by `subject`).
    pub events_topic: String,
    /// The topic of dead letters (the raw push bytes, the reason in headers).
    pub dead_letters_topic: String,
    /// The compacted topic of `calls` rows: on every change to a call, its new row as JSON,
    /// keyed by `<source>/<call id>`, with a version that only grows (`callhook.version`).
    pub calls_topic: String,
    /// Partitions of each topic when callhook creates it (an existing topic keeps its own).
    pub topic_partitions: u32,
    /// Replication factor of each topic when callhook creates it; `-1` uses the broker's
    /// `default.replication.factor`.
    pub topic_replication_factor: i32,
    /// Create the two topics with the admin client when they are missing, at start.
    pub create_topics: bool,
    /// When set, every batch is produced in one Kafka transaction together with the consumed
    /// raw-topic offsets (exactly once into the topics). Must be unique per normalizer process
    /// and stable across its restarts. Unset: idempotent producer, at least once.
    pub transactional_id: Option<String>,
    /// How long a batch waits for the delivery reports of all its records (or its transaction
    /// to commit) before it is retried, in milliseconds (librdkafka `message.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// librdkafka properties for this producer only, e.g. `"compression.type" = "zstd"`.
    /// Keys that conflict with a typed option or a guarantee are rejected.
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            enabled: false,
            events_topic: DEFAULT_EVENTS_TOPIC.to_owned(),
            dead_letters_topic: DEFAULT_DEAD_LETTERS_TOPIC.to_owned(),
            calls_topic: DEFAULT_CALLS_TOPIC.to_owned(),
            topic_partitions: 6,
            topic_replication_factor: -1,
            create_topics: true,
            transactional_id: None,
            delivery_timeout_ms: 30_000,
            producer: BTreeMap::from([("linger.ms".to_owned(), "5".to_owned())]),
        }
    }
}

/// A validated [`KafkaSinkConfig`].
#[derive(Debug, Clone)]
pub struct KafkaSinkSettings {
    /// The cluster: `bootstrap.servers` and the shared client properties.
    pub client: ClientConfig,
    /// See [`KafkaSinkConfig::events_topic`].
    pub events_topic: String,
    /// See [`KafkaSinkConfig::dead_letters_topic`].
    pub dead_letters_topic: String,
    /// See [`KafkaSinkConfig::calls_topic`].
    pub calls_topic: String,
    /// See [`KafkaSinkConfig::topic_partitions`].
    pub topic_partitions: NonZeroU32,
    /// See [`KafkaSinkConfig::topic_replication_factor`].
    pub topic_replication_factor: i32,
    /// See [`KafkaSinkConfig::create_topics`].
    pub create_topics: bool,
    /// See [`KafkaSinkConfig::transactional_id`].
    pub transactional_id: Option<String>,
    /// See [`KafkaSinkConfig::delivery_timeout_ms`].
    pub delivery_timeout: Duration,
    /// See [`KafkaSinkConfig::producer`].
    pub producer: BTreeMap<String, String>,
}

impl KafkaSinkConfig {
    /// Checks the values and returns typed settings for the cluster `client` (its
    /// `bootstrap.servers` and shared properties). Does no I/O.
    pub fn validate(&self, client: ClientConfig) -> Result<KafkaSinkSettings> {
        check_topic("events_topic", &self.events_topic)?;
        check_topic("dead_letters_topic", &self.dead_letters_topic)?;
        check_topic("calls_topic", &self.calls_topic)?;
        if self.events_topic == self.dead_letters_topic {
            return Err(invalid(
                "dead_letters_topic",
                "must differ from `events_topic`",
            ));
        }
        if [&self.events_topic, &self.dead_letters_topic].contains(&&self.calls_topic) {
            return Err(invalid(
                "calls_topic",
                "must differ from `events_topic` and `dead_letters_topic` (it is compacted)",
            ));
        }
        let topic_partitions = NonZeroU32::new(self.topic_partitions)
            .filter(|count| count.get() <= MAX_TOPIC_PARTITIONS)
            .ok_or_else(|| {
                invalid(
                    "topic_partitions",
                    &format!("must be between 1 and {MAX_TOPIC_PARTITIONS}"),
                )
            })?;
        if self.topic_replication_factor == 0 || self.topic_replication_factor < -1 {
            return Err(invalid(
                "topic_replication_factor",
                "must be at least 1, or -1 for the broker's default",
            ));
        }
        if !(1..=MAX_DELIVERY_TIMEOUT_MS).contains(&self.delivery_timeout_ms) {
            return Err(invalid(
                "delivery_timeout_ms",
                &format!("must be between 1 and {MAX_DELIVERY_TIMEOUT_MS}"),
            ));
        }
        let transactional_id = match &self.transactional_id {
            Some(id) if id.trim().is_empty() => {
                return Err(invalid("transactional_id", "must not be empty when set"));
            }
            other => other.clone(),
        };
        check_producer_overrides(&self.producer)?;
        Ok(KafkaSinkSettings {
            client,
            events_topic: self.events_topic.clone(),
            dead_letters_topic: self.dead_letters_topic.clone(),
            calls_topic: self.calls_topic.clone(),
            topic_partitions,
            topic_replication_factor: self.topic_replication_factor,
            create_topics: self.create_topics,
            transactional_id,
            delivery_timeout: Duration::from_millis(self.delivery_timeout_ms),
            producer: self.producer.clone(),
        })
    }
}

impl KafkaSinkSettings {
    /// Returns the producer's librdkafka config: the cluster's, the `producer` table, then the
    /// guarded properties (idempotence, partitioner, timeout, `transactional.id`).
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client.clone();
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        if let Some(id) = &self.transactional_id {
            config.set("transactional.id", id);
            // The transaction must outlive one batch's slowest delivery.
            let timeout_ms = (self.delivery_timeout.as_millis() + 10_000).to_string();
            config.set("transaction.timeout.ms", timeout_ms);
        }
        config
    }
}

/// Rejects producer overrides that conflict with a typed option or a guarantee.
fn check_producer_overrides(overrides: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in overrides {
        let name = key.trim();
        let guarded = |reason: &str| {
            KafkaSinkError::InvalidConfig(format!(
                "`sink.kafka.producer` key `{key}` cannot be overridden: it {reason}"
            ))
        };
        if name.is_empty() {
            return Err(guarded("is empty"));
        }
        if let Some((_, reason)) = GUARDED_PRODUCER_PROPERTIES
            .iter()
            .find(|(guarded_name, _)| guarded_name.eq_ignore_ascii_case(name))
        {
            return Err(guarded(reason));
        }
        if ["max.in.flight.requests.per.connection", "max.in.flight"].contains(&name) {
            let within = value
                .trim()
                .parse::<u32>()
                .is_ok_and(|count| (1..=MAX_IN_FLIGHT_FOR_IDEMPOTENCE).contains(&count));
            if !within {
                return Err(guarded(&format!(
                    "must be between 1 and {MAX_IN_FLIGHT_FOR_IDEMPOTENCE} for the idempotent producer to keep order (got `{value}`)"
                )));
            }
        }
    }
    Ok(())
}

fn check_topic(field: &'static str, topic: &str) -> Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 249 characters of `a-z A-Z 0-9 . _ -`",
        ))
    }
}

fn invalid(field: &str, reason: &str) -> KafkaSinkError {
    KafkaSinkError::InvalidConfig(format!("`sink.kafka.{field}` {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", "127.0.0.1:9092");
        client
    }

    #[test]
    fn test_defaults_validate_with_the_documented_topics() {
        let settings = KafkaSinkConfig::default().validate(cluster()).unwrap();
        assert_eq!(settings.events_topic, "callhook.events");
        assert_eq!(settings.dead_letters_topic, "callhook.deadletters");
        assert_eq!(settings.delivery_timeout, Duration::from_secs(30));
        let producer = settings.producer_config();
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(producer.get("transactional.id"), None);
    }

    #[test]
    fn test_guarded_overrides_are_rejected_by_name() {
        for key in [
            "enable.idempotence",
            "acks",
            "transactional.id",
            "Message.Timeout.Ms",
        ] {
            let config = KafkaSinkConfig {
                producer: BTreeMap::from([(key.to_owned(), "1".to_owned())]),
                ..KafkaSinkConfig::default()
            };
            let error = config.validate(cluster()).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{error}");
        }
        let in_flight = KafkaSinkConfig {
            producer: BTreeMap::from([(
                "max.in.flight.requests.per.connection".to_owned(),
                "6".to_owned(),
            )]),
            ..KafkaSinkConfig::default()
        };
        assert!(in_flight.validate(cluster()).is_err());
        let harmless = KafkaSinkConfig {
            producer: BTreeMap::from([("compression.type".to_owned(), "zstd".to_owned())]),
            ..KafkaSinkConfig::default()
        };
        assert!(harmless.validate(cluster()).is_ok());
    }

    #[test]
    fn test_topics_and_transactions_are_checked() {
        let same = KafkaSinkConfig {
            dead_letters_topic: DEFAULT_EVENTS_TOPIC.to_owned(),
            ..KafkaSinkConfig::default()
        };
        assert!(same.validate(cluster()).is_err());
        let bad_name = KafkaSinkConfig {
            events_topic: "events topic".to_owned(),
            ..KafkaSinkConfig::default()
        };
        assert!(bad_name.validate(cluster()).is_err());
        let blank_id = KafkaSinkConfig {
            transactional_id: Some(" ".to_owned()),
            ..KafkaSinkConfig::default()
        };
        assert!(blank_id.validate(cluster()).is_err());
        let transactional = KafkaSinkConfig {
            transactional_id: Some("normalizer-1".to_owned()),
            ..KafkaSinkConfig::default()
        };
        let settings = transactional.validate(cluster()).unwrap();
        let producer = settings.producer_config();
        assert_eq!(producer.get("transactional.id"), Some("normalizer-1"));
        assert_eq!(producer.get("transaction.timeout.ms"), Some("40000"));
    }
}
