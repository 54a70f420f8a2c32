//! The Kafka sink's own metrics, next to the shared `callhook_sink_*` families (label
//! `sink="kafka"`): `callhook_sink_kafka_failures_total{kind}` and
//! `callhook_sink_kafka_transactions_total`.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::error::KafkaSinkError;
use crate::metrics::SinkMetrics;

/// Counter of failed batch steps, label `kind` (`enqueue`, `delivery`, `timeout`,
/// `transaction`, `other`).
pub const FAILURES_TOTAL: &str = "callhook_sink_kafka_failures_total";
/// Counter of committed Kafka transactions.
pub const TRANSACTIONS_TOTAL: &str = "callhook_sink_kafka_transactions_total";

struct Families {
    failures: IntCounterVec,
    transactions: IntCounter,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        // The options are constants; building them fails only on an invalid name.
        let families = Families {
            failures: IntCounterVec::new(
                Opts::new(
                    FAILURES_TOTAL,
                    "Kafka sink batch steps that failed (the batch is retried), by kind",
                ),
                &["kind"],
            )
            .expect("constant metric options are valid"),
            transactions: IntCounter::new(
                TRANSACTIONS_TOTAL,
                "Kafka transactions committed by the Kafka sink",
            )
            .expect("constant metric options are valid"),
        };
        let registry = prometheus::default_registry();
        for collector in [
            Box::new(families.failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(families.transactions.clone()),
        ] {
            match registry.register(collector) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(error) => tracing::warn!(%error, "kafka sink metrics are not exported"),
            }
        }
        families
    })
}

/// The Kafka sink's resolved metric handles.
#[derive(Debug, Clone)]
pub struct KafkaSinkMetrics {
    sink: SinkMetrics,
    failures: IntCounterVec,
    transactions: IntCounter,
}

impl KafkaSinkMetrics {
    /// Returns the handles of the sink labelled `sink`, pre-creating every failure kind.
    pub fn new(sink: &'static str) -> KafkaSinkMetrics {
        let families = families();
        for kind in ["enqueue", "delivery", "timeout", "transaction", "other"] {
            families.failures.with_label_values(&[kind]);
        }
        KafkaSinkMetrics {
            sink: SinkMetrics::for_sink(sink),
            failures: families.failures.clone(),
            transactions: families.transactions.clone(),
        }
    }

    /// Returns the shared `callhook_sink_*` handles.
    pub fn sink(&self) -> &SinkMetrics {
        &self.sink
    }

    /// Counts one failed batch step.
    pub fn failure(&self, error: &KafkaSinkError) {
        let kind = match error {
            KafkaSinkError::Enqueue { .. } => "enqueue",
            KafkaSinkError::Delivery { .. } => "delivery",
            KafkaSinkError::DeliveryTimeout(_) => "timeout",
            KafkaSinkError::Transaction { .. } => "transaction",
            _ => "other",
        };
        self.failures.with_label_values(&[kind]).inc();
    }

    /// Counts one committed transaction.
    pub fn transaction_committed(&self) {
        self.transactions.inc();
    }
}
