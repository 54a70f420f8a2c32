//! Metrics and log events of the embedded raw log.
//!
//! Metric handles are created and registered on `prometheus::default_registry()` once per
//! process (a `LazyLock`); registering twice is harmless because `AlreadyReg` is ignored. Every
//! event is a small struct whose `emit()` does the `tracing` call and the metric updates together.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

/// Resolved metric handles.
pub(crate) struct Metrics {
    pub(crate) append_seconds: Histogram,
    pub(crate) batch_records: Histogram,
    pub(crate) commit_seconds: Histogram,
    pub(crate) appends_ok: IntCounter,
    pub(crate) appends_overloaded: IntCounter,
    pub(crate) appends_unavailable: IntCounter,
    pub(crate) records: IntGauge,
    pub(crate) retention_deleted: IntCounter,
    pub(crate) compacted_records: IntCounter,
    pub(crate) compacted_segments: IntCounter,
    pub(crate) compaction_input_bytes: IntCounter,
    pub(crate) compaction_output_bytes: IntCounter,
}

/// The process-wide metric handles.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);

const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS_RECORDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

impl Metrics {
    fn register() -> Self {
        let appends = IntCounterVec::new(
            Opts::new("callhook_rawlog_appends_total", "Raw log appends by result"),
            &["result"],
        )
        .expect("static metric definition is valid");
        let metrics = Self {
            append_seconds: histogram(
                "callhook_rawlog_append_seconds",
                "Time from enqueueing an append to its record being durable",
                LATENCY_BUCKETS_SECONDS,
            ),
            batch_records: histogram(
                "callhook_rawlog_batch_records",
                "Records written per group commit",
                BATCH_BUCKETS_RECORDS,
            ),
            commit_seconds: histogram(
                "callhook_rawlog_commit_seconds",
                "Time to write and commit one group commit, fsync included",
                LATENCY_BUCKETS_SECONDS,
            ),
            appends_ok: appends.with_label_values(&["ok"]),
            appends_overloaded: appends.with_label_values(&["overloaded"]),
            appends_unavailable: appends.with_label_values(&["unavailable"]),
            records: IntGauge::new("callhook_rawlog_records", "Records held by the raw log")
                .expect("static metric definition is valid"),
            retention_deleted: IntCounter::new(
                "callhook_rawlog_retention_deleted_total",
                "Records deleted by retention after every consumer group consumed them",
            )
            .expect("static metric definition is valid"),
            compacted_records: counter(
                "callhook_rawlog_compacted_records_total",
                "Consumed records moved into compressed segments",
            ),
            compacted_segments: counter(
                "callhook_rawlog_compacted_segments_total",
                "Compressed segments written",
            ),
            compaction_input_bytes: counter(
                "callhook_rawlog_compaction_input_bytes_total",
                "Bytes of the compacted records' serialized form, before zstd",
            ),
            compaction_output_bytes: counter(
                "callhook_rawlog_compaction_output_bytes_total",
                "Bytes of the segments zstd wrote for them",
            ),
        };
        register(Box::new(appends));
        register(Box::new(metrics.append_seconds.clone()));
        register(Box::new(metrics.batch_records.clone()));
        register(Box::new(metrics.commit_seconds.clone()));
        register(Box::new(metrics.records.clone()));
        register(Box::new(metrics.retention_deleted.clone()));
        register(Box::new(metrics.compacted_records.clone()));
        register(Box::new(metrics.compacted_segments.clone()));
        register(Box::new(metrics.compaction_input_bytes.clone()));
        register(Box::new(metrics.compaction_output_bytes.clone()));
        metrics
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("static metric definition is valid")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static metric definition is valid")
}

fn register(collector: Box<dyn prometheus::core::Collector>) {
    match prometheus::default_registry().register(collector) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(error) => tracing::warn!(%error, "cannot register raw log metric"),
    }
}

/// An append resolved `Ok`: its record is durable.
pub(crate) struct AppendAcknowledged {
    pub(crate) enqueued_at: Instant,
}

impl AppendAcknowledged {
    pub(crate) fn emit(self) {
        METRICS.appends_ok.inc();
        METRICS
            .append_seconds
            .observe(self.enqueued_at.elapsed().as_secs_f64());
    }
}

/// An append was refused or failed; the caller answers 503.
pub(crate) struct AppendRefused {
    pub(crate) reason: &'static str,
}

