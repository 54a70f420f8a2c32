//! The `[normalizer]` section of the config file.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use crate::kafka::KafkaConsumerConfig;

/// How the consume-map-sink loop runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizerConfig {
    /// The consumer group the loop's offsets are stored under (in the sink and the raw log).
    pub consumer_group: String,
    /// Records read per partition per batch; one batch is one sink transaction.
    pub max_batch_records: usize,
    /// Dedupe keys kept in the in-memory LRU in front of the sink's own check (about 60 B
    /// each). Default 50 000.
    pub dedupe_cache_keys: usize,
    /// How long the loop sleeps waiting for new records when it has caught up, in milliseconds
    /// (an append wakes it at once).
    pub idle_wait_ms: u64,
    /// Obsolete, accepted and ignored: there are no dedupe keys to prune any more (a
    /// re-delivered push is recognised by its events' deterministic ids).
    pub prune_interval_seconds: Option<u64>,
    /// How the loop consumes the raw topic in Kafka mode (`[normalizer.kafka]`).
    pub kafka: KafkaConsumerConfig,
}

impl Default for NormalizerConfig {
    fn default() -> Self {
        NormalizerConfig {
            consumer_group: "normalizer".to_owned(),
            max_batch_records: 1000,
            dedupe_cache_keys: 50_000,
            idle_wait_ms: 500,
            prune_interval_seconds: None,
            kafka: KafkaConsumerConfig::default(),
        }
    }
}

/// A validated [`NormalizerConfig`].
#[derive(Debug, Clone)]
pub struct NormalizerSettings {
    /// See [`NormalizerConfig::consumer_group`].
    pub consumer_group: String,
    /// See [`NormalizerConfig::max_batch_records`].
    pub max_batch_records: usize,
    /// See [`NormalizerConfig::dedupe_cache_keys`].
    pub dedupe_cache_keys: NonZeroUsize,
    /// See [`NormalizerConfig::idle_wait_ms`].
    pub idle_wait: Duration,
}

impl NormalizerConfig {
    /// Checks the values and turns them into typed settings.
    pub fn validate(&self) -> Result<NormalizerSettings, String> {
        if self.consumer_group.trim().is_empty() {
            return Err("`normalizer.consumer_group` must not be empty".to_owned());
        }
        if !(1..=100_000).contains(&self.max_batch_records) {
            return Err("`normalizer.max_batch_records` must be between 1 and 100000".to_owned());
        }
        let dedupe_cache_keys = NonZeroUsize::new(self.dedupe_cache_keys)
            .ok_or("`normalizer.dedupe_cache_keys` must be at least 1")?;
        Ok(NormalizerSettings {
            consumer_group: self.consumer_group.clone(),
            max_batch_records: self.max_batch_records,
            dedupe_cache_keys,
            idle_wait: Duration::from_millis(self.idle_wait_ms.clamp(1, 60_000)),
        })
    }
}
