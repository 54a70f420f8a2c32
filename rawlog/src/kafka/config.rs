//! Configuration of the Kafka raw log: the serde struct read from `[log.kafka]` and its
//! validation into typed settings.
//!
//! Validation does no I/O. It rejects librdkafka overrides that would conflict with a typed
//! option or weaken a guarantee of [`super::KafkaLog`] (see [`GUARDED_PROPERTIES`]), so a
//! config that passes `callhook check-config` cannot silently turn off idempotence or the
//! delivery reports the acknowledgement waits for.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer, Serialize};

use crate::embedded::{EmbeddedLogConfig, EmbeddedLogSettings};

/// The spool file name used under the data directory when `spool.path` is not set.
pub const DEFAULT_SPOOL_FILE_NAME: &str = "spool.db";

/// The default raw topic.
pub const DEFAULT_RAW_TOPIC: &str = "callhook.raw";

/// The largest partition count accepted for a topic callhook creates (a sanity bound).
pub const MAX_TOPIC_PARTITIONS: u32 = 10_000;

/// The longest `ack_timeout_ms` accepted: a push waits this long before its answer.
pub const MAX_ACK_TIMEOUT_MS: u64 = 60_000;

/// Extra time librdkafka gives a message past `ack_timeout_ms` before it expires it itself.
/// Our own timer must fire first: on it the log purges every queued message at once (see the
/// module doc of [`super`]), which keeps per-partition order; librdkafka's per-message expiry
/// would let a later message of the same partition through after an earlier one expired. The
/// librdkafka timeout is only the safety net that bounds how long a message can linger.
pub const MESSAGE_TIMEOUT_MARGIN_MS: u64 = 1_000;

/// librdkafka properties callhook sets itself or relies on, with why they cannot be overridden.
pub const GUARDED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "is set from `brokers`"),
    ("metadata.broker.list", "is set from `brokers`"),
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
    (
        "transactional.id",
        "would make the raw producer transactional, which the ack path does not drive",
    ),
    (
        "retries",
        "is left to librdkafka (the idempotent producer needs its retries)",
    ),
    (
        "message.send.max.retries",
        "is left to librdkafka (the idempotent producer needs its retries)",
    ),
    (
        "message.timeout.ms",
        "is derived from `ack_timeout_ms` (and `forwarder_delivery_timeout_ms`)",
    ),
    (
        "delivery.timeout.ms",
        "is derived from `ack_timeout_ms` (and `forwarder_delivery_timeout_ms`)",
    ),
    (
        "partitioner",
        "must be the same on every receiver (`murmur2_random`) or keys move between partitions",
    ),
    (
        "allow.auto.create.topics",
        "must stay `false`: a broker would create the raw topic with its default partition count",
    ),
    (
        "delivery.report.only.error",
        "would suppress the delivery reports the acknowledgement waits for",
    ),
];

/// librdkafka properties callhook sets on the raw producers unless the `producer` table does.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    // Small: a push waits for its delivery report, and many pushes in flight fill a
    // request anyway.
    ("linger.ms", "5"),
];

/// The largest `max.in.flight.requests.per.connection` that keeps idempotent ordering.
pub const MAX_IN_FLIGHT_FOR_IDEMPOTENCE: u32 = 5;

/// Why a [`KafkaLogConfig`] was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A field is out of its allowed range.
    #[error("`log.kafka.{field}` {reason}")]
    InvalidField {
        /// The TOML field name.
        field: &'static str,
        /// What is wrong with it (lowercase, no trailing period).
        reason: String,
    },
    /// A librdkafka override conflicts with a typed option or a guarantee.
    #[error("`log.kafka.{table}` key `{key}` cannot be overridden: it {reason}")]
    GuardedProperty {
        /// `producer` or `client`.
        table: &'static str,
        /// The librdkafka property.
        key: String,
        /// Why it is guarded.
        reason: String,
    },
    /// The spool section is invalid.
    #[error("in `log.kafka.spool`: {0}")]
    Spool(#[from] crate::embedded::ConfigError),
}

