//! The config file (`callhook.example.toml` documents every option).
//!
//! Loading is `parse (serde, unknown keys are errors naming the key) -> validate (typed
//! values, no I/O) -> build`. With no file, every default applies and the sources `7moor`,
//! `coocenter` and `uincall` exist with their defaults.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use callhook_ingest::{
    IngestConfig, IngestSettings, RateLimitConfig, SourceAuthConfig, SourceSettings, TapAccess,
};
use callhook_normalizer::{
    Dialect, KafkaConsumerSettings, NormalizerConfig, NormalizerSettings, SourceContext,
};
use callhook_rawlog::embedded::{EmbeddedLogConfig, EmbeddedLogSettings};
use callhook_rawlog::kafka::{KafkaLogConfig, KafkaLogSettings};
use callhook_reconcile::{ReconcileConfig, ReconcileSettings};
use callhook_sinks::{
    KafkaSinkConfig, KafkaSinkSettings, PostgresSinkConfig, ProjectionSettings, SqliteSinkConfig,
    SqliteSinkSettings,
};
use chrono::FixedOffset;
use serde::Deserialize;

use crate::console::config::{validate_token, ConsoleConfig, ConsoleSettings};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the raw log and the database. Default `./callhook-data`.
    pub data_dir: PathBuf,
    /// Address of the public receiver. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`). Default `127.0.0.1:9464`.
    pub admin_listen: SocketAddr,
    /// The receiver.
    pub ingest: IngestConfig,
    /// The raw log.
    pub log: LogConfig,
    /// The consume-map-sink loop.
    pub normalizer: NormalizerConfig,
    /// The sinks.
    pub sink: SinkConfig,
    /// The sources, by name (`/hooks/{name}`). Empty: `7moor`, `coocenter`, `uincall` with defaults.
    pub sources: BTreeMap<String, SourceConfig>,
    /// The admin listener's `/tap`.
    pub admin: AdminConfig,
    /// The operations console (off by default).
    pub console: ConsoleConfig,
    /// The stale-call sweep (`[stale]`).
    pub stale: StaleConfig,
}

/// The `[stale]` section: calls with no terminal event get a `call.stale` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaleConfig {
    /// Whether the sweep runs (beside the receiver: `serve`, and `ingest` in Kafka mode).
    pub enabled: bool,
    /// A call with no `call.ended` or `call.cdr` this many seconds after callhook received its
    /// last event is stale. Default 7200 (2 hours); `[sources.<name>] stale_after_seconds`
    /// overrides it per source.
    pub stale_after_seconds: u64,
    /// How often the sweep looks for stale calls, in milliseconds. Default 60 000.
    pub sweep_interval_ms: u64,
}

impl Default for StaleConfig {
    fn default() -> Self {
        StaleConfig {
            enabled: true,
            stale_after_seconds: 7200,
            sweep_interval_ms: 60_000,
        }
    }
}

/// The validated `[stale]` section.
#[derive(Debug, Clone)]
pub struct StaleSettings {
    /// How often the sweep runs.
    pub sweep_interval: Duration,
    /// Per swept source: its `stale_after` (sources with `stale_after_seconds = 0` are left out).
    pub stale_after: BTreeMap<String, Duration>,
}

/// The `[admin]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bearer token of `/tap` (`callhook tap --token`), at least 16 characters. Without it
    /// `/tap` is served only when `admin_listen` is a loopback address.
    pub tap_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("callhook-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            ingest: IngestConfig::default(),
            log: LogConfig::default(),
            normalizer: NormalizerConfig::default(),
            sink: SinkConfig::default(),
            sources: BTreeMap::new(),
            admin: AdminConfig::default(),
            console: ConsoleConfig::default(),
            stale: StaleConfig::default(),
        }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which raw log the receiver appends to and the normalizer reads: `embedded` (default)
    /// or `kafka`.
    pub kind: LogKind,
    /// The embedded SQLite log (`[log.embedded]`).
    pub embedded: EmbeddedLogConfig,
    /// The Kafka raw log (`[log.kafka]`): brokers, the raw topic, the local spool. Its
    /// `brokers` and `client` properties are shared by every Kafka client of the process.
    pub kafka: KafkaLogConfig,
}

