//! The load engine behind `loadgen`: N HTTP/1.1 connections on tokio + hyper's client
//! connection API, keep-alive or one connection per request, a fixed body per request with
//! unique ids, for a fixed duration or request count, closed-loop or at a target rate.
//!
//! Latency is measured per request until the whole response body is read, from just before
//! the request is written (for a new connection per request: before `connect`, since a vendor
//! opening a connection per push waits for that too). At a target rate, request `n` is due at
//! `start + n / rate`; when no connection was free by then (the worker took the request after
//! its due time), the request is late, counted in `late_sends`, and measured from its due
//! time, so the wait for a connection is part of its latency (no coordinated omission). A
//! worker that was free early and only woke a little late (tokio's timer has millisecond
//! resolution) is measured from the send. Requests started during the warm-up are sent but
//! not measured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::body::PushTemplate;
use crate::e2e::AckTracker;
use crate::stats::{new_histogram, record, LatencySummary};

/// Requests taken by a worker later than this past their due time count as late.
const LATE_AFTER: Duration = Duration::from_millis(2);

/// What to send and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The server.
    pub addr: SocketAddr,
    /// The request path, e.g. `/hooks/7moor`.
    pub path: String,
    /// Concurrent connections (workers).
    pub connections: usize,
    /// Reuse each connection (`true`) or open one per request with `Connection: close`.
    pub keep_alive: bool,
    /// Stop sending after this long (warm-up included).
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub count: Option<u64>,
    /// Requests started before this are sent but not measured.
    pub warmup: Duration,
    /// Requests per second over all connections; `None` sends as fast as responses return.
    pub rate_per_second: Option<f64>,
    /// The body template.
    pub template: Arc<PushTemplate>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `keep-alive` or `new-connection`.
    pub mode: &'static str,
    /// Connections used.
    pub connections: usize,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// The target rate, if any.
    pub rate_target_per_second: Option<f64>,
    /// Length of the measured window (after warm-up), in seconds.
    pub measured_seconds: f64,
    /// Requests answered `200` in the measured window.
    pub requests_ok: u64,
    /// Requests answered with another status or failed, in the measured window.
    pub requests_failed: u64,
    /// Non-200 statuses by code, whole run.
    pub statuses: BTreeMap<u16, u64>,
    /// Connect failures, whole run.
    pub connect_errors: u64,
    /// Requests that failed on the wire (reset, closed), whole run.
    pub request_errors: u64,
    /// Requests sent more than 2 ms after their due time (rate mode).
    pub late_sends: u64,
    /// `requests_ok / measured_seconds`.
    pub throughput_per_second: f64,
    /// Latency of the `200` answers in the measured window.
    pub latency: LatencySummary,
}

struct Shared {
    options: LoadOptions,
    next: AtomicU64,
    start: Instant,
    measure_from: Instant,
    deadline: Option<Instant>,
    tracker: Option<Arc<AckTracker>>,
}

impl Shared {
    /// Claims the next request number, or `None` when the run is over.
    fn claim(&self) -> Option<u64> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return None;
        }
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        if self.options.count.is_some_and(|count| sequence >= count) {
            return None;
        }
        Some(sequence)
    }

    fn due_at(&self, sequence: u64) -> Option<Instant> {
        let rate = self.options.rate_per_second?;
        Some(self.start + Duration::from_secs_f64(sequence as f64 / rate))
    }
}

struct WorkerStats {
    latency: Histogram<u64>,
    ok: u64,
    failed: u64,
    statuses: BTreeMap<u16, u64>,
    connect_errors: u64,
    request_errors: u64,
    late_sends: u64,
    last_finish: Option<Instant>,
}

