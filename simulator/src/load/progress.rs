//! The live progress line (indicatif), drawn on stderr a few times a second.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// Counters the workers bump and the progress line reads.
#[derive(Default)]
pub(crate) struct LiveCounters {
    acknowledged: AtomicU64,
    failed: AtomicU64,
}

impl LiveCounters {
    pub(crate) fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The progress line, or nothing when it is off.
pub(crate) struct Progress {
    running: Option<(ProgressBar, JoinHandle<()>)>,
}

impl Progress {
    /// Starts redrawing every 200 ms when `enabled`: pushes done (of `total` when known),
    /// acknowledged, failed, and the rate over the last second.
    pub(crate) fn start(enabled: bool, total: Option<u64>, live: Arc<LiveCounters>) -> Progress {
        if !enabled {
            return Progress { running: None };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = match total {
            Some(_) => "{elapsed_precise} [{wide_bar}] {pos}/{len}  {msg}",
            None => "{elapsed_precise}  {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(200));
                let mut recent: VecDeque<u64> = VecDeque::with_capacity(6);
                loop {
                    interval.tick().await;
                    let acknowledged = live.acknowledged.load(Ordering::Relaxed);
                    let failed = live.failed.load(Ordering::Relaxed);
                    let done = acknowledged + failed;
                    recent.push_back(done);
                    if recent.len() > 6 {
                        recent.pop_front();
                    }
                    let window = (recent.len() - 1) as f64 * 0.2;
                    let first = recent.front().copied().unwrap_or(done);
                    let rate = if window > 0.0 {
                        (done - first) as f64 / window
                    } else {
                        0.0
                    };
                    bar.set_position(done);
                    bar.set_message(format!(
                        "pushes done {done}  acknowledged {acknowledged}  failed {failed}  {rate:.0}/s"
                    ));
                }
            })
        };
        Progress {
            running: Some((bar, ticker)),
        }
    }

    /// Stops and erases the line.
    pub(crate) fn finish(self) {
        if let Some((bar, ticker)) = self.running {
            ticker.abort();
            bar.finish_and_clear();
        }
    }
}
