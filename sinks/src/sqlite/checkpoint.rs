//! Checkpoints of the sink's WAL on a thread of their own, off the committing thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`: the
//! committing thread (the normalizer's writer, the slower of its two threads) then reads the
//! WAL's frames back, writes them into the database file and syncs both. A profile of a
//! 150,000-push drain put a sixth of the writer's time there. Instead:
//!
//! - a WAL hook on the sink's connection (it replaces SQLite's automatic checkpoint) asks this
//!   thread for a checkpoint once a commit leaves [`CHECKPOINT_AT_BYTES`] of frames in the WAL;
//! - the thread runs `PASSIVE` checkpoints on a connection of its own, beside the writer (a
//!   passive checkpoint never blocks a writer or a reader), at most one series every
//!   [`MIN_INTERVAL`]: the first copies the frames there were when it began, the bulk of the
//!   work, and each next one the frames committed meanwhile, fewer each time;
//! - once few are left, the thread syncs both files, then pauses the committing thread before
//!   its next batch ([`Checkpointer::pause_point`]) for a last round that copies the rest and
//!   syncs: the checkpoint is complete, so the next commit starts the WAL over (beside a busy
//!   writer a passive checkpoint alone never catches up, and the WAL would only grow);
//! - if that fails (a reader holds an older snapshot), the next commit past the bound copies
//!   what is left itself;
//! - if the WAL still reaches four times the bound (the thread cannot keep up, or it failed),
//!   the committing thread checkpoints itself, as SQLite would have.
//!
//! What a checkpoint guarantees does not change: the WAL is synced before frames are copied and
//! the database after, so the copy is as durable as the commits were.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use super::error::SqliteSinkError;

/// WAL bytes after which a checkpoint is asked for (20,000 pages of 4 KiB, the bound the
/// automatic checkpoint had).
pub(crate) const CHECKPOINT_AT_BYTES: i64 = 80 * 1024 * 1024;

/// The committing thread checkpoints itself past this many times [`CHECKPOINT_AT_BYTES`].
const INLINE_FACTOR: i64 = 4;

/// The least time between two checkpoints of the thread (a checkpoint that readers keep from
/// finishing is asked for again at every commit).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The most passive checkpoints the thread runs for one request before it pauses the
/// committing thread for the last one (see [`checkpoint_whole`]).
const UNPAUSED_ROUNDS: usize = 4;

/// The thread pauses the committing thread once a round found at most this many new frames
/// (8 MiB of 4 KiB pages; a batch of a 1,000,000-push drain commits about a thousand).
const PAUSE_AT_FRAMES: i32 = 2048;

/// How long the thread waits for the committing thread to pause at its next batch; an idle
/// writer commits nothing, so past this the last round runs anyway.
const PAUSE_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct State {
    requested: bool,
    /// The thread left frames in the WAL that the database file lacks: the next commit past
    /// the bound copies them.
    left_over: bool,
    /// The thread asks the committing thread to pause before its next batch.
    pause_wanted: bool,
    /// The committing thread is paused (it waits until `pause_wanted` is cleared).
    writer_paused: bool,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Every wait on `state` waits on this one condition variable, so every change wakes all.
    wake: Condvar,
    /// `State::pause_wanted`, read without the lock at every batch.
    pause_wanted: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a checkpoint; returns true when the thread has left one unfinished since the
    /// last call (the caller then finishes the job: see [`Checkpointer`]).
    fn request(&self) -> bool {
        let mut state = self.lock();
        if std::mem::take(&mut state.left_over) {
            return true;
        }
        if !state.requested {
            state.requested = true;
            self.wake.notify_all();
        }
        false
    }

    /// Asks the committing thread to pause and waits until it does, at most [`PAUSE_WAIT`];
    /// it goes on when the returned guard is dropped.
    fn pause_writer(&self) -> Paused<'_> {
        let mut state = self.lock();
        state.pause_wanted = true;
        self.pause_wanted.store(true, Ordering::Release);
        let _ = self
            .wake
            .wait_timeout_while(state, PAUSE_WAIT, |state| {
                !state.writer_paused && !state.stop
            })
            .unwrap_or_else(PoisonError::into_inner);
        Paused(self)
    }
}

/// The committing thread's pause; dropping it (a panic included) lets the thread go on.
struct Paused<'a>(&'a Shared);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.pause_wanted = false;
        self.0.pause_wanted.store(false, Ordering::Release);
        self.0.wake.notify_all();
    }
}

