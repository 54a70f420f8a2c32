//! The forwarder: drains the spool to the raw topic, in order, once Kafka is back.
//!
//! Guarantee: a spooled record leaves the spool only after Kafka confirmed it. The forwarder
//! reads each spool partition in offset order, hands a batch to its own idempotent producer
//! (many messages in flight, order kept per Kafka partition), waits for the delivery reports
//! and commits the spool offset after the last record of the *contiguous* confirmed prefix;
//! spool retention then deletes what is committed. When a report is an error or does not come
//! within `forwarder_delivery_timeout_ms`, the forwarder purges its producer (so nothing later
//! of the batch is still queued to overtake the failed record), marks Kafka down and retries
//! from the first unconfirmed record after a pause; records of the batch that were written
//! anyway are duplicated, never reordered in first-copy order.
//!
//! While Kafka is down the forwarder probes it (a metadata request for the raw topic) with a
//! doubling pause (100 ms up to `forwarder_backoff_max_ms`), re-creating the raw topic when
//! it is missing and `create_topics` is on (a broker that lost its data). Once the spool is
//! empty and Kafka answered, it switches the router back to direct sends.
//!
//! It runs on a dedicated thread: reading and committing the spool block on SQLite and the
//! metadata probe blocks on the network, none of which may run on the async runtime. The
//! thread drives its few async waits (delivery reports, topic creation) with its own
//! single-threaded tokio runtime, which nothing else uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer, PurgeConfig};
use tokio::runtime::Runtime;

use super::admin::{ensure_topic_with, TopicSpec, TopicStatus};
use super::config::KafkaLogSettings;
use super::producer;
use super::router::Router;
use super::telemetry::{ForwardFailed, Forwarded, ProbeFailed};
use super::FORWARDER_GROUP;
use crate::embedded::{EmbeddedLog, LogReader};
use crate::StoredRecord;

/// The first pause after a failure; it doubles up to `forwarder_backoff_max`.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// How often a wait for delivery reports looks at the stop signal.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long the forwarder sleeps when the spool is empty (appends wake it sooner).
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// Tells the forwarder thread to stop; wakes it from its pauses.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    condvar: Condvar,
    flag: AtomicBool,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.condvar.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps for `pause` unless stopped first; returns whether stopped.
    fn sleep(&self, pause: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = self
            .condvar
            .wait_timeout_while(stopped, pause, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }
}

/// Why the raw topic cannot take records.
#[derive(Debug, PartialEq, Eq)]
enum TopicProblem {
    /// The broker does not know the topic.
    Missing,
    /// Anything else (broker unreachable, no leader).
    Other(String),
}

/// Why a forwarding round stopped early.
struct RoundFailure {
    confirmed: u64,
    sent: u64,
    reason: String,
}

pub(crate) struct Forwarder {
    settings: KafkaLogSettings,
    router: Arc<Router>,
    spool: Arc<EmbeddedLog>,
    reader: LogReader,
    producer: FutureProducer,
    runtime: Runtime,
    stop: Arc<StopSignal>,
    kafka_up: bool,
    /// Set when Kafka failed since `producer` was created: it is replaced before the next
    /// round (see [`Forwarder::resume_direct`] for why).
    producer_stale: bool,
    backoff: Duration,
}

impl Forwarder {
    pub(crate) fn new(
        settings: KafkaLogSettings,
        router: Arc<Router>,
        spool: Arc<EmbeddedLog>,
        reader: LogReader,
        producer: FutureProducer,
        stop: Arc<StopSignal>,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        Ok(Self {
            settings,
            router,
            spool,
            reader,
            producer,
            runtime,
            stop,
            kafka_up: false,
            producer_stale: false,
            backoff: BACKOFF_INITIAL,
        })
    }

    /// Runs until stopped.
    pub(crate) fn run(mut self) {
        while !self.stop.is_stopped() {
            let generation = self.spool.append_generation();
            if self.router.take_direct_failure() {
                // The direct path just failed: probe before trusting Kafka with a batch.
                self.kafka_up = false;
                self.producer_stale = true;
            }
            if self.spool.unconsumed_records() == 0 {
                if self.router.is_spooling() {
                    if !self.kafka_up && !self.probe() {
                        self.pause();
                        continue;
                    }
                    // Fails while direct sends or spool appends are pending; their records
                    // wake the wait below, or the next turn looks again.
                    self.resume_direct();
                }
                self.spool.wait_for_append(generation, IDLE_WAIT);
                continue;
            }
            if !self.kafka_up && !self.probe() {
                self.pause();
                continue;
            }
            if self.producer_stale && !self.replace_forwarder_producer() {
                self.pause();
                continue;
            }
            let round = self.forward_round();
            if self.stop.is_stopped() {
                break;
            }
            match round {
                Ok(()) => self.backoff = BACKOFF_INITIAL,
                Err(failure) => {
                    self.kafka_up = false;
                    self.producer_stale = true;
                    // Nothing of the failed batch may stay queued to overtake the record that
                    // failed; blocking here is fine (own thread).
                    self.producer
                        .purge(PurgeConfig::default().queue().inflight());
                    ForwardFailed {
                        confirmed: failure.confirmed,
                        sent: failure.sent,
                        reason: &failure.reason,
                        retry_in: self.backoff,
                    }
                    .emit();
                    self.pause();
                }
            }
        }
    }

