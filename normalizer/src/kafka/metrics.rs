//! The Kafka consume loop's own metrics (the per-batch ones are shared with the embedded loop,
//! see `telemetry.rs`): rebalances, abandoned batches and assigned partitions.

use std::sync::OnceLock;

use prometheus::{
    register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

struct Families {
    rebalances: IntCounterVec,
    abandoned: IntCounterVec,
    assigned: IntGauge,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| Families {
        rebalances: register_int_counter_vec!("callhook_normalizer_rebalances_total", "Consumer-group rebalance callbacks, by kind (assign, revoke, error).", &["kind"]).expect("metric"),
        abandoned: register_int_counter_vec!("callhook_normalizer_batches_abandoned_total", "Batches dropped before commit and re-read from the stored offsets, by reason (rebalance, kafka_sink, sqlite_sink, postgres_sink).", &["reason"]).expect("metric"),
        assigned: register_int_gauge!("callhook_normalizer_assigned_partitions", "Raw-topic partitions assigned to this normalizer.").expect("metric"),
    })
}

/// Resolved handles.
#[derive(Clone)]
pub struct KafkaLoopMetrics {
    /// Assignments received.
    pub assigns: IntCounter,
    /// Revocations received.
    pub revokes: IntCounter,
    /// Rebalance errors.
    pub rebalance_errors: IntCounter,
    /// Batches abandoned because of a rebalance.
    pub abandoned_rebalance: IntCounter,
    /// Batches abandoned because the Kafka sink failed.
    pub abandoned_kafka_sink: IntCounter,
    /// Batches abandoned because the SQLite sink failed.
    pub abandoned_sqlite_sink: IntCounter,
    /// Batches abandoned because the PostgreSQL sink failed.
    pub abandoned_postgres_sink: IntCounter,
    /// Partitions currently assigned.
    pub assigned_partitions: IntGauge,
}

impl KafkaLoopMetrics {
    /// Registers the families once per process and resolves every series.
    pub fn new() -> Self {
        let families = families();
        KafkaLoopMetrics {
            assigns: families.rebalances.with_label_values(&["assign"]),
            revokes: families.rebalances.with_label_values(&["revoke"]),
            rebalance_errors: families.rebalances.with_label_values(&["error"]),
            abandoned_rebalance: families.abandoned.with_label_values(&["rebalance"]),
            abandoned_kafka_sink: families.abandoned.with_label_values(&["kafka_sink"]),
            abandoned_sqlite_sink: families.abandoned.with_label_values(&["sqlite_sink"]),
            abandoned_postgres_sink: families.abandoned.with_label_values(&["postgres_sink"]),
            assigned_partitions: families.assigned.clone(),
        }
    }
}

impl Default for KafkaLoopMetrics {
    fn default() -> Self {
        KafkaLoopMetrics::new()
    }
}
