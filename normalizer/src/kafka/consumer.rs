//! [`KafkaNormalizer`]: the consume-map-sink loop over the raw Kafka topic (see the module
//! docs of [`super`] for the guarantee and `design.md` for the reasoning).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callhook_sinks::{KafkaSink, SqliteSink, SqliteSinkSettings};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::Offset;

use super::batch::KafkaBatch;
use super::config::KafkaConsumerSettings;
use super::error::KafkaPipelineError;
use super::metrics::KafkaLoopMetrics;
use super::produce::produce_batch;
use super::rebalance::RebalanceContext;
use crate::pipeline::records::{DedupePruner, RecordMapper};
use crate::pipeline::{NormalizerSettings, PipelineError};
use crate::push::SourceContext;
use crate::telemetry::NormalizerMetrics;

/// How long a poll waits for more records once a batch has started.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// How often the lag gauge is recomputed (the statistics behind it come every second).
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// How long a seek back to an abandoned batch's start may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest pause after a failed batch.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What `/readyz` of a normalizer reports: `None` while batches commit, else why not.
#[derive(Debug, Default)]
pub struct LoopHealth {
    problem: Mutex<Option<String>>,
}

impl LoopHealth {
    /// Returns `Ok(())` while the loop commits, else the reason it does not.
    pub fn check(&self) -> Result<(), String> {
        match &*self.problem.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(problem) => Err(problem.clone()),
        }
    }

    fn set(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }
}

/// The normalizer as a member of a Kafka consumer group. Every method blocks (rdkafka polls,
/// SQLite commits, delivery reports), so it runs on its own thread ([`KafkaNormalizer::run`]).
pub struct KafkaNormalizer {
    consumer: BaseConsumer<RebalanceContext>,
    sink: SqliteSink,
    kafka_sink: Option<KafkaSink>,
    mapper: RecordMapper,
    settings: NormalizerSettings,
    topic: String,
    sqlite_consumer: String,
    metrics: NormalizerMetrics,
    loop_metrics: KafkaLoopMetrics,
    pruner: DedupePruner,
    progress: Progress,
    last_lag: Option<Instant>,
    backoff: Duration,
    health: Arc<LoopHealth>,
}

impl KafkaNormalizer {
    /// Builds the consumer (not yet subscribed) and opens the SQLite sink twice: one
    /// connection commits batches, the other is the rebalance callback's, to read offsets.
    pub fn new(
        consumer_settings: &KafkaConsumerSettings,
        sqlite: &SqliteSinkSettings,
        kafka_sink: Option<KafkaSink>,
        sources: HashMap<String, SourceContext>,
        settings: NormalizerSettings,
    ) -> Result<Self, PipelineError> {
        let sink = SqliteSink::open(sqlite)?;
        let offsets_reader = SqliteSink::open(sqlite)?;
        let loop_metrics = KafkaLoopMetrics::new();
        let sqlite_consumer = consumer_settings.sqlite_consumer();
        let context = RebalanceContext::new(
            consumer_settings.topic.clone(),
            sqlite_consumer.clone(),
            offsets_reader,
            loop_metrics.clone(),
        );
        let consumer = consumer_settings
            .consumer_config()
            .create_with_context(context)
            .map_err(KafkaPipelineError::Consumer)?;
        let mapper = RecordMapper::new(sources, settings.dedupe_cache_keys);
        let metrics = NormalizerMetrics::new(mapper.source_names());
        Ok(KafkaNormalizer {
            consumer,
            sink,
            kafka_sink,
            mapper,
            pruner: DedupePruner::new(settings.prune_interval),
            settings,
            topic: consumer_settings.topic.clone(),
            sqlite_consumer,
            metrics,
            loop_metrics,
            progress: Progress::default(),
            last_lag: None,
            backoff: BACKOFF_MIN,
            health: Arc::new(LoopHealth::default()),
        })
    }

    /// Returns the loop's health, for `/readyz`.
    pub fn health(&self) -> Arc<LoopHealth> {
        Arc::clone(&self.health)
    }

