//! [`KafkaSink`]: produces a batch's events and dead letters and reports success only once
//! Kafka confirmed every record (or committed the batch's transaction).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callhook_schemas::EventType;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::{ClientContext, TopicPartitionList};

use super::config::KafkaSinkSettings;
use super::encode::{encode_dead_letter, encode_event, EncodedRecord, KafkaDeadLetter};
use super::error::{KafkaSinkError, Result};
use super::metrics::KafkaSinkMetrics;
use crate::batch::{CommitOutcome, SinkEvent};
use crate::metrics::{BatchCommitted, SinkMetrics};

/// The `sink` label of this sink's metrics.
pub const METRIC_LABEL: &str = "kafka";

/// Extra time the sink waits past librdkafka's own message timeout, so that a record that
/// cannot be delivered fails with its specific error rather than a generic flush timeout.
const FLUSH_MARGIN: Duration = Duration::from_secs(5);

/// How long one poll waits while the producer's local queue is full.
const QUEUE_FULL_POLL: Duration = Duration::from_millis(10);

/// The delivery reports of the batch in progress.
#[derive(Debug, Default)]
struct DeliveryTally {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Receives librdkafka's delivery reports (served by `poll`/`flush` on the sink's thread).
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    tally: Mutex<DeliveryTally>,
}

impl ClientContext for DeliveryTracker {
    /// Cluster errors are retried by librdkafka; a batch they fail is retried whole and shows
    /// in the failure counter and `/readyz`, so they are warnings here.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka sink producer error");
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => tally.delivered += 1,
            Err((error, _)) => {
                tally.failed += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(error.to_string());
                }
            }
        }
    }
}

impl DeliveryTracker {
    fn reset(&self) -> DeliveryTally {
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What the batch in progress has sent so far.
#[derive(Debug, Default)]
struct BatchState {
    open: bool,
    started: Option<Instant>,
    sent: u64,
    events: u64,
    dead_letters: u64,
    duplicates: u64,
    events_by_type: [u64; EventType::ALL.len()],
    dead_letters_by_reason: BTreeMap<String, u64>,
}

/// The Kafka sink: one idempotent (optionally transactional) producer.
///
/// A batch is `begin_batch`, any number of `send_event`/`send_dead_letter` (each only enqueues:
/// every record of the batch is in flight at once), then `commit_batch`, which returns once
/// every record is confirmed, or `abort_batch`. Every method may block (on delivery reports,
/// on the transaction coordinator), so the sink lives on the normalizer's own thread.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryTracker>,
    settings: KafkaSinkSettings,
    transactions_ready: bool,
    /// A Kafka transaction is open (begun, not yet committed or aborted); an abort that
    /// failed leaves it open, and the next batch aborts it first.
    in_transaction: bool,
    batch: BatchState,
    metrics: KafkaSinkMetrics,
}

impl KafkaSink {
    /// Creates the producer (no I/O yet: the cluster is first contacted by the first batch).
    pub fn new(settings: KafkaSinkSettings) -> Result<KafkaSink> {
        let producer = settings
            .producer_config()
            .create_with_context(DeliveryTracker::default())
            .map_err(KafkaSinkError::Create)?;
        Ok(KafkaSink {
            producer,
            settings,
            transactions_ready: false,
            in_transaction: false,
            batch: BatchState::default(),
            metrics: KafkaSinkMetrics::new(METRIC_LABEL),
        })
    }

    /// Returns the settings the sink was built with.
    pub fn settings(&self) -> &KafkaSinkSettings {
        &self.settings
    }

    /// Returns true when batches run in Kafka transactions.
    pub fn is_transactional(&self) -> bool {
        self.settings.transactional_id.is_some()
    }

