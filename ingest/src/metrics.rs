//! Prometheus metrics of the receiver, registered once on the default registry.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `callhook_ingest_requests_total` | counter | `source`, `status` |
//! | `callhook_ingest_request_bytes` | histogram | `source` |
//! | `callhook_ingest_ack_seconds` | histogram | `source` |
//! | `callhook_ingest_auth_failures_total` | counter | `source`, `reason` |
//! | `callhook_ingest_rejected_total` | counter | `source`, `reason` |
//! | `callhook_ingest_connections` | gauge | |
//! | `callhook_ingest_connections_accepted_total` | counter | |
//! | `callhook_ingest_connections_shed_total` | counter | `reason` |
//!
//! Labels are bounded: `source` is a configured source name or `_unknown` (never a name taken
//! from an unmatched URL), `status` is one of the few codes the receiver answers, `reason` is
//! a fixed code ([`ShedReason`] for the connection counter, every one pre-created at 0).
//! Per-source handles of the success path and the connection handles are resolved once.

use std::sync::OnceLock;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

/// The `source` label of requests that match no configured source.
pub(crate) const UNKNOWN_SOURCE: &str = "_unknown";

/// Every receiver metric.
pub(crate) struct Metrics {
    pub(crate) requests_total: IntCounterVec,
    pub(crate) request_bytes: HistogramVec,
    pub(crate) ack_seconds: HistogramVec,
    pub(crate) auth_failures_total: IntCounterVec,
    pub(crate) rejected_total: IntCounterVec,
    pub(crate) connections: IntGauge,
    pub(crate) connections_accepted: IntCounter,
    pub(crate) connections_shed: ShedCounters,
}

/// Returns the process-wide metrics, registering them on first use.
pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::register)
}

impl Metrics {
    fn register() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help).buckets(buckets);
            register(HistogramVec::new(opts, &["source"]).expect("valid metric"))
        };
        Metrics {
            requests_total: counter(
                "callhook_ingest_requests_total",
                "Requests answered, by source and HTTP status.",
                &["source", "status"],
            ),
            request_bytes: histogram(
                "callhook_ingest_request_bytes",
                "Body size of acknowledged pushes, in bytes.",
                prometheus::exponential_buckets(64.0, 4.0, 10).expect("valid buckets"),
            ),
            ack_seconds: histogram(
                "callhook_ingest_ack_seconds",
                "Time from a fully read request to its acknowledgement (the durable append).",
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            auth_failures_total: counter(
                "callhook_ingest_auth_failures_total",
                "Pushes refused with 401, by source and reason.",
                &["source", "reason"],
            ),
            rejected_total: counter(
                "callhook_ingest_rejected_total",
                "Pushes refused other than for auth (404, 405, 408, 413, 400, 503), by reason.",
                &["source", "reason"],
            ),
            connections: register(
                IntGauge::new("callhook_ingest_connections", "Open receiver connections.")
                    .expect("valid metric"),
            ),
            connections_accepted: register(
                IntCounter::new(
                    "callhook_ingest_connections_accepted_total",
                    "Connections accepted by the receiver (before the connection limits).",
                )
                .expect("valid metric"),
            ),
            connections_shed: ShedCounters::resolve(&counter(
                "callhook_ingest_connections_shed_total",
                "Connections the receiver refused or closed before their client was done, by \
                 reason (limits, idle shedding, timeouts, refused request heads).",
                &["reason"],
            )),
        }
    }

    /// Resolves the success-path handles of one source.
    /// Resolves the handles of a configured source, and creates every series of the source
    /// at 0 (each refusal reason, each auth failure reason), so that alerts built on
    /// `increase()` see the first occurrence after a start.
    pub(crate) fn for_source(&self, source: &str) -> SourceMetrics {
        for reason in crate::handler::IngestError::SOURCE_REASONS {
            self.rejected_total.with_label_values(&[source, reason]);
        }
        for reason in crate::auth::AuthFailure::REASONS {
            self.auth_failures_total
                .with_label_values(&[source, reason]);
        }
        for reason in crate::handler::IngestError::UNKNOWN_SOURCE_REASONS {
            self.rejected_total
                .with_label_values(&[UNKNOWN_SOURCE, reason]);
        }
        SourceMetrics {
            acked: self.requests_total.with_label_values(&[source, "200"]),
            request_bytes: self.request_bytes.with_label_values(&[source]),
            ack_seconds: self.ack_seconds.with_label_values(&[source]),
        }
    }
}

