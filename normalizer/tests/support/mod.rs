//! Helpers of the Kafka consume-loop tests: topics, raw records as the receiver produces
//! them, the loop on its own thread, and independent readers of the topics and the database.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callhook_normalizer::kafka::KafkaConsumerConfig;
use callhook_normalizer::supervisor::NormalizerHealth;
use callhook_normalizer::{
    map_push, Dialect, KafkaNormalizer, NormalizerConfig, PipelineError, RawPush, SourceContext,
};
use callhook_rawlog::kafka::{ensure_topic_with, TopicSpec};
use callhook_rawlog::{kafka_codec, RawRecord};
use callhook_sinks::{KafkaSink, KafkaSinkConfig, SqliteSinkSettings};
use callhook_testkit::KafkaBroker;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const RAW: &str = "raw";
pub const EVENTS: &str = "callhook.events";
pub const DEAD: &str = "callhook.deadletters";

pub fn cluster(broker: &KafkaBroker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap_servers());
    config
}

pub fn create_topics(broker: &KafkaBroker) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, partitions) in [(RAW, 3), (EVENTS, 3), (DEAD, 1)] {
        let spec = TopicSpec {
            name,
            partitions,
            replication_factor: -1,
            configs: &[],
        };
        runtime
            .block_on(ensure_topic_with(
                &cluster(broker),
                &spec,
                Duration::from_secs(10),
            ))
            .unwrap_or_else(|e| panic!("topic {name}: {e}"));
    }
}

pub fn sources() -> HashMap<String, SourceContext> {
    HashMap::from([(
        "7moor".to_owned(),
        SourceContext::new("7moor", Dialect::SevenMoor),
    )])
}

/// A 7moor v7 ringing push for call `n`.
pub fn push(n: u32, source: &str, push_type: &str) -> RawRecord {
    let body = format!(
        r#"{{"eventUniqueId":"{n:032x}","accountId":"20000153","callUniqueId":"call-{n}","pushType":"{push_type}","customerNumber":"17319132391","displayNumber":"01081400192","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","agentName":"a"}}"#
    );
    RawRecord {
        source: source.to_owned(),
        received_at: DateTime::<Utc>::from_timestamp_millis(1_620_455_978_000).unwrap(),
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: Some("127.0.0.1:9".to_owned()),
        request_id: format!("req-{n}"),
        headers: vec![("user-agent".to_owned(), "test".to_owned())],
        body: Bytes::from(body),
    }
}

pub fn produce_raw(broker: &KafkaBroker, records: &[RawRecord]) {
    let producer: BaseProducer = cluster(broker)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for record in records {
        let mut headers = OwnedHeaders::new();
        for (name, value) in kafka_codec::encode_headers(record) {
            headers = headers.insert(rdkafka::message::Header {
                key: &name,
                value: Some(&value),
            });
        }
        let key = format!("k-{}", record.request_id);
        producer
            .send(
                BaseRecord::to(RAW)
                    .key(&key)
                    .payload(record.body.as_ref())
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// What the mapper makes of a record: event ids, or the dead-letter reason.
pub fn expected(records: &[RawRecord]) -> (BTreeSet<String>, Vec<String>) {
    let mut ids = BTreeSet::new();
    let mut reasons = Vec::new();
    let sources = sources();
    for record in records {
        let Some(ctx) = sources.get(&record.source) else {
            reasons.push("unknown_source".to_owned());
            continue;
        };
        let push = RawPush {
            method: &record.method,
            content_type: record.content_type.as_deref(),
            query: None,
            headers: &record.headers,
            body: &record.body,
            received_at: record.received_at,
        };
        match map_push(&push, ctx) {
            Ok(mapped) => ids.extend(mapped.events.into_iter().map(|e| e.id)),
            Err(error) => reasons.push(error.reason().to_owned()),
        }
    }
    (ids, reasons)
}

pub struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), PipelineError>>,
}

impl Running {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap().unwrap();
    }
}

pub fn start(broker: &KafkaBroker, db: &Path, transactional_id: Option<&str>) -> Running {
    start_with(broker, &SqliteSinkSettings::for_path(db), transactional_id).0
}