    /// When nothing is pending, switches the router back to direct sends with a fresh direct
    /// producer (Kafka answered a probe or confirmed a batch). Returns whether it did.
    ///
    /// Why a fresh producer: the purge at the start of spooling left the old one with a
    /// sequence gap that librdkafka repairs by bumping its epoch, and a broker that lost its
    /// state (an in-memory broker restarted, a topic re-created) may not know its producer id
    /// at all, or hand the same id to another producer. A new producer registers anew.
    fn resume_direct(&mut self) -> bool {
        if !self.router.is_drained() {
            return false;
        }
        let Some(fresh) = self.fresh_producer(self.settings.direct_message_timeout()) else {
            self.kafka_up = false;
            return false;
        };
        match self.router.try_resume_direct(fresh) {
            Ok(old) => {
                // Dropped here, on the forwarder thread: destroying a producer may block.
                drop(old);
                self.backoff = BACKOFF_INITIAL;
                true
            }
            Err(unused) => {
                drop(unused);
                false
            }
        }
    }

    /// Replaces the forwarder's producer with a fresh, connected one; returns whether it did.
    fn replace_forwarder_producer(&mut self) -> bool {
        match self.fresh_producer(forwarder_message_timeout(&self.settings)) {
            Some(fresh) => {
                // The old one is dropped here, on the forwarder thread (destroying may block).
                self.producer = fresh;
                self.producer_stale = false;
                true
            }
            None => false,
        }
    }

    /// Creates a producer and waits (up to the ack bound) until it has the raw topic's
    /// metadata, so its first sends do not pay for connecting.
    fn fresh_producer(&self, message_timeout: Duration) -> Option<FutureProducer> {
        let producer = match self
            .settings
            .producer_config(message_timeout)
            .create::<FutureProducer>()
        {
            Ok(producer) => producer,
            Err(error) => {
                tracing::error!(%error, "cannot create a kafka producer");
                return None;
            }
        };
        let warmed = producer
            .client()
            .fetch_metadata(Some(&self.settings.raw_topic), self.settings.ack_timeout);
        warmed.is_ok().then_some(producer)
    }

    /// Pauses for the current backoff and doubles it.
    fn pause(&mut self) {
        self.stop.sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(self.settings.forwarder_backoff_max);
    }

    /// Asks Kafka for the raw topic's metadata; creates the topic when missing (and allowed).
    /// Returns whether every partition of the topic has a leader.
    fn probe(&mut self) -> bool {
        let mut outcome = self.topic_ready();
        if outcome == Err(TopicProblem::Missing) {
            outcome = match self.create_missing_topic() {
                // Just created: look again (the broker may need a moment for leaders).
                Ok(()) => self.topic_ready(),
                Err(reason) => Err(TopicProblem::Other(reason)),
            };
        }
        let reason = match outcome {
            Ok(()) => {
                self.kafka_up = true;
                return true;
            }
            Err(TopicProblem::Missing) => "the raw topic does not exist".to_owned(),
            Err(TopicProblem::Other(reason)) => reason,
        };
        self.producer_stale = true;
        ProbeFailed {
            reason: &reason,
            spool_records: self.spool.unconsumed_records(),
            retry_in: self.backoff,
        }
        .emit();
        false
    }

