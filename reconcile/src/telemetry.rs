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

    /// Counts a failed request and logs it: ERROR for a refused signature (an operator must
    /// fix the config), WARN otherwise (retried).
    pub fn api_error(&self, error: &ApiError) {
        metrics()
            .api_errors
            .with_label_values(&[self.source.as_str(), error.reason()])
            .inc();
        match error {
            ApiError::Auth { .. } => tracing::error!(
                source = %self.source,
                reason = error.reason(),
                error = %error,
                "reconciliation cannot query the 7moor CDR API"
            ),
            _ => tracing::warn!(
                source = %self.source,
                reason = error.reason(),
                error = %error,
                "7moor CDR API request failed"
            ),
        }
    }

    /// Records the end of a complete pass.
    pub fn pass_succeeded(&self) {
        metrics()
            .last_success
            .with_label_values(&[self.source.as_str()])
            .set(chrono::Utc::now().timestamp());
    }
}
