//! The `callhook_sink_*` metric families, shared by every sink and told apart by a `sink` label.
//!
//! The families live in the default prometheus registry and are registered once per process;
//! registering them again (a second registry call, a second sink) is not an error and never
//! panics. Hot paths hold a [`SinkMetrics`] whose per-type handles are resolved when the sink is
//! built, and report a whole batch at once through [`BatchCommitted::emit`].

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use callhook_schemas::EventType;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::batch::CommitOutcome;

/// Histogram of the wall time of one batch commit, label `sink`.
pub const COMMIT_SECONDS: &str = "callhook_sink_commit_seconds";
/// Counter of events written, labels `sink` and `type`.
pub const EVENTS_TOTAL: &str = "callhook_sink_events_total";
/// Counter of pushes skipped as duplicates, label `sink`.
pub const DUPLICATES_TOTAL: &str = "callhook_sink_duplicates_total";
/// Counter of dead letters written, labels `sink` and `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "callhook_sink_dead_letters_total";
/// Gauge of the dead letters a sink holds, labels `sink`, `state` (`open`, `resolved`) and
/// `reason`.
pub const DEAD_LETTERS_HELD: &str = "callhook_sink_dead_letters_held";
/// The `state` label values of [`DEAD_LETTERS_HELD`].
pub const DEAD_LETTER_STATES: [&str; 2] = ["open", "resolved"];

/// The reason label used for a reason code that does not look like one (too long, odd
/// characters), so that a caller's mistake cannot make the label set unbounded.
pub const OTHER_REASON: &str = "other";

/// The four metric families. One instance per process lives in [`MetricFamilies::global`].
#[derive(Debug, Clone)]
pub struct MetricFamilies {
    commit_seconds: HistogramVec,
    events_total: IntCounterVec,
    duplicates_total: IntCounterVec,
    dead_letters_total: IntCounterVec,
    dead_letters_held: IntGaugeVec,
}

impl MetricFamilies {
    /// Returns the families, created and registered in the default registry on first use.
    pub fn global() -> &'static MetricFamilies {
        static FAMILIES: OnceLock<MetricFamilies> = OnceLock::new();
        FAMILIES.get_or_init(|| {
            let families = MetricFamilies::new();
            if let Err(error) = families.register(prometheus::default_registry()) {
                tracing::warn!(%error, "sink metrics are not exported");
            }
            families
        })
    }

    /// Returns new, unregistered families.
    pub fn new() -> MetricFamilies {
        // The options below are constants; building them fails only on an invalid name.
        let buckets = prometheus::exponential_buckets(0.000_5, 2.0, 15)
            .expect("constant histogram buckets are valid");
        let commit_opts = HistogramOpts::new(COMMIT_SECONDS, "Wall time of one sink batch commit")
            .buckets(buckets);
        MetricFamilies {
            commit_seconds: HistogramVec::new(commit_opts, &["sink"])
                .expect("constant metric options are valid"),
            events_total: IntCounterVec::new(
                Opts::new(EVENTS_TOTAL, "Canonical events written by a sink"),
                &["sink", "type"],
            )
            .expect("constant metric options are valid"),
            duplicates_total: IntCounterVec::new(
                Opts::new(
                    DUPLICATES_TOTAL,
                    "Pushes skipped because their dedupe key was seen",
                ),
                &["sink"],
            )
            .expect("constant metric options are valid"),
            dead_letters_total: IntCounterVec::new(
                Opts::new(DEAD_LETTERS_TOTAL, "Dead letters written by a sink"),
                &["sink", "reason"],
            )
            .expect("constant metric options are valid"),
            dead_letters_held: IntGaugeVec::new(
                Opts::new(
                    DEAD_LETTERS_HELD,
                    "Dead letters a sink holds, open (not mapped yet) or resolved (redriven or replayed)",
                ),
                &["sink", "state", "reason"],
            )
            .expect("constant metric options are valid"),
        }
    }

    /// Registers the families in `registry`. Families already registered there are left as
    /// they are (not an error); any other registration error is returned.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let collectors: [Box<dyn prometheus::core::Collector>; 5] = [
            Box::new(self.commit_seconds.clone()),
            Box::new(self.events_total.clone()),
            Box::new(self.duplicates_total.clone()),
            Box::new(self.dead_letters_total.clone()),
            Box::new(self.dead_letters_held.clone()),
        ];
        for collector in collectors {
            match registry.register(collector) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Default for MetricFamilies {
    fn default() -> Self {
        MetricFamilies::new()
    }
}

/// The metric handles of one sink, resolved once when the sink is built.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    sink: &'static str,
    commit_seconds: prometheus::Histogram,
    /// Indexed by `EventType as usize` (the order of [`EventType::ALL`]).
    events_by_type: Vec<IntCounter>,
    duplicates: IntCounter,
    dead_letters: IntCounterVec,
    dead_letters_held: IntGaugeVec,
}