impl AppendRefused {
    pub(crate) fn emit(self) {
        // No log line per refusal: under overload that would be one line per request.
        if self.reason == "overloaded" {
            METRICS.appends_overloaded.inc();
        } else {
            METRICS.appends_unavailable.inc();
        }
    }
}

/// One group commit reached the disk.
pub(crate) struct BatchCommitted {
    pub(crate) records: usize,
    pub(crate) elapsed: Duration,
    pub(crate) records_held: u64,
}

impl BatchCommitted {
    pub(crate) fn emit(self) {
        tracing::trace!(
            records = self.records,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "raw log batch committed"
        );
        METRICS.batch_records.observe(self.records as f64);
        METRICS.commit_seconds.observe(self.elapsed.as_secs_f64());
        METRICS
            .records
            .set(i64::try_from(self.records_held).unwrap_or(i64::MAX));
    }
}

/// One group commit failed; none of its records was acknowledged.
pub(crate) struct BatchFailed<'a> {
    pub(crate) records: usize,
    pub(crate) error: &'a super::EmbeddedLogError,
    /// Whether to write the log line (failures are logged at most every few seconds).
    pub(crate) log: bool,
}

impl BatchFailed<'_> {
    pub(crate) fn emit(self) {
        if self.log {
            // ERROR: a failing disk needs an operator; the pushes were answered 503, not lost.
            tracing::error!(records = self.records, error = %self.error, "raw log commit failed, appends refused");
        }
    }
}

/// A later commit succeeded after failures.
pub(crate) struct CommitsRecovered {
    pub(crate) failed_for: Duration,
}

impl CommitsRecovered {
    pub(crate) fn emit(self) {
        tracing::warn!(
            failed_for_ms = self.failed_for.as_millis() as u64,
            "raw log commits succeed again"
        );
    }
}

/// Retention deleted the consumed prefix of a partition.
pub(crate) struct RetentionApplied {
    pub(crate) partition: u32,
    pub(crate) deleted: u64,
    pub(crate) log_start_offset: u64,
    pub(crate) records_held: u64,
}

impl RetentionApplied {
    pub(crate) fn emit(self) {
        tracing::info!(
            partition = self.partition,
            deleted = self.deleted,
            log_start_offset = self.log_start_offset,
            "raw log retention deleted consumed records"
        );
        METRICS.retention_deleted.inc_by(self.deleted);
        METRICS
            .records
            .set(i64::try_from(self.records_held).unwrap_or(i64::MAX));
    }
}

/// A chunk of consumed records was moved into a compressed segment.
pub(crate) struct ChunkCompacted {
    pub(crate) partition: u32,
    pub(crate) first_offset: u64,
    pub(crate) last_offset: u64,
    pub(crate) records: u64,
    pub(crate) raw_bytes: u64,
    pub(crate) stored_bytes: u64,
    pub(crate) elapsed: Duration,
}

impl ChunkCompacted {
    pub(crate) fn emit(self) {
        tracing::debug!(
            partition = self.partition,
            first_offset = self.first_offset,
            last_offset = self.last_offset,
            records = self.records,
            raw_bytes = self.raw_bytes,
            stored_bytes = self.stored_bytes,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "raw log records compacted"
        );
        METRICS.compacted_records.inc_by(self.records);
        METRICS.compacted_segments.inc();
        METRICS.compaction_input_bytes.inc_by(self.raw_bytes);
        METRICS.compaction_output_bytes.inc_by(self.stored_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_metrics_register_twice_without_panic_and_are_exported() {
        LazyLock::force(&METRICS);
        // A second registration (another instance, a test harness) hits `AlreadyReg`.
        let _second = Metrics::register();
        let exported: Vec<String> = prometheus::default_registry()
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "callhook_rawlog_append_seconds",
            "callhook_rawlog_batch_records",
            "callhook_rawlog_commit_seconds",
            "callhook_rawlog_appends_total",
            "callhook_rawlog_records",
            "callhook_rawlog_retention_deleted_total",
            "callhook_rawlog_compacted_records_total",
            "callhook_rawlog_compacted_segments_total",
            "callhook_rawlog_compaction_input_bytes_total",
            "callhook_rawlog_compaction_output_bytes_total",
        ] {
            assert!(
                exported.iter().any(|exported_name| exported_name == name),
                "`{name}` is not exported"
            );
        }
    }
}
