//! Metrics and log events of the Kafka raw log.
//!
//! - `callhook_rawlog_kafka_delivery_seconds{path}`: send to delivery report, `path` is
//!   `direct` (an append) or `forwarder` (a spooled record);
//! - `callhook_rawlog_kafka_sends_total{result}`: what became of each append's route:
//!   `delivered` (Kafka confirmed in time), `timed_out` and `failed` (the direct send did not
//!   confirm; the record then goes to the spool), `spooled` (the spool has it, whether the
//!   append went there after a failed send or straight away while spooling), `rejected`
//!   (Kafka refuses the record itself, `503`), `refused` (neither Kafka nor the spool took it,
//!   `503`). One append can count `timed_out` and then `spooled`;
//! - `callhook_rawlog_spool_records`: records in the spool Kafka has not confirmed yet;
//! - `callhook_rawlog_spool_in_use`: 1 while appends go to the spool;
//! - `callhook_rawlog_spool_forwarded_total`: spooled records Kafka confirmed;
//! - `callhook_rawlog_spool_forward_failures_total`: forwarder batches that did not fully
//!   confirm (Kafka down or slow; the batch is retried after a backoff).
//!
//! The spool is an embedded log, so in Kafka mode the embedded `callhook_rawlog_*` metrics
//! (appends, commits, records) describe the spool.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

/// Resolved metric handles.
pub(crate) struct Metrics {
    direct_delivery_seconds: Histogram,
    forwarder_delivery_seconds: Histogram,
    delivered: IntCounter,
    timed_out: IntCounter,
    failed: IntCounter,
    spooled: IntCounter,
    rejected: IntCounter,
    refused: IntCounter,
    pub(crate) spool_records: IntGauge,
    pub(crate) spool_in_use: IntGauge,
    forwarded: IntCounter,
    forward_failures: IntCounter,
}

/// The process-wide metric handles.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);

const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    fn register() -> Self {
        let delivery = HistogramVec::new(
            HistogramOpts::new(
                "callhook_rawlog_kafka_delivery_seconds",
                "Time from handing a raw record to the producer to its delivery report",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["path"],
        )
        .expect("static metric definition is valid");
        let sends = IntCounterVec::new(
            Opts::new(
                "callhook_rawlog_kafka_sends_total",
                "Appends to the kafka raw log by what became of them",
            ),
            &["result"],
        )
        .expect("static metric definition is valid");
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).expect("static metric definition is valid")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).expect("static metric definition is valid")
        };
        let metrics = Self {
            direct_delivery_seconds: delivery.with_label_values(&["direct"]),
            forwarder_delivery_seconds: delivery.with_label_values(&["forwarder"]),
            delivered: sends.with_label_values(&["delivered"]),
            timed_out: sends.with_label_values(&["timed_out"]),
            failed: sends.with_label_values(&["failed"]),
            spooled: sends.with_label_values(&["spooled"]),
            rejected: sends.with_label_values(&["rejected"]),
            refused: sends.with_label_values(&["refused"]),
            spool_records: gauge(
                "callhook_rawlog_spool_records",
                "Records in the local spool that kafka has not confirmed yet",
            ),
            spool_in_use: gauge(
                "callhook_rawlog_spool_in_use",
                "1 while appends go to the local spool instead of kafka",
            ),
            forwarded: counter(
                "callhook_rawlog_spool_forwarded_total",
                "Spooled records that kafka confirmed",
            ),
            forward_failures: counter(
                "callhook_rawlog_spool_forward_failures_total",
                "Forwarder batches that kafka did not fully confirm",
            ),
        };
        register(Box::new(delivery));
        register(Box::new(sends));
        register(Box::new(metrics.spool_records.clone()));
        register(Box::new(metrics.spool_in_use.clone()));
        register(Box::new(metrics.forwarded.clone()));
        register(Box::new(metrics.forward_failures.clone()));
        metrics
    }
}

fn register(collector: Box<dyn prometheus::core::Collector>) {
    match prometheus::default_registry().register(collector) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(error) => tracing::warn!(%error, "cannot register kafka raw log metric"),
    }
}

/// Kafka confirmed a direct send in time.
pub(crate) struct DirectDelivered {
    pub(crate) sent_at: Instant,
}

impl DirectDelivered {
    pub(crate) fn emit(self) {
        METRICS.delivered.inc();
        METRICS
            .direct_delivery_seconds
            .observe(self.sent_at.elapsed().as_secs_f64());
    }
}

