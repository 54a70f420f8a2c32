//! Typed internal events: each occurrence is a struct whose `emit()` does the one log line and
//! the metric updates together, so the two never drift apart (Vector's `internal_events`).
//! Bodies are never logged; request ids correlate a log line with its raw record.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callhook_rawlog::Position;

use crate::handler::IngestError;
use crate::metrics::{metrics, ShedCounters, ShedReason, SourceMetrics};

/// A push was appended durably and acknowledged with `200`.
pub(crate) struct PushAcked<'a> {
    pub(crate) source: &'a str,
    pub(crate) metrics: &'a SourceMetrics,
    pub(crate) request_id: &'a str,
    pub(crate) body_bytes: usize,
    pub(crate) ack: Duration,
    pub(crate) position: Position,
}

impl PushAcked<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(
            source = self.source,
            request_id = self.request_id,
            body_bytes = self.body_bytes,
            position = %self.position,
            "push acknowledged"
        );
        self.metrics.acked.inc();
        self.metrics.request_bytes.observe(self.body_bytes as f64);
        self.metrics.ack_seconds.observe(self.ack.as_secs_f64());
    }
}

/// A request was answered with an error status; nothing was stored.
pub(crate) struct PushRejected<'a> {
    /// A configured source name or `_unknown`.
    pub(crate) source: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) error: &'a IngestError,
}

impl PushRejected<'_> {
    pub(crate) fn emit(self) {
        let status = self.error.status();
        let reason = self.error.reason();
        let all = metrics();
        all.requests_total
            .with_label_values(&[self.source, status.as_str()])
            .inc();
        match self.error {
            IngestError::Auth(_) => all
                .auth_failures_total
                .with_label_values(&[self.source, reason]),
            _ => all.rejected_total.with_label_values(&[self.source, reason]),
        }
        .inc();
        if let IngestError::Append(error) = self.error {
            // Every push is refused while the log is down: rate-limit to one line a second.
            if let Some(suppressed) = APPEND_FAILURE_LOG.allow() {
                tracing::warn!(
                    source = self.source,
                    request_id = self.request_id,
                    %error,
                    suppressed,
                    "push refused with 503: raw log append failed"
                );
            }
            return;
        }
        tracing::debug!(
            source = self.source,
            request_id = self.request_id,
            status = status.as_u16(),
            reason,
            error = %self.error,
            "push refused"
        );
    }
}

/// The receiver refused or closed a connection on its own initiative.
pub(crate) struct ConnectionShed<'a> {
    /// The listener's counters; `None` for the admin listener.
    pub(crate) counters: Option<&'a ShedCounters>,
    pub(crate) reason: ShedReason,
    /// The client address of the connection refused or closed, or, for idle shedding, of the
    /// new connection it made room for.
    pub(crate) peer: IpAddr,
}

impl ConnectionShed<'_> {
    pub(crate) fn emit(self) {
        let Some(counters) = self.counters else {
            tracing::debug!(reason = self.reason.label(), peer = %self.peer, "admin connection shed");
            return;
        };
        counters.count(self.reason);
        // A limit reached may need an operator (raise it, or block an abusive address); under
        // a flood it happens on every accept: one line a second.
        if self.reason.is_limit() {
            if let Some(suppressed) = CONNECTION_LIMIT_LOG.allow() {
                tracing::warn!(
                    reason = self.reason.label(),
                    peer = %self.peer,
                    suppressed,
                    "connection limit reached: refusing or shedding idle connections"
                );
            }
            return;
        }
        tracing::debug!(reason = self.reason.label(), peer = %self.peer, "connection closed");
    }
}

static APPEND_FAILURE_LOG: RateLimit = RateLimit::new();
static CONNECTION_LIMIT_LOG: RateLimit = RateLimit::new();

/// Allows one log line per wall-clock second and counts the ones it held back.
struct RateLimit {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    const fn new() -> Self {
        RateLimit {
            last_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(lines suppressed since the last allowed one)` when a line may be logged.
    fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let last = self.last_second.load(Ordering::Relaxed);
        if now > last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rate_limit_allows_one_per_second() {
        let limit = RateLimit::new();
        assert_eq!(limit.allow(), Some(0));
        // Within the same second (the first call set it), later calls are held back. A second
        // boundary between the calls would allow one; tolerate that rare case.
        let second = limit.allow();
        let third = limit.allow();
        assert!(second.is_none() || third.is_none());
    }
}