/// The kind of raw log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// One process, a SQLite raw log (`callhook serve`).
    #[default]
    Embedded,
    /// The raw topic on Kafka (`callhook ingest`, `callhook normalize`, or both in `serve`).
    Kafka,
}

/// The `[sink]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// The SQLite sink (`[sink.sqlite]`).
    pub sqlite: SqliteSinkConfig,
    /// The PostgreSQL sink (`[sink.postgres]`), on when its `url` is set.
    pub postgres: PostgresSinkConfig,
    /// The Kafka sink (`[sink.kafka]`, Kafka mode only).
    pub kafka: KafkaSinkConfig,
}

/// One `[sources.<name>]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The dialect: `7moor` (v7 and v2 shapes), `coocenter` or `uincall`.
    pub dialect: String,
    /// The account reported when the push carries none (else the source name is used).
    #[serde(default)]
    pub account: Option<String>,
    /// Zone of the vendor's zone-less local times, as `+HH:MM`. Default `+08:00`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// This source's body limit in bytes, overriding `[ingest] max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Pushes per second accepted from this source, with a burst:
    /// `rate_limit = { per_second = 50, burst = 100 }`. Over it: `429` with `Retry-After`,
    /// nothing stored. Off by default.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Authentication (`[sources.<name>.auth]`), off by default.
    #[serde(default)]
    pub auth: SourceAuthConfig,
    /// Reconciliation with the 7moor v7 CDR query API (`[sources.<name>.reconcile]`, 7moor
    /// sources only), off by default.
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
    /// This source's stale-call threshold in seconds, overriding `[stale] stale_after_seconds`;
    /// `0`: its calls are never declared stale.
    #[serde(default)]
    pub stale_after_seconds: Option<u64>,
}

fn default_utc_offset() -> String {
    "+08:00".to_owned()
}

impl SourceConfig {
    fn with_dialect(dialect: &str) -> Self {
        SourceConfig {
            dialect: dialect.to_owned(),
            account: None,
            utc_offset: default_utc_offset(),
            max_body_bytes: None,
            rate_limit: None,
            auth: SourceAuthConfig::default(),
            reconcile: None,
            stale_after_seconds: None,
        }
    }
}

/// Everything validated, ready to build the stages.
#[derive(Clone)]
pub struct Settings {
    /// See [`Config::data_dir`].
    pub data_dir: PathBuf,
    /// See [`Config::listen`].
    pub listen: SocketAddr,
    /// See [`Config::admin_listen`].
    pub admin_listen: SocketAddr,
    /// The receiver.
    pub ingest: IngestSettings,
    /// The receiver's sources.
    pub ingest_sources: BTreeMap<String, SourceSettings>,
    /// The mapper's sources.
    pub map_sources: HashMap<String, SourceContext>,
    /// The sources reconciled with the 7moor CDR query API, by name.
    pub reconcile: BTreeMap<String, ReconcileSettings>,
    /// The raw log.
    pub log: EmbeddedLogSettings,
    /// The loop.
    pub normalizer: NormalizerSettings,
    /// The SQLite sink's file (read by the operator commands even when the normalizer does
    /// not write it).
    pub sqlite: SqliteSinkSettings,
    /// The projection sinks the normalizer writes: SQLite unless disabled, PostgreSQL when
    /// configured; at least one.
    pub projections: ProjectionSettings,
    /// Kafka mode; `None` in embedded mode.
    pub kafka: Option<KafkaModeSettings>,
    /// Who may open `/tap`; `None`: nobody (no token and the admin listener not on loopback).
    pub tap_access: Option<TapAccess>,
    /// The console, when enabled.
    pub console: Option<ConsoleSettings>,
    /// The stale-call sweep, when enabled.
    pub stale: Option<StaleSettings>,
}

