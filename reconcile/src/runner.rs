//! The periodic pass inside `serve`: every `interval_seconds`, the calls started in
//! `[now - delay - window, now - delay)`.
//!
//! Failures never reach the pipeline: a pass runs in a task of its own (a panic ends the pass,
//! not the process), and a failed pass is retried with backoff (5 s doubling up to the
//! interval), or at the next interval when the signature is refused (a config problem that an
//! early retry cannot fix; logged at ERROR and counted).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::pass::Reconciler;

/// The first wait after a failed pass.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);

/// Runs passes until `shutdown` resolves (a pass under way is abandoned).
pub async fn run(reconciler: Arc<Reconciler>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let settings = reconciler.settings().clone();
    let mut backoff = FIRST_BACKOFF.min(settings.interval);
    tracing::info!(source = %settings.source, interval_seconds = settings.interval.as_secs(), window_seconds = settings.window.num_seconds(), "reconciliation running");
    loop {
        let until = Utc::now() - settings.delay;
        let since = until - settings.window;
        let mut pass = {
            let reconciler = reconciler.clone();
            tokio::spawn(async move { reconciler.run_pass(since, until).await })
        };
        let outcome = tokio::select! {
            _ = &mut shutdown => {
                // An append in flight completes or not; the next start's pass finds the rest.
                pass.abort();
                return;
            }
            outcome = &mut pass => outcome,
        };
        let wait = match outcome {
            Ok(Ok(report)) => {
                reconciler.pass_completed(&report);
                backoff = FIRST_BACKOFF.min(settings.interval);
                settings.interval
            }
            Ok(Err(error)) if error.is_config() => settings.interval,
            Ok(Err(error)) => {
                tracing::warn!(source = %settings.source, error = %error, retry_in_seconds = backoff.as_secs_f64(), "reconciliation pass failed");
                let wait = backoff;
                backoff = (backoff * 2).min(settings.interval);
                wait
            }
            Err(panic) => {
                tracing::error!(source = %settings.source, error = %panic, "reconciliation pass panicked");
                backoff
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
