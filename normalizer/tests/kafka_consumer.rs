//! The Kafka consume loop against a real Kafka-protocol broker (tansu, from callhook-testkit):
//! raw records produced as the receiver would, the loop run on its own thread, then the SQLite
//! file and the canonical and dead-letter topics read back by independent clients.

mod support;

use callhook_testkit::KafkaBroker;
use support::*;

#[test]
fn test_raw_topic_to_sqlite_and_topics_exactly_once_in_a_transaction() {
    let broker = KafkaBroker::start();
    create_topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callhook.db");
    let records = workload();
    produce_raw(&broker, &records);
    let running = start(&broker, &db, Some("normalizer-test-1"));
    let (ids, reasons) = expected(&records);
    wait_for(&db, "SELECT COUNT(*) FROM events", ids.len() as i64);
    wait_for(
        &db,
        "SELECT COUNT(*) FROM dead_letters",
        reasons.len() as i64,
    );
    wait_for(
        &db,
        "SELECT SUM(next_offset) FROM consumer_offsets WHERE consumer = 'normalizer@raw'",
        records.len() as i64,
    );
    running.stop();
    check_topics(&broker, &records);
    // The vendor's re-send was not produced, and the Kafka sink counted it.
    assert!(sink_counter("callhook_sink_duplicates_total", "kafka") >= 1.0);
}

/// Sums a `callhook_sink_*` counter of one sink in this process's registry.
fn sink_counter(name: &str, sink: &str) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "sink" && label.value() == sink)
        })
        .map(|metric| metric.get_counter().get_value())
        .sum()
}

#[test]
fn test_a_fresh_database_is_rebuilt_without_producing_again() {
    let broker = KafkaBroker::start();
    create_topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callhook.db");
    let records = workload();
    produce_raw(&broker, &records);
    let (ids, _) = expected(&records);
    let running = start(&broker, &db, None);
    wait_for(&db, "SELECT COUNT(*) FROM events", ids.len() as i64);
    wait_for(
        &db,
        "SELECT SUM(next_offset) FROM consumer_offsets",
        records.len() as i64,
    );
    running.stop();
    // The group's committed offsets say the topics hold everything: a new database is
    // filled from the raw topic, and nothing is produced twice.
    let rebuilt = dir.path().join("rebuilt.db");
    let running = start(&broker, &rebuilt, None);
    wait_for(&rebuilt, "SELECT COUNT(*) FROM events", ids.len() as i64);
    wait_for(
        &rebuilt,
        "SELECT SUM(next_offset) FROM consumer_offsets",
        records.len() as i64,
    );
    running.stop();
    check_topics(&broker, &records);
}
