//! The Kafka sink against a real Kafka-protocol broker (tansu, from callhook-testkit): what a
//! confirmed batch puts on the topics, that an aborted transaction leaves nothing a
//! `read_committed` consumer can see, and that a batch Kafka cannot take fails retryably.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callhook_rawlog::RawRecord;
use callhook_schemas::EventType;
use callhook_sinks::kafka::KafkaDeadLetter;
use callhook_sinks::{KafkaSink, KafkaSinkConfig, KafkaSinkSettings};
use callhook_testkit::KafkaBroker;
use common::{at, call_event, event_id};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const EVENTS: &str = "callhook.events";
const DEAD: &str = "callhook.deadletters";

fn settings(brokers: &str, transactional_id: Option<&str>) -> KafkaSinkSettings {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    KafkaSinkConfig {
        enabled: true,
        transactional_id: transactional_id.map(str::to_owned),
        delivery_timeout_ms: 10_000,
        ..KafkaSinkConfig::default()
    }
    .validate(client)
    .unwrap()
}

fn broker_with_topics() -> KafkaBroker {
    let broker = KafkaBroker::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (topic, partitions) in [(EVENTS, 3), (DEAD, 1)] {
        runtime
            .block_on(callhook_rawlog::kafka::ensure_topic(
                &broker.bootstrap_servers(),
                topic,
                partitions,
            ))
            .unwrap();
    }
    broker
}

/// (key, headers, value) of every record of `topic` that a `read_committed` consumer sees
/// within `wait` (or until `count` arrived).
fn read(
    broker: &KafkaBroker,
    topic: &str,
    count: usize,
    wait: Duration,
) -> Vec<(String, BTreeMap<String, String>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "sink-test-reader")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
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
    let deadline = Instant::now() + wait;
    while records.len() < count && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
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
    records
}

fn raw_record() -> RawRecord {
    RawRecord {
        source: "coocenter".into(),
        received_at: at(0),
        method: "POST".into(),
        content_type: None,
        query: Some("site=1".into()),
        remote_addr: None,
        request_id: "req-9".into(),
        headers: Vec::new(),
        body: Bytes::from_static(b"{event:'mystery'}"),
    }
}

#[test]
fn test_a_confirmed_batch_has_every_record_keyed_by_call_in_order() {
    let broker = broker_with_topics();
    let mut sink = KafkaSink::new(settings(&broker.bootstrap_servers(), None)).unwrap();
    sink.begin_batch().unwrap();
    let mut sent = 0;
    for step in 0..20u128 {
        for call in 0..10u128 {
            let id = event_id(call * 1000 + step);
            let event = call_event(
                id,
                EventType::CallRinging,
                at(step as i64),
                &format!("call-{call}"),
            );
            sink.send_event(&callhook_sinks::SinkEvent::encode(event.clone()).unwrap())
                .unwrap();
            sent += 1;
        }
    }
    let raw = raw_record();
    sink.send_dead_letter(&KafkaDeadLetter {
        key: "coocenter",
        raw_ref: "callhook.raw:0:7",
        reason: "unknown_event",
        detail: "event `mystery` is not known",
        record: &raw,
    })
    .unwrap();
    let outcome = sink.commit_batch(None).unwrap();
    assert_eq!(outcome.events_inserted, sent);
    assert_eq!(outcome.dead_letters_written, 1);

    let events = read(&broker, EVENTS, sent as usize, Duration::from_secs(20));
    assert_eq!(events.len(), sent as usize);
    // Per call (= key = partition), the events are in the order they were sent.
    let mut last_step: BTreeMap<String, String> = BTreeMap::new();
    for (key, headers, _) in &events {
        assert_eq!(Some(key), headers.get("ce_subject"));
        let id = headers["ce_id"].clone();
        if let Some(previous) = last_step.insert(key.clone(), id.clone()) {
            assert!(previous < id, "{key}: {previous} then {id}");
        }
    }
    let dead = read(&broker, DEAD, 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["callhook.reason"], "unknown_event");
    assert_eq!(dead[0].1["callhook.query"], "site=1");
    assert_eq!(dead[0].2, b"{event:'mystery'}");
}

#[test]
fn test_an_aborted_transaction_leaves_nothing_and_a_committed_one_everything() {
    let broker = broker_with_topics();
    let mut sink =
        KafkaSink::new(settings(&broker.bootstrap_servers(), Some("sink-test-1"))).unwrap();
    assert!(sink.is_transactional());
    sink.begin_batch().unwrap();
    for n in 0..5u128 {
        let event = call_event(event_id(n), EventType::CallRinging, at(0), "aborted");
        sink.send_event(&callhook_sinks::SinkEvent::encode(event.clone()).unwrap())
            .unwrap();
    }
    sink.abort_batch();
    sink.begin_batch().unwrap();
    for n in 10..15u128 {
        let event = call_event(event_id(n), EventType::CallAnswered, at(1), "committed");
        sink.send_event(&callhook_sinks::SinkEvent::encode(event.clone()).unwrap())
            .unwrap();
    }
    sink.commit_batch(None).unwrap();
    let events = read(&broker, EVENTS, 10, Duration::from_secs(5));
    let keys: Vec<&str> = events.iter().map(|(key, _, _)| key.as_str()).collect();
    assert_eq!(
        keys, ["committed"; 5],
        "only the committed transaction is visible"
    );
}

#[test]
fn test_a_batch_kafka_cannot_take_fails_retryably() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // nothing listens there once the listener is dropped
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", format!("127.0.0.1:{port}"));
    let settings = KafkaSinkConfig {
        enabled: true,
        delivery_timeout_ms: 500,
        ..KafkaSinkConfig::default()
    }
    .validate(client)
    .unwrap();
    let mut sink = KafkaSink::new(settings).unwrap();
    sink.begin_batch().unwrap();
    let event = call_event(event_id(1), EventType::CallRinging, at(0), "c");
    sink.send_event(&callhook_sinks::SinkEvent::encode(event.clone()).unwrap())
        .unwrap();
    let error = sink.commit_batch(None).unwrap_err();
    assert!(error.is_retryable(), "{error}");
    sink.abort_batch();
}
