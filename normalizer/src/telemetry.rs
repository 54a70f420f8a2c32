//! The normalizer's metrics, emitted once per batch from typed events.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use callhook_sinks::{CommitOutcome, SinkItem};
use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

/// What happened to one consumed record before the sink saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordOutcome {
    /// Mapped to a push for the sink (the sink may still find it a duplicate).
    Mapped,
    /// Dropped: its dedupe key was in the LRU.
    DuplicateInCache {
        /// The source it arrived on.
        source: String,
    },
    /// Became a dead letter.
    DeadLetter,
}

/// The `outcome` label values of `callhook_normalizer_records_total`.
const OUTCOMES: [&str; 3] = ["mapped", "duplicate", "dead_letter"];

impl RecordOutcome {
    fn label(&self) -> &'static str {
        match self {
            RecordOutcome::Mapped => "mapped",
            RecordOutcome::DuplicateInCache { .. } => "duplicate",
            RecordOutcome::DeadLetter => "dead_letter",
        }
    }
}

struct Families {
    records: IntCounterVec,
    events: IntCounterVec,
    duplicates: IntCounterVec,
    dead_letters: IntCounterVec,
    batch_seconds: Histogram,
    batch_records: Histogram,
    lag_records: IntGauge,
    commit_failures: IntCounter,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| Families {
        records: register_int_counter_vec!("callhook_normalizer_records_total", "Raw records consumed, by source and outcome (mapped, duplicate, dead_letter).", &["source", "outcome"]).expect("metric"),
        events: register_int_counter_vec!("callhook_normalizer_events_total", "Canonical events mapped, by source and type (before the sink's authoritative dedupe).", &["source", "type"]).expect("metric"),
        duplicates: register_int_counter_vec!("callhook_normalizer_duplicates_total", "Duplicate pushes dropped, by stage: `cache` (LRU) or `store` (the sink already holds the push's first event).", &["stage"]).expect("metric"),
        dead_letters: register_int_counter_vec!("callhook_normalizer_dead_letters_total", "Records dead-lettered, by source and reason.", &["source", "reason"]).expect("metric"),
        batch_seconds: register_histogram!("callhook_normalizer_batch_seconds", "Time to read, map and commit one batch.", vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]).expect("metric"),
        batch_records: register_histogram!("callhook_normalizer_batch_records", "Raw records per batch.", vec![1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0]).expect("metric"),
        lag_records: register_int_gauge!("callhook_normalizer_lag_records", "Records appended to the raw log and not yet consumed.").expect("metric"),
        commit_failures: register_int_counter!("callhook_normalizer_commit_failures_total", "Sink commits that failed and were retried.").expect("metric"),
    })
}

/// Resolved metric handles for one normalizer.
pub struct NormalizerMetrics {
    /// Records not yet consumed, over all partitions.
    pub lag_records: IntGauge,
    /// Sink commits that failed and were retried.
    pub commit_failures: IntCounter,
}

impl NormalizerMetrics {
    /// Registers the families (once per process) and pre-creates every known series at 0,
    /// so dashboards show zeros rather than gaps and `increase()` sees the first occurrence.
    pub fn new<'a>(sources: impl Iterator<Item = &'a str>) -> Self {
        let families = families();
        for source in sources {
            for outcome in OUTCOMES {
                families.records.with_label_values(&[source, outcome]);
            }
            for event_type in callhook_schemas::EventType::ALL {
                families
                    .events
                    .with_label_values(&[source, event_type.as_str()]);
            }
            for reason in crate::pipeline::records::dead_letter_reasons() {
                families.dead_letters.with_label_values(&[source, reason]);
            }
        }
        for stage in ["cache", "store"] {
            families.duplicates.with_label_values(&[stage]);
        }
        let _ = (&families.batch_seconds, &families.batch_records);
        NormalizerMetrics {
            lag_records: families.lag_records.clone(),
            commit_failures: families.commit_failures.clone(),
        }
    }
}

/// One batch was consumed and committed.
pub struct BatchProcessed<'a> {
    /// Raw records consumed.
    pub records: usize,
    /// What happened to each record, in order.
    pub outcomes: &'a [RecordOutcome],
    /// What went to the sink.
    pub items: &'a [SinkItem],
    /// What the sink did.
    pub commit: &'a CommitOutcome,
    /// Read + map + commit time.
    pub elapsed: Duration,
}

impl BatchProcessed<'_> {
    /// Updates the counters (aggregated per batch) and logs at debug level.
    pub fn emit(&self, _metrics: &NormalizerMetrics) {
        let families = families();
        let mut records: HashMap<(&str, &str), u64> = HashMap::new();
        let mut events: HashMap<(&str, &str), u64> = HashMap::new();
        let mut dead: HashMap<(&str, &str), u64> = HashMap::new();
        let mut item_index = 0;
        let mut cache_duplicates = 0;
        for outcome in self.outcomes {
            if let RecordOutcome::DuplicateInCache { source } = outcome {
                cache_duplicates += 1;
                *records.entry((source, outcome.label())).or_default() += 1;
                continue;
            }
            let Some(item) = self.items.get(item_index) else {
                break;
            };
            item_index += 1;
            match item {
                SinkItem::Push {
                    source,
                    events: list,
                    ..
                } => {
                    *records.entry((source, outcome.label())).or_default() += 1;
                    for event in list {
                        *events
                            .entry((source, event.event.event_type.as_str()))
                            .or_default() += 1;
                    }
                }
                SinkItem::DeadLetter { source, reason, .. } => {
                    *records.entry((source, outcome.label())).or_default() += 1;
                    *dead.entry((source, reason)).or_default() += 1;
                }
            }
        }
        for ((source, outcome), n) in records {
            families
                .records
                .with_label_values(&[source, outcome])
                .inc_by(n);
        }
        for ((source, event_type), n) in events {
            families
                .events
                .with_label_values(&[source, event_type])
                .inc_by(n);
        }
        for ((source, reason), n) in dead {
            families
                .dead_letters
                .with_label_values(&[source, reason])
                .inc_by(n);
        }
        families
            .duplicates
            .with_label_values(&["cache"])
            .inc_by(cache_duplicates);
        families
            .duplicates
            .with_label_values(&["store"])
            .inc_by(self.commit.duplicates_skipped);
        families.batch_seconds.observe(self.elapsed.as_secs_f64());
        families.batch_records.observe(self.records as f64);
        tracing::debug!(
            records = self.records,
            events = self.commit.events_inserted,
            duplicates = cache_duplicates + self.commit.duplicates_skipped,
            dead_letters = self.commit.dead_letters_written,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "batch committed"
        );
    }
}
