//! End-to-end latency: push acknowledged → its row in the `events` table.
//!
//! How the measurement stays honest: the load generator records, per request number, when the
//! request was sent and when its `200` arrived ([`AckTracker`]); a poller thread in the same
//! process (same clock) reads the new rows of `events` every `interval` (by `seq`, the
//! insertion order) and maps each row back to its request through the `call_id` column, which
//! holds the push's unique `callUniqueId` ([`crate::body::PushTemplate::sequence_of_call_id`]).
//! The latency of a push is `seen - acked`: a row can only be seen after its commit, so the
//! figure overstates the true latency by at most one poll interval plus one query. A row seen
//! before its ack arrived (the sink was faster than the response) counts as 0 and is counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::body::PushTemplate;
use crate::stats::{new_histogram, record, LatencySummary};

/// Per request number: when it was sent, acknowledged and seen in the database.
pub struct AckTracker {
    epoch: Instant,
    sent_ns: Vec<AtomicU64>,
    acked_ns: Vec<AtomicU64>,
    seen_ns: Vec<AtomicU64>,
}

impl AckTracker {
    /// Tracks request numbers `0..capacity`.
    pub fn new(capacity: u64) -> Self {
        let slots = || (0..capacity).map(|_| AtomicU64::new(0)).collect();
        AckTracker {
            epoch: Instant::now(),
            sent_ns: slots(),
            acked_ns: slots(),
            seen_ns: slots(),
        }
    }

    /// Stores "nanoseconds since epoch + 1" (0 means unset).
    fn stamp(&self, slots: &[AtomicU64], sequence: u64, at: Instant) {
        if let Some(slot) = slots.get(sequence as usize) {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            slot.store(
                u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1,
                Ordering::Relaxed,
            );
        }
    }

    /// Records that request `sequence` was sent at `at`.
    pub fn sent(&self, sequence: u64, at: Instant) {
        self.stamp(&self.sent_ns, sequence, at);
    }

    /// Records that request `sequence` was answered `200` at `at`.
    pub fn acked(&self, sequence: u64, at: Instant) {
        self.stamp(&self.acked_ns, sequence, at);
    }

    fn seen(&self, sequence: u64, at: Instant) {
        if let Some(slot) = self.seen_ns.get(sequence as usize) {
            if slot.load(Ordering::Relaxed) == 0 {
                self.stamp(&self.seen_ns, sequence, at);
            }
        }
    }

    fn acked_not_seen(&self) -> u64 {
        self.acked_ns
            .iter()
            .zip(&self.seen_ns)
            .filter(|(acked, seen)| {
                acked.load(Ordering::Relaxed) != 0 && seen.load(Ordering::Relaxed) == 0
            })
            .count() as u64
    }
}

/// What the end-to-end measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// Pushes acknowledged (sent after the warm-up).
    pub pushes_acked: u64,
    /// Of those, pushes whose row was seen.
    pub rows_seen: u64,
    /// Acknowledged pushes whose row never appeared within the grace period.
    pub rows_missing: u64,
    /// Rows seen before the push's `200` arrived (latency counted as 0).
    pub rows_seen_before_ack: u64,
    /// Poll period of the `events` table, in microseconds (the measurement's resolution).
    pub poll_interval_us: u64,
    /// Ack → row.
    pub ack_to_row: LatencySummary,
    /// Request sent → row.
    pub send_to_row: LatencySummary,
}

/// The poller thread's handle.
pub struct Poller {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<anyhow::Result<()>>,
    interval: Duration,
}

impl Poller {
    /// Starts polling `db_path` (waiting for it to exist) every `interval`.
    pub fn start(
        db_path: PathBuf,
        interval: Duration,
        tracker: Arc<AckTracker>,
        template: Arc<PushTemplate>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = Arc::clone(&stop);
            // rusqlite blocks: a plain thread, outside the load generator's runtime.
            std::thread::spawn(move || poll(&db_path, interval, &tracker, &template, &stop))
        };
        Poller {
            stop,
            handle,
            interval,
        }
    }

    /// Waits until every acknowledged push was seen or `grace` passed, stops the poller and
    /// computes the report over the pushes sent at or after `measure_from`.
    pub fn finish(
        self,
        tracker: &AckTracker,
        grace: Duration,
        measure_from: Instant,
    ) -> anyhow::Result<E2eReport> {
        let deadline = Instant::now() + grace;
        while tracker.acked_not_seen() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Release);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the poller panicked"))??;
        Ok(summarize(tracker, measure_from, self.interval))
    }
}

fn poll(
    db_path: &std::path::Path,
    interval: Duration,
    tracker: &AckTracker,
    template: &PushTemplate,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let connection = loop {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Ok(connection) = open_events(db_path) {
            break connection;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut statement =
        connection.prepare("SELECT seq, call_id FROM events WHERE seq > ?1 ORDER BY seq")?;
    let mut last_seq: i64 = 0;
    while !stop.load(Ordering::Acquire) {
        let mut rows = statement.query([last_seq])?;
        let mut found = Vec::new();
        while let Some(row) = rows.next()? {
            last_seq = row.get(0)?;
            found.push(row.get::<_, Option<String>>(1)?);
        }
        let now = Instant::now();
        for call_id in found.iter().flatten() {
            if let Some(sequence) = template.sequence_of_call_id(call_id) {
                tracker.seen(sequence, now);
            }
        }
        std::thread::sleep(interval);
    }
    Ok(())
}

fn open_events(db_path: &std::path::Path) -> anyhow::Result<Connection> {
    let connection = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::from_secs(1))?;
    connection.query_row("SELECT count(*) FROM events WHERE seq < 0", [], |row| {
        row.get::<_, i64>(0)
    })?;
    Ok(connection)
}

fn summarize(tracker: &AckTracker, measure_from: Instant, interval: Duration) -> E2eReport {
    let from_ns = u64::try_from(
        measure_from
            .saturating_duration_since(tracker.epoch)
            .as_nanos(),
    )
    .unwrap_or(u64::MAX);
    let mut ack_to_row = new_histogram();
    let mut send_to_row = new_histogram();
    let (mut acked, mut seen, mut missing, mut early) = (0, 0, 0, 0);
    for index in 0..tracker.sent_ns.len() {
        let sent = tracker.sent_ns[index].load(Ordering::Relaxed);
        let ack = tracker.acked_ns[index].load(Ordering::Relaxed);
        let row = tracker.seen_ns[index].load(Ordering::Relaxed);
        if sent == 0 || sent - 1 < from_ns || ack == 0 {
            continue;
        }
        acked += 1;
        if row == 0 {
            missing += 1;
            continue;
        }
        seen += 1;
        if row < ack {
            early += 1;
        }
        record(&mut ack_to_row, row.saturating_sub(ack) / 1000);
        record(&mut send_to_row, row.saturating_sub(sent) / 1000);
    }
    E2eReport {
        pushes_acked: acked,
        rows_seen: seen,
        rows_missing: missing,
        rows_seen_before_ack: early,
        poll_interval_us: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
        ack_to_row: LatencySummary::of(&ack_to_row),
        send_to_row: LatencySummary::of(&send_to_row),
    }
}
