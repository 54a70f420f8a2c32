//! `callhook ingest`: the stateless receiver of Kafka mode. Pushes go to the raw topic, or to
//! the local spool when Kafka cannot confirm in time (`callhook_rawlog::kafka::KafkaLog`,
//! whose module docs state the acknowledgement guarantee); the admin listener's `/readyz`
//! says when the spool is in use and how deep it is.
//!
//! Shutdown (SIGTERM or ctrl-c): the listeners stop accepting and finish in-flight requests
//! (each already durable in Kafka or the spool, or refused), then the raw log flushes its
//! producer, stops the forwarder and closes the spool; spooled records are forwarded at the
//! next start.

use std::sync::Arc;

use anyhow::Context;
use callhook_ingest::{AdminState, Receiver};
use callhook_rawlog::kafka::KafkaLog;
use callhook_rawlog::LogAppender;

use crate::config::{KafkaModeSettings, Settings};
use crate::listeners::Listeners;
use crate::normalize_cmd::{create_data_dir, kafka_mode, NormalizerThread};
use crate::readiness::ProcessReadiness;

/// Runs `callhook ingest` until a shutdown signal.
pub async fn ingest(settings: Settings) -> anyhow::Result<()> {
    let kafka = kafka_mode(&settings, "ingest")?;
    create_data_dir(&settings)?;
    let log = start_log(&kafka).await?;
    let (receiver, readiness) = receiver(&settings, &log, None)?;
    let admin = Arc::new(AdminState::new(Arc::new(readiness)));
    let listeners = Listeners::start(
        Some((settings.listen, receiver)),
        settings.admin_listen,
        admin,
    )
    .await?;
    crate::serve::shutdown_signal().await;
    tracing::info!("shutdown requested: draining in-flight requests");
    listeners.stop().await;
    close_log(log).await?;
    tracing::info!("callhook ingest stopped cleanly");
    Ok(())
}

/// Runs both halves in one process through Kafka (`callhook serve` in Kafka mode).
pub async fn serve_kafka(settings: Settings) -> anyhow::Result<()> {
    let kafka = kafka_mode(&settings, "serve")?;
    create_data_dir(&settings)?;
    let log = start_log(&kafka).await?;
    tokio::spawn(crate::normalize_cmd::ensure_topics(kafka.clone(), false));
    let mut normalizer = NormalizerThread::start(&settings, &kafka).await?;
    let (receiver, readiness) = receiver(&settings, &log, Some(&normalizer))?;
    let admin = Arc::new(AdminState::new(Arc::new(readiness)));
    let listeners = Listeners::start(
        Some((settings.listen, receiver)),
        settings.admin_listen,
        admin,
    )
    .await?;
    tokio::select! {
        () = crate::serve::shutdown_signal() => tracing::info!("shutdown requested: draining in-flight requests"),
        () = normalizer.finished() => tracing::error!("the normalizer stopped by itself"),
    }
    listeners.stop().await;
    let normalized = normalizer.stop().await;
    let closed = close_log(log).await;
    normalized?;
    closed?;
    tracing::info!("callhook stopped cleanly");
    Ok(())
}

async fn start_log(kafka: &KafkaModeSettings) -> anyhow::Result<Arc<KafkaLog>> {
    let log = KafkaLog::start(kafka.log.clone())
        .await
        .context("cannot start the kafka raw log")?;
    Ok(Arc::new(log))
}

/// Builds the receiver over `log` and the readiness of this process's halves.
fn receiver(
    settings: &Settings,
    log: &Arc<KafkaLog>,
    normalizer: Option<&NormalizerThread>,
) -> anyhow::Result<(Arc<Receiver>, ProcessReadiness)> {
    let appender: Arc<dyn LogAppender> = log.clone();
    let receiver = Arc::new(Receiver::new(
        settings.ingest.clone(),
        settings.ingest_sources.clone(),
        Arc::clone(&appender),
    )?);
    let readiness = ProcessReadiness {
        log: Some(appender),
        normalizer: normalizer.map(NormalizerThread::health),
    };
    Ok((receiver, readiness))
}

async fn close_log(log: Arc<KafkaLog>) -> anyhow::Result<()> {
    // Closing flushes the producer and joins the forwarder thread: blocking.
    tokio::task::spawn_blocking(move || log.close())
        .await?
        .context("the kafka raw log did not close cleanly")
}
