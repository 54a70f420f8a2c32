//! The raw log of the process: the embedded SQLite log, or the Kafka raw topic with its spool.

use std::sync::Arc;

use anyhow::Context;
use callhook_rawlog::embedded::{EmbeddedLog, EmbeddedLogError};
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
                let sink = settings.sqlite.path.clone();
                let group = settings.normalizer.consumer_group.clone();
                let data_dir = settings.data_dir.clone();
                // Opening checks the file's integrity: blocking file I/O. The sink's consumed
                // offsets hold the log to what was acknowledged (see `EmbeddedLog::open_after`).
                let log = tokio::task::spawn_blocking(move || {
                    let consumed = crate::log_check::sink_offsets(&sink, &group)?;
                    EmbeddedLog::open_after(embedded, &consumed).map_err(|error| {
                        let hint = match &error {
                            EmbeddedLogError::Corrupt { .. } => format!(
                                "; not started, so nothing more is lost: run `callhook log check --data-dir {}` for what is damaged and lost (`--repair` to keep what is intact)",
                                data_dir.display()
                            ),
                            _ => String::new(),
                        };
                        anyhow::anyhow!("cannot open the raw log: {error}{hint}")
                    })
                })
                .await??;
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