/// The validated Kafka-mode sections.
#[derive(Clone)]
pub struct KafkaModeSettings {
    /// `[log.kafka]`: the raw topic and the receiver's spool.
    pub log: KafkaLogSettings,
    /// `[normalizer.kafka]` with the cluster, raw topic and group.
    pub consumer: KafkaConsumerSettings,
    /// `[sink.kafka]` when enabled.
    pub sink: Option<KafkaSinkSettings>,
}

impl Config {
    /// Reads and parses a config file; unknown keys are errors that name the key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config `{}`", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config `{}`", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Returns the configured sources, or the three defaults when none is configured.
    pub fn effective_sources(&self) -> BTreeMap<String, SourceConfig> {
        if !self.sources.is_empty() {
            return self.sources.clone();
        }
        ["7moor", "coocenter", "uincall"]
            .into_iter()
            .map(|name| (name.to_owned(), SourceConfig::with_dialect(name)))
            .collect()
    }

    /// Checks every value and turns the config into typed settings. Does no I/O.
    pub fn validate(&self) -> anyhow::Result<Settings> {
        for (key, set) in [
            (
                "[normalizer] prune_interval_seconds",
                self.normalizer.prune_interval_seconds.is_some(),
            ),
            (
                "[sink.sqlite] dedupe_window_hours",
                self.sink.sqlite.dedupe_window_hours.is_some(),
            ),
        ] {
            if set {
                tracing::warn!(
                    key,
                    "obsolete setting ignored: a re-sent push is recognised by its events' ids, \
                     with no window and nothing to prune"
                );
            }
        }
        let mut ingest_sources = BTreeMap::new();
        let mut map_sources = HashMap::new();
        let mut reconcile = BTreeMap::new();
        for (name, source) in self.effective_sources() {
            let (ingest, context) = validate_source(&name, &source)
                .with_context(|| format!("in `[sources.{name}]`"))?;
            if let Some(settings) = validate_reconcile(&name, &source, &context)
                .with_context(|| format!("in `[sources.{name}.reconcile]`"))?
            {
                reconcile.insert(name.clone(), settings);
            }
            ingest_sources.insert(name.clone(), ingest);
            map_sources.insert(name, context);
        }
        let sqlite = self
            .sink
            .sqlite
            .validate(&self.data_dir)
            .context("in `[sink.sqlite]`")?;
        let postgres = self
            .sink
            .postgres
            .validate()
            .context("in `[sink.postgres]`")?;
        if !self.sink.sqlite.enabled && postgres.is_none() {
            bail!("`[sink.sqlite] enabled = false` needs `[sink.postgres] url`: the normalizer needs a sink to commit to");
        }
        let projections = ProjectionSettings {
            sqlite: self.sink.sqlite.enabled.then(|| sqlite.clone()),
            postgres,
        };
        Ok(Settings {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            admin_listen: self.admin_listen,
            ingest: self.ingest.validate().context("in `[ingest]`")?,
            ingest_sources,
            map_sources,
            reconcile,
            log: self
                .log
                .embedded
                .validate(&self.data_dir)
                .context("in `[log.embedded]`")?,
            normalizer: self.normalizer.validate().map_err(anyhow::Error::msg)?,
            sqlite,
            projections,
            kafka: self.validate_kafka_mode()?,
            tap_access: self.tap_access()?,
            console: self.console.validate().context("in `[console]`")?,
            stale: self.validate_stale().context("in `[stale]`")?,
        })
    }

    /// Validates `[stale]` and the sources' `stale_after_seconds`.
    fn validate_stale(&self) -> anyhow::Result<Option<StaleSettings>> {
        if !self.stale.enabled {
            return Ok(None);
        }
        if self.stale.sweep_interval_ms == 0 {
            bail!("`sweep_interval_ms` must be at least 1");
        }
        let mut stale_after = BTreeMap::new();
        for (name, source) in self.effective_sources() {
            let seconds = source
                .stale_after_seconds
                .unwrap_or(self.stale.stale_after_seconds);
            if seconds > 0 {
                stale_after.insert(name, Duration::from_secs(seconds));
            }
        }
        Ok(Some(StaleSettings {
            sweep_interval: Duration::from_millis(self.stale.sweep_interval_ms),
            stale_after,
        }))
    }

