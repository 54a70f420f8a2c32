//! Supervision of the normalizer loop: it never stops silently.
//!
//! # Guarantee
//!
//! While the process runs, the normalizer loop either runs or is being restarted, and everyone
//! who watches can tell which:
//!
//! - The loop runs on its own OS thread ([`Supervisor::spawn`]). When it returns an error or
//!   panics, the supervisor logs an ERROR line naming the reason, sets the shared
//!   [`NormalizerHealth`] to `restarting` with that reason (`/readyz` answers `503` with it),
//!   counts the restart (`callhook_normalizer_restarts_total`), waits with an exponential
//!   backoff ([`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]; reset after a run that lasted
//!   [`HEALTHY_RUN`]) and builds a fresh loop: it reopens the sink and the raw-log reader, so a
//!   state that a reconnect fixes is fixed.
//! - The state is one gauge, `callhook_normalizer_state{state}`, exactly one of `starting`,
//!   `running`, `retrying` (a sink refuses batches; they are retried, never skipped),
//!   `restarting` and `stopped` set to 1.
//!
//! Restarting in-process, rather than exiting for a supervisor to restart the process, is the
//! choice because the receiver shares the process in `serve`: vendors keep getting their `200`
//! while the raw log holds the pushes, and the loop picks them up once it is back. What an
//! in-process restart cannot catch (an abort, a stack overflow, an OOM kill) ends the whole
//! process; the next start then isolates the record that did it
//! ([`crate::pipeline::attempts`]), so that cannot become a crash loop either.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{register_int_counter, register_int_gauge_vec, IntCounter, IntGaugeVec};

use crate::pipeline::PipelineError;

/// The first pause before a restart.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest pause before a restart.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run that lasted this long resets the backoff.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What the normalizer loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopState {
    /// Built, not yet through its first batch or idle wait.
    Starting,
    /// Consuming, or caught up and waiting for records.
    Running,
    /// A sink refuses batches; the batch is retried with backoff.
    Retrying,
    /// The loop stopped by itself and is being rebuilt.
    Restarting,
    /// Stopped on request (shutdown).
    Stopped,
}

impl LoopState {
    /// Every state, in gauge order.
    pub const ALL: [LoopState; 5] = [
        LoopState::Starting,
        LoopState::Running,
        LoopState::Retrying,
        LoopState::Restarting,
        LoopState::Stopped,
    ];

    /// Returns the `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopState::Starting => "starting",
            LoopState::Running => "running",
            LoopState::Retrying => "retrying",
            LoopState::Restarting => "restarting",
            LoopState::Stopped => "stopped",
        }
    }
}

struct Families {
    state: IntGaugeVec,
    restarts: IntCounter,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| Families {
        state: register_int_gauge_vec!(
            "callhook_normalizer_state",
            "The normalizer loop's state: 1 for the current one of starting, running, retrying, restarting, stopped.",
            &["state"]
        )
        .expect("metric"),
        restarts: register_int_counter!(
            "callhook_normalizer_restarts_total",
            "Times the normalizer loop stopped by itself and was restarted."
        )
        .expect("metric"),
    })
}

/// The normalizer's health, shared by the loop (which reports), the supervisor and `/readyz`.
#[derive(Debug)]
pub struct NormalizerHealth {
    inner: Mutex<(LoopState, Option<String>)>,
}

impl Default for NormalizerHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl NormalizerHealth {
    /// Starts in `starting`, with every state's gauge created.
    pub fn new() -> Self {
        let health = NormalizerHealth {
            inner: Mutex::new((LoopState::Starting, None)),
        };
        health.export(LoopState::Starting);
        let _ = &families().restarts;
        health
    }

    /// Returns `Ok(())` while the loop runs (or is starting: building it takes milliseconds,
    /// and a build that fails is `restarting`), else what it is doing and why.
    pub fn check(&self) -> Result<(), String> {
        let (state, reason) = &*self.lock();
        match (state, reason) {
            (LoopState::Running | LoopState::Starting, _) => Ok(()),
            (state, Some(reason)) => Err(format!("{}: {reason}", state.as_str())),
            (state, None) => Err(state.as_str().to_owned()),
        }
    }

    /// Returns the current state.
    pub fn state(&self) -> LoopState {
        self.lock().0
    }

    /// Reports the loop running (a batch committed, or it caught up).
    pub fn running(&self) {
        self.set(LoopState::Running, None);
    }

    /// Reports a sink refusing batches (they are retried).
    pub fn retrying(&self, reason: String) {
        self.set(LoopState::Retrying, Some(reason));
    }

    /// Sets the state; only a change touches the lock's holders and the gauge.
    pub fn set(&self, state: LoopState, reason: Option<String>) {
        let mut inner = self.lock();
        if inner.0 == state && inner.1 == reason {
            return;
        }
        *inner = (state, reason);
        drop(inner);
        self.export(state);
    }

