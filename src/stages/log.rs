//! The raw log of the process: the embedded SQLite log, or the Kafka raw topic with its spool.

use std::sync::Arc;

use anyhow::Context;
use callhook_rawlog::embedded::EmbeddedLog;
use callhook_rawlog::kafka::KafkaLog;
use callhook_rawlog::LogAppender;

use crate::config::Settings;

/// An open raw log.
pub enum RawLog {
    /// The embedded log (`[log] kind = "embedded"`).
    Embedded(Arc<EmbeddedLog>),
    /// The Kafka raw topic (`[log] kind = "kafka"`).
    Kafka(Arc<KafkaLog>),
}

impl RawLog {
    /// Opens the log the settings name.
    pub async fn open(settings: &Settings) -> anyhow::Result<RawLog> {
        match &settings.kafka {
            Some(kafka) => {
                let log = KafkaLog::start(kafka.log.clone())
                    .await
                    .context("cannot start the kafka raw log")?;
                Ok(RawLog::Kafka(Arc::new(log)))
            }
            None => {
                let embedded = settings.log.clone();
                // Opening checks the file's integrity: blocking file I/O.
                let log = tokio::task::spawn_blocking(move || EmbeddedLog::open(embedded))
                    .await?
                    .context("cannot open the raw log")?;
                Ok(RawLog::Embedded(Arc::new(log)))
            }
        }
    }

    /// Returns the append side, for the receiver and `/readyz`.
    pub fn appender(&self) -> Arc<dyn LogAppender> {
        match self {
            RawLog::Embedded(log) => log.clone(),
            RawLog::Kafka(log) => log.clone(),
        }
    }

    /// Returns the embedded log, when that is the kind.
    pub fn embedded(&self) -> Option<&Arc<EmbeddedLog>> {
        match self {
            RawLog::Embedded(log) => Some(log),
            RawLog::Kafka(_) => None,
        }
    }

    /// Drains and closes the log (flushes the producer, joins the writer or forwarder).
    pub async fn close(self) -> anyhow::Result<()> {
        // Closing joins threads and flushes to disk or Kafka: blocking.
        tokio::task::spawn_blocking(move || match self {
            RawLog::Embedded(log) => log.close().context("the raw log did not close cleanly"),
            RawLog::Kafka(log) => log
                .close()
                .context("the kafka raw log did not close cleanly"),
        })
        .await?
    }
}