impl SinkMetrics {
    /// Returns the handles for the sink labelled `sink` in the global families.
    pub fn for_sink(sink: &'static str) -> SinkMetrics {
        SinkMetrics::in_families(MetricFamilies::global(), sink)
    }

    /// Returns the handles for the sink labelled `sink` in `families`.
    pub fn in_families(families: &MetricFamilies, sink: &'static str) -> SinkMetrics {
        let events_by_type = EventType::ALL
            .iter()
            .map(|event_type| {
                debug_assert_eq!(EventType::ALL[*event_type as usize], *event_type);
                families
                    .events_total
                    .with_label_values(&[sink, event_type.as_str()])
            })
            .collect();
        SinkMetrics {
            sink,
            commit_seconds: families.commit_seconds.with_label_values(&[sink]),
            events_by_type,
            duplicates: families.duplicates_total.with_label_values(&[sink]),
            dead_letters: families.dead_letters_total.clone(),
            dead_letters_held: families.dead_letters_held.clone(),
        }
    }

    /// Creates the dead-letter series of each of `reasons` at 0, so that alerts built on
    /// `increase()` see the first dead letter after a start.
    pub fn create_dead_letter_series<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        for reason in reasons {
            self.dead_letters
                .with_label_values(&[self.sink, bounded_reason(reason)]);
            for state in DEAD_LETTER_STATES {
                self.dead_letters_held.with_label_values(&[
                    self.sink,
                    state,
                    bounded_reason(reason),
                ]);
            }
        }
    }

    /// Sets the held-dead-letter gauges to `counts` (`(state, reason, count)`); the series
    /// of this sink not in `counts` go to 0 (they stay exported).
    pub fn set_dead_letters_held(&self, counts: &[(&str, String, u64)]) {
        let mut families = Vec::new();
        use prometheus::core::Collector as _;
        for family in self.dead_letters_held.collect() {
            families.extend(family.get_metric().iter().filter_map(|metric| {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == name)
                        .map(|pair| pair.value().to_owned())
                };
                (label("sink").as_deref() == Some(self.sink))
                    .then(|| Some((label("state")?, label("reason")?)))
                    .flatten()
            }));
        }
        for (state, reason) in families {
            self.dead_letters_held
                .with_label_values(&[self.sink, &state, &reason])
                .set(0);
        }
        for (state, reason, count) in counts {
            self.dead_letters_held
                .with_label_values(&[self.sink, state, bounded_reason(reason)])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Returns the `sink` label value.
    pub fn sink(&self) -> &'static str {
        self.sink
    }

    /// Returns the current value of the duplicates counter (for tests and diagnostics).
    pub fn duplicates_count(&self) -> u64 {
        self.duplicates.get()
    }

    /// Returns the current value of the events counter for `event_type`.
    pub fn events_count(&self, event_type: EventType) -> u64 {
        self.events_by_type[event_type as usize].get()
    }

    /// Returns the current value of the dead-letter counter for `reason` (as bounded).
    pub fn dead_letters_count(&self, reason: &str) -> u64 {
        self.dead_letters
            .with_label_values(&[self.sink, bounded_reason(reason)])
            .get()
    }
}