/// The result type of config validation.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// The `[log.kafka]` section of the binary's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaLogConfig {
    /// Kafka bootstrap servers, `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// The raw topic every push is produced to.
    pub raw_topic: String,
    /// Partitions of the raw topic when callhook creates it (an existing topic keeps its own).
    pub raw_topic_partitions: u32,
    /// Replication factor of the raw topic when callhook creates it; `-1` uses the broker's
    /// `default.replication.factor`.
    pub raw_topic_replication_factor: i32,
    /// Create the raw topic with the admin client when it is missing (at start, and when the
    /// forwarder finds it missing after an outage).
    pub create_topics: bool,
    /// How long a push waits for Kafka's delivery report before it goes to the spool instead,
    /// in milliseconds. Also the timeout of the forwarder's health probe.
    pub ack_timeout_ms: u64,
    /// librdkafka properties for every client callhook creates for this cluster (producers,
    /// admin clients, and the normalizer's consumers): put security settings here.
    pub client: BTreeMap<String, String>,
    /// librdkafka properties for the raw producers only, over callhook's defaults
    /// (`linger.ms` = 5, so many pushes share a request without waiting long), e.g.
    /// `"compression.type" = "lz4"`. Keys that conflict with a typed option or a guarantee are
    /// rejected (see `GUARDED_PROPERTIES`).
    pub producer: BTreeMap<String, String>,
    /// Records the forwarder reads from the spool and sends together; their spool offsets are
    /// committed once every one of them is confirmed.
    pub forwarder_batch_records: usize,
    /// How long the forwarder waits for a batch's delivery reports before it gives up, purges
    /// what is unsent and backs off, in milliseconds.
    pub forwarder_delivery_timeout_ms: u64,
    /// Longest pause between two health probes while Kafka is down, in milliseconds (the pause
    /// starts at 100 ms and doubles).
    pub forwarder_backoff_max_ms: u64,
    /// The local durable spool (an embedded log) that takes pushes while Kafka cannot. The
    /// defaults are those of `[log.embedded]` except `path` (`<data_dir>/spool.db`),
    /// `retention_hours` (0: forwarded records are deleted at the next retention pass),
    /// `retention_check_interval_ms` (10000) and `compact` (off: nothing stays to compact).
    #[serde(deserialize_with = "deserialize_spool")]
    pub spool: EmbeddedLogConfig,
}

impl Default for KafkaLogConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            raw_topic: DEFAULT_RAW_TOPIC.to_owned(),
            raw_topic_partitions: 6,
            raw_topic_replication_factor: -1,
            create_topics: true,
            ack_timeout_ms: 2_000,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            forwarder_batch_records: 2_000,
            forwarder_delivery_timeout_ms: 30_000,
            forwarder_backoff_max_ms: 5_000,
            spool: default_spool(),
        }
    }
}

/// Returns the spool defaults: `[log.embedded]`'s, with forwarded records deleted promptly.
pub fn default_spool() -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        retention_hours: Some(0),
        retention_check_interval_ms: 10_000,
        // Forwarded records are deleted at the next pass: nothing stays long enough to compact.
        compact: false,
        ..EmbeddedLogConfig::default()
    }
}

/// Reads a `[log.kafka.spool]` table over the spool defaults (not over `[log.embedded]`'s),
/// so a table that sets only `path` still deletes forwarded records promptly.
fn deserialize_spool<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<EmbeddedLogConfig, D::Error> {
    use serde::de::Error as _;
    let table = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    let mut merged = match serde_json::to_value(default_spool()) {
        Ok(serde_json::Value::Object(defaults)) => defaults,
        _ => return Err(D::Error::custom("spool defaults are not a table")),
    };
    // A spool table that sets its age in days replaces the default in hours rather than
    // clashing with it (setting both in the table is still an error).
    if table.contains_key("retention_days") {
        merged.remove("retention_hours");
    }
    merged.extend(table);
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(D::Error::custom)
}

/// Validated, typed settings for [`super::KafkaLog::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaLogSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The raw topic.
    pub raw_topic: String,
    /// Partitions of the raw topic when created.
    pub raw_topic_partitions: NonZeroU32,
    /// Replication factor of the raw topic when created (`-1`: the broker's default).
    pub raw_topic_replication_factor: i32,
    /// Whether callhook creates the raw topic when missing.
    pub create_topics: bool,
    /// The delivery-report bound of one push.
    pub ack_timeout: Duration,
    /// Properties for every client of this cluster.
    pub client: BTreeMap<String, String>,
    /// Properties for the raw producers.
    pub producer: BTreeMap<String, String>,
    /// Records per forwarder batch.
    pub forwarder_batch_records: NonZeroUsize,
    /// The forwarder's delivery bound per batch.
    pub forwarder_delivery_timeout: Duration,
    /// The longest pause between health probes.
    pub forwarder_backoff_max: Duration,
    /// The spool.
    pub spool: EmbeddedLogSettings,
}

