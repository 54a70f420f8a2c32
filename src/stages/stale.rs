//! The stale-call sweep, beside the receiver (`serve`, and `ingest` in Kafka mode): every
//! `[stale] sweep_interval_ms` it reads a projection for calls with no terminal event
//! `stale_after` after callhook received their last event, and appends a stale notice per call
//! to the raw log; the normalizer maps it to `call.stale` (see `normalizer/src/stale.rs`).
//!
//! The projection is PostgreSQL when `[sink.postgres] url` is set (the database every
//! normalizer writes), else the SQLite sink's file at `[sink.sqlite] path` (in `ingest`, a
//! normalizer's database mounted there; until the file exists the sweep finds nothing).
//!
//! It runs where the raw log is written because a notice is a raw record (so that replay
//! rebuilds the same `call.stale` events). It never affects the pipeline: a failed sweep is
//! logged, counted and tried again at the next interval.
//!
//! Metrics (every series at 0 from the start): `callhook_calls_stale_total{source}` (calls
//! declared stale: notices appended, once per call and process) and
//! `callhook_calls_stale_sweep_failures_total` (sweeps that could not read the sink or append).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use callhook_normalizer::stale::{Clock, StaleSweep, SystemClock};
use callhook_rawlog::{LogAppender, RawRecord};
use callhook_sinks::{PostgresSink, PostgresSinkSettings};
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
            let projection = match &settings.projections.postgres {
                Some(postgres) => Projection::Postgres {
                    settings: Box::new(postgres.clone()),
                    sink: None,
                },
                None => Projection::Sqlite(settings.sqlite.path.clone()),
            };
            tokio::spawn(run(
                stale,
                Box::new(SystemClock),
                projection,
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

/// Where the sweep reads calls in progress.
enum Projection {
    /// The SQLite sink's file, opened read-only at each sweep.
    Sqlite(PathBuf),
    /// The PostgreSQL sink, connected at the first sweep and kept.
    Postgres {
        settings: Box<PostgresSinkSettings>,
        sink: Option<Box<PostgresSink>>,
    },
}

impl Projection {
    /// The same projection, not connected (to start over after a sweep's thread panicked).
    fn unconnected(&self) -> Projection {
        match self {
            Projection::Sqlite(path) => Projection::Sqlite(path.clone()),
            Projection::Postgres { settings, .. } => Projection::Postgres {
                settings: settings.clone(),
                sink: None,
            },
        }
    }

    /// Runs `sweep` over the projection (blocking: call it on a blocking thread). An absent
    /// SQLite file gives nothing.
    fn sweep(&mut self, sweep: &StaleSweep) -> Result<Vec<(String, RawRecord)>, String> {
        match self {
            Projection::Sqlite(path) => {
                if !path.exists() {
                    return Ok(Vec::new());
                }
                let mut connection =
                    callhook_sinks::sqlite::stale::open_for_sweep(path, BUSY_TIMEOUT)
                        .map_err(|error| error.to_string())?;
                sweep.sweep(&mut connection)
            }
            Projection::Postgres { settings, sink } => {
                if sink.is_none() {
                    let opened = PostgresSink::open(settings).map_err(|error| error.to_string())?;
                    *sink = Some(Box::new(opened));
                }
                match sink.as_mut() {
                    Some(sink) => sweep.sweep(sink.as_mut()),
                    None => Ok(Vec::new()),
                }
            }
        }
    }
}

async fn run(
    stale: StaleSettings,
    clock: Box<dyn Clock>,
    projection: Projection,
    appender: Arc<dyn LogAppender>,
    mut stopped: watch::Receiver<bool>,
) {
    let template = projection.unconnected();
    let mut projection = Some(projection);
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
            _ = stopped.wait_for(|stopped| *stopped) => break,
        }
        if let Err(error) = sweep_once(&sweep, &mut projection, &appender, &mut noticed).await {
            SweepDone::Failed { error }.emit();
        }
        if projection.is_none() {
            projection = Some(template.unconnected());
        }
    }
    // Closing the PostgreSQL client blocks on a runtime of its own: not on this one's threads.
    if let Some(projection) = projection {
        let closed = std::thread::Builder::new()
            .name("stale-sweep-close".to_owned())
            .spawn(move || drop(projection));
        if let Ok(closed) = closed {
            let _ = closed.join();
        }
    }
}

/// One sweep: read the projection, append a notice per new stale call.
///
/// The read runs on a thread of its own, not under `spawn_blocking`: the PostgreSQL client is
/// the blocking facade over tokio-postgres, which starts its own runtime and must not run on a
/// thread of this one. The projection (its connection) goes to the thread and comes back.
async fn sweep_once(
    sweep: &Arc<StaleSweep>,
    projection: &mut Option<Projection>,
    appender: &Arc<dyn LogAppender>,
    noticed: &mut HashSet<(String, String)>,
) -> Result<(), String> {
    let Some(mut taken) = projection.take() else {
        return Err("the sweep has no projection".to_owned());
    };
    let sweep_for_read = Arc::clone(sweep);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("stale-sweep".to_owned())
        .spawn(move || {
            let result = taken.sweep(&sweep_for_read);
            let _ = sender.send((taken, result));
        })
        .map_err(|error| format!("starting the sweep's thread: {error}"))?;
    let (returned, records) = receiver
        .await
        .map_err(|_| "the sweep's thread panicked".to_owned())?;
    *projection = Some(returned);
    let records = records?;
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