    /// Joins the group and runs until `shutdown` is set; the batch in progress is committed
    /// or abandoned first (abandoned records are read again by whoever owns them next).
    pub fn run(mut self, shutdown: Arc<AtomicBool>) -> Result<(), PipelineError> {
        self.consumer.subscribe(&[&self.topic]).map_err(|source| {
            KafkaPipelineError::Subscribe {
                topic: self.topic.clone(),
                source,
            }
        })?;
        tracing::info!(topic = %self.topic, consumer = %self.sqlite_consumer, kafka_sink = self.kafka_sink.is_some(), "normalizer consuming the raw topic");
        let result = self.consume_until(&shutdown);
        if let Err(error) = &result {
            self.health
                .set(Some(format!("normalizer stopped: {error}")));
        }
        // Leaving the group now hands the partitions to the other members at once rather
        // than after the session timeout; dropping the consumer closes it.
        self.consumer.unsubscribe();
        result
    }

    fn consume_until(&mut self, shutdown: &AtomicBool) -> Result<(), PipelineError> {
        while !shutdown.load(Ordering::Acquire) {
            let batch = self.read_batch()?;
            if !batch.is_empty() {
                self.commit(batch)?;
            }
            self.maybe_refresh_lag();
            self.pruner.maybe_prune(&mut self.sink);
        }
        Ok(())
    }

    /// Polls until the batch is full or no record arrives within the linger; a rebalance
    /// during the polls abandons what was read before it.
    fn read_batch(&mut self) -> Result<KafkaBatch, PipelineError> {
        let mut batch = KafkaBatch::new(&self.topic, &self.sqlite_consumer);
        loop {
            let timeout = if batch.is_empty() {
                self.settings.idle_wait
            } else {
                BATCH_LINGER
            };
            let polled = self.consumer.poll(timeout);
            // The rebalance callback, if any, ran inside that poll.
            let changed = self.progress.sync(self.consumer.context(), &self.topic)?;
            if changed {
                self.last_lag = None;
                if !batch.is_empty() {
                    tracing::debug!(
                        records = batch.len(),
                        "rebalance: uncommitted records abandoned"
                    );
                    self.loop_metrics.abandoned_rebalance.inc();
                    batch = KafkaBatch::new(&self.topic, &self.sqlite_consumer);
                }
            }
            match polled {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "raw-topic consumer error");
                    break;
                }
                Some(Ok(message)) => {
                    batch.add(&mut self.mapper, &message);
                    if batch.len() >= self.settings.max_batch_records {
                        break;
                    }
                }
            }
        }
        batch.seal();
        Ok(batch)
    }

    /// Commits a batch to every sink, Kafka first, then SQLite; on a retryable failure the
    /// batch is abandoned and read again after a backoff.
    fn commit(&mut self, mut batch: KafkaBatch) -> Result<(), PipelineError> {
        if let Some(kafka_sink) = &mut self.kafka_sink {
            let group = self.consumer.group_metadata();
            let transactional = kafka_sink.is_transactional();
            let result = produce_batch(
                kafka_sink,
                &self.sink,
                &batch,
                &self.progress.in_topics_below,
                group.as_ref().filter(|_| transactional),
            );
            match result {
                Ok(_) => self.progress.kafka_confirmed(&batch.next_offsets),
                Err(error) if error.is_retryable() => {
                    self.loop_metrics.abandoned_kafka_sink.inc();
                    return self.retry_later(&batch, format!("kafka sink: {error}"));
                }
                Err(error) => return Err(error.into()),
            }
        }
        let outcome = match self.sink.commit_batch(&batch.pending.batch) {
            Ok(outcome) => outcome,
            Err(error) if error.is_retryable() => {
                self.metrics.commit_failures.inc();
                self.loop_metrics.abandoned_sqlite_sink.inc();
                return self.retry_later(&batch, format!("sqlite sink: {error}"));
            }
            Err(error) => return Err(error.into()),
        };
        self.after_commit(&mut batch, &outcome);
        Ok(())
    }

    fn after_commit(&mut self, batch: &mut KafkaBatch, outcome: &callhook_sinks::CommitOutcome) {
        let transactional = self
            .kafka_sink
            .as_ref()
            .is_some_and(KafkaSink::is_transactional);
        if !transactional {
            // For lag tooling and for the next owner's "in topics below" mark; the SQLite
            // offsets stay the ones the loop seeks to.
            if let Err(error) = self
                .consumer
                .commit(&batch.next_offsets_list(), CommitMode::Async)
            {
                tracing::debug!(error = %error, "committing offsets to the consumer group failed");
            }
        }
        for (partition, next) in &batch.next_offsets {
            if let Some(position) = self.progress.positions.get_mut(partition) {
                *position = Some(*next);
            }
        }
        batch
            .pending
            .committed(&mut self.mapper, outcome, &self.metrics);
        self.backoff = BACKOFF_MIN;
        self.health.set(None);
    }

    /// Seeks the batch's partitions back to its first records and pauses before the next
    /// poll; the records are read again (or by the partition's next owner).
    fn retry_later(&mut self, batch: &KafkaBatch, problem: String) -> Result<(), PipelineError> {
        tracing::error!(problem = %problem, records = batch.len(), backoff_ms = self.backoff.as_millis() as u64, "batch not committed; it will be read again");
        self.health.set(Some(problem));
        for (partition, first) in &batch.first_offsets {
            if let Err(error) = self.consumer.seek(
                &self.topic,
                *partition,
                Offset::Offset(*first),
                SEEK_TIMEOUT,
            ) {
                // Revoked meanwhile: the next owner starts at the SQLite offset anyway.
                tracing::warn!(error = %error, partition, "seeking back failed");
            }
        }
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }

    /// Sets the lag gauge: over the assigned partitions, the partition's end (from the
    /// consumer's statistics) minus the next offset to commit.
    fn maybe_refresh_lag(&mut self) {
        if self.last_lag.is_some_and(|at| at.elapsed() < LAG_REFRESH) {
            return;
        }
        self.last_lag = Some(Instant::now());
        let ends = self.consumer.context().partition_ends();
        let mut lag = 0;
        for (partition, position) in &self.progress.positions {
            let Some((start, end)) = ends.get(partition) else {
                continue; // no statistics for it yet
            };
            lag += (end - position.unwrap_or(*start).max(*start)).max(0);
        }
        self.metrics.lag_records.set(lag);
    }
}