    fn export(&self, current: LoopState) {
        for state in LoopState::ALL {
            families()
                .state
                .with_label_values(&[state.as_str()])
                .set(i64::from(state == current));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (LoopState, Option<String>)> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A loop the supervisor can run: consumes until `stop` is set, reporting to `health`.
pub trait SupervisedLoop: Send {
    /// Runs until `stop` is set (returns `Ok`) or it cannot go on (returns the error).
    fn run(
        self: Box<Self>,
        stop: &AtomicBool,
        health: &NormalizerHealth,
    ) -> Result<(), PipelineError>;
}

/// Builds a fresh loop for each (re)start; an error is retried with the backoff.
pub type LoopFactory =
    Box<dyn FnMut() -> Result<Box<dyn SupervisedLoop>, PipelineError> + Send + 'static>;

/// The supervised loop's thread.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    health: Arc<NormalizerHealth>,
    handle: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts the supervisor thread `name` with `first`, a loop the caller built (so that a
    /// start that cannot work fails the command at once, and the loop's metrics exist before
    /// the first scrape); `on_thread_start` runs first on that thread (e.g. to lower its CPU
    /// priority). After `first` stops, `factory` builds every further loop.
    pub fn spawn(
        name: &str,
        first: Box<dyn SupervisedLoop>,
        mut factory: LoopFactory,
        on_thread_start: fn(),
    ) -> std::io::Result<Supervisor> {
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(NormalizerHealth::new());
        let handle = {
            let stop = Arc::clone(&stop);
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    on_thread_start();
                    supervise(Some(first), &mut factory, &stop, &health);
                })?
        };
        Ok(Supervisor {
            stop,
            health,
            handle: Some(handle),
        })
    }

    /// Returns the health `/readyz` reports.
    pub fn health(&self) -> Arc<NormalizerHealth> {
        Arc::clone(&self.health)
    }

    /// Asks the loop to stop (it finishes its batch) and waits for the thread. Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("the normalizer supervisor thread panicked");
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn supervise(
    mut first: Option<Box<dyn SupervisedLoop>>,
    factory: &mut LoopFactory,
    stop: &AtomicBool,
    health: &NormalizerHealth,
) {
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        health.set(LoopState::Starting, None);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let normalizer = match first.take() {
                Some(normalizer) => normalizer,
                None => factory()?,
            };
            normalizer.run(stop, health)
        }));
        let reason = match outcome {
            Ok(Ok(())) if stop.load(Ordering::Acquire) => break,
            Ok(Ok(())) => "the loop returned without being asked to stop".to_owned(),
            Ok(Err(error)) => error.to_string(),
            Err(panic) => format!("the loop panicked: {}", panic_message(panic.as_ref())),
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        tracing::error!(reason = %reason, restart_in_ms = backoff.as_millis() as u64, "the normalizer stopped; restarting it (pushes wait in the raw log meanwhile)");
        families().restarts.inc();
        health.set(LoopState::Restarting, Some(reason));
        sleep_unless_stopped(backoff, stop);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    health.set(LoopState::Stopped, None);
}

/// Sleeps `duration`, waking early when `stop` is set.
pub fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + duration;
    while !stop.load(Ordering::Acquire) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Returns a panic payload's message (`&str` or `String` payloads; else a placeholder).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Failing(Arc<AtomicUsize>);

    impl SupervisedLoop for Failing {
        fn run(
            self: Box<Self>,
            stop: &AtomicBool,
            health: &NormalizerHealth,
        ) -> Result<(), PipelineError> {
            let run = self.0.fetch_add(1, Ordering::SeqCst);
            if run == 0 {
                panic!("boom");
            }
            health.running();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }
    }

    #[test]
    fn test_a_panicking_loop_is_reported_and_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let factory_runs = Arc::clone(&runs);
        let supervisor = Supervisor::spawn(
            "test-normalizer",
            Box::new(Failing(Arc::clone(&runs))),
            Box::new(move || Ok(Box::new(Failing(Arc::clone(&factory_runs))) as Box<_>)),
            || {},
        )
        .unwrap();
        let health = supervisor.health();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut saw_restarting = false;
        while Instant::now() < deadline {
            match health.state() {
                LoopState::Restarting => {
                    saw_restarting = true;
                    assert!(health.check().unwrap_err().contains("boom"));
                }
                LoopState::Running if runs.load(Ordering::SeqCst) >= 2 => break,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(saw_restarting);
        assert_eq!(health.state(), LoopState::Running);
        assert!(health.check().is_ok());
        supervisor.stop();
        assert_eq!(health.state(), LoopState::Stopped);
    }
}
