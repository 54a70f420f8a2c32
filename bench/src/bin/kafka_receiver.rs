//! `kafka-receiver`: the receiver in Kafka mode for the harness. It runs
//! `callhook_ingest::run` in-process with a [`KafkaLog`] (idempotent producer, `200` only
//! after the delivery report) on rdkafka's in-process `MockCluster`, so the load generator can
//! measure Kafka-mode ingest next to `bare-hyper` and `callhook serve`.
//!
//! The mock cluster runs in this process and shares the machine: the figure measures our side
//! (routing, the hand-over to librdkafka, delivery reports), not a real broker's network and
//! disks. Prints `kafka-receiver listening ADDR`; stops on SIGTERM or ctrl-c.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use callhook_ingest::{IngestConfig, Receiver, SourceAuthConfig, SourceSettings};
use callhook_rawlog::kafka::{KafkaLog, KafkaLogConfig};
use callhook_rawlog::LogAppender;
use clap::Parser;
use rdkafka::mocking::MockCluster;

/// Serves `/hooks/7moor` with the Kafka raw log on an in-process mock cluster.
#[derive(Parser)]
#[command(name = "kafka-receiver")]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Partitions of the raw topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir = tempfile::tempdir()?;
    let cluster = MockCluster::new(1)?;
    let config = KafkaLogConfig {
        brokers: cluster.bootstrap_servers(),
        create_topics: false,
        ..KafkaLogConfig::default()
    };
    cluster.create_topic(&config.raw_topic, args.partitions, 1)?;
    let settings = config.validate(data_dir.path())?;
    // Built like `callhook serve` builds its runtime: default worker count.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let log = Arc::new(runtime.block_on(KafkaLog::start(settings))?);
    let appender: Arc<dyn LogAppender> = log.clone();
    let mut sources = BTreeMap::new();
    sources.insert(
        "7moor".to_owned(),
        SourceSettings::new(SourceAuthConfig::default().validate()?, None)?,
    );
    let receiver = Arc::new(Receiver::new(
        IngestConfig::default().validate()?,
        sources,
        appender,
    )?);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("kafka-receiver listening {}", listener.local_addr()?);
        callhook_ingest::run(listener, receiver, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    // `close` blocks until the producer flushed; the runtime is idle by now.
    log.close()?;
    drop(cluster);
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
