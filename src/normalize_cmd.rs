//! `callhook normalize`: the normalizer as a member of a Kafka consumer group — the raw topic
//! in, the SQLite sink and the Kafka sink (`[sink.kafka]`) out — with an admin listener
//! (`/metrics`, `/healthz`, `/readyz`). The guarantees are `callhook_normalizer::kafka`'s.
//!
//! Start: the topics it uses are created when missing (the raw topic when `[log.kafka]
//! create_topics`, the events and dead-letter topics when `[sink.kafka] create_topics`); a
//! broker that does not answer yet is retried in the background while the loop waits for it.
//! Shutdown (SIGTERM or ctrl-c): the loop commits or abandons its batch and leaves the group,
//! so the other members take its partitions at once. If the loop stops by itself (an error no
//! retry fixes), the process exits non-zero for its supervisor to restart it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use callhook_ingest::AdminState;
use callhook_normalizer::kafka::LoopHealth;
use callhook_normalizer::{KafkaNormalizer, PipelineError};
use callhook_rawlog::kafka::{ensure_topic_with, TopicSpec, TopicStatus};
use callhook_sinks::KafkaSink;
use tokio::sync::oneshot;

use crate::config::{KafkaModeSettings, Settings};
use crate::listeners::Listeners;
use crate::readiness::ProcessReadiness;

/// How long one topic-creation request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two rounds of topic creation while the broker does not answer.
const ADMIN_RETRY: Duration = Duration::from_secs(5);

/// Runs `callhook normalize` until a shutdown signal or the loop's own end.
pub async fn normalize(settings: Settings) -> anyhow::Result<()> {
    let kafka = kafka_mode(&settings, "normalize")?;
    create_data_dir(&settings)?;
    tokio::spawn(ensure_topics(kafka.clone(), true));
    let mut normalizer = NormalizerThread::start(&settings, &kafka).await?;
    let readiness = ProcessReadiness {
        log: None,
        normalizer: Some(normalizer.health()),
    };
    let admin = Arc::new(AdminState::new(Arc::new(readiness)));
    let listeners = Listeners::start(None, settings.admin_listen, admin).await?;
    tokio::select! {
        () = crate::serve::shutdown_signal() => tracing::info!("shutdown requested"),
        () = normalizer.finished() => tracing::error!("the normalizer stopped by itself"),
    }
    let result = normalizer.stop().await;
    listeners.stop().await;
    result?;
    tracing::info!("callhook normalize stopped cleanly");
    Ok(())
}

/// Returns the Kafka-mode settings, or an error naming the command.
pub fn kafka_mode(settings: &Settings, command: &str) -> anyhow::Result<KafkaModeSettings> {
    settings.kafka.clone().with_context(|| {
        format!("`callhook {command}` needs `[log] kind = \"kafka\"` and `[log.kafka] brokers`")
    })
}

/// Creates the data directory (the SQLite sink's, the spool's).
pub fn create_data_dir(settings: &Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory `{}`",
            settings.data_dir.display()
        )
    })
}

/// Creates the topics this process uses when missing, retrying until the broker answers.
/// `raw`: the raw topic too (the receiver's `KafkaLog` creates it on its own).
pub async fn ensure_topics(kafka: KafkaModeSettings, raw: bool) {
    let mut wanted = Vec::new();
    if raw && kafka.log.create_topics {
        wanted.push((
            kafka.log.raw_topic.clone(),
            kafka.log.raw_topic_partitions.get(),
            kafka.log.raw_topic_replication_factor,
        ));
    }
    if let Some(sink) = kafka.sink.as_ref().filter(|sink| sink.create_topics) {
        for topic in [&sink.events_topic, &sink.dead_letters_topic] {
            wanted.push((
                topic.clone(),
                sink.topic_partitions.get(),
                sink.topic_replication_factor,
            ));
        }
    }
    let client = kafka.log.client_config();
    while !wanted.is_empty() {
        let mut missing = Vec::new();
        for (name, partitions, replication_factor) in wanted {
            let spec = TopicSpec {
                name: &name,
                partitions,
                replication_factor,
            };
            match ensure_topic_with(&client, &spec, ADMIN_TIMEOUT).await {
                Ok(TopicStatus::Created) => {
                    tracing::info!(topic = %name, partitions, "created topic")
                }
                Ok(TopicStatus::Existed) => {}
                Err(error) => {
                    tracing::warn!(%error, topic = %name, "cannot ensure the topic yet; retrying");
                    missing.push((name, partitions, replication_factor));
                }
            }
        }
        wanted = missing;
        if !wanted.is_empty() {
            tokio::time::sleep(ADMIN_RETRY).await;
        }
    }
}

/// The Kafka normalizer on its own OS thread.
pub struct NormalizerThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), PipelineError>>>,
    done: Option<oneshot::Receiver<()>>,
    health: Arc<LoopHealth>,
}

impl NormalizerThread {
    /// Opens the sinks and starts the loop.
    pub async fn start(settings: &Settings, kafka: &KafkaModeSettings) -> anyhow::Result<Self> {
        let consumer = kafka.consumer.clone();
        let sqlite = settings.sqlite.clone();
        let sink_settings = kafka.sink.clone();
        let sources = settings.map_sources.clone();
        let normalizer_settings = settings.normalizer.clone();
        // Opening the SQLite sink is blocking file I/O: keep it off the runtime's workers.
        let normalizer = tokio::task::spawn_blocking(move || {
            let kafka_sink = sink_settings
                .map(KafkaSink::new)
                .transpose()
                .context("cannot create the kafka sink")?;
            KafkaNormalizer::new(&consumer, &sqlite, kafka_sink, sources, normalizer_settings)
                .context("cannot start the normalizer")
        })
        .await??;
        let health = normalizer.health();
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = oneshot::channel();
        let flag = Arc::clone(&stop);
        // rdkafka polling, delivery waits and SQLite commits block: the loop gets its own OS
        // thread, never a runtime worker.
        let handle = std::thread::Builder::new()
            .name("normalizer".into())
            .spawn(move || {
                let result = normalizer.run(flag);
                let _ = done_tx.send(());
                result
            })?;
        Ok(NormalizerThread {
            stop,
            handle: Some(handle),
            done: Some(done),
            health,
        })
    }

    /// Returns the loop's health (for `/readyz`).
    pub fn health(&self) -> Arc<LoopHealth> {
        Arc::clone(&self.health)
    }

    /// Resolves when the loop has stopped (by itself, or after [`NormalizerThread::stop`]).
    pub async fn finished(&mut self) {
        match self.done.as_mut() {
            Some(done) => {
                let _ = done.await;
                self.done = None;
            }
            None => std::future::pending().await,
        }
    }

    /// Asks the loop to stop and waits for it; returns its error, if it had one.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        let joined = tokio::task::spawn_blocking(move || handle.join()).await?;
        joined
            .map_err(|_| anyhow::anyhow!("the normalizer thread panicked"))?
            .context("the normalizer stopped with an error")
    }
}