/// What the loop knows of its assignment.
#[derive(Debug, Default)]
struct Progress {
    /// The assignment generation this state belongs to.
    generation: u64,
    /// Per assigned partition: the Kafka topics hold every record below this offset.
    in_topics_below: BTreeMap<i32, i64>,
    /// Per assigned partition: the next offset to commit (`None`: the partition's start).
    positions: BTreeMap<i32, Option<i64>>,
}

impl Progress {
    /// Records that Kafka holds every record of a batch (below `next_offsets`): read again
    /// after a failed SQLite commit, they go to SQLite only.
    fn kafka_confirmed(&mut self, next_offsets: &BTreeMap<i32, i64>) {
        for (partition, next) in next_offsets {
            let mark = self.in_topics_below.entry(*partition).or_insert(-1);
            *mark = (*mark).max(*next);
        }
    }

    /// Picks up a new assignment generation from the callback's state; returns true when it
    /// changed, an error when the callback could not take an assignment.
    fn sync(&mut self, context: &RebalanceContext, topic: &str) -> Result<bool, PipelineError> {
        let assignment = context.assignment();
        if let Some(reason) = &assignment.failure {
            return Err(KafkaPipelineError::Assignment {
                topic: topic.to_owned(),
                reason: reason.clone(),
            }
            .into());
        }
        if assignment.generation == self.generation {
            return Ok(false);
        }
        self.generation = assignment.generation;
        self.in_topics_below = assignment
            .partitions
            .iter()
            .map(|(partition, start)| (*partition, start.in_topics_below))
            .collect();
        self.positions = assignment
            .partitions
            .iter()
            .map(|(partition, start)| (*partition, start.stored))
            .collect();
        Ok(true)
    }
}
