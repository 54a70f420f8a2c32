//! [`KafkaNormalizer`]: the consume-map-sink loop over the raw Kafka topic (see the module
//! docs of [`super`] for the guarantee and `design.md` for the reasoning).

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callhook_sinks::failpoints::crash_at;
use callhook_sinks::{KafkaSink, ProjectionSettings, ProjectionSinks};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::Offset;

use super::batch::KafkaBatch;
use super::config::KafkaConsumerSettings;
use super::error::KafkaPipelineError;
use super::isolation::{Isolation, Treatment};
use super::metrics::KafkaLoopMetrics;
use super::produce::produce_batch;
use super::rebalance::RebalanceContext;
use crate::pipeline::records::{
    reason, Housekeeping, RecordMapper, CRASHED_DETAIL, PANICKED_DETAIL,
};
use crate::pipeline::{NormalizerSettings, PipelineError};
use crate::push::SourceContext;
use crate::supervisor::{panic_message, sleep_unless_stopped, NormalizerHealth, SupervisedLoop};
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

/// The normalizer as a member of a Kafka consumer group. Every method blocks (rdkafka polls,
/// SQLite commits, delivery reports), so it runs on its own thread ([`KafkaNormalizer::run`]).
pub struct KafkaNormalizer {
    consumer: BaseConsumer<RebalanceContext>,
    sink: ProjectionSinks,
    kafka_sink: Option<KafkaSink>,
    mapper: RecordMapper,
    settings: NormalizerSettings,
    topic: String,
    sqlite_consumer: String,
    metrics: NormalizerMetrics,
    loop_metrics: KafkaLoopMetrics,
    housekeeping: Housekeeping,
    progress: Progress,
    last_lag: Option<Instant>,
    backoff: Duration,
    /// Partitions left in flight by a dead process, or a batch a sink panicked on.
    isolation: Isolation,
    /// Why the last batch was abandoned (for `/readyz`).
    last_problem: String,
}

/// What the loop does with a batch once read.
enum BatchKind {
    /// Records of partitions in normal consumption.
    Normal,
    /// One record of a recovering partition, attempted alone.
    Alone {
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
}

impl KafkaNormalizer {
    /// Builds the consumer (not yet subscribed) and opens the projection sinks twice: one
    /// set of connections commits batches, the other is the rebalance callback's, to read
    /// offsets.
    /// `attempts_dir` holds the attempt journal ([`crate::pipeline::attempts`]).
    pub fn new(
        consumer_settings: &KafkaConsumerSettings,
        sinks: &ProjectionSettings,
        kafka_sink: Option<KafkaSink>,
        sources: HashMap<String, SourceContext>,
        settings: NormalizerSettings,
        attempts_dir: &Path,
    ) -> Result<Self, PipelineError> {
        let sink = ProjectionSinks::open(sinks)?;
        let offsets_reader = ProjectionSinks::open(sinks)?;
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
        sink.create_dead_letter_series(crate::pipeline::records::dead_letter_reasons());
        if let Some(kafka_sink) = &kafka_sink {
            kafka_sink
                .metrics()
                .create_dead_letter_series(crate::pipeline::records::dead_letter_reasons());
        }
        let isolation = Isolation::open(attempts_dir, &sqlite_consumer, &consumer_settings.topic)?;
        Ok(KafkaNormalizer {
            consumer,
            sink,
            kafka_sink,
            mapper,
            housekeeping: Housekeeping::default(),
            settings,
            topic: consumer_settings.topic.clone(),
            sqlite_consumer,
            metrics,
            loop_metrics,
            progress: Progress::default(),
            last_lag: None,
            backoff: BACKOFF_MIN,
            isolation,
            last_problem: String::new(),
        })
    }

