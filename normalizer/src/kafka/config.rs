//! `[normalizer.kafka]`: how the normalizer consumes the raw topic in Kafka mode.
//!
//! The cluster (brokers, shared client properties) and the raw topic come from `[log.kafka]`,
//! the group name from `[normalizer] consumer_group`. Validation does no I/O and rejects
//! consumer properties (here or in `[log.kafka] client`) that conflict with a typed option or
//! with the offset handling the exactly-once guarantee rests on, naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// The shortest and longest `session_timeout_ms` accepted (Kafka's broker defaults bound
/// `group.min.session.timeout.ms` and `group.max.session.timeout.ms` similarly).
const SESSION_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=1_800_000;

/// librdkafka consumer properties callhook sets itself, with why they cannot be overridden.
pub const GUARDED_CONSUMER_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "is set from `[log.kafka] brokers`"),
    ("metadata.broker.list", "is set from `[log.kafka] brokers`"),
    ("group.id", "is set from `[normalizer] consumer_group`"),
    (
        "enable.auto.commit",
        "must stay `false`: offsets are committed only after every sink confirmed",
    ),
    (
        "auto.commit.enable",
        "must stay `false`: offsets are committed only after every sink confirmed",
    ),
    (
        "enable.auto.offset.store",
        "must stay `false`: offsets are stored only after every sink confirmed",
    ),
    (
        "auto.offset.reset",
        "must stay `earliest`: a partition without a stored offset is read from its start",
    ),
    (
        "isolation.level",
        "must stay `read_committed`: aborted records are never mapped",
    ),
    ("session.timeout.ms", "is set from `session_timeout_ms`"),
    (
        "enable.partition.eof",
        "would turn the end of a partition into an error the loop does not expect",
    ),
    (
        "group.protocol",
        "must stay `classic`: the loop relies on eager rebalances (see `partition.assignment.strategy`)",
    ),
];

/// Why incremental (cooperative) assignment strategies are refused: on every rebalance the
/// loop drops the records it read but did not commit and relies on the assignment to put
/// each partition back at its stored offset; a partition kept across an incremental
/// rebalance would not be put back, and the dropped records would be skipped.
const EAGER_ONLY: &str = "must name eager strategies only (`range`, `roundrobin`): the loop re-reads uncommitted records through the assignment, which incremental rebalances skip";

/// `[normalizer.kafka]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConsumerConfig {
    /// How long a normalizer may go unheard before the group hands its partitions to the
    /// others, in milliseconds (librdkafka `session.timeout.ms`): the take-over time after a
    /// crash.
    pub session_timeout_ms: u64,
    /// librdkafka properties for the raw-topic consumer only, e.g. `"fetch.max.bytes"`.
    /// Keys that conflict with a typed option or the offset handling are rejected, and so is
    /// a `partition.assignment.strategy` naming `cooperative-sticky`.
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaConsumerConfig {
    fn default() -> Self {
        KafkaConsumerConfig {
            session_timeout_ms: 10_000,
            consumer: BTreeMap::new(),
        }
    }
}

/// A validated [`KafkaConsumerConfig`] with the cluster, topic and group it consumes.
#[derive(Debug, Clone)]
pub struct KafkaConsumerSettings {
    /// The cluster: `bootstrap.servers` and the shared client properties.
    pub client: ClientConfig,
    /// The raw topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// See [`KafkaConsumerConfig::session_timeout_ms`].
    pub session_timeout: Duration,
    /// See [`KafkaConsumerConfig::consumer`].
    pub consumer: BTreeMap<String, String>,
}

impl KafkaConsumerConfig {
    /// Checks the values (and the shared `client` properties) and returns the settings of a
    /// consumer of `topic` in `group`. Does no I/O.
    pub fn validate(
        &self,
        client: ClientConfig,
        topic: &str,
        group: &str,
    ) -> Result<KafkaConsumerSettings, String> {
        if !SESSION_TIMEOUT_RANGE_MS.contains(&self.session_timeout_ms) {
            return Err(format!(
                "`normalizer.kafka.session_timeout_ms` must be between {} and {}",
                SESSION_TIMEOUT_RANGE_MS.start(),
                SESSION_TIMEOUT_RANGE_MS.end()
            ));
        }
        for (key, value) in &self.consumer {
            check_key("normalizer.kafka.consumer", key, value, true)?;
        }
        for (key, value) in client.config_map() {
            check_key("log.kafka.client", key, value, false)?;
        }
        if group.trim().is_empty() {
            return Err("`normalizer.consumer_group` must not be empty".to_owned());
        }
        Ok(KafkaConsumerSettings {
            client,
            topic: topic.to_owned(),
            group: group.to_owned(),
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            consumer: self.consumer.clone(),
        })
    }
}

