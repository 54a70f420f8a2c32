//! Helpers of the Kafka raw log tests: settings on a real broker, records, and an independent
//! consumer that reads the raw topic back.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use callhook_rawlog::kafka::{KafkaLog, KafkaLogConfig, KafkaLogSettings};
use callhook_rawlog::kafka_codec;
use callhook_rawlog::RawRecord;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Sends the log's `tracing` events to the test output (filtered by `RUST_LOG`, default
/// `warn`), so a failing test shows why.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A topic name unique within the test process.
pub fn unique_topic(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kafka log settings for tests: 3 partitions, a 1 s ack bound, a spool under `data_dir`.
pub fn settings(brokers: &str, topic: &str, data_dir: &Path) -> KafkaLogSettings {
    config(brokers, topic).validate(data_dir).unwrap()
}

/// The config behind [`settings`], to adjust before validating.
pub fn config(brokers: &str, topic: &str) -> KafkaLogConfig {
    KafkaLogConfig {
        brokers: brokers.to_owned(),
        raw_topic: topic.to_owned(),
        raw_topic_partitions: 3,
        ack_timeout_ms: 1_000,
        forwarder_backoff_max_ms: 500,
        forwarder_batch_records: 100,
        forwarder_delivery_timeout_ms: 5_000,
        ..KafkaLogConfig::default()
    }
}

/// Starts a log, failing the test on error.
pub async fn start(settings: KafkaLogSettings) -> KafkaLog {
    init_tracing();
    KafkaLog::start(settings).await.expect("kafka log starts")
}

/// A record whose request id and body carry `index`.
pub fn record(source: &str, index: usize) -> RawRecord {
    RawRecord {
        source: source.to_owned(),
        received_at: DateTime::from_timestamp_millis(1_700_000_000_000 + index as i64).unwrap(),
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: Some("127.0.0.1:40000".to_owned()),
        request_id: format!("req-{index}"),
        headers: vec![("user-agent".to_owned(), "test".to_owned())],
        body: Bytes::from(format!("{{\"n\":{index}}}")),
    }
}

/// One record read back from the raw topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub timestamp_ms: Option<i64>,
    pub record: RawRecord,
}

/// Reads the topic from the beginning with an independent consumer (assign, no group
/// commits) until every id of `expected` was seen and then nothing new came for 1 s; returns
/// the records in partition then offset order. (tansu's high watermarks count batches
/// oddly, so the end is found by idling rather than by watermarks.) Blocks: call it from
/// `spawn_blocking`.
pub fn read_topic(brokers: &str, topic: &str, expected: &[String]) -> Vec<TopicRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", unique_topic("g")))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("test consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for found in metadata.topics().iter().filter(|t| t.name() == topic) {
        for partition in found.partitions() {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut missing: std::collections::HashSet<&String> = expected.iter().collect();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_message = Instant::now();
    while !missing.is_empty() || last_message.elapsed() < Duration::from_secs(1) {
        if Instant::now() > deadline {
            let mut missing: Vec<&&String> = missing.iter().collect();
            missing.sort();
            panic!(
                "topic `{topic}`: {} expected records not read within 20 s: {missing:?}",
                missing.len()
            );
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        last_message = Instant::now();
        let headers: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        assert!(message.payload().is_some() || message.payload_len() == 0);
        let record = kafka_codec::decode(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_deref())),
            message.payload(),
        )
        .expect("raw record decodes");
        missing.remove(&record.request_id);
        records.push(TopicRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap(),
            timestamp_ms: message.timestamp().to_millis(),
            record,
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Waits until `condition` holds, polling every 50 ms, for at most `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the topic against what was acknowledged: every acknowledged request id is there,
/// and, per key, the first copies come in `acked` order. Returns the duplicate count.
pub fn check_complete_and_ordered(
    topic_records: &[TopicRecord],
    acked: &[(String, String)],
) -> usize {
    let mut first_seen: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    // Per partition, offset order is the order on the topic; keys never span partitions.
    for record in topic_records {
        if seen.insert(record.record.request_id.clone()) {
            first_seen.push((record.key.clone(), record.record.request_id.clone()));
        } else {
            duplicates += 1;
        }
    }
    let acked_ids: std::collections::HashSet<&String> = acked.iter().map(|(_, id)| id).collect();
    for (_, id) in acked {
        assert!(
            seen.contains(id),
            "acknowledged record `{id}` is not on the topic"
        );
    }
    let mut per_key_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, id) in &first_seen {
        if acked_ids.contains(id) {
            per_key_topic.entry(key).or_default().push(id);
        }
    }
    let mut per_key_acked: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, id) in acked {
        per_key_acked.entry(key).or_default().push(id);
    }
    assert_eq!(per_key_topic, per_key_acked, "per-key order differs");
    duplicates
}

/// Returns now, for records' `received_at`.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
