//! The embedded SQLite sink: one database file, by default `<data-dir>/callhook.db`.
//!
//! # Guarantee: after any crash, each event is in the sink exactly once
//!
//! [`SqliteSink::commit_batch`] writes a whole [`crate::SinkBatch`] in one `IMMEDIATE`
//! transaction: the pushes' dedupe keys, their events, the `calls` and `agents` rows they
//! change, the dead letters, and the consumer's next offsets. Either the whole batch, offsets
//! included, survives a crash, or none of it does, and the consumer, which seeks to
//! [`SqliteSink::stored_offsets`] on start and on partition assignment, re-reads exactly the
//! records whose effects were lost.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit survives a crash of the
//! process as soon as it returns; against a power loss the WAL is synced at checkpoints and by
//! [`SqliteSink::sync_to_disk`], which the normalizer calls before it lets the raw log release
//! anything (the raw log's own consumed offset drives its retention). A power loss can thus
//! only take back whole batches, offsets included, whose records the raw log still holds: they
//! are mapped again, exactly once. Not syncing every commit is what lets small batches under a
//! light load cost no fsync each. The checkpoints run on a thread of their own beside the
//! committing one (`checkpoint.rs`); a WAL that still reaches four times its bound (320 MiB)
//! is checkpointed by the commit itself.
//!
//! Re-delivery is harmless: event ids are deterministic (source, dedupe key, ordinal) and
//! `(source_name, subject, id)` is unique (`events_key`; the subject comes from the same push),
//! so a push whose first event is already stored is skipped (and counted) inside the
//! transaction, and an event is never written twice. A consumer offset only moves forward: a batch carrying an offset
//! below the stored one leaves the stored one in place.
//!
//! The `calls` and `agents` projections are order-independent by construction: a `calls` row is
//! a fold of its call's events whose result does not depend on their order, kept up to date
//! event by event ([`crate::calls_fold`], and `calls.rs` for the in-memory folds of recent calls), and
//! an `agents` row is only replaced by an event with a greater `(time, id)`. Vendors reorder and retry; the rows end up
//! the same whatever the arrival order. The `conversations` view (schema version 6) is computed
//! from the `calls` rows when it is read, so it inherits that.
//!
//! Each new call event gets its `sequence` in the same transaction ([`crate::sequence`]: the
//! call's stored maximum plus one; a re-sent event gets none), so it is exactly once too.
//!
//! # Threading
//!
//! A [`SqliteSink`] owns one connection and every method blocks on disk I/O (a commit waits for
//! fsync). It lives on one dedicated thread, the normalizer's consume loop, or is driven
//! through `spawn_blocking`; it is never called from an async task directly. Other processes
//! and connections may read the file concurrently (WAL readers do not block the writer).
//!
//! Modules: [`config`] (the serde config and its validation), [`schema`] (tables, pragmas and
//! `user_version` migrations), [`sink`] (the sink), [`crate::calls_fold`] (the `calls` row rules, shared with the
//! PostgreSQL sink), [`crate::agents`] (the `agents` row rules, shared too), [`stale`] (the stale sweep's read), [`error`]. Longer reasoning: `design.md` beside this file.

mod calls;
mod checkpoint;
mod codec;
pub mod config;
pub mod dead_letters;
pub mod error;
pub mod replay;
pub mod schema;
pub mod sink;
pub mod stale;
mod writes;

// The pure projection rules are shared with the PostgreSQL sink; these paths stay for callers
// that name them through this module.
pub use crate::agents;
pub use crate::calls_fold;

pub use config::{SqliteSinkConfig, SqliteSinkSettings, DEFAULT_DATABASE_FILE};
pub use error::{Result, SqliteSinkError};
pub use sink::SqliteSink;
