//! Reconciliation in Kafka mode: `callhook ingest` (which owns the raw topic's producer)
//! reconciles against the fake 7moor CDR API, comparing with the normalizer's SQLite database
//! (its `[sink.sqlite] path`, as a shared volume would give it); `callhook normalize` maps the
//! backfilled CDRs from the raw topic. A real Kafka-protocol broker (tansu, from
//! callhook-testkit).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use callhook_testkit::fake_7moor::{cdr_record, Fake7moor};
use callhook_testkit::KafkaBroker;
use common::kafka::{create_topics, kafka_config, KafkaProcess};
use common::{metric_series, open_read_only};
use serde_json::Value;

const APPKEY: &str = "2000144";
const SECRET: &str = "kafka-secret-key";

fn webhook(call_id: &str, start: &str) -> Vec<u8> {
    let mut record = cdr_record(call_id, start);
    let object = record.as_object_mut().unwrap();
    object.remove("_id");
    object.remove("__v");
    object.insert("pushType".to_owned(), Value::from("cdr"));
    serde_json::to_vec(&record).unwrap()
}

fn cdr_counts(db: &Path) -> Vec<(String, i64)> {
    if !db.exists() {
        return Vec::new();
    }
    let db = open_read_only(db);
    let mut statement = db
        .prepare("SELECT subject, COUNT(*) FROM events WHERE type = 'call.cdr' GROUP BY subject ORDER BY subject")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn test_ingest_backfills_through_the_raw_topic_exactly_once() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(
        &brokers,
        &[
            ("callhook.raw", 1),
            ("callhook.events", 3),
            ("callhook.deadletters", 1),
        ],
    );
    let fake = Fake7moor::start(APPKEY, SECRET);
    let dir = tempfile::tempdir().unwrap();
    let sink_db = dir.path().join("normalize").join("callhook.db");
    let extra = format!(
        "[sink.sqlite]\npath = \"{}\"\n\n[sources.7moor]\ndialect = \"7moor\"\n\
         [sources.7moor.reconcile]\nbase_url = \"{}\"\nappkey = \"{APPKEY}\"\nsecret = \"{SECRET}\"\n\
         interval_seconds = 1\nwindow_seconds = 3600\ndelay_seconds = 0\nrequest_timeout_ms = 2000\n",
        sink_db.display(),
        fake.base_url()
    );
    let config = kafka_config(&brokers, 1, &extra);
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize"),
        &config,
    );
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);

    let local = chrono::Utc::now() + chrono::TimeDelta::hours(8) - chrono::TimeDelta::minutes(10);
    let start = local.format("%Y-%m-%d %H:%M:%S").to_string();
    let (a, b) = ("800000000000000001", "800000000000000002");
    assert_eq!(
        ingest
            .post("7moor", Some("application/json"), &webhook(a, &start))
            .0,
        200
    );
    wait_for("the webhook's CDR", Duration::from_secs(40), || {
        cdr_counts(&sink_db).len() == 1
    });
    fake.add_records([a, b].map(|id| cdr_record(id, &start)));
    wait_for("the backfilled CDR", Duration::from_secs(40), || {
        cdr_counts(&sink_db).len() == 2
    });
    // The late webhook of the backfilled call: acknowledged, then a duplicate.
    assert_eq!(
        ingest
            .post("7moor", Some("application/json"), &webhook(b, &start))
            .0,
        200
    );
    let duplicates = || {
        normalize
            .metric("callhook_normalizer_duplicates_total")
            .unwrap_or(0.0)
    };
    wait_for(
        "the late webhook dropped as a duplicate",
        Duration::from_secs(40),
        || duplicates() >= 1.0,
    );
    let once: Vec<(String, i64)> = [a, b].iter().map(|id| (id.to_string(), 1)).collect();
    assert_eq!(cdr_counts(&sink_db), once);
    let (_, metrics) = ingest.admin_get("/metrics");
    assert_eq!(
        metric_series(
            &metrics,
            "callhook_reconcile_backfilled_total{source=\"7moor\"}"
        ),
        Some(1.0)
    );
    assert_eq!(ingest.terminate().code(), Some(0));
    assert_eq!(normalize.terminate().code(), Some(0));
}