    /// `/tap` needs the bearer token when one is set; without one it is open on a loopback
    /// admin listener only.
    fn tap_access(&self) -> anyhow::Result<Option<TapAccess>> {
        let token =
            validate_token("tap_token", self.admin.tap_token.as_deref()).context("in `[admin]`")?;
        Ok(match token {
            Some(token) => Some(TapAccess::Token(token)),
            None if self.admin_listen.ip().is_loopback() => Some(TapAccess::Open),
            None => None,
        })
    }

    /// Validates the Kafka-mode sections when `[log] kind = "kafka"`; rejects an enabled
    /// Kafka sink in embedded mode.
    fn validate_kafka_mode(&self) -> anyhow::Result<Option<KafkaModeSettings>> {
        if self.log.kind == LogKind::Embedded {
            if self.sink.kafka.enabled {
                bail!("`[sink.kafka] enabled = true` needs `[log] kind = \"kafka\"`");
            }
            return Ok(None);
        }
        let log = self
            .log
            .kafka
            .validate(&self.data_dir)
            .context("in `[log.kafka]`")?;
        let consumer = self
            .normalizer
            .kafka
            .validate(
                log.client_config(),
                &log.raw_topic,
                &self.normalizer.consumer_group,
            )
            .map_err(anyhow::Error::msg)?;
        let sink = if self.sink.kafka.enabled {
            let sink = self
                .sink
                .kafka
                .validate(log.client_config())
                .context("in `[sink.kafka]`")?;
            if [
                &sink.events_topic,
                &sink.dead_letters_topic,
                &sink.calls_topic,
            ]
            .contains(&&log.raw_topic)
            {
                bail!(
                    "`[sink.kafka]` topics must differ from the raw topic `{}`",
                    log.raw_topic
                );
            }
            Some(sink)
        } else {
            None
        };
        Ok(Some(KafkaModeSettings {
            log,
            consumer,
            sink,
        }))
    }
}

fn validate_source(
    name: &str,
    source: &SourceConfig,
) -> anyhow::Result<(SourceSettings, SourceContext)> {
    let Some(dialect) = Dialect::from_name(&source.dialect) else {
        bail!(
            "dialect `{}` is not one of `7moor`, `coocenter`, `uincall`",
            source.dialect
        );
    };
    let utc_offset: FixedOffset = source.utc_offset.parse().map_err(|_| {
        anyhow::anyhow!(
            "`utc_offset` `{}` is not an offset like `+08:00`",
            source.utc_offset
        )
    })?;
    let auth = source.auth.validate()?;
    let mut context = SourceContext::new(name, dialect);
    context.account = source.account.clone().filter(|a| !a.trim().is_empty());
    context.utc_offset = utc_offset;
    context.redact_params = vec![source.auth.token_query_param.clone()];
    let rate_limit = source
        .rate_limit
        .map(|limit| limit.validate())
        .transpose()?;
    let ingest = SourceSettings::new(auth, source.max_body_bytes)?.with_rate_limit(rate_limit);
    Ok((ingest, context))
}

