//! The Kafka raw log against a real Kafka-protocol broker (tansu): round trip with every
//! header, broker outages (spool, forwarder, topic re-creation), and refusal when neither
//! Kafka nor the spool can take a record.

mod kafka_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use callhook_rawlog::kafka::KafkaLog;
use callhook_rawlog::{AppendError, LogAppender, RawRecord};
use callhook_testkit::KafkaBroker;
use chrono::DateTime;
use kafka_support::*;

fn varied_records() -> Vec<(String, RawRecord)> {
    let full = RawRecord {
        source: "7moor".to_owned(),
        received_at: DateTime::from_timestamp_millis(1_620_455_977_123).unwrap(),
        method: "GET".to_owned(),
        content_type: None,
        query: Some("CallNo=1&AgentName=%E5%BC%A0".to_owned()),
        remote_addr: Some("10.1.2.3:5000".to_owned()),
        request_id: "req-full".to_owned(),
        headers: vec![
            ("user-agent".to_owned(), "moor/7".to_owned()),
            (
                "x-forwarded-for".to_owned(),
                "10.0.0.1, 10.0.0.2".to_owned(),
            ),
            ("webhook-id".to_owned(), "msg_1".to_owned()),
        ],
        body: Bytes::new(),
    };
    let binary = RawRecord {
        source: "coocenter".to_owned(),
        method: "POST".to_owned(),
        content_type: Some("application/octet-stream".to_owned()),
        query: None,
        remote_addr: None,
        request_id: "req-binary".to_owned(),
        headers: Vec::new(),
        body: Bytes::from_static(b"\xff\x00\xfe raw \r\n bytes \x00"),
        ..full.clone()
    };
    let json = RawRecord {
        source: "uincall".to_owned(),
        content_type: Some("application/json; charset=utf-8".to_owned()),
        request_id: "req-json".to_owned(),
        body: Bytes::from("{\"callId\":\"c-1\",\"agent\":\"张三\"}"),
        ..binary.clone()
    };
    vec![
        ("call-1".to_owned(), full),
        ("coocenter".to_owned(), binary),
        ("c-1".to_owned(), json),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_records_round_trip_with_every_header_and_exact_bytes() {
    let broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let topic = unique_topic("roundtrip");
    let log = start(settings(
        &broker.bootstrap_servers(),
        &topic,
        data_dir.path(),
    ))
    .await;
    let sent = varied_records();
    let appends: Vec<_> = sent
        .iter()
        .map(|(key, record)| log.append(key.clone(), record.clone()))
        .collect();
    for append in appends {
        let position = append.await.expect("kafka confirms");
        assert!(position.partition < 3, "{position:?} is a kafka partition");
    }
    assert!(!log.spool_in_use());
    assert_eq!(log.spool_depth(), 0);
    assert_eq!(log.check_writable(), Ok(()));
    assert_eq!(log.status_detail(), None);

    let brokers = broker.bootstrap_servers();
    let read_topic_name = topic.clone();
    let expected: Vec<String> = sent.iter().map(|(_, r)| r.request_id.clone()).collect();
    let on_topic =
        tokio::task::spawn_blocking(move || read_topic(&brokers, &read_topic_name, &expected))
            .await
            .unwrap();
    assert_eq!(on_topic.len(), sent.len());
    for (key, original) in &sent {
        let found = on_topic
            .iter()
            .find(|r| r.record.request_id == original.request_id)
            .expect("record on the topic");
        assert_eq!(&found.key, key);
        assert_eq!(&found.record, original, "every header and the exact body");
        assert_eq!(
            found.timestamp_ms,
            Some(original.received_at.timestamp_millis())
        );
    }
    close(Arc::new(log)).await;
}

async fn close(log: Arc<KafkaLog>) {
    tokio::task::spawn_blocking(move || log.close().unwrap())
        .await
        .unwrap();
}

/// Appends in flight: `(key, request id, answer)` in call order.
type InFlight = Vec<(
    String,
    String,
    callhook_rawlog::BoxFuture<'static, Result<callhook_rawlog::Position, AppendError>>,
)>;

/// Calls `append` for records `range`, keys cycling over `keys`, without waiting.
fn start_appends(log: &KafkaLog, keys: &[&str], range: std::ops::Range<usize>) -> InFlight {
    range
        .map(|index| {
            let key = keys[index % keys.len()].to_owned();
            let record = record("7moor", index);
            let id = record.request_id.clone();
            (key.clone(), id, log.append(key, record))
        })
        .collect()
}

/// Waits for every answer, asserting each was acknowledged; returns `(key, request id)` in
/// call order.
async fn finish_appends(in_flight: InFlight) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for (key, id, append) in in_flight {
        append
            .await
            .unwrap_or_else(|error| panic!("`{id}` refused: {error}"));
        acked.push((key, id));
    }
    acked
}

/// Appends records `range` with keys cycling over `keys`, all in flight at once.
async fn append_all(
    log: &KafkaLog,
    keys: &[&str],
    range: std::ops::Range<usize>,
) -> Vec<(String, String)> {
    finish_appends(start_appends(log, keys, range)).await
}

const KEYS: &[&str] = &[
    "call-a", "call-b", "call-c", "call-d", "call-e", "call-f", "7moor",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_broker_outage_spools_then_every_acked_record_reaches_the_topic_in_key_order() {
    let mut broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let topic = unique_topic("outage");
    let log = Arc::new(
        start(settings(
            &broker.bootstrap_servers(),
            &topic,
            data_dir.path(),
        ))
        .await,
    );
    // Direct while the broker is up (the in-memory broker forgets these on restart).
    append_all(&log, KEYS, 0..20).await;
    assert!(!log.spool_in_use());

    // The broker stops while a wave of appends is in flight: every one is still acknowledged
    // (the in-memory broker forgets those it took before dying; the others are spooled).
    let wave = start_appends(&log, KEYS, 100..400);
    tokio::task::block_in_place(|| broker.stop());
    let in_flight_at_stop = finish_appends(wave).await;
    assert_eq!(in_flight_at_stop.len(), 300);
    let spooled_at_stop = log.spool_depth();
    // Appends after the stop all go to the spool, in order.
    let mut acked = append_all(&log, KEYS, 1000..1400).await;
    assert!(log.spool_in_use());
    assert!(log.spool_depth() >= 400, "depth {}", log.spool_depth());
    assert_eq!(log.check_writable(), Ok(()));
    let detail = log.status_detail().expect("readiness reports the spool");
    assert!(detail.contains("spool in use"), "{detail}");
    // While spooling, appends go straight to the spool, without waiting for the ack bound.
    let started = std::time::Instant::now();
    acked.extend(append_all(&log, KEYS, 1400..1500).await);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "spooled appends wait for kafka"
    );

    broker.restart();
    // Appends keep coming while the forwarder drains (topic re-created by callhook).
    let draining = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for wave in 0..10 {
                let from = 1500 + wave * 20;
                acked.extend(append_all(&log, KEYS, from..from + 20).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        })
    };
    acked.extend(draining.await.unwrap());
    wait_until(Duration::from_secs(20), "the spool drained", || {
        !log.spool_in_use() && log.spool_depth() == 0
    })
    .await;
    assert_eq!(log.status_detail(), None);
    // Direct again.
    acked.extend(append_all(&log, KEYS, 1700..1750).await);
    assert!(!log.spool_in_use());

    let brokers = broker.bootstrap_servers();
    let expected: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    let on_topic = tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, &expected))
        .await
        .unwrap();
    let duplicates = check_complete_and_ordered(&on_topic, &acked);
    // Of the wave in flight at the stop, at least what was spooled arrives, in key order.
    let arrived: std::collections::HashSet<&str> = on_topic
        .iter()
        .map(|r| r.record.request_id.as_str())
        .collect();
    let wave_arrived: Vec<(String, String)> = in_flight_at_stop
        .into_iter()
        .filter(|(_, id)| arrived.contains(id.as_str()))
        .collect();
    assert!(
        wave_arrived.len() as u64 >= spooled_at_stop,
        "{} of the wave arrived, {spooled_at_stop} were spooled",
        wave_arrived.len()
    );
    let wave_ids: std::collections::HashSet<&String> =
        wave_arrived.iter().map(|(_, id)| id).collect();
    let wave_on_topic: Vec<TopicRecord> = on_topic
        .iter()
        .filter(|r| wave_ids.contains(&r.record.request_id))
        .cloned()
        .collect();
    check_complete_and_ordered(&wave_on_topic, &wave_arrived);
    eprintln!(
        "{} acknowledged, {} on the topic, {duplicates} duplicates",
        acked.len(),
        on_topic.len()
    );
    // Duplicates come only from a forwarder batch retried after a partial confirmation.
    assert!(duplicates <= 100, "{duplicates} duplicates");
    close(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_neither_kafka_nor_spool_writable_refuses_the_append() {
    let mut broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let topic = unique_topic("refuse");
    let mut config = config(&broker.bootstrap_servers(), &topic);
    config.spool.max_unconsumed_records = 5;
    let log = Arc::new(start(config.validate(data_dir.path()).unwrap()).await);
    broker.stop();
    let acked = append_all(&log, KEYS, 0..5).await;
    assert_eq!(acked.len(), 5);
    assert_eq!(log.spool_depth(), 5);
    let refused = log.append("call-a".to_owned(), record("7moor", 5)).await;
    assert!(
        matches!(refused, Err(AppendError::Overloaded(_))),
        "{refused:?}"
    );
    let not_writable = log.check_writable().expect_err("neither can take writes");
    assert!(
        not_writable.contains("kafka") && not_writable.contains("spool"),
        "{not_writable}"
    );
    close(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_spooled_records_survive_a_restart_of_the_log_and_are_forwarded_first() {
    let mut broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let topic = unique_topic("restart");
    let settings = settings(&broker.bootstrap_servers(), &topic, data_dir.path());
    let first = Arc::new(start(settings.clone()).await);
    broker.stop();
    let mut acked = append_all(&first, KEYS, 0..50).await;
    assert!(first.spool_in_use());
    close(first).await;

    // A new process on the same data directory, Kafka still down.
    let second = Arc::new(start(settings).await);
    assert!(
        second.spool_in_use(),
        "records in the spool at start mean spooling"
    );
    assert_eq!(second.spool_depth(), 50);
    // New appends queue behind the old ones.
    acked.extend(append_all(&second, KEYS, 50..70).await);
    assert_eq!(second.spool_depth(), 70);

    broker.restart();
    wait_until(Duration::from_secs(20), "the spool drained", || {
        !second.spool_in_use() && second.spool_depth() == 0
    })
    .await;
    let brokers = broker.bootstrap_servers();
    let expected: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    let on_topic = tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, &expected))
        .await
        .unwrap();
    let duplicates = check_complete_and_ordered(&on_topic, &acked);
    assert_eq!(duplicates, 0, "a clean drain sends each record once");
    close(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_record_kafka_refuses_is_never_spooled() {
    let mut broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let topic = unique_topic("too-large");
    let mut config = config(&broker.bootstrap_servers(), &topic);
    config
        .producer
        .insert("message.max.bytes".to_owned(), "10000".to_owned());
    let log = Arc::new(start(config.validate(data_dir.path()).unwrap()).await);
    let too_large = |index| RawRecord {
        body: Bytes::from(vec![b'x'; 20_000]),
        ..record("7moor", index)
    };
    // Direct: librdkafka refuses it at once; the log stays direct.
    let refused = log.append("call-a".to_owned(), too_large(0)).await;
    assert!(
        matches!(&refused, Err(AppendError::Unavailable(reason)) if reason.contains("refuses")),
        "{refused:?}"
    );
    assert!(!log.spool_in_use());
    append_all(&log, KEYS, 1..3).await;

    broker.stop();
    append_all(&log, KEYS, 3..10).await;
    assert!(log.spool_in_use());
    let depth = log.spool_depth();
    // Spooling: the size estimate refuses it before the spool takes it.
    let refused = log.append("call-a".to_owned(), too_large(10)).await;
    assert!(
        matches!(&refused, Err(AppendError::Unavailable(reason)) if reason.contains("refuses")),
        "{refused:?}"
    );
    assert_eq!(log.spool_depth(), depth);
    close(log).await;
}
