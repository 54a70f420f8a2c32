//! Reconciliation with the 7moor v7 CDR query API, beside the receiver: one task per
//! reconciled source, appending to the process's raw log, comparing with the SQLite sink.
//!
//! It runs where the raw log is written (`serve`, and `ingest` in Kafka mode), because a
//! backfilled CDR is a raw record like a push. It never affects the pipeline: its passes run
//! in their own tasks, retried with backoff, and the receiver and the normalizer do not wait
//! for them. In `ingest`, the sink database must be readable at `[sink.sqlite] path` (for
//! example the normalizers' volume mounted read-only); otherwise every pass fails with a
//! message saying so, and nothing is appended.

use std::sync::Arc;

use anyhow::Context;
use callhook_rawlog::LogAppender;
use callhook_reconcile::Reconciler;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;

/// The running reconcilers.
pub struct Reconcilers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Reconcilers {
    /// Starts a reconciler per enabled `[sources.<name>.reconcile]`.
    pub fn start(
        settings: &Settings,
        appender: Arc<dyn LogAppender>,
    ) -> anyhow::Result<Reconcilers> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for source in settings.reconcile.values() {
            if !source.enabled {
                tracing::info!(source = %source.source, "reconciliation configured but disabled");
                continue;
            }
            let reconciler = Reconciler::new(
                source.clone(),
                settings.sqlite.path.clone(),
                Some(appender.clone()),
            )
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot start the reconciliation of `{}`", source.source))?;
            let reconciler = Arc::new(reconciler);
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(callhook_reconcile::runner::run(
                reconciler,
                async move {
                    let _ = stopped.wait_for(|stopped| *stopped).await;
                },
            )));
        }
        Ok(Reconcilers { stop, tasks })
    }

    /// Stops every reconciler, abandoning a pass under way (an append in flight completes or
    /// not; either way the next pass finds what is missing). Call it before the raw log closes.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