/// Validates a source's reconcile table, if any: 7moor sources only (the CDR query API is
/// 7moor v7's).
fn validate_reconcile(
    name: &str,
    source: &SourceConfig,
    context: &SourceContext,
) -> anyhow::Result<Option<ReconcileSettings>> {
    let Some(config) = &source.reconcile else {
        return Ok(None);
    };
    if context.dialect != Dialect::SevenMoor {
        bail!(
            "reconciliation needs dialect `7moor` (it queries the 7moor v7 CDR API), not `{}`",
            source.dialect
        );
    }
    Ok(Some(config.validate(name, context.utc_offset)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_defaults_have_three_sources() {
        let settings = Config::default().validate().unwrap();
        let names: Vec<&String> = settings.ingest_sources.keys().collect();
        assert_eq!(names, ["7moor", "coocenter", "uincall"]);
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.log.path, PathBuf::from("callhook-data/rawlog.db"));
    }

    #[test]
    fn test_unknown_keys_are_named() {
        let error = format!(
            "{:#}",
            Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3").unwrap_err()
        );
        assert!(error.contains("listen_port"), "{error}");
        let nested = format!(
            "{:#}",
            Config::parse("[sources.a]\ndialect = \"7moor\"\ntimezone = \"+08:00\"").unwrap_err()
        );
        assert!(nested.contains("timezone"), "{nested}");
        let deep = format!(
            "{:#}",
            Config::parse("[log.embedded]\nretention_dayz = 3").unwrap_err()
        );
        assert!(deep.contains("retention_dayz"), "{deep}");
    }

    #[test]
    fn test_raw_log_retention_is_in_days_with_an_hours_override() {
        let default = Config::default().validate().unwrap();
        assert_eq!(
            default.log.retention,
            Some(std::time::Duration::from_secs(30 * 24 * 3600))
        );
        let forever = Config::parse("[log.embedded]\nretention_days = 0").unwrap();
        assert_eq!(forever.validate().unwrap().log.retention, None);
        let both =
            Config::parse("[log.embedded]\nretention_days = 7\nretention_hours = 1").unwrap();
        let error = format!("{:#}", both.validate().err().unwrap());
        assert!(
            error.contains("retention_days") && error.contains("retention_hours"),
            "{error}"
        );
    }

    #[test]
    fn test_bad_values_are_explained() {
        let config = Config::parse("[sources.x]\ndialect = \"genesys\"").unwrap();
        assert!(format!("{:#}", config.validate().err().unwrap()).contains("genesys"));
        let config =
            Config::parse("[sources.x]\ndialect = \"7moor\"\nutc_offset = \"CST\"").unwrap();
        assert!(format!("{:#}", config.validate().err().unwrap()).contains("CST"));
    }

    #[test]
    fn test_reconcile_is_validated_for_7moor_sources_only() {
        let table = "[sources.m7.reconcile]\nbase_url = \"http://127.0.0.1:1\"\nappkey = \"2000144\"\nsecret = \"sk\"\n";
        let settings = Config::parse(&format!("[sources.m7]\ndialect = \"7moor\"\n{table}"))
            .unwrap()
            .validate()
            .unwrap();
        let reconcile = &settings.reconcile["m7"];
        assert_eq!(reconcile.source, "m7");
        assert_eq!(reconcile.utc_offset.to_string(), "+08:00");
        let wrong =
            Config::parse(&format!("[sources.m7]\ndialect = \"uincall\"\n{table}")).unwrap();
        let error = format!("{:#}", wrong.validate().err().unwrap());
        assert!(
            error.contains("[sources.m7.reconcile]") && error.contains("dialect"),
            "{error}"
        );
        let long = Config::parse(&format!(
            "[sources.m7]\ndialect = \"7moor\"\n{table}window_seconds = 700000\n"
        ))
        .unwrap();
        let error = format!("{:#}", long.validate().err().unwrap());
        assert!(error.contains("window_seconds"), "{error}");
        let unknown = Config::parse(&format!(
            "[sources.m7]\ndialect = \"7moor\"\n{table}window = 3\n"
        ));
        assert!(format!("{:#}", unknown.err().unwrap()).contains("window"));
        assert!(Config::default().validate().unwrap().reconcile.is_empty());
    }

    #[test]
    fn test_kafka_mode_is_validated_only_when_selected() {
        let embedded = Config::default().validate().unwrap();
        assert!(embedded.kafka.is_none());
        let sink_without_kafka = Config::parse("[sink.kafka]\nenabled = true").unwrap();
        let error = format!("{:#}", sink_without_kafka.validate().err().unwrap());
        assert!(error.contains("kind"), "{error}");
        let no_brokers = Config::parse("[log]\nkind = \"kafka\"").unwrap();
        let error = format!("{:#}", no_brokers.validate().err().unwrap());
        assert!(error.contains("brokers"), "{error}");
        let kafka = Config::parse(
            "[log]\nkind = \"kafka\"\n[log.kafka]\nbrokers = \"b:9092\"\n[sink.kafka]\nenabled = true",
        )
        .unwrap()
        .validate()
        .unwrap();
        let mode = kafka.kafka.expect("kafka mode");
        assert_eq!(mode.consumer.topic, "callhook.raw");
        assert_eq!(mode.sink.expect("sink").events_topic, "callhook.events");
    }

    #[test]
    fn test_postgres_sink_beside_or_instead_of_sqlite() {
        let defaults = Config::default().validate().unwrap();
        assert!(defaults.projections.sqlite.is_some());
        assert!(defaults.projections.postgres.is_none());
        let both = Config::parse("[sink.postgres]\nurl = \"postgres://callhook@db/callhook\"")
            .unwrap()
            .validate()
            .unwrap();
        assert!(both.projections.sqlite.is_some() && both.projections.postgres.is_some());
        let only = Config::parse(
            "[sink.sqlite]\nenabled = false\n[sink.postgres]\nurl = \"postgres://db/callhook\"",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(only.projections.sqlite.is_none() && only.projections.postgres.is_some());
        let none = Config::parse("[sink.sqlite]\nenabled = false").unwrap();
        let error = format!("{:#}", none.validate().err().unwrap());
        assert!(error.contains("[sink.postgres] url"), "{error}");
        let bad = Config::parse("[sink.postgres]\nurl = \"postgres://db\"\nsslmode = \"verify\"");
        assert!(format!("{:#}", bad.err().unwrap()).contains("verify"));
    }

    #[test]
    fn test_kafka_overrides_that_break_guarantees_are_named() {
        let text = "[log]\nkind = \"kafka\"\n[log.kafka]\nbrokers = \"b:9092\"\n[sink.kafka]\nenabled = true\n[sink.kafka.producer]\n\"enable.idempotence\" = \"false\"";
        let error = format!(
            "{:#}",
            Config::parse(text).unwrap().validate().err().unwrap()
        );
        assert!(error.contains("enable.idempotence"), "{error}");
        let text = "[log]\nkind = \"kafka\"\n[log.kafka]\nbrokers = \"b:9092\"\n[normalizer.kafka.consumer]\n\"enable.auto.commit\" = \"true\"";
        let error = format!(
            "{:#}",
            Config::parse(text).unwrap().validate().err().unwrap()
        );
        assert!(error.contains("enable.auto.commit"), "{error}");
    }

    #[test]
    fn test_example_config_validates_in_kafka_mode_too() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("callhook.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let kafka = text
            .replacen("kind = \"embedded\"", "kind = \"kafka\"", 1)
            .replacen("brokers = \"\"", "brokers = \"127.0.0.1:9092\"", 1)
            .replacen("enabled = false", "enabled = true", 1);
        let settings = Config::parse(&kafka).unwrap().validate().unwrap();
        let mode = settings.kafka.expect("kafka mode");
        assert_eq!(mode.log.brokers, "127.0.0.1:9092");
        assert!(mode.sink.is_some());
    }

    #[test]
    fn test_stale_after_defaults_to_two_hours_and_is_set_per_source() {
        let settings = Config::parse(
            "[stale]\nsweep_interval_ms = 250\n\
             [sources.a]\ndialect = \"7moor\"\n\
             [sources.b]\ndialect = \"uincall\"\nstale_after_seconds = 60\n\
             [sources.c]\ndialect = \"coocenter\"\nstale_after_seconds = 0\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let stale = settings.stale.expect("on by default");
        assert_eq!(stale.sweep_interval, Duration::from_millis(250));
        assert_eq!(
            stale.stale_after,
            BTreeMap::from([
                ("a".to_owned(), Duration::from_secs(7200)),
                ("b".to_owned(), Duration::from_secs(60)),
            ])
        );
        let off = Config::parse("[stale]\nenabled = false\n").unwrap();
        assert!(off.validate().unwrap().stale.is_none());
        let zero = Config::parse("[stale]\nsweep_interval_ms = 0\n").unwrap();
        assert!(zero.validate().is_err());
    }

    #[test]
    fn test_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("callhook.example.toml");
        let config = Config::load(&path).unwrap();
        config.validate().unwrap();
    }
}