/// The checkpoint thread of one sink connection; stopped and joined when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens the thread's connection to `path`, starts it, and hooks `connection` (the sink's)
    /// to it.
    pub(crate) fn start(
        path: &Path,
        connection: &mut Connection,
        busy_timeout: Duration,
    ) -> super::error::Result<Checkpointer> {
        Self::start_at(path, connection, busy_timeout, CHECKPOINT_AT_BYTES)
    }

    /// [`Checkpointer::start`] asking for a checkpoint at `at_bytes` of WAL.
    fn start_at(
        path: &Path,
        connection: &mut Connection,
        busy_timeout: Duration,
        at_bytes: i64,
    ) -> super::error::Result<Checkpointer> {
        let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let at_pages = i32::try_from((at_bytes / page_size.max(512)).max(1)).unwrap_or(i32::MAX);
        let inline_pages = at_pages.saturating_mul(INLINE_FACTOR as i32);
        let own = Connection::open(path)?;
        own.busy_timeout(busy_timeout)?;
        // A checkpoint on a connection that has not read the file yet does nothing (-1, -1):
        // the connection learns the file is in WAL mode from its first read.
        let _: String = own.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        let thread_error = |source| SqliteSinkError::CheckpointThread {
            path: path.to_owned(),
            source,
        };
        // Synced by the thread between its rounds (an fsync needs no write access).
        let files = Files::open(path).map_err(thread_error)?;
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&own, &files, &for_thread))
            .map_err(thread_error)?;
        let for_hook = Arc::clone(&shared);
        connection.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if pages >= inline_pages {
                // The thread is behind: checkpoint here, as SQLite's automatic checkpoint
                // would. An error (busy: the thread is checkpointing) is not the commit's.
                if let Err(error) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                    tracing::debug!(error = %error, "inline sqlite checkpoint skipped");
                }
            } else if pages >= at_pages && for_hook.request() {
                // The thread copied most frames but could not finish (see
                // `checkpoint_whole`). Copying the rest here completes the checkpoint, so the
                // next commit starts the WAL over instead of growing it.
                if let Err(error) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                    tracing::debug!(error = %error, "sqlite checkpoint follow-up skipped");
                }
            }
            Ok(())
        }))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// Called by the committing thread before each batch: pauses while the thread runs the
    /// last round of a checkpoint, so that round copies the whole WAL and the next commit
    /// starts it over.
    pub(crate) fn pause_point(&self) {
        if !self.shared.pause_wanted.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.shared.lock();
        if !state.pause_wanted {
            return;
        }
        state.writer_paused = true;
        self.shared.wake.notify_all();
        while state.pause_wanted && !state.stop {
            state = self
                .shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.writer_paused = false;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: per request, passive checkpoints until one copies the whole WAL, until stopped.
fn run(connection: &Connection, files: &Files, shared: &Shared) {
    loop {
        {
            let mut state = shared.lock();
            while !state.requested && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.requested = false;
        }
        let whole = checkpoint_whole(connection, files, shared);
        {
            let mut state = shared.lock();
            if whole {
                // The commits during the checkpoint asked for it again; the WAL they asked
                // about is copied.
                state.requested = false;
            } else {
                state.left_over = true;
            }
        }
        let state = shared.lock();
        let _ = shared
            .wake
            .wait_timeout_while(state, MIN_INTERVAL, |state| !state.stop);
    }
}

/// Copies the whole WAL into the database file, so that the next commit starts the WAL over;
/// returns false when frames the database file lacks are left (the committing thread then
/// finishes the job).
///
/// A passive checkpoint copies the frames there were when it began, and syncs the database
/// file only when no commit came meanwhile: beside a busy writer it never finishes. So:
/// - passive rounds beside the writer, at most [`UNPAUSED_ROUNDS`]: the first copies the
///   bulk, each next one the frames committed during the one before, until a round finds at
///   most [`PAUSE_AT_FRAMES`] new ones (or none: the writer is idle, and the round before
///   finished the job);
/// - both files are synced, so what is copied and committed so far reaches the device while
///   the writer goes on;
/// - the writer is paused before its next batch for a last round, which copies the few
///   frames left and syncs both files, and a check that no frame came since.
///
/// Before, the committing thread finished each checkpoint itself, with the syncs behind the
/// thread's copy: a 1,000,000-push drain spent 8.1 s of its 35 s in `fsync` on the writer,
/// against 0.6-0.8 s with this.
fn checkpoint_whole(connection: &Connection, files: &Files, shared: &Shared) -> bool {
    let mut before = None;
    for _ in 0..UNPAUSED_ROUNDS {
        let Some(log) = checkpoint_round(connection) else {
            return false;
        };
        if before == Some(log) {
            return true;
        }
        let fresh = log - before.unwrap_or(0);
        before = Some(log);
        if fresh <= PAUSE_AT_FRAMES {
            break;
        }
    }
    files.sync();
    let _paused = shared.pause_writer();
    let last = checkpoint_round(connection);
    last.is_some() && checkpoint_round(connection) == last
}

/// The database file and its WAL, synced by the thread before it pauses the committing
/// thread, so that the syncs of the paused round have little left to write (an fsync needs
/// no write access).
struct Files {
    database: File,
    wal: PathBuf,
}

impl Files {
    fn open(path: &Path) -> std::io::Result<Files> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Files {
            database: File::open(path)?,
            wal: PathBuf::from(wal),
        })
    }

    /// Syncs both; a failure is only logged, as the checkpoint syncs them again.
    fn sync(&self) {
        // SQLite deletes the WAL when its last connection closes, so it is opened afresh.
        let wal = File::open(&self.wal).and_then(|wal| wal.sync_data());
        if let Err(error) = wal.and_then(|()| self.database.sync_data()) {
            tracing::debug!(error = %error, "sqlite sink sync before a checkpoint failed");
        }
    }
}

