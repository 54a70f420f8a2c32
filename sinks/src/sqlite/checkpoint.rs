//! Checkpoints of the sink's WAL on a thread of their own, off the committing thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`: the
//! committing thread (the normalizer's writer, the slower of its two threads) then reads the
//! WAL's frames back, writes them into the database file and syncs both. A profile of a
//! 150,000-push drain put a sixth of the writer's time there. Instead:
//!
//! - a WAL hook on the sink's connection (it replaces SQLite's automatic checkpoint) asks this
//!   thread for a checkpoint once a commit leaves [`CHECKPOINT_AT_BYTES`] of frames in the WAL;
//! - the thread runs a `PASSIVE` checkpoint on a connection of its own, beside the writer (a
//!   passive checkpoint never blocks a writer or a reader), at most every
//!   [`MIN_INTERVAL`]: it copies the frames there were when it began, the bulk of the work;
//! - the next commit's hook copies the frames committed meanwhile (few), which completes the
//!   checkpoint, so the commit after starts the WAL over (beside a busy writer a passive
//!   checkpoint alone never catches up, and the WAL would only grow);
//! - if the WAL still reaches four times that (the thread cannot keep up, or it failed), the
//!   committing thread checkpoints itself, as SQLite would have.
//!
//! What a checkpoint guarantees does not change: the WAL is synced before frames are copied and
//! the database after, so the copy is as durable as the commits were.

use std::path::Path;
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

#[derive(Debug, Default)]
struct State {
    requested: bool,
    /// The thread finished a checkpoint that no commit has followed up yet.
    finished: bool,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a checkpoint; returns true when the thread has finished one since the last
    /// call (the caller then finishes the job: see [`Checkpointer`]).
    fn request(&self) -> bool {
        let mut state = self.lock();
        if std::mem::take(&mut state.finished) {
            return true;
        }
        if !state.requested {
            state.requested = true;
            self.wake.notify_one();
        }
        false
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
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&own, &for_thread))
            .map_err(|source| SqliteSinkError::CheckpointThread {
                path: path.to_owned(),
                source,
            })?;
        let for_hook = Arc::clone(&shared);
        connection.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if pages >= inline_pages {
                // The thread is behind: checkpoint here, as SQLite's automatic checkpoint
                // would. An error (busy: the thread is checkpointing) is not the commit's.
                if let Err(error) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                    tracing::debug!(error = %error, "inline sqlite checkpoint skipped");
                }
            } else if pages >= at_pages && for_hook.request() {
                // The thread copied the frames that were there when it began; the commits
                // since are few. Copying them here completes the checkpoint, so the next
                // commit starts the WAL over instead of growing it (a passive checkpoint
                // beside a busy writer never catches up on its own).
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
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: a passive checkpoint per request, until stopped.
fn run(connection: &Connection, shared: &Shared) {
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
        if let Err(error) = connection.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            tracing::warn!(error = %error, "sqlite sink checkpoint failed; the next commits retry it");
        }
        shared.lock().finished = true;
        let state = shared.lock();
        let _ = shared
            .wake
            .wait_timeout_while(state, MIN_INTERVAL, |state| !state.stop);
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
}
