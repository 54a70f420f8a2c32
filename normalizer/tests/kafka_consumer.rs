//! The Kafka consume loop against a real Kafka-protocol broker (tansu, from callhook-testkit):
//! raw records produced as the receiver would, the loop run on its own thread, then the SQLite
//! file and the canonical and dead-letter topics read back by independent clients.

mod support;

use std::collections::BTreeMap;

use callhook_testkit::KafkaBroker;
use support::*;

#[test]
fn test_raw_topic_to_sqlite_and_topics_exactly_once_in_a_transaction() {
    let broker = KafkaBroker::start();
    create_topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callhook.db");
    let mut records = workload();
    // Two more events of call-1: its events are numbered 1, 2, 3.
    for (push_type, unique) in [("dialoutHangup", "h1"), ("dialoutHangup", "h2")] {
        let mut record = push(1, "7moor", push_type);
        let body = String::from_utf8(record.body.to_vec()).unwrap();
        let body = body.replace(&format!("{:032x}", 1), unique);
        record.body = body.into_bytes().into();
        record.request_id = unique.to_owned();
        records.push(record);
    }
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
    // Every event's `ce_sequence` is the number SQLite stored for it.
    let produced: BTreeMap<String, Option<i64>> = read_topic(&broker, EVENTS, ids.len())
        .into_iter()
        .map(|(_, headers, _)| {
            let sequence = headers.get("ce_sequence").map(|n| n.parse().unwrap());
            (headers["ce_id"].clone(), sequence)
        })
        .collect();
    let connection = rusqlite::Connection::open(&db).unwrap();
    let mut statement = connection
        .prepare("SELECT id, sequence FROM events")
        .unwrap();
    let stored: BTreeMap<String, Option<i64>> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(produced, stored);
    let mut call_1: Vec<i64> = connection
        .prepare("SELECT sequence FROM events WHERE call_id = 'call-1'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    call_1.sort_unstable();
    assert_eq!(call_1, vec![1, 2, 3]);
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