/// One passive checkpoint: it copies the frames the WAL held when it began, and syncs the
/// database file when no commit came meanwhile. Returns how many frames the WAL held, `None`
/// on error or when it could not copy them all (a reader holds an older snapshot).
///
/// So when two rounds in a row return the same count, nothing was committed since the first
/// began, which then copied and synced the whole WAL.
fn checkpoint_round(connection: &Connection) -> Option<i32> {
    match connection.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        Ok((log, copied)) => (copied >= log).then_some(log),
        Err(error) => {
            tracing::warn!(error = %error, "sqlite sink checkpoint failed; the next commits retry it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |meta| meta.len())
    }

    /// A WAL-mode file with a table `t (v BLOB)` and a checkpointer asking at `at_bytes`.
    fn wal_table(
        at_bytes: i64,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        Connection,
        Checkpointer,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sink.db");
        let mut connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v BLOB);")
            .unwrap();
        let checkpointer =
            Checkpointer::start_at(&path, &mut connection, Duration::from_secs(5), at_bytes)
                .unwrap();
        (dir, path, connection, checkpointer)
    }

    #[test]
    fn test_the_thread_copies_the_wal_into_the_file_once_the_wal_passes_its_bound() {
        let (_dir, path, connection, checkpointer) = wal_table(256 * 1024);
        let before = file_len(&path);
        // 768 KiB in 12 commits: past the 256 KiB bound, short of the 1 MiB at which the
        // committing thread would checkpoint itself (SQLite's own automatic checkpoint is
        // replaced by the hook), so only the thread can move the pages.
        for _ in 0..12 {
            connection
                .execute("INSERT INTO t (v) VALUES (zeroblob(65536))", [])
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while file_len(&path) < before + 512 * 1024 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            file_len(&path) >= before + 512 * 1024,
            "the database file did not grow: {} bytes",
            file_len(&path)
        );
        drop(checkpointer);
        let rows: i64 = connection
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 12);
    }

    #[test]
    fn test_the_committing_thread_checkpoints_when_the_wal_reaches_four_times_the_bound() {
        let (_dir, path, connection, checkpointer) = wal_table(64 * 1024);
        // Stop the thread first: only the inline fallback is left to checkpoint.
        drop(checkpointer);
        let before = file_len(&path);
        for _ in 0..8 {
            connection
                .execute("INSERT INTO t (v) VALUES (zeroblob(65536))", [])
                .unwrap();
        }
        assert!(
            file_len(&path) >= before + 256 * 1024,
            "the commit past 256 KiB of WAL did not checkpoint: {} bytes",
            file_len(&path)
        );
    }

    #[test]
    fn test_the_thread_completes_a_checkpoint_beside_a_busy_writer_by_pausing_it() {
        // A bound the hook never reaches: the test runs the thread's job itself.
        let (_dir, path, connection, checkpointer) = wal_table(1 << 40);
        let stop = AtomicBool::new(false);
        let commits = std::sync::atomic::AtomicU64::new(0);
        let own = Connection::open(&path).unwrap();
        let _: String = own
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        let files = Files::open(&path).unwrap();
        let (stop, pauses, counted) = (&stop, &checkpointer, &commits);
        let (whole, frames_before) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    pauses.pause_point();
                    connection
                        .execute("INSERT INTO t (v) VALUES (zeroblob(8192))", [])
                        .unwrap();
                    counted.fetch_add(1, Ordering::AcqRel);
                }
            });
            while file_len(&path.with_extension("db-wal")) < 1024 * 1024 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let frames_before = own
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    row.get::<_, i64>(1)
                })
                .unwrap();
            let whole = checkpoint_whole(&own, &files, &checkpointer.shared);
            // Two commits more: the first of them starts the WAL over.
            let then = commits.load(Ordering::Acquire);
            while commits.load(Ordering::Acquire) < then + 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Ordering::Release);
            writer.join().unwrap();
            (whole, frames_before)
        });
        assert!(whole, "the checkpoint beside the writer did not complete");
        let frames_after = own
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(1)
            })
            .unwrap();
        assert!(
            frames_after < frames_before,
            "the WAL did not start over: {frames_after} frames after, {frames_before} before"
        );
    }
}