    /// Starts a batch (and, with transactions, a Kafka transaction).
    pub fn begin_batch(&mut self) -> Result<()> {
        debug_assert!(!self.batch.open, "a batch is already open");
        self.producer.context().reset();
        self.batch = BatchState {
            open: true,
            started: Some(Instant::now()),
            ..BatchState::default()
        };
        if self.is_transactional() {
            if self.in_transaction {
                self.abort_transaction()?;
            }
            if !self.transactions_ready {
                self.producer
                    .init_transactions(self.settings.delivery_timeout)
                    .map_err(|e| self.failed(KafkaSinkError::transaction("init", e)))?;
                self.transactions_ready = true;
            }
            self.producer
                .begin_transaction()
                .map_err(|e| self.failed(KafkaSinkError::transaction("begin", e)))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Enqueues one canonical event for the events topic.
    pub fn send_event(&mut self, sink_event: &SinkEvent) -> Result<()> {
        let event = &sink_event.event;
        let record = encode_event(sink_event)?;
        let topic = self.settings.events_topic.clone();
        self.enqueue(&topic, &record)?;
        self.batch.events += 1;
        self.batch.events_by_type[event.event_type as usize] += 1;
        Ok(())
    }

    /// Enqueues a call's new `calls` row for the compacted calls topic.
    pub fn send_call(&mut self, row: &crate::calls_fold::CallRow) -> Result<()> {
        let record = super::encode::encode_call(row);
        let topic = self.settings.calls_topic.clone();
        self.enqueue(&topic, &record)
    }

    /// Counts a push of the batch that is not produced because the topics already hold it
    /// (a vendor's re-send, by its dedupe key).
    pub fn skip_duplicate(&mut self) {
        self.batch.duplicates += 1;
    }

    /// Returns the handles of this sink's `callhook_sink_*` series.
    pub fn metrics(&self) -> &SinkMetrics {
        self.metrics.sink()
    }

    /// Enqueues one dead letter for the dead-letter topic.
    pub fn send_dead_letter(&mut self, letter: &KafkaDeadLetter<'_>) -> Result<()> {
        let record = encode_dead_letter(letter);
        let topic = self.settings.dead_letters_topic.clone();
        self.enqueue(&topic, &record)?;
        self.batch.dead_letters += 1;
        *self
            .batch
            .dead_letters_by_reason
            .entry(letter.reason.to_owned())
            .or_default() += 1;
        Ok(())
    }

    /// Returns once every record of the batch is confirmed. With transactions, `consumed`
    /// (the next offsets of the raw-topic partitions and the consumer's group metadata) is
    /// committed in the same transaction; without, it is ignored (the caller commits offsets
    /// to the consumer group itself once every sink confirmed).
    pub fn commit_batch(
        &mut self,
        consumed: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    ) -> Result<CommitOutcome> {
        debug_assert!(self.batch.open, "no batch is open");
        if self.is_transactional() {
            self.commit_transaction(consumed)?;
        } else {
            self.await_deliveries()?;
        }
        let batch = std::mem::take(&mut self.batch);
        let outcome = CommitOutcome {
            events_inserted: batch.events,
            dead_letters_written: batch.dead_letters,
            duplicates_skipped: batch.duplicates,
            ..CommitOutcome::default()
        };
        BatchCommitted {
            outcome,
            elapsed: batch.started.map(|at| at.elapsed()).unwrap_or_default(),
            events_by_type: batch.events_by_type,
            dead_letters_by_reason: batch
                .dead_letters_by_reason
                .iter()
                .map(|(reason, count)| (reason.as_str(), *count))
                .collect(),
        }
        .emit(self.metrics.sink());
        Ok(outcome)
    }

    /// Abandons the batch: aborts its transaction, or purges the records not yet sent (records
    /// already on the wire may still be delivered: without transactions the topics are
    /// at-least-once).
    pub fn abort_batch(&mut self) {
        if !self.batch.open {
            return;
        }
        self.batch = BatchState::default();
        if self.in_transaction {
            if let Err(error) = self.abort_transaction() {
                tracing::warn!(error = %error, "aborting the kafka transaction failed; retried before the next batch");
            }
        } else {
            self.producer.purge(PurgeConfig::default().queue());
            self.producer.poll(Duration::ZERO);
        }
    }

    /// Aborts the open transaction. On a retryable failure the transaction stays open and the
    /// next [`KafkaSink::begin_batch`] aborts it first (librdkafka requires the retry).
    fn abort_transaction(&mut self) -> Result<()> {
        // librdkafka waits for the delivery reports of what is outstanding before it aborts,
        // and only a poll on this thread serves them: drop what is unsent, let flush serve the
        // reports, then abort.
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let _ = self.producer.flush(self.settings.delivery_timeout);
        match self
            .producer
            .abort_transaction(self.settings.delivery_timeout)
        {
            Ok(()) => {
                self.in_transaction = false;
                Ok(())
            }
            Err(error) => {
                let error = KafkaSinkError::transaction("abort", error);
                if !error.is_retryable() {
                    // A fenced or fatally failed producer cannot abort; the process stops.
                    self.in_transaction = false;
                    self.transactions_ready = false;
                }
                Err(self.failed(error))
            }
        }
    }

    fn enqueue(&mut self, topic: &str, record: &EncodedRecord) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let mut base: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
            .key(record.key.as_str())
            .payload(record.value.as_slice())
            .headers(headers);
        let deadline = Instant::now() + self.settings.delivery_timeout + FLUSH_MARGIN;
        loop {
            match self.producer.send(base) {
                Ok(()) => {
                    self.batch.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if Instant::now() < deadline =>
                {
                    // Serving delivery reports frees room in librdkafka's queue.
                    base = returned;
                    self.producer.poll(QUEUE_FULL_POLL);
                }
                Err((source, _)) => {
                    return Err(self.failed(KafkaSinkError::Enqueue {
                        topic: topic.to_owned(),
                        source,
                    }));
                }
            }
        }
    }

    fn await_deliveries(&mut self) -> Result<()> {
        let timeout = self.settings.delivery_timeout + FLUSH_MARGIN;
        if self.producer.flush(timeout).is_err() {
            return Err(self.failed(KafkaSinkError::DeliveryTimeout(timeout)));
        }
        let tally = self.producer.context().reset();
        if tally.failed > 0 || tally.delivered < self.batch.sent {
            return Err(self.failed(KafkaSinkError::Delivery {
                failed: tally
                    .failed
                    .max(self.batch.sent - tally.delivered.min(self.batch.sent)),
                sent: self.batch.sent,
                first: tally
                    .first_error
                    .unwrap_or_else(|| "no delivery report".to_owned()),
            }));
        }
        Ok(())
    }

    fn commit_transaction(
        &mut self,
        consumed: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    ) -> Result<()> {
        let timeout = self.settings.delivery_timeout;
        // Serve the delivery reports here (this thread is the only one that polls); a failed
        // record then fails the commit with its own error.
        if self.producer.flush(timeout + FLUSH_MARGIN).is_err() {
            return Err(self.failed(KafkaSinkError::DeliveryTimeout(timeout + FLUSH_MARGIN)));
        }
        if let Some((offsets, group)) = consumed {
            if let Err(error) = self
                .producer
                .send_offsets_to_transaction(offsets, group, timeout)
            {
                return Err(self.failed(KafkaSinkError::transaction("send_offsets", error)));
            }
        }
        if let Err(error) = self.producer.commit_transaction(timeout) {
            return Err(self.failed(KafkaSinkError::transaction("commit", error)));
        }
        self.in_transaction = false;
        self.metrics.transaction_committed();
        Ok(())
    }

    /// Counts a failed batch step and passes the error through.
    fn failed(&self, error: KafkaSinkError) -> KafkaSinkError {
        self.metrics.failure(&error);
        error
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // An open batch was never confirmed; its offsets were not committed either.
        self.abort_batch();
    }
}
