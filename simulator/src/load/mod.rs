//! The load engine: sends a plan of pushes over an exact number of HTTP/1.1 connections, on
//! schedule or as fast as they go, and measures every acknowledgement.
//!
//! Reusable on its own (the benchmark harness drives it with its own plans):
//!
//! ```no_run
//! # async fn example() -> Result<(), callhook_simulator::load::LoadError> {
//! use std::sync::Arc;
//! use callhook_simulator::load::{run_load, LoadOptions, NoObserver, Pace, Plan, Push, Target};
//! let target = Target::resolve("http://127.0.0.1:8080").await?;
//! let push = Arc::new(Push::post(&target.hook_path("7moor", None), Some("application/json"), "{}".into())?);
//! let plan = Plan::repeat(push, 10_000);
//! let options = LoadOptions::new(target, 64);
//! let report = run_load(plan, &options, Arc::new(NoObserver)).await;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! - **Connections**: `connections` workers, each owning one connection
//!   (`client::Connection`). With keep-alive a worker reuses its connection (and reconnects
//!   when the server closed it); without, it opens one per push and sends `Connection: close`.
//! - **Pace**: [`Pace::Scheduled`] sends each push at its `at` offset from the start (open loop:
//!   when every connection is busy the push waits, and the delay shows as schedule lag);
//!   [`Pace::Unthrottled`] sends the next push as soon as a connection is free (closed loop).
//! - **Acknowledged** = status `200` and body `200` (the receiver's ack). Nothing is retried
//!   once sent: a push that failed is counted by class and left out of the ledger.

pub mod client;
mod progress;
pub mod report;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Uri};
use tokio::sync::{mpsc, Mutex};

pub use client::Target;
pub use report::{LatencySummary, Report};

use crate::schedule::PushMeta;
use client::{Connection, Outcome};
use progress::{LiveCounters, Progress};
use report::Recorder;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target URL is unusable.
    #[error("target `{url}`: {reason}")]
    Target {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A push's request target or content type is not valid HTTP.
    #[error("invalid request: {0}")]
    Request(String),
}

/// One HTTP request to send.
#[derive(Debug, Clone)]
pub struct Push {
    /// `GET` or `POST`.
    pub method: Method,
    /// `/hooks/<source>[?query]` (with the target's prefix).
    pub path_and_query: Uri,
    /// The `Content-Type` header, if any.
    pub content_type: Option<HeaderValue>,
    /// The exact body.
    pub body: Bytes,
    /// The simulator's identity of the push (for the ledger); `None` for other plans.
    pub meta: Option<PushMeta>,
}

impl Push {
    /// Builds a request; fails when the target or the content type is not valid HTTP.
    pub fn new(
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Push, LoadError> {
        let path_and_query = path_and_query
            .parse::<Uri>()
            .map_err(|error| LoadError::Request(format!("`{path_and_query}`: {error}")))?;
        let content_type = content_type
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|error| LoadError::Request(format!("content type: {error}")))?;
        Ok(Push {
            method,
            path_and_query,
            content_type,
            body,
            meta: None,
        })
    }

    /// Builds a POST.
    pub fn post(
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Push, LoadError> {
        Push::new(Method::POST, path_and_query, content_type, body)
    }
}

/// One push at its place in the schedule.
#[derive(Debug, Clone)]
pub struct ScheduledPush {
    /// When to start sending it, from the start of the run ([`Pace::Scheduled`]).
    pub at: Duration,
    /// The request (shared by its duplicates).
    pub push: Arc<Push>,
    /// 0 for the first sending, 1.. for vendor retries of the same bytes.
    pub copy: u32,
}

/// The pushes of a run, in nondecreasing `at` order (generated lazily by the simulator).
pub struct Plan {
    pushes: Box<dyn Iterator<Item = ScheduledPush> + Send>,
    len_hint: Option<u64>,
}

impl Plan {
    /// Wraps an iterator; `len_hint` sizes the progress line.
    pub fn new(
        pushes: impl Iterator<Item = ScheduledPush> + Send + 'static,
        len_hint: Option<u64>,
    ) -> Plan {
        Plan {
            pushes: Box::new(pushes),
            len_hint,
        }
    }

    /// The same push `count` times, all due at once (for [`Pace::Unthrottled`] runs).
    pub fn repeat(push: Arc<Push>, count: u64) -> Plan {
        let pushes = (0..count).map(move |_| ScheduledPush {
            at: Duration::ZERO,
            push: Arc::clone(&push),
            copy: 0,
        });
        Plan::new(pushes, Some(count))
    }
}

/// How pushes are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At their `at` offsets (open loop).
    Scheduled,
    /// As fast as the connections take them (closed loop).
    Unthrottled,
}