impl KafkaConsumerSettings {
    /// Returns the consumer's librdkafka config: the cluster's, the `consumer` table, then the
    /// guarded properties.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client.clone();
        // The lag gauge is computed from the statistics (overridable).
        config.set("statistics.interval.ms", "1000");
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        config
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            );
        config
    }

    /// Returns the name the SQLite sink stores this consumer's offsets under:
    /// `<group>@<topic>`, so offsets of the embedded log (stored under the bare group name)
    /// and of different raw topics never mix in one database.
    pub fn sqlite_consumer(&self) -> String {
        format!("{}@{}", self.group, self.topic)
    }
}

/// Rejects a guarded key. `bootstrap.servers` is allowed in the client table: it is how the
/// cluster's own config carries the brokers.
fn check_key(table: &str, key: &str, value: &str, strict: bool) -> Result<(), String> {
    let name = key.trim();
    if name.is_empty() {
        return Err(format!("`{table}` has an empty key"));
    }
    if name.eq_ignore_ascii_case("partition.assignment.strategy")
        && value.to_ascii_lowercase().contains("cooperative")
    {
        return Err(format!("`{table}` key `{key}` {EAGER_ONLY}"));
    }
    let found = GUARDED_CONSUMER_PROPERTIES
        .iter()
        .find(|(guarded, _)| guarded.eq_ignore_ascii_case(name));
    match found {
        Some((guarded, _)) if !strict && *guarded == "bootstrap.servers" => Ok(()),
        Some((_, reason)) => Err(format!(
            "`{table}` key `{key}` cannot be overridden: it {reason}"
        )),
        None => Ok(()),
    }
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
    fn test_defaults_disable_auto_commit_and_name_the_sqlite_consumer() {
        let settings = KafkaConsumerConfig::default()
            .validate(cluster(), "callhook.raw", "normalizer")
            .unwrap();
        let config = settings.consumer_config();
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("group.id"), Some("normalizer"));
        assert_eq!(config.get("session.timeout.ms"), Some("10000"));
        assert_eq!(settings.sqlite_consumer(), "normalizer@callhook.raw");
    }

    #[test]
    fn test_guarded_keys_are_rejected_by_name_in_both_tables() {
        let config = KafkaConsumerConfig {
            consumer: BTreeMap::from([("enable.auto.commit".to_owned(), "true".to_owned())]),
            ..KafkaConsumerConfig::default()
        };
        let error = config.validate(cluster(), "raw", "g").unwrap_err();
        assert!(error.contains("`enable.auto.commit`"), "{error}");
        let mut client = cluster();
        client.set("group.id", "other");
        let error = KafkaConsumerConfig::default()
            .validate(client, "raw", "g")
            .unwrap_err();
        assert!(
            error.contains("`log.kafka.client` key `group.id`"),
            "{error}"
        );
        let cooperative = KafkaConsumerConfig {
            consumer: BTreeMap::from([(
                "partition.assignment.strategy".to_owned(),
                "cooperative-sticky".to_owned(),
            )]),
            ..KafkaConsumerConfig::default()
        };
        let error = cooperative.validate(cluster(), "raw", "g").unwrap_err();
        assert!(error.contains("eager"), "{error}");
        let allowed = KafkaConsumerConfig {
            consumer: BTreeMap::from([("fetch.max.bytes".to_owned(), "1048576".to_owned())]),
            ..KafkaConsumerConfig::default()
        };
        assert!(allowed.validate(cluster(), "raw", "g").is_ok());
    }

    #[test]
    fn test_session_timeout_is_bounded() {
        let config = KafkaConsumerConfig {
            session_timeout_ms: 10,
            ..KafkaConsumerConfig::default()
        };
        assert!(config.validate(cluster(), "raw", "g").is_err());
    }
}