/// Runs the load and returns what it measured.
pub async fn run(options: LoadOptions, tracker: Option<Arc<AckTracker>>) -> LoadReport {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        measure_from: start + options.warmup,
        deadline: options.duration.map(|duration| start + duration),
        next: AtomicU64::new(0),
        start,
        tracker,
        options: options.clone(),
    });
    let workers: Vec<_> = (0..options.connections)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    let mut total = WorkerStats::new();
    for worker in workers {
        if let Ok(stats) = worker.await {
            total.merge(stats);
        }
    }
    let end = total.last_finish.unwrap_or_else(Instant::now);
    let measured_seconds = end
        .saturating_duration_since(shared.measure_from)
        .as_secs_f64();
    LoadReport {
        mode: if options.keep_alive {
            "keep-alive"
        } else {
            "new-connection"
        },
        connections: options.connections,
        body_bytes: options.template.len(),
        rate_target_per_second: options.rate_per_second,
        measured_seconds,
        requests_ok: total.ok,
        requests_failed: total.failed,
        statuses: total.statuses,
        connect_errors: total.connect_errors,
        request_errors: total.request_errors,
        late_sends: total.late_sends,
        throughput_per_second: if measured_seconds > 0.0 {
            total.ok as f64 / measured_seconds
        } else {
            0.0
        },
        latency: LatencySummary::of(&total.latency),
    }
}

async fn worker(shared: Arc<Shared>) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    while let Some(sequence) = shared.claim() {
        let claimed = Instant::now();
        let due = shared.due_at(sequence);
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        // Late only when every connection was still busy at the due time.
        let backlog_since = due.filter(|due| claimed > *due + LATE_AFTER);
        if backlog_since.is_some() {
            stats.late_sends += 1;
        }
        let started = backlog_since.unwrap_or(sent);
        if sender.is_none() {
            match connect(shared.options.addr).await {
                Ok(connected) => sender = Some(connected),
                Err(_) => {
                    stats.connect_errors += 1;
                    stats.count_failure(started >= shared.measure_from);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let Some(connection) = sender.as_mut() else {
            continue;
        };
        if let Some(tracker) = &shared.tracker {
            tracker.sent(sequence, sent);
        }
        let outcome = send_one(connection, &shared, sequence).await;
        let finished = Instant::now();
        let measured = started >= shared.measure_from;
        match outcome {
            Ok(200) => {
                if let Some(tracker) = &shared.tracker {
                    tracker.acked(sequence, finished);
                }
                if measured {
                    stats.ok += 1;
                    let micros = finished.duration_since(started).as_micros();
                    record(
                        &mut stats.latency,
                        u64::try_from(micros).unwrap_or(u64::MAX),
                    );
                    stats.last_finish = Some(finished);
                }
            }
            Ok(status) => {
                *stats.statuses.entry(status).or_default() += 1;
                stats.count_failure(measured);
            }
            Err(()) => {
                stats.request_errors += 1;
                stats.count_failure(measured);
                sender = None;
            }
        }
        if !shared.options.keep_alive {
            sender = None;
        }
    }
    stats
}

async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends request `sequence` and reads the whole response; returns its status.
async fn send_one(
    sender: &mut SendRequest<Full<Bytes>>,
    shared: &Shared,
    sequence: u64,
) -> Result<u16, ()> {
    let options = &shared.options;
    let mut request = Request::post(options.path.as_str())
        .header(HOST, options.addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, "callhook-loadgen");
    if !options.keep_alive {
        request = request.header(CONNECTION, "close");
    }
    let request = request
        .body(Full::new(options.template.body(sequence)))
        .map_err(|_| ())?;
    sender.ready().await.map_err(|_| ())?;
    let response = sender.send_request(request).await.map_err(|_| ())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|_| ())?;
    Ok(status)
}

impl WorkerStats {
    fn new() -> Self {
        WorkerStats {
            latency: new_histogram(),
            ok: 0,
            failed: 0,
            statuses: BTreeMap::new(),
            connect_errors: 0,
            request_errors: 0,
            late_sends: 0,
            last_finish: None,
        }
    }

    fn count_failure(&mut self, measured: bool) {
        if measured {
            self.failed += 1;
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.ok += other.ok;
        self.failed += other.failed;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.connect_errors += other.connect_errors;
        self.request_errors += other.request_errors;
        self.late_sends += other.late_sends;
        self.last_finish = self.last_finish.max(other.last_finish);
    }
}
