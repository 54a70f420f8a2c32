//! Metrics and log lines of reconciliation, registered once on the default registry.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `callhook_reconcile_cdrs_checked_total` | counter | `source` |
//! | `callhook_reconcile_missing_total` | counter | `source` |
//! | `callhook_reconcile_backfilled_total` | counter | `source` |
//! | `callhook_reconcile_api_errors_total` | counter | `source`, `reason` |
//! | `callhook_reconcile_last_success_timestamp_seconds` | gauge | `source` |
//!
//! `source` is a configured source name; `reason` is one of [`ApiError::REASONS`]. Every series
//! of a reconciled source is created at 0 when its reconciler starts.

use std::sync::OnceLock;

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

use crate::client::ApiError;
use crate::pass::PassReport;

struct Metrics {
    checked: IntCounterVec,
    missing: IntCounterVec,
    backfilled: IntCounterVec,
    api_errors: IntCounterVec,
    last_success: IntGaugeVec,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Metrics {
            checked: counter(
                "callhook_reconcile_cdrs_checked_total",
                "CDRs the 7moor CDR query returned and reconciliation checked against the sink.",
                &["source"],
            ),
            missing: counter(
                "callhook_reconcile_missing_total",
                "CDRs the 7moor CDR query returned that callhook had no call.cdr event for.",
                &["source"],
            ),
            backfilled: counter(
                "callhook_reconcile_backfilled_total",
                "Missing CDRs appended to the raw log as reconcile-origin pushes.",
                &["source"],
            ),
            api_errors: counter(
                "callhook_reconcile_api_errors_total",
                "Failed requests to the 7moor CDR query API, by reason.",
                &["source", "reason"],
            ),
            last_success: register(
                IntGaugeVec::new(
                    Opts::new(
                        "callhook_reconcile_last_success_timestamp_seconds",
                        "When the last complete reconciliation pass ended (Unix seconds).",
                    ),
                    &["source"],
                )
                .expect("valid metric"),
            ),
        }
    })
}

/// Registers a collector; a second registration (tests in one process) keeps the first.
fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

/// The counters of one source, resolved once.
#[derive(Clone)]
pub struct SourceMetrics {
    source: String,
    /// CDRs checked.
    pub checked: IntCounter,
    /// CDRs missing.
    pub missing: IntCounter,
    /// CDRs backfilled.
    pub backfilled: IntCounter,
}

impl SourceMetrics {
    /// Returns the source's counters, creating every series at 0.
    pub fn for_source(source: &str) -> SourceMetrics {
        let metrics = metrics();
        for reason in ApiError::REASONS {
            metrics.api_errors.with_label_values(&[source, reason]);
        }
        metrics.last_success.with_label_values(&[source]);
        SourceMetrics {
            source: source.to_owned(),
            checked: metrics.checked.with_label_values(&[source]),
            missing: metrics.missing.with_label_values(&[source]),
            backfilled: metrics.backfilled.with_label_values(&[source]),
        }
    }
}

/// A request to the CDR API failed: counted by reason, logged at ERROR for a refused signature
/// (an operator must fix the config), at WARN otherwise (retried).
pub struct ApiRequestFailed<'a> {
    /// The source's metrics.
    pub metrics: &'a SourceMetrics,
    /// What failed.
    pub error: &'a ApiError,
}

impl ApiRequestFailed<'_> {
    /// Logs and counts it.
    pub fn emit(&self) {
        let source = self.metrics.source.as_str();
        metrics()
            .api_errors
            .with_label_values(&[source, self.error.reason()])
            .inc();
        let (reason, error) = (self.error.reason(), self.error);
        match error {
            ApiError::Auth { .. } => tracing::error!(
                source,
                reason,
                %error,
                "reconciliation cannot query the 7moor CDR API"
            ),
            _ => tracing::warn!(source, reason, %error, "7moor CDR API request failed"),
        }
    }
}

/// A periodic pass completed: the time of the last success, and a line (WARN when it found
/// gaps, which the webhook path lost).
pub struct PassCompleted<'a> {
    /// The source's metrics.
    pub metrics: &'a SourceMetrics,
    /// What the pass did.
    pub report: &'a PassReport,
}

impl PassCompleted<'_> {
    /// Logs and records it.
    pub fn emit(&self) {
        let source = self.metrics.source.as_str();
        metrics()
            .last_success
            .with_label_values(&[source])
            .set(chrono::Utc::now().timestamp());
        let report = self.report;
        if report.missing > 0 {
            tracing::warn!(
                source,
                checked = report.checked,
                missing = report.missing,
                backfilled = report.backfilled,
                "reconciliation found CDRs that never arrived by webhook"
            );
        } else {
            tracing::info!(
                source,
                checked = report.checked,
                awaiting = report.awaiting,
                "reconciliation pass: no gaps"
            );
        }
    }
}
