//! The PostgreSQL sink's own metrics, next to the shared `callhook_sink_*` families (label
//! `sink="postgres"`): `callhook_sink_postgres_failures_total{kind}` (failed statements or
//! connections; each failed batch is retried) and `callhook_sink_postgres_rows_total{table}`
//! (rows written per table). Every series exists at 0 from the sink's start.

use std::sync::OnceLock;

use prometheus::{IntCounterVec, Opts};

use super::error::FailureKind;
use super::writes::Tally;
use crate::metrics::SinkMetrics;

/// Counter of failures, label `kind` (see [`FailureKind`]).
pub const FAILURES_TOTAL: &str = "callhook_sink_postgres_failures_total";
/// Counter of rows written, label `table`.
pub const ROWS_TOTAL: &str = "callhook_sink_postgres_rows_total";

/// The tables [`ROWS_TOTAL`] counts.
pub const TABLES: [&str; 4] = ["events", "calls", "agents", "dead_letters"];

struct Families {
    failures: IntCounterVec,
    rows: IntCounterVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        // The options are constants; building them fails only on an invalid name.
        let families = Families {
            failures: IntCounterVec::new(
                Opts::new(
                    FAILURES_TOTAL,
                    "PostgreSQL sink statements or connections that failed (the batch is retried, or a refused push dead-lettered), by kind",
                ),
                &["kind"],
            )
            .expect("constant metric options are valid"),
            rows: IntCounterVec::new(
                Opts::new(ROWS_TOTAL, "Rows written by the PostgreSQL sink, by table"),
                &["table"],
            )
            .expect("constant metric options are valid"),
        };
        let registry = prometheus::default_registry();
        for collector in [
            Box::new(families.failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(families.rows.clone()),
        ] {
            match registry.register(collector) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(error) => tracing::warn!(%error, "postgres sink metrics are not exported"),
            }
        }
        families
    })
}

/// The PostgreSQL sink's resolved metric handles.
#[derive(Debug, Clone)]
pub struct PostgresSinkMetrics {
    sink: SinkMetrics,
    failures: IntCounterVec,
    rows: IntCounterVec,
}

impl PostgresSinkMetrics {
    /// Returns the handles of the sink labelled `sink`, every series created at 0.
    pub fn new(sink: &'static str) -> PostgresSinkMetrics {
        let families = families();
        for kind in FailureKind::ALL {
            families.failures.with_label_values(&[kind.as_str()]);
        }
        for table in TABLES {
            families.rows.with_label_values(&[table]);
        }
        PostgresSinkMetrics {
            sink: SinkMetrics::for_sink(sink),
            failures: families.failures.clone(),
            rows: families.rows.clone(),
        }
    }

    /// Returns the shared `callhook_sink_*` handles.
    pub fn sink(&self) -> &SinkMetrics {
        &self.sink
    }

    /// Counts one failure.
    pub fn failure(&self, kind: FailureKind) {
        self.failures.with_label_values(&[kind.as_str()]).inc();
    }

    /// Counts the rows a committed batch wrote.
    pub(crate) fn rows(&self, tally: &Tally) {
        let outcome = &tally.outcome;
        for (table, count) in [
            ("events", outcome.events_inserted),
            ("calls", tally.calls.len() as u64),
            ("agents", outcome.agents_updated),
            ("dead_letters", outcome.dead_letters_written),
        ] {
            if count > 0 {
                self.rows.with_label_values(&[table]).inc_by(count);
            }
        }
    }
}
