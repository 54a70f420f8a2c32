//! The stale-call sweep, beside the receiver (`serve`, and `ingest` in Kafka mode): every
//! `[stale] sweep_interval_ms` it reads the SQLite sink for calls with no terminal event
//! `stale_after` after callhook received their last event, and appends a stale notice per call
//! to the raw log; the normalizer maps it to `call.stale` (see `normalizer/src/stale.rs`).
//!
//! It runs where the raw log is written because a notice is a raw record (so that replay
//! rebuilds the same `call.stale` events). It never affects the pipeline: a failed sweep is
//! logged, counted and tried again at the next interval. In `ingest`, the sink database must be
//! readable at `[sink.sqlite] path`; until it exists the sweep finds nothing.
//!
//! Metrics (every series at 0 from the start): `callhook_calls_stale_total{source}` (calls
//! declared stale: notices appended, once per call and process) and
//! `callhook_calls_stale_sweep_failures_total` (sweeps that could not read the sink or append).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use callhook_normalizer::stale::{Clock, StaleSweep, SystemClock};
use callhook_rawlog::LogAppender;
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Settings, StaleSettings};

/// How long the sweep's read waits for the sink's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls remembered as noticed by this process (not noticed again while their notice waits
/// for the normalizer); cleared when it grows past this.
const NOTICED_MAX: usize = 100_000;

struct StaleMetrics {
    stale: IntCounterVec,
    failures: IntCounter,
}

fn metrics() -> &'static StaleMetrics {
    static METRICS: OnceLock<StaleMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let stale = IntCounterVec::new(
            Opts::new(
                "callhook_calls_stale_total",
                "Calls declared stale: no call.ended or call.cdr within the source's stale_after of their last event.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let failures = IntCounter::new(
            "callhook_calls_stale_sweep_failures_total",
            "Stale-call sweeps that could not read the sink or append their notices.",
        )
        .expect("valid metric");
        // A second registration (tests in one process) keeps the first.
        let _ = prometheus::register(Box::new(stale.clone()));
        let _ = prometheus::register(Box::new(failures.clone()));
        StaleMetrics { stale, failures }
    })
}

/// A sweep that declared calls stale, or failed.
enum SweepDone<'a> {
    Declared { source: &'a str, calls: u64 },
    Failed { error: String },
}

impl SweepDone<'_> {
    fn emit(&self) {
        match self {
            SweepDone::Declared { source, calls } => {
                tracing::info!(
                    source,
                    calls,
                    "calls declared stale (no hangup or cdr in time)"
                );
                metrics().stale.with_label_values(&[source]).inc_by(*calls);
            }
            SweepDone::Failed { error } => {
                tracing::warn!(error = %error, "stale-call sweep failed; trying again at the next interval");
                metrics().failures.inc();
            }
        }
    }
}

/// The running sweep.
pub struct StaleSweeper {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl StaleSweeper {
    /// Starts the sweep when `[stale]` is enabled; its series exist at 0 from here.
    pub fn start(settings: &Settings, appender: Arc<dyn LogAppender>) -> StaleSweeper {
        let (stop, stopped) = watch::channel(false);
        let task = settings.stale.clone().map(|stale| {
            for source in stale.stale_after.keys() {
                metrics().stale.with_label_values(&[source]);
            }
            metrics().failures.get();
            tokio::spawn(run(
                stale,
                Box::new(SystemClock),
                settings.sqlite.path.clone(),
                appender,
                stopped,
            ))
        });
        StaleSweeper { stop, task }
    }

    /// Stops the sweep (a sweep under way is abandoned; the next start sweeps again).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

async fn run(
    stale: StaleSettings,
    clock: Box<dyn Clock>,
    database: PathBuf,
    appender: Arc<dyn LogAppender>,
    mut stopped: watch::Receiver<bool>,
) {
    let sweep = Arc::new(StaleSweep {
        stale_after: stale.stale_after,
        clock,
    });
    let mut noticed: HashSet<(String, String)> = HashSet::new();
    let mut interval = tokio::time::interval(stale.sweep_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.wait_for(|stopped| *stopped) => return,
        }
        if let Err(error) = sweep_once(&sweep, &database, &appender, &mut noticed).await {
            SweepDone::Failed { error }.emit();
        }
    }
}

/// One sweep: read the sink (on a blocking thread: SQLite), append a notice per new stale call.
async fn sweep_once(
    sweep: &Arc<StaleSweep>,
    database: &std::path::Path,
    appender: &Arc<dyn LogAppender>,
    noticed: &mut HashSet<(String, String)>,
) -> Result<(), String> {
    if !database.exists() {
        return Ok(());
    }
    let path = database.to_owned();
    let sweep_for_read = Arc::clone(sweep);
    let records = tokio::task::spawn_blocking(move || {
        let connection = callhook_sinks::sqlite::stale::open_for_sweep(&path, BUSY_TIMEOUT)?;
        sweep_for_read.sweep(&connection)
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| error.to_string())?;
    if noticed.len() > NOTICED_MAX {
        noticed.clear();
    }
    let mut declared: std::collections::BTreeMap<String, u64> = Default::default();
    for (key, record) in records {
        let call = (record.source.clone(), key.clone());
        if noticed.contains(&call) {
            continue;
        }
        let source = record.source.clone();
        appender
            .append(key, record)
            .await
            .map_err(|error| format!("appending a stale notice: {error}"))?;
        noticed.insert(call);
        *declared.entry(source).or_default() += 1;
    }
    for (source, calls) in &declared {
        SweepDone::Declared {
            source,
            calls: *calls,
        }
        .emit();
    }
    Ok(())
}
