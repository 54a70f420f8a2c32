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
    /// Body bytes read per partition per batch (the batch ends at the record that reaches
    /// it; a batch always has at least one record). Default 512 KiB. A batch stays in memory
    /// until it commits, mapped, and what a mapped record costs grows with its body (its
    /// data JSON, its vendor fields): this bounds that memory where the record count alone
    /// does not.
    pub max_batch_bytes: usize,
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

/// The default of [`NormalizerConfig::max_batch_bytes`]. Bodies of the realistic bench
/// traffic average 412 B, so its batches stay at 1,000 records; the keep-alive bench's 1 KB
/// pushes make batches of 512. `callhook serve`'s peak RSS under that load, probe runs:
/// 56 MB with batches of 500 records, 63 MB with 750, 66-71 MB with 1,000.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 512 * 1024;

impl Default for NormalizerConfig {
    fn default() -> Self {
        NormalizerConfig {
            consumer_group: "normalizer".to_owned(),
            max_batch_records: 1000,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
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
    /// See [`NormalizerConfig::max_batch_bytes`].
    pub max_batch_bytes: usize,
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
        if !(1024..=1 << 30).contains(&self.max_batch_bytes) {
            return Err(
                "`normalizer.max_batch_bytes` must be between 1024 and 1073741824".to_owned(),
            );
        }
        let dedupe_cache_keys = NonZeroUsize::new(self.dedupe_cache_keys)
            .ok_or("`normalizer.dedupe_cache_keys` must be at least 1")?;
        Ok(NormalizerSettings {
            consumer_group: self.consumer_group.clone(),
            max_batch_records: self.max_batch_records,
            max_batch_bytes: self.max_batch_bytes,
            dedupe_cache_keys,
            idle_wait: Duration::from_millis(self.idle_wait_ms.clamp(1, 60_000)),
        })
    }
}
