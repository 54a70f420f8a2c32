//! What `/readyz` reports in Kafka mode, where a process may run the receiver, the
//! normalizer, or both.
//!
//! The admin listener (`callhook_ingest::run_admin`) asks a [`LogAppender`] whether it takes
//! writes. [`ProcessReadiness`] stands in for one: it is ready while the raw log takes writes
//! (the receiver half) and the normalizer commits batches (the normalizer half), and passes the
//! raw log's status detail (spool in use, its depth) through.

use std::sync::Arc;

use callhook_normalizer::kafka::LoopHealth;
use callhook_rawlog::{AppendError, BoxFuture, LogAppender, Position, RawRecord};

/// The readiness of the halves this process runs.
pub struct ProcessReadiness {
    /// The raw log the receiver appends to, when this process receives.
    pub log: Option<Arc<dyn LogAppender>>,
    /// The normalizer loop's health, when this process normalizes.
    pub normalizer: Option<Arc<LoopHealth>>,
}

impl LogAppender for ProcessReadiness {
    fn append(
        &self,
        _key: String,
        _record: RawRecord,
    ) -> BoxFuture<'static, Result<Position, AppendError>> {
        // Only the admin listener holds this value, and it never appends.
        Box::pin(async {
            Err(AppendError::Unavailable(
                "readiness is not a raw log".to_owned(),
            ))
        })
    }

    fn check_writable(&self) -> Result<(), String> {
        if let Some(log) = &self.log {
            log.check_writable()?;
        }
        if let Some(normalizer) = &self.normalizer {
            normalizer
                .check()
                .map_err(|problem| format!("normalizer: {problem}"))?;
        }
        Ok(())
    }

    fn status_detail(&self) -> Option<String> {
        self.log.as_ref().and_then(|log| log.status_detail())
    }
}