impl KafkaLogConfig {
    /// Returns typed settings, with the spool at `<data_dir>/spool.db` unless `spool.path` is
    /// set. Does no I/O.
    pub fn validate(&self, data_dir: &Path) -> Result<KafkaLogSettings> {
        if self
            .brokers
            .split(',')
            .all(|broker| broker.trim().is_empty())
        {
            return Err(invalid("brokers", "must name at least one `host:port`"));
        }
        let raw_topic_partitions = self.check_raw_topic()?;
        let ack_timeout = bounded_ms("ack_timeout_ms", self.ack_timeout_ms, MAX_ACK_TIMEOUT_MS)?;
        check_overrides("client", &self.client)?;
        check_overrides("producer", &self.producer)?;
        let spool_config = EmbeddedLogConfig {
            path: Some(
                self.spool
                    .path
                    .clone()
                    .unwrap_or_else(|| data_dir.join(DEFAULT_SPOOL_FILE_NAME)),
            ),
            ..self.spool.clone()
        };
        Ok(KafkaLogSettings {
            brokers: self.brokers.clone(),
            raw_topic: self.raw_topic.clone(),
            raw_topic_partitions,
            raw_topic_replication_factor: self.raw_topic_replication_factor,
            create_topics: self.create_topics,
            ack_timeout,
            client: self.client.clone(),
            producer: self.producer.clone(),
            forwarder_batch_records: NonZeroUsize::new(self.forwarder_batch_records)
                .ok_or_else(|| invalid("forwarder_batch_records", "must be at least 1"))?,
            forwarder_delivery_timeout: bounded_ms(
                "forwarder_delivery_timeout_ms",
                self.forwarder_delivery_timeout_ms,
                3_600_000,
            )?,
            forwarder_backoff_max: bounded_ms(
                "forwarder_backoff_max_ms",
                self.forwarder_backoff_max_ms,
                600_000,
            )?,
            spool: spool_config.validate(data_dir)?,
        })
    }

    /// Checks the raw topic's name, partition count and replication factor.
    fn check_raw_topic(&self) -> Result<NonZeroU32> {
        if self.raw_topic.is_empty()
            || self.raw_topic.len() > 249
            || !self
                .raw_topic
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "raw_topic",
                "must be 1 to 249 characters of `a-z A-Z 0-9 . _ -`",
            ));
        }
        let partitions = NonZeroU32::new(self.raw_topic_partitions)
            .filter(|count| count.get() <= MAX_TOPIC_PARTITIONS)
            .ok_or_else(|| {
                invalid(
                    "raw_topic_partitions",
                    &format!("must be between 1 and {MAX_TOPIC_PARTITIONS}"),
                )
            })?;
        if self.raw_topic_replication_factor == 0 || self.raw_topic_replication_factor < -1 {
            return Err(invalid(
                "raw_topic_replication_factor",
                "must be at least 1, or -1 for the broker's default",
            ));
        }
        Ok(partitions)
    }
}

