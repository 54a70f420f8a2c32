//! What `/readyz` reports for a process that runs the receiver, the normalizer, or both.

use std::sync::Arc;

use callhook_ingest::Readiness;
use callhook_normalizer::supervisor::NormalizerHealth;
use callhook_rawlog::LogAppender;

/// The readiness of the stages this process runs: ready while the raw log takes writes (the
/// receiver) and the normalizer loop runs; the raw log's degraded-state note (spool in use)
/// passes through.
pub struct ProcessReadiness {
    /// The raw log the receiver appends to, when this process receives.
    pub log: Option<Arc<dyn LogAppender>>,
    /// The normalizer's health, when this process normalizes.
    pub normalizer: Option<Arc<NormalizerHealth>>,
}

impl Readiness for ProcessReadiness {
    fn readiness(&self) -> Result<Option<String>, String> {
        let mut problems = Vec::new();
        let mut note = None;
        if let Some(log) = &self.log {
            match log.check_writable() {
                Ok(()) => note = log.status_detail(),
                Err(reason) => problems.push(format!("raw log: {reason}")),
            }
        }
        if let Some(normalizer) = &self.normalizer {
            if let Err(reason) = normalizer.check() {
                problems.push(format!("normalizer {reason}"));
            }
        }
        match problems.is_empty() {
            true => Ok(note),
            false => Err(problems.join("; ")),
        }
    }
}