/// Returns `reason` if it looks like a reason code (1 to 48 of `[a-z0-9_.]`), else
/// [`OTHER_REASON`].
pub fn bounded_reason(reason: &str) -> &str {
    let looks_like_code = (1..=48).contains(&reason.len())
        && reason.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'.'
        });
    if looks_like_code {
        reason
    } else {
        OTHER_REASON
    }
}

/// One batch committed by a sink: logs once at DEBUG and updates every counter together.
#[derive(Debug, Clone, Default)]
pub struct BatchCommitted<'a> {
    /// What the commit did.
    pub outcome: CommitOutcome,
    /// How long the commit took, transaction open to durable commit.
    pub elapsed: Duration,
    /// Events written per type, indexed by `EventType as usize`.
    pub events_by_type: [u64; EventType::ALL.len()],
    /// Dead letters written per reason code.
    pub dead_letters_by_reason: BTreeMap<&'a str, u64>,
}

impl BatchCommitted<'_> {
    /// Records the batch in `metrics` and logs it.
    pub fn emit(&self, metrics: &SinkMetrics) {
        tracing::debug!(
            sink = metrics.sink,
            events_inserted = self.outcome.events_inserted,
            events_already_stored = self.outcome.events_already_stored,
            duplicates_skipped = self.outcome.duplicates_skipped,
            dead_letters_written = self.outcome.dead_letters_written,
            calls_touched = self.outcome.calls_touched,
            agents_updated = self.outcome.agents_updated,
            elapsed_ms = self.elapsed.as_secs_f64() * 1000.0,
            "sink batch committed"
        );
        metrics.commit_seconds.observe(self.elapsed.as_secs_f64());
        for (counter, count) in metrics.events_by_type.iter().zip(self.events_by_type) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
        if self.outcome.duplicates_skipped > 0 {
            metrics.duplicates.inc_by(self.outcome.duplicates_skipped);
        }
        for (reason, count) in &self.dead_letters_by_reason {
            metrics
                .dead_letters
                .with_label_values(&[metrics.sink, bounded_reason(reason)])
                .inc_by(*count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_register_twice_is_not_an_error() {
        let registry = Registry::new();
        let families = MetricFamilies::new();
        families.register(&registry).unwrap();
        families.register(&registry).unwrap();
        MetricFamilies::new().register(&registry).unwrap();
        let metrics = SinkMetrics::in_families(&families, "sqlite");
        BatchCommitted {
            outcome: CommitOutcome {
                duplicates_skipped: 2,
                ..CommitOutcome::default()
            },
            ..BatchCommitted::default()
        }
        .emit(&metrics);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&DUPLICATES_TOTAL.to_owned()), "{names:?}");
        assert!(names.contains(&COMMIT_SECONDS.to_owned()), "{names:?}");
        assert_eq!(metrics.duplicates_count(), 2);
    }

    #[test]
    fn test_emit_counts_events_per_type_and_dead_letters_per_reason() {
        let families = MetricFamilies::new();
        let metrics = SinkMetrics::in_families(&families, "sqlite");
        let mut event = BatchCommitted::default();
        event.events_by_type[EventType::CallCdr as usize] = 3;
        event.dead_letters_by_reason.insert("unknown_event", 2);
        event.dead_letters_by_reason.insert("Body: <html>", 1);
        event.emit(&metrics);
        assert_eq!(metrics.events_count(EventType::CallCdr), 3);
        assert_eq!(metrics.events_count(EventType::CallRinging), 0);
        assert_eq!(metrics.dead_letters_count("unknown_event"), 2);
        assert_eq!(metrics.dead_letters_count(OTHER_REASON), 1);
    }

    #[test]
    fn test_bounded_reason_rejects_free_text() {
        assert_eq!(bounded_reason("missing_field"), "missing_field");
        assert_eq!(bounded_reason(""), OTHER_REASON);
        assert_eq!(bounded_reason("field `x` is invalid"), OTHER_REASON);
        assert_eq!(bounded_reason(&"a".repeat(49)), OTHER_REASON);
    }
}