impl KafkaLogSettings {
    /// Returns the base config of every client of this cluster: `bootstrap.servers` and the
    /// `client` table. The normalizer's consumers start from it too.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    /// Returns the config of a raw producer whose messages librdkafka expires after
    /// `message_timeout`: the client config, callhook's producer defaults
    /// ([`PRODUCER_DEFAULTS`]), the `producer` table, then the guarded properties
    /// (idempotence, Java-compatible partitioner, no broker-side topic creation, the timeout).
    pub fn producer_config(&self, message_timeout: Duration) -> ClientConfig {
        let mut config = self.client_config();
        for (key, value) in PRODUCER_DEFAULTS {
            config.set(*key, *value);
        }
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("allow.auto.create.topics", "false")
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            );
        config
    }

    /// Returns librdkafka's `message.max.bytes` for the raw producers (the `producer` table
    /// over the `client` table over librdkafka's default).
    pub fn message_max_bytes(&self) -> usize {
        self.producer
            .get("message.max.bytes")
            .or_else(|| self.client.get("message.max.bytes"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(super::producer::DEFAULT_MESSAGE_MAX_BYTES)
    }

    /// Returns the librdkafka message timeout of the direct (acknowledging) producer:
    /// `ack_timeout` plus [`MESSAGE_TIMEOUT_MARGIN_MS`].
    pub fn direct_message_timeout(&self) -> Duration {
        self.ack_timeout + Duration::from_millis(MESSAGE_TIMEOUT_MARGIN_MS)
    }
}

fn check_overrides(table: &'static str, overrides: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in overrides {
        let guarded = |reason: &str| ConfigError::GuardedProperty {
            table,
            key: key.clone(),
            reason: reason.to_owned(),
        };
        if key.trim().is_empty() {
            return Err(guarded("is empty"));
        }
        if let Some((_, reason)) = GUARDED_PROPERTIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key.trim()))
        {
            return Err(guarded(reason));
        }
        if key.trim() == "message.max.bytes" && value.trim().parse::<usize>().is_err() {
            return Err(guarded("must be a number of bytes"));
        }
        let in_flight_keys = ["max.in.flight.requests.per.connection", "max.in.flight"];
        if in_flight_keys.contains(&key.trim()) {
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

fn bounded_ms(field: &'static str, value: u64, max: u64) -> Result<Duration> {
    if value == 0 || value > max {
        return Err(invalid(field, &format!("must be between 1 and {max}")));
    }
    Ok(Duration::from_millis(value))
}

fn invalid(field: &'static str, reason: &str) -> ConfigError {
    ConfigError::InvalidField {
        field,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn with_brokers() -> KafkaLogConfig {
        KafkaLogConfig {
            brokers: "kafka-1:9092,kafka-2:9092".to_owned(),
            ..KafkaLogConfig::default()
        }
    }

    #[test]
    fn test_defaults_validate_with_the_spool_under_data_dir() {
        let settings = with_brokers()
            .validate(Path::new("/var/lib/callhook"))
            .unwrap();
        assert_eq!(settings.raw_topic, "callhook.raw");
        assert_eq!(settings.raw_topic_partitions.get(), 6);
        assert!(settings.create_topics);
        assert_eq!(settings.ack_timeout, Duration::from_secs(2));
        assert_eq!(
            settings.spool.path,
            PathBuf::from("/var/lib/callhook/spool.db")
        );
        assert_eq!(settings.spool.retention, Some(Duration::ZERO));
        assert_eq!(settings.direct_message_timeout(), Duration::from_secs(3));
        assert_eq!(settings.message_max_bytes(), 1_000_000);
        assert!(settings.producer.is_empty());
    }

    #[test]
    fn test_toml_section_parses_over_spool_defaults_and_rejects_unknown_fields() {
        let config: KafkaLogConfig = toml::from_str(
            "brokers = \"k:9092\"\nraw_topic = \"raw\"\nack_timeout_ms = 500\n\
             [producer]\n\"linger.ms\" = \"10\"\n\"compression.type\" = \"lz4\"\n\
             [spool]\npath = \"/spool/s.db\"\nmax_unconsumed_records = 10\n",
        )
        .unwrap();
        assert_eq!(config.raw_topic, "raw");
        assert_eq!(config.producer.len(), 2);
        assert_eq!(config.spool.path.as_deref(), Some(Path::new("/spool/s.db")));
        assert_eq!(config.spool.max_unconsumed_records, 10);
        // Unset spool fields take the spool defaults, not `[log.embedded]`'s.
        assert_eq!(config.spool.retention_hours, Some(0));
        let settings = config.validate(Path::new("/data")).unwrap();
        assert_eq!(settings.spool.path, PathBuf::from("/spool/s.db"));
        assert_eq!(settings.ack_timeout, Duration::from_millis(500));
        assert!(toml::from_str::<KafkaLogConfig>("brokerz = \"k\"\n").is_err());
        let in_days: KafkaLogConfig = toml::from_str("[spool]\nretention_days = 1\n").unwrap();
        assert_eq!(
            in_days
                .spool
                .validate(Path::new("/data"))
                .unwrap()
                .retention,
            Some(Duration::from_secs(24 * 3600))
        );
        assert!(toml::from_str::<KafkaLogConfig>("[spool]\nretention_dayz = 1\n").is_err());
    }

    #[test]
    fn test_guarded_overrides_are_rejected_naming_key_and_reason() {
        for key in [
            "bootstrap.servers",
            "enable.idempotence",
            "acks",
            "transactional.id",
            "message.timeout.ms",
            "partitioner",
            "allow.auto.create.topics",
        ] {
            for table in ["producer", "client"] {
                let mut config = with_brokers();
                let overrides = BTreeMap::from([(key.to_owned(), "x".to_owned())]);
                if table == "producer" {
                    config.producer = overrides;
                } else {
                    config.client = overrides;
                }
                let error = config.validate(Path::new("/data")).unwrap_err();
                let text = error.to_string();
                assert!(
                    text.contains(&format!("`log.kafka.{table}` key `{key}`")),
                    "{text}"
                );
                assert!(matches!(error, ConfigError::GuardedProperty { .. }));
            }
        }
    }

    #[test]
    fn test_in_flight_requests_are_bounded_for_idempotence() {
        let with_in_flight = |value: &str| {
            let mut config = with_brokers();
            config.producer.insert(
                "max.in.flight.requests.per.connection".to_owned(),
                value.to_owned(),
            );
            config.validate(Path::new("/data"))
        };
        assert!(with_in_flight("5").is_ok());
        assert!(with_in_flight("1").is_ok());
        for bad in ["6", "0", "many"] {
            let error = with_in_flight(bad).unwrap_err().to_string();
            assert!(error.contains("idempotent"), "{error}");
        }
    }

    #[test]
    fn test_message_max_bytes_override_is_used_and_checked() {
        let mut config = with_brokers();
        config
            .producer
            .insert("message.max.bytes".to_owned(), "2000000".to_owned());
        let settings = config.validate(Path::new("/data")).unwrap();
        assert_eq!(settings.message_max_bytes(), 2_000_000);
        config
            .producer
            .insert("message.max.bytes".to_owned(), "2MB".to_owned());
        assert!(config.validate(Path::new("/data")).is_err());
    }

    #[test]
    fn test_out_of_range_fields_are_rejected_by_name() {
        let data_dir = Path::new("/data");
        let cases: Vec<(KafkaLogConfig, &str)> = vec![
            (KafkaLogConfig::default(), "brokers"),
            (
                KafkaLogConfig {
                    raw_topic: "bad topic".to_owned(),
                    ..with_brokers()
                },
                "raw_topic",
            ),
            (
                KafkaLogConfig {
                    raw_topic_partitions: 0,
                    ..with_brokers()
                },
                "raw_topic_partitions",
            ),
            (
                KafkaLogConfig {
                    raw_topic_replication_factor: 0,
                    ..with_brokers()
                },
                "raw_topic_replication_factor",
            ),
            (
                KafkaLogConfig {
                    ack_timeout_ms: 0,
                    ..with_brokers()
                },
                "ack_timeout_ms",
            ),
            (
                KafkaLogConfig {
                    forwarder_batch_records: 0,
                    ..with_brokers()
                },
                "forwarder_batch_records",
            ),
        ];
        for (config, expected_field) in cases {
            match config.validate(data_dir) {
                Err(ConfigError::InvalidField { field, .. }) => assert_eq!(field, expected_field),
                other => panic!("`{expected_field}` out of range gave {other:?}"),
            }
        }
        let bad_spool = KafkaLogConfig {
            spool: EmbeddedLogConfig {
                partitions: 0,
                ..default_spool()
            },
            ..with_brokers()
        };
        assert!(matches!(
            bad_spool.validate(data_dir),
            Err(ConfigError::Spool(_))
        ));
    }

    #[test]
    fn test_producer_config_sets_the_guarantees_last() {
        let settings = with_brokers().validate(Path::new("/data")).unwrap();
        let config = settings.producer_config(Duration::from_millis(3000));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("message.timeout.ms"), Some("3000"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
        assert_eq!(config.get("linger.ms"), Some("5"));
        let mut lingering = with_brokers();
        lingering
            .producer
            .insert("linger.ms".to_owned(), "20".to_owned());
        let settings = lingering.validate(Path::new("/data")).unwrap();
        let config = settings.producer_config(Duration::from_millis(3000));
        assert_eq!(config.get("linger.ms"), Some("20"));
        assert_eq!(
            config.get("bootstrap.servers"),
            Some("kafka-1:9092,kafka-2:9092")
        );
    }
}
