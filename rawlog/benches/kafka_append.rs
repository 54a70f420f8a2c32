//! Append throughput of the raw log: the Kafka log (idempotent producer, ack after the
//! delivery report) through rdkafka's in-process `MockCluster`, against the embedded log
//! (SQLite group commit, fsync per batch), with many appends in flight as under load.
//!
//! `cargo bench -p callhook-rawlog --bench kafka_append`. The mock cluster measures our side
//! (routing, librdkafka hand-over, delivery reports), not a real broker's network and disks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use callhook_rawlog::embedded::{EmbeddedLog, EmbeddedLogConfig};
use callhook_rawlog::kafka::{KafkaLog, KafkaLogConfig};
use callhook_rawlog::{LogAppender, RawRecord};
use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rdkafka::mocking::MockCluster;

/// Appends resolved per measured iteration, all in flight at once.
const APPENDS_IN_FLIGHT: usize = 2_000;
/// Distinct partition keys (call ids).
const KEYS: usize = 64;

fn record(index: usize, body: &Bytes) -> RawRecord {
    RawRecord {
        source: "7moor".to_owned(),
        received_at: Utc::now(),
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: Some("127.0.0.1:40000".to_owned()),
        request_id: format!("bench-{index}"),
        headers: vec![("user-agent".to_owned(), "bench".to_owned())],
        body: body.clone(),
    }
}

/// Appends `APPENDS_IN_FLIGHT` records at once and waits for every answer.
async fn append_burst(log: &dyn LogAppender, body: &Bytes) {
    let appends: Vec<_> = (0..APPENDS_IN_FLIGHT)
        .map(|index| log.append(format!("call-{}", index % KEYS), record(index, body)))
        .collect();
    for append in appends {
        append.await.expect("append acknowledged");
    }
}

fn bench_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("callhook.raw", 6, 1)
        .expect("mock topic");
    let kafka_config = KafkaLogConfig {
        brokers: cluster.bootstrap_servers(),
        create_topics: false,
        ..KafkaLogConfig::default()
    };
    let kafka_settings = kafka_config.validate(data_dir.path()).unwrap();
    let kafka: Arc<KafkaLog> = Arc::new(
        runtime
            .block_on(KafkaLog::start(kafka_settings))
            .expect("kafka log"),
    );
    let embedded_settings = EmbeddedLogConfig {
        path: Some(data_dir.path().join("rawlog.db")),
        ..EmbeddedLogConfig::default()
    }
    .validate(data_dir.path())
    .unwrap();
    let embedded = Arc::new(EmbeddedLog::open(embedded_settings).expect("embedded log"));

    let mut group = c.benchmark_group("rawlog_append");
    group.throughput(Throughput::Elements(APPENDS_IN_FLIGHT as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for body_bytes in [256_usize, 1024] {
        let body = Bytes::from(vec![b'x'; body_bytes]);
        group.bench_with_input(
            BenchmarkId::new("kafka_mock", body_bytes),
            &body,
            |b, body| {
                b.iter(|| runtime.block_on(append_burst(kafka.as_ref(), body)));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("embedded", body_bytes),
            &body,
            |b, body| {
                b.iter(|| runtime.block_on(append_burst(embedded.as_ref(), body)));
            },
        );
    }
    group.finish();
    assert!(
        !kafka.spool_in_use(),
        "the bench measured direct sends only"
    );
    runtime.block_on(async {
        let kafka = Arc::clone(&kafka);
        tokio::task::spawn_blocking(move || kafka.close().expect("close"))
            .await
            .unwrap();
    });
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