/// How to run the load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to send.
    pub target: Target,
    /// Concurrent connections (workers).
    pub connections: NonZeroUsize,
    /// Reuse connections (else one per push, with `Connection: close`).
    pub keep_alive: bool,
    /// How pushes are released.
    pub pace: Pace,
    /// Longest time one push may take (connect + request + response).
    pub request_timeout: Duration,
    /// Show a live progress line on stderr (only meant for a terminal).
    pub progress: bool,
}

impl LoadOptions {
    /// Keep-alive, unthrottled, 10 s timeout, no progress line.
    pub fn new(target: Target, connections: usize) -> LoadOptions {
        LoadOptions {
            target,
            connections: NonZeroUsize::new(connections).unwrap_or(NonZeroUsize::MIN),
            keep_alive: true,
            pace: Pace::Unthrottled,
            request_timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

/// Told about the outcome of every sending (the ledger is one). Called from the worker that
/// sent the push: implementations must not block.
pub trait PushObserver: Send + Sync {
    /// The push was acknowledged (`200`, body `200`).
    fn acknowledged(&self, push: &ScheduledPush, sent_at: DateTime<Utc>, acked_at: DateTime<Utc>);

    /// The push was sent (or tried) and not acknowledged; `class` as in [`Report::failures`].
    fn failed(
        &self,
        _push: &ScheduledPush,
        _sent_at: DateTime<Utc>,
        _failed_at: DateTime<Utc>,
        _class: &str,
    ) {
    }
}

/// An observer that ignores everything.
pub struct NoObserver;

impl PushObserver for NoObserver {
    fn acknowledged(&self, _: &ScheduledPush, _: DateTime<Utc>, _: DateTime<Utc>) {}
}

/// Sends the plan and returns what was measured. Never fails: every push ends up counted as
/// acknowledged or failed by class.
pub async fn run_load(
    plan: Plan,
    options: &LoadOptions,
    observer: Arc<dyn PushObserver>,
) -> Report {
    let workers = options.connections.get();
    let (sender, receiver) = mpsc::channel::<ScheduledPush>(workers * 2);
    let receiver = Arc::new(Mutex::new(receiver));
    let live = Arc::new(LiveCounters::default());
    let progress = Progress::start(options.progress, plan.len_hint, Arc::clone(&live));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let worker = Worker {
            connection: Connection::new(
                options.target.clone(),
                options.keep_alive,
                options.request_timeout,
            ),
            receiver: Arc::clone(&receiver),
            observer: Arc::clone(&observer),
            live: Arc::clone(&live),
            recorder: Recorder::new(),
            started,
            scheduled: options.pace == Pace::Scheduled,
        };
        handles.push(tokio::spawn(worker.run()));
    }
    dispatch(plan, options.pace, started, sender).await;
    let mut recorders = Vec::with_capacity(workers);
    for handle in handles {
        match handle.await {
            Ok(recorder) => recorders.push(recorder),
            Err(error) => tracing::error!(error = %error, "a load worker panicked"),
        }
    }
    progress.finish();
    Recorder::into_report(recorders, started.elapsed())
}

/// Releases the plan's pushes to the workers, each at its time when scheduled.
async fn dispatch(plan: Plan, pace: Pace, started: Instant, sender: mpsc::Sender<ScheduledPush>) {
    for scheduled in plan.pushes {
        if pace == Pace::Scheduled {
            tokio::time::sleep_until((started + scheduled.at).into()).await;
        }
        if sender.send(scheduled).await.is_err() {
            return;
        }
    }
}

/// One connection's loop.
struct Worker {
    connection: Connection,
    receiver: Arc<Mutex<mpsc::Receiver<ScheduledPush>>>,
    observer: Arc<dyn PushObserver>,
    live: Arc<LiveCounters>,
    recorder: Recorder,
    started: Instant,
    scheduled: bool,
}

impl Worker {
    async fn run(mut self) -> Recorder {
        loop {
            let next = self.receiver.lock().await.recv().await;
            let Some(scheduled) = next else {
                return self.recorder;
            };
            let began = Instant::now();
            if self.scheduled {
                let due = self.started + scheduled.at;
                self.recorder
                    .schedule_lag(began.saturating_duration_since(due));
            }
            let sent_at = Utc::now();
            let (outcome, opened) = self.connection.send(&scheduled.push).await;
            let latency = began.elapsed();
            for _ in 0..opened {
                self.recorder.connection_opened();
            }
            match outcome {
                Outcome::Acknowledged => {
                    self.recorder.acknowledged(latency);
                    self.live.acknowledged();
                    self.observer.acknowledged(&scheduled, sent_at, Utc::now());
                }
                failed => {
                    let class = failed.class();
                    self.observer
                        .failed(&scheduled, sent_at, Utc::now(), &class);
                    self.recorder.failed(class);
                    self.live.failed();
                }
            }
        }
    }
}