    /// Fetches the raw topic's metadata: `Ok` when every partition has a leader.
    fn topic_ready(&self) -> Result<(), TopicProblem> {
        let topic = &self.settings.raw_topic;
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.settings.ack_timeout)
            .map_err(|error| TopicProblem::Other(error.to_string()))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(found) if found.error().is_none() && !found.partitions().is_empty() => {
                if found.partitions().iter().all(|p| p.leader() >= 0) {
                    Ok(())
                } else {
                    Err(TopicProblem::Other(
                        "a raw topic partition has no leader".to_owned(),
                    ))
                }
            }
            _ => Err(TopicProblem::Missing),
        }
    }

    /// Creates the raw topic when `create_topics` is on.
    fn create_missing_topic(&mut self) -> Result<(), String> {
        if !self.settings.create_topics {
            tracing::error!(
                topic = %self.settings.raw_topic,
                "the raw topic does not exist and `create_topics` is off; create it to drain the spool"
            );
            return Err("the raw topic does not exist".to_owned());
        }
        let spec = TopicSpec {
            name: &self.settings.raw_topic,
            partitions: self.settings.raw_topic_partitions.get(),
            replication_factor: self.settings.raw_topic_replication_factor,
            configs: &[],
        };
        let client_config = self.settings.client_config();
        let created = self.runtime.block_on(ensure_topic_with(
            &client_config,
            &spec,
            self.settings.ack_timeout,
        ));
        match created {
            Ok(status) => {
                if status == TopicStatus::Created {
                    tracing::info!(
                        topic = spec.name,
                        partitions = spec.partitions,
                        "created the raw topic"
                    );
                }
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Forwards every spool partition as far as it goes.
    fn forward_round(&mut self) -> Result<(), RoundFailure> {
        for partition in 0..self.spool.partitions() {
            loop {
                if self.stop.is_stopped() {
                    return Ok(());
                }
                let from = self.next_offset(partition)?;
                let records = self
                    .reader
                    .read(partition, from, self.settings.forwarder_batch_records.get())
                    .map_err(|error| spool_failure(&error))?;
                if records.is_empty() {
                    break;
                }
                self.forward_batch(partition, &records)?;
            }
        }
        Ok(())
    }

    fn next_offset(&self, partition: u32) -> Result<u64, RoundFailure> {
        let committed = self
            .reader
            .committed(FORWARDER_GROUP, partition)
            .map_err(|error| spool_failure(&error))?;
        let start = self
            .reader
            .log_start_offset(partition)
            .map_err(|error| spool_failure(&error))?;
        Ok(committed.unwrap_or(0).max(start))
    }

    /// Sends a batch, waits for its contiguous confirmed prefix and commits past it.
    fn forward_batch(
        &mut self,
        partition: u32,
        records: &[StoredRecord],
    ) -> Result<(), RoundFailure> {
        let sent_at = Instant::now();
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        let mut send_failure = None;
        for stored in records {
            match producer::send(
                &self.producer,
                &self.settings.raw_topic,
                &stored.key,
                &stored.record,
            ) {
                Ok(delivery) => deliveries.push(delivery),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
                    if !deliveries.is_empty() =>
                {
                    // librdkafka's queue is full: confirm what was sent, then read on.
                    break;
                }
                Err(error) => {
                    send_failure = Some(error.to_string());
                    break;
                }
            }
        }
        let sent = deliveries.len() as u64;
        let (confirmed, delivery_failure) = self.await_prefix(deliveries);
        if confirmed > 0 {
            let last = &records[usize::try_from(confirmed - 1).unwrap_or(0)];
            self.reader
                .commit(FORWARDER_GROUP, partition, last.position.offset + 1)
                .map_err(|error| spool_failure(&error))?;
            Forwarded {
                records: confirmed,
                sent_at,
            }
            .emit(self.spool.unconsumed_records());
        }
        match delivery_failure.or(send_failure) {
            Some(reason) => Err(RoundFailure {
                confirmed,
                sent,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Waits, in order, for the delivery reports; returns how many of the first ones
    /// confirmed, and why the next one did not. Gives up at the forwarder's bound, or within
    /// [`STOP_CHECK_INTERVAL`] of a stop.
    fn await_prefix(&self, deliveries: Vec<DeliveryFuture>) -> (u64, Option<String>) {
        let deadline = Instant::now() + self.settings.forwarder_delivery_timeout;
        let stop = Arc::clone(&self.stop);
        self.runtime.block_on(async move {
            let mut confirmed = 0;
            for mut delivery in deliveries {
                let report = loop {
                    match tokio::time::timeout(STOP_CHECK_INTERVAL, &mut delivery).await {
                        Ok(report) => break report,
                        Err(_) if stop.is_stopped() => {
                            return (confirmed, Some("the forwarder is stopping".to_owned()))
                        }
                        Err(_) if Instant::now() >= deadline => {
                            let reason = "no delivery report within the forwarder's bound";
                            return (confirmed, Some(reason.to_owned()));
                        }
                        Err(_) => {}
                    }
                };
                match report {
                    Ok(Ok(_)) => confirmed += 1,
                    Ok(Err((error, _))) => return (confirmed, Some(error.to_string())),
                    Err(_) => {
                        let reason = "the producer dropped a delivery report";
                        return (confirmed, Some(reason.to_owned()));
                    }
                }
            }
            (confirmed, None)
        })
    }
}

/// Returns the librdkafka message timeout of the forwarder's producer: its own bound plus the
/// margin, so its timer (and the purge), not per-message expiry, decides what failed.
pub(crate) fn forwarder_message_timeout(settings: &KafkaLogSettings) -> Duration {
    settings.forwarder_delivery_timeout
        + Duration::from_millis(super::config::MESSAGE_TIMEOUT_MARGIN_MS)
}

fn spool_failure(error: &crate::embedded::EmbeddedLogError) -> RoundFailure {
    RoundFailure {
        confirmed: 0,
        sent: 0,
        reason: format!("spool: {error}"),
    }
}