/// A direct send did not confirm in time (`timed_out`) or failed; the record goes to the spool.
pub(crate) struct DirectFailed {
    pub(crate) timed_out: bool,
}

impl DirectFailed {
    pub(crate) fn emit(self) {
        // No log line per failure: during an outage that is one per push. The switch to
        // spooling logs once.
        if self.timed_out {
            METRICS.timed_out.inc();
        } else {
            METRICS.failed.inc();
        }
    }
}

/// The spool has a record durable.
pub(crate) struct Spooled;

impl Spooled {
    pub(crate) fn emit(self, spool_records: u64) {
        METRICS.spooled.inc();
        METRICS.spool_records.set(gauge_value(spool_records));
    }
}

/// Kafka refuses the record itself (too large): `503`, not spooled.
pub(crate) struct RecordRejected<'a> {
    pub(crate) body_bytes: usize,
    pub(crate) reason: &'a str,
}

impl RecordRejected<'_> {
    pub(crate) fn emit(self) {
        METRICS.rejected.inc();
        tracing::warn!(
            body_bytes = self.body_bytes,
            reason = self.reason,
            "kafka refuses this raw record; answering 503"
        );
    }
}

/// Neither Kafka nor the spool took a record: `503`.
pub(crate) struct AppendRefused;

impl AppendRefused {
    pub(crate) fn emit(self) {
        // No log line per refusal; readiness and the metric carry it.
        METRICS.refused.inc();
    }
}

/// The log switched from direct sends to the spool.
pub(crate) struct SpoolingStarted<'a> {
    pub(crate) reason: &'a str,
}

impl SpoolingStarted<'_> {
    pub(crate) fn emit(self) {
        METRICS.spool_in_use.set(1);
        tracing::warn!(
            reason = self.reason,
            "kafka did not confirm a raw record in time; pushes go to the local spool until it drains"
        );
    }
}

/// The forwarder drained the spool and the log went back to direct sends.
pub(crate) struct SpoolingEnded {
    pub(crate) spooling_for: Duration,
}

impl SpoolingEnded {
    pub(crate) fn emit(self) {
        METRICS.spool_in_use.set(0);
        METRICS.spool_records.set(0);
        tracing::info!(
            spooling_seconds = self.spooling_for.as_secs_f64(),
            "spool drained; pushes go to kafka directly again"
        );
    }
}

/// The forwarder got a contiguous run of spooled records confirmed.
pub(crate) struct Forwarded {
    pub(crate) records: u64,
    pub(crate) sent_at: Instant,
}

impl Forwarded {
    pub(crate) fn emit(self, spool_records: u64) {
        METRICS.forwarded.inc_by(self.records);
        METRICS
            .forwarder_delivery_seconds
            .observe(self.sent_at.elapsed().as_secs_f64());
        METRICS.spool_records.set(gauge_value(spool_records));
    }
}

/// A forwarder batch did not fully confirm.
pub(crate) struct ForwardFailed<'a> {
    pub(crate) confirmed: u64,
    pub(crate) sent: u64,
    pub(crate) reason: &'a str,
    pub(crate) retry_in: Duration,
}

impl ForwardFailed<'_> {
    pub(crate) fn emit(self) {
        METRICS.forward_failures.inc();
        tracing::warn!(
            confirmed = self.confirmed,
            sent = self.sent,
            reason = self.reason,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "kafka did not confirm every spooled record of a batch; retrying after a pause"
        );
    }
}

/// The forwarder's health probe failed while the spool holds records.
pub(crate) struct ProbeFailed<'a> {
    pub(crate) reason: &'a str,
    pub(crate) spool_records: u64,
    pub(crate) retry_in: Duration,
}

impl ProbeFailed<'_> {
    pub(crate) fn emit(self) {
        METRICS.spool_records.set(gauge_value(self.spool_records));
        tracing::warn!(
            reason = self.reason,
            spool_records = self.spool_records,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "kafka is not reachable; spooled pushes wait"
        );
    }
}

/// Sets the depth gauge (e.g. at start).
pub(crate) fn set_spool_state(in_use: bool, spool_records: u64) {
    METRICS.spool_in_use.set(i64::from(in_use));
    METRICS.spool_records.set(gauge_value(spool_records));
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