    /// Joins the group and runs until `shutdown` is set; the batch in progress is committed
    /// or abandoned first (abandoned records are read again by whoever owns them next). A
    /// batch a sink refuses is read again after a backoff (`health` says `retrying`
    /// meanwhile); any other error ends the loop.
    pub fn run_until(
        mut self,
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<(), PipelineError> {
        self.consumer.subscribe(&[&self.topic]).map_err(|source| {
            KafkaPipelineError::Subscribe {
                topic: self.topic.clone(),
                source,
            }
        })?;
        tracing::info!(topic = %self.topic, consumer = %self.sqlite_consumer, kafka_sink = self.kafka_sink.is_some(), "normalizer consuming the raw topic");
        let result = self.consume_until(shutdown, health);
        // Leaving the group now hands the partitions to the other members at once rather
        // than after the session timeout; dropping the consumer closes it.
        self.consumer.unsubscribe();
        result
    }

    fn consume_until(
        &mut self,
        shutdown: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<(), PipelineError> {
        while !shutdown.load(Ordering::Acquire) {
            let (batch, kind) = self.read_batch()?;
            let committed = if batch.is_empty() {
                Ok(true)
            } else {
                self.commit(batch, kind)
            };
            match committed? {
                true => {
                    self.backoff = BACKOFF_MIN;
                    health.running();
                }
                false => {
                    health.retrying(self.last_problem.clone());
                    sleep_unless_stopped(self.backoff, shutdown);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
            self.maybe_refresh_lag();
            self.housekeeping.maybe_run(&mut self.sink);
        }
        Ok(())
    }

    /// Polls until the batch is full or no record arrives within the linger; a rebalance
    /// during the polls abandons what was read before it. A record of a recovering partition
    /// is a batch of its own.
    fn read_batch(&mut self) -> Result<(KafkaBatch, BatchKind), PipelineError> {
        let mut messages = Vec::new();
        let mut batch_bytes = 0;
        let mut alone = None;
        loop {
            let timeout = if messages.is_empty() {
                self.settings.idle_wait
            } else {
                BATCH_LINGER
            };
            let polled = self.consumer.poll(timeout);
            // The rebalance callback, if any, ran inside that poll.
            let changed = self.progress.sync(self.consumer.context(), &self.topic)?;
            if changed {
                self.last_lag = None;
                self.isolation
                    .plan(&self.progress.positions, &self.consumer)?;
                if !messages.is_empty() {
                    tracing::debug!(
                        records = messages.len(),
                        "rebalance: uncommitted records abandoned"
                    );
                    self.loop_metrics.abandoned_rebalance.inc();
                    messages.clear();
                    batch_bytes = 0;
                }
            }
            let message = match polled {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "raw-topic consumer error");
                    break;
                }
                Some(Ok(message)) => message,
            };
            let (partition, offset) = (message.partition(), message.offset());
            let treatment = self.isolation.treatment(partition, offset);
            if treatment == Treatment::Batch {
                self.isolation
                    .passed(partition, offset, &self.progress.positions, &self.consumer);
                batch_bytes += message.payload().map_or(0, <[u8]>::len);
                messages.push(message);
                if messages.len() >= self.settings.max_batch_records
                    || batch_bytes >= self.settings.max_batch_bytes
                {
                    break;
                }
                continue;
            }
            if messages.is_empty() {
                alone = Some((message, treatment));
            } else {
                // Commit what was read first; this record comes again, alone.
                self.seek(partition, offset);
            }
            break;
        }
        let mut batch = KafkaBatch::new(&self.topic, &self.sqlite_consumer);
        if let Some((message, treatment)) = alone {
            let (partition, offset) = (message.partition(), message.offset());
            match treatment {
                Treatment::Alone { attempts } => {
                    self.isolation
                        .attempting(partition, offset, offset + 1, attempts)?;
                    batch.add(&mut self.mapper, &message);
                }
                Treatment::Crashed => {
                    tracing::error!(
                        partition,
                        offset,
                        "a record killed the normalizer twice; dead-lettered as crashed_normalizer"
                    );
                    let detail = CRASHED_DETAIL.to_owned();
                    batch.add_dead_letter(&message, reason::CRASHED_NORMALIZER, detail);
                }
                Treatment::Panicked | Treatment::Batch => {
                    let detail = PANICKED_DETAIL.to_owned();
                    batch.add_dead_letter(&message, reason::MAPPER_PANIC, detail);
                }
            }
            batch.seal();
            return Ok((batch, BatchKind::Alone { partition, offset }));
        }
        if messages.is_empty() {
            return Ok((batch, BatchKind::Normal));
        }
        // What is about to be mapped is in the attempt journal before the first record is.
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for message in &messages {
            let range = ranges
                .entry(message.partition())
                .or_insert((message.offset(), message.offset()));
            range.1 = message.offset() + 1;
        }
        for (partition, (from, through)) in ranges {
            self.isolation.attempting(partition, from, through, 1)?;
        }
        crash_at("normalizer::after_read");
        for message in &messages {
            batch.add(&mut self.mapper, message);
        }
        crash_at("normalizer::after_map");
        batch.seal();
        Ok((batch, BatchKind::Normal))
    }

    fn seek(&self, partition: i32, offset: i64) {
        if let Err(error) =
            self.consumer
                .seek(&self.topic, partition, Offset::Offset(offset), SEEK_TIMEOUT)
        {
            // Revoked meanwhile: the next owner starts at the SQLite offset anyway.
            tracing::warn!(error = %error, partition, "seeking back failed");
        }
    }

    /// Commits a batch to every sink, Kafka first, then SQLite; returns false when it was
    /// abandoned, to be read again after a backoff: a sink refused it, or a sink panicked on
    /// it, after which its records are attempted one by one (and a record alone whose rows
    /// panic is a dead letter).
    fn commit(&mut self, batch: KafkaBatch, kind: BatchKind) -> Result<bool, PipelineError> {
        let ranges: Vec<(i32, i64, i64)> = batch
            .first_offsets
            .iter()
            .filter_map(|(partition, first)| {
                Some((*partition, *first, *batch.next_offsets.get(partition)?))
            })
            .collect();
        match catch_unwind(AssertUnwindSafe(|| self.commit_to_sinks(batch))) {
            Ok(Ok(true)) => {
                if let BatchKind::Alone { partition, offset } = kind {
                    self.isolation.committed_alone(
                        partition,
                        offset,
                        &self.progress.positions,
                        &self.consumer,
                    );
                }
                Ok(true)
            }
            Ok(Ok(false)) => Ok(false),
            Ok(Err(error)) => Err(error),
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(panic = %message, "a sink panicked on a batch (abandoned); its records are attempted one by one");
                self.last_problem = format!("a sink panicked: {message}");
                match kind {
                    BatchKind::Alone { partition, offset } => {
                        self.isolation.record_panicked(partition, offset);
                    }
                    BatchKind::Normal => {
                        self.isolation.batch_panicked(
                            &ranges,
                            &self.progress.positions,
                            &self.consumer,
                        );
                    }
                }
                for (partition, from, _) in &ranges {
                    self.seek(*partition, *from);
                }
                Ok(false)
            }
        }
    }

    /// Commits a batch to every sink; false when a sink refused it (it is read again).
    fn commit_to_sinks(&mut self, mut batch: KafkaBatch) -> Result<bool, PipelineError> {
        if let Some(kafka_sink) = &mut self.kafka_sink {
            // The events topic is written before the projections: number the call events now,
            // as the projections will (`callhook_sinks::sequence`), so `ce_sequence` is theirs.
            match self.sink.assign_sequences(&mut batch.pending.batch) {
                Ok(()) => {}
                Err(error) if error.is_retryable() => {
                    self.metrics.commit_failures.inc();
                    self.retry_later(&batch, error.to_string());
                    return Ok(false);
                }
                Err(error) => return Err(error.into()),
            }
            let group = self.consumer.group_metadata();
            let transactional = kafka_sink.is_transactional();
            let result = produce_batch(
                kafka_sink,
                &mut self.sink,
                &batch,
                &self.progress.in_topics_below,
                group.as_ref().filter(|_| transactional),
            );
            match result {
                Ok(_) => self.progress.kafka_confirmed(&batch.next_offsets),
                Err(error) if error.is_retryable() => {
                    self.loop_metrics.abandoned_kafka_sink.inc();
                    self.retry_later(&batch, format!("kafka sink: {error}"));
                    return Ok(false);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let outcome = match self.sink.commit_batch(&batch.pending.batch) {
            Ok(outcome) => outcome,
            Err(error) if error.is_retryable() => {
                self.metrics.commit_failures.inc();
                match error {
                    callhook_sinks::SinkError::Postgres(_) => {
                        self.loop_metrics.abandoned_postgres_sink.inc()
                    }
                    _ => self.loop_metrics.abandoned_sqlite_sink.inc(),
                }
                self.retry_later(&batch, error.to_string());
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
        crash_at("normalizer::after_commit");
        self.after_commit(&mut batch, &outcome);
        Ok(true)
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
    }

    /// Seeks the batch's partitions back to its first records; the records are read again
    /// (or by the partition's next owner) after the loop's backoff.
    fn retry_later(&mut self, batch: &KafkaBatch, problem: String) {
        tracing::error!(problem = %problem, records = batch.len(), backoff_ms = self.backoff.as_millis() as u64, "batch not committed; it will be read again");
        self.last_problem = problem;
        for (partition, first) in &batch.first_offsets {
            self.seek(*partition, *first);
        }
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

impl SupervisedLoop for KafkaNormalizer {
    fn run(
        self: Box<Self>,
        stop: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<(), PipelineError> {
        (*self).run_until(stop, health)
    }
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