pub fn start_with(
    broker: &KafkaBroker,
    sqlite: &SqliteSinkSettings,
    transactional_id: Option<&str>,
) -> (Running, Arc<NormalizerHealth>) {
    let settings = NormalizerConfig {
        idle_wait_ms: 100,
        ..NormalizerConfig::default()
    }
    .validate()
    .unwrap();
    let consumer = KafkaConsumerConfig {
        session_timeout_ms: 6_000,
        ..KafkaConsumerConfig::default()
    }
    .validate(cluster(broker), RAW, "normalizer")
    .unwrap();
    let sink = KafkaSinkConfig {
        enabled: true,
        transactional_id: transactional_id.map(str::to_owned),
        ..KafkaSinkConfig::default()
    }
    .validate(cluster(broker))
    .unwrap();
    let attempts = sqlite.path.with_extension("attempts");
    let normalizer = KafkaNormalizer::new(
        &consumer,
        &callhook_sinks::ProjectionSettings {
            sqlite: Some(sqlite.clone()),
            postgres: None,
        },
        Some(KafkaSink::new(sink).unwrap()),
        sources(),
        settings,
        &attempts,
    )
    .unwrap();
    let health = Arc::new(NormalizerHealth::new());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let loop_health = Arc::clone(&health);
    let thread = std::thread::spawn(move || normalizer.run_until(&flag, &loop_health));
    (Running { stop, thread }, health)
}

/// Every record of `topic` (read_committed) until `count` arrived or 30 s passed, as
/// (key, headers, value).
pub fn read_topic(
    broker: &KafkaBroker,
    topic: &str,
    count: usize,
) -> Vec<(String, BTreeMap<String, String>, Vec<u8>)> {
    let consumer: BaseConsumer = cluster(broker)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    // Assigned rather than subscribed: no group join to wait for.
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push((
            String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            headers,
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
    // Anything past `count` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            records.push((
                String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                BTreeMap::new(),
                Vec::new(),
            ));
        }
    }
    records
}

pub fn sqlite_count(db: &Path, sql: &str) -> i64 {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection.query_row(sql, [], |row| row.get(0)).unwrap()
}

pub fn wait_for(db: &Path, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = if db.exists() {
            sqlite_count(db, sql)
        } else {
            0
        };
        if have == want {
            return;
        }
        assert!(Instant::now() < deadline, "`{sql}`: {have}, want {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn workload() -> Vec<RawRecord> {
    let mut records: Vec<RawRecord> = (0..40).map(|n| push(n, "7moor", "dialoutRing")).collect();
    records.push(push(3, "7moor", "dialoutRing")); // a vendor re-send
    records.push(push(100, "7moor", "noSuchPush")); // unmappable
    records.push(push(101, "elsewhere", "dialoutRing")); // not a configured source
    records
}

pub fn check_topics(broker: &KafkaBroker, records: &[RawRecord]) {
    let (ids, reasons) = expected(records);
    assert!(ids.len() >= 40, "{} events expected", ids.len());
    let events = read_topic(broker, EVENTS, ids.len());
    let got: Vec<&String> = events
        .iter()
        .filter_map(|(_, headers, _)| headers.get("ce_id"))
        .collect();
    assert_eq!(got.len(), events.len(), "every record is a CloudEvent");
    assert_eq!(got.len(), ids.len(), "each event exactly once in the topic");
    assert_eq!(got.into_iter().cloned().collect::<BTreeSet<_>>(), ids);
    for (key, headers, value) in &events {
        assert_eq!(Some(key), headers.get("ce_subject"));
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let data: serde_json::Value = serde_json::from_slice(value).unwrap();
        assert_eq!(data["call_id"].as_str(), Some(key.as_str()));
    }
    let dead = read_topic(broker, DEAD, reasons.len());
    let mut got_reasons: Vec<String> = dead
        .iter()
        .map(|(_, headers, _)| headers["callhook.reason"].clone())
        .collect();
    got_reasons.sort();
    let mut want = reasons.clone();
    want.sort();
    assert_eq!(got_reasons, want);
}