/// Registers a collector on the default registry. A clash (another component registered the
/// same name) leaves our copy unexported but working; it is logged, not a panic.
fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    if let Err(error) = prometheus::register(Box::new(collector.clone())) {
        tracing::warn!(%error, "ingest metric not registered on the default registry");
    }
    collector
}

/// The handles one source updates on every acknowledged push.
#[derive(Clone)]
pub(crate) struct SourceMetrics {
    pub(crate) acked: IntCounter,
    pub(crate) request_bytes: Histogram,
    pub(crate) ack_seconds: Histogram,
}

/// Counts an open connection in `callhook_ingest_connections` for as long as it lives.
pub(crate) struct ConnectionGuard(IntGauge);

impl ConnectionGuard {
    /// Counts one more open connection.
    pub(crate) fn open(gauge: &IntGauge) -> Self {
        gauge.inc();
        ConnectionGuard(gauge.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why the receiver refused or closed a connection on its own initiative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShedReason {
    /// Refused at accept: its address had `max_connections_per_ip` connections, all busy.
    IpLimit,
    /// Closed while waiting for a request, to make room for a new one from the same address.
    IdleAtIpLimit,
    /// Closed while waiting for a request, to make room under `max_connections`.
    IdleAtCapacity,
    /// Closed with its head arriving for over `header_read_timeout_at_capacity_ms`, to make
    /// room for a new connection from the same address.
    SlowHeadAtIpLimit,
    /// Closed with its head arriving for over `header_read_timeout_at_capacity_ms`, to make
    /// room under `max_connections`.
    SlowHeadAtCapacity,
    /// No complete request head within `header_read_timeout_ms`.
    HeaderTimeout,
    /// The request head was refused by the HTTP parser (`400`, `414`, `431`).
    HeadRejected,
    /// A response waited `response_write_timeout_ms` for the client to read it.
    WriteTimeout,
}

impl ShedReason {
    /// Every reason, in label order.
    pub(crate) const ALL: [ShedReason; 8] = [
        ShedReason::IpLimit,
        ShedReason::IdleAtIpLimit,
        ShedReason::IdleAtCapacity,
        ShedReason::SlowHeadAtIpLimit,
        ShedReason::SlowHeadAtCapacity,
        ShedReason::HeaderTimeout,
        ShedReason::HeadRejected,
        ShedReason::WriteTimeout,
    ];

    /// Returns the `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ShedReason::IpLimit => "ip_limit",
            ShedReason::IdleAtIpLimit => "idle_at_ip_limit",
            ShedReason::IdleAtCapacity => "idle_at_capacity",
            ShedReason::SlowHeadAtIpLimit => "slow_head_at_ip_limit",
            ShedReason::SlowHeadAtCapacity => "slow_head_at_capacity",
            ShedReason::HeaderTimeout => "header_timeout",
            ShedReason::HeadRejected => "head_rejected",
            ShedReason::WriteTimeout => "write_timeout",
        }
    }

    /// Returns true for the reasons that mean a connection limit was reached.
    pub(crate) fn is_limit(self) -> bool {
        matches!(
            self,
            ShedReason::IpLimit
                | ShedReason::IdleAtIpLimit
                | ShedReason::IdleAtCapacity
                | ShedReason::SlowHeadAtIpLimit
                | ShedReason::SlowHeadAtCapacity
        )
    }
}

/// The `callhook_ingest_connections_shed_total` handle of every [`ShedReason`].
#[derive(Clone)]
pub(crate) struct ShedCounters([IntCounter; ShedReason::ALL.len()]);

impl ShedCounters {
    fn resolve(vec: &IntCounterVec) -> Self {
        ShedCounters(ShedReason::ALL.map(|reason| vec.with_label_values(&[reason.label()])))
    }

    /// Counts one connection shed for `reason`.
    pub(crate) fn count(&self, reason: ShedReason) {
        self.0[reason as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_shed_reasons_index_their_counters() {
        for (index, reason) in ShedReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "{}", reason.label());
        }
    }
}
