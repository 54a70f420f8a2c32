//! The database schema, the connection pragmas, and `PRAGMA user_version` migrations.
//!
//! `MIGRATIONS[n]` takes a database from `user_version = n` to `n + 1`. Each runs in its own
//! transaction together with the `user_version` bump, so a crash mid-migration leaves the file
//! at the previous version. Migrations are only ever appended; a file whose version is newer
//! than this build knows is refused rather than written to.

use rusqlite::{Connection, TransactionBehavior};

use super::error::{Result, SqliteSinkError};

/// The migrations, in order; `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: every table of the sink.
const MIGRATION_1: &str = "
-- Every canonical event, once. `seq` is the insertion order (for tailing readers); the other
-- columns are the CloudEvents attributes, `data` is the data JSON as serialized.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    source          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    time            TEXT NOT NULL,
    timesource      TEXT NOT NULL,
    specversion     TEXT NOT NULL,
    datacontenttype TEXT NOT NULL,
    dataschema      TEXT NOT NULL,
    source_name     TEXT NOT NULL,
    call_id         TEXT,
    received_at     TEXT NOT NULL,
    data            TEXT NOT NULL
);
CREATE INDEX events_type_time ON events (type, time);
CREATE INDEX events_subject_time ON events (subject, time);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_call ON events (source_name, call_id);

-- One row per call, recomputed from all of its events (see calls_fold.rs).
CREATE TABLE calls (
    source          TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    vendor          TEXT NOT NULL,
    direction       TEXT NOT NULL,
    caller          TEXT,
    caller_e164     TEXT,
    callee          TEXT,
    callee_e164     TEXT,
    agent_number    TEXT,
    agent_name      TEXT,
    queue           TEXT,
    queue_name      TEXT,
    parent_call_id  TEXT,
    first_event_at  TEXT NOT NULL,
    started_at      TEXT,
    ringing_at      TEXT,
    answered_at     TEXT,
    ended_at        TEXT,
    disposition     TEXT,
    disposition_raw TEXT,
    talk_seconds    INTEGER,
    recording_url   TEXT,
    correlation     TEXT NOT NULL,
    events_count    INTEGER NOT NULL,
    last_event_type TEXT NOT NULL,
    last_event_at   TEXT NOT NULL,
    PRIMARY KEY (source, call_id)
) WITHOUT ROWID;
CREATE INDEX calls_first_event_at ON calls (first_event_at);
CREATE INDEX calls_agent ON calls (source, agent_number, first_event_at);

-- The newest known status per agent (see agents.rs).
CREATE TABLE agents (
    source       TEXT NOT NULL,
    agent_number TEXT NOT NULL,
    status       TEXT NOT NULL,
    raw_code     TEXT,
    raw_label    TEXT,
    agent_name   TEXT,
    status_at    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    PRIMARY KEY (source, agent_number)
) WITHOUT ROWID;

-- Raw records that could not be mapped; `raw_ref` is `<partition>:<offset>`.
CREATE TABLE dead_letters (
    seq         INTEGER PRIMARY KEY,
    raw_ref     TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX dead_letters_source_received_at ON dead_letters (source, received_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason);

-- Where each consumer resumes: the first offset not yet reflected in this database.
CREATE TABLE consumer_offsets (
    consumer    TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) WITHOUT ROWID;

-- The persistent half of the dedupe store: pushes seen within the dedupe window.
CREATE TABLE dedupe_keys (
    source  TEXT NOT NULL,
    key     TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX dedupe_keys_seen_at ON dedupe_keys (seen_at);
";

/// Version 2: one index serves the timelines of calls and agents (and folds a call), instead of
/// two on random keys; `calls.revision` counts the writes of a row, so that a writer holding a
/// call's fold in memory can tell whether someone else changed the row since (see calls.rs).
const MIGRATION_2: &str = "
CREATE INDEX events_subject ON events (source_name, subject, time);
DROP INDEX events_subject_time;
DROP INDEX events_call;
ALTER TABLE calls ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
";

/// Version 3: the mapping version that produced each event (`mappingversion`; NULL for events
/// stored before it existed).
const MIGRATION_3: &str = "
ALTER TABLE events ADD COLUMN mapping_version INTEGER;
";

/// Version 4: a dead letter can be resolved (its record maps now: `callhook dead-letters
/// redrive`, `callhook replay --in-place`); it is kept, with when and how. `sink_meta` holds
/// the sink's own small facts (when it last synced to disk).
const MIGRATION_4: &str = "
ALTER TABLE dead_letters ADD COLUMN resolved_at TEXT;
ALTER TABLE dead_letters ADD COLUMN resolution TEXT;
CREATE INDEX dead_letters_open ON dead_letters (resolved_at, reason);
CREATE TABLE sink_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 5: duplicates are recognised by their events' deterministic ids (the unique
/// `events.id`), so the push-level `dedupe_keys` table, written twice per push (its key and its
/// time index), goes; so does `events_time`, which no query used (time ranges go through
/// `events_type_time`, timelines through `events_subject`).
const MIGRATION_5: &str = "
DROP TABLE dedupe_keys;
DROP INDEX events_time;
";

/// The `conversations` view (migration 6; migration 8 drops it while it rebuilds `calls`, and
/// creates it again).
macro_rules! conversations_view {
    () => {
        "
CREATE VIEW conversations AS
SELECT
    c.source,
    coalesce(c.conversation_id, c.call_id) AS conversation_id,
    count(*) AS legs,
    min(coalesce(c.started_at, c.first_event_at)) AS first_started_at,
    CASE WHEN count(c.ended_at) = count(*) THEN max(c.ended_at) END AS last_ended_at,
    sum(c.talk_seconds) AS total_talk_seconds,
    (SELECT json_group_array(agent_number) FROM (
        SELECT DISTINCT a.agent_number FROM calls a
        WHERE a.source = c.source
          AND coalesce(a.conversation_id, a.call_id) = coalesce(c.conversation_id, c.call_id)
          AND a.agent_number IS NOT NULL
        ORDER BY a.agent_number)) AS agents,
    max(c.answered_at IS NOT NULL) AS answered,
    last.disposition AS final_disposition,
    last.disconnect_reason AS final_disconnect_reason,
    last.abandon_point AS final_abandon_point
FROM calls c
JOIN calls last ON last.source = c.source AND last.call_id = (
    SELECT l.call_id FROM calls l
    WHERE l.source = c.source
      AND coalesce(l.conversation_id, l.call_id) = coalesce(c.conversation_id, c.call_id)
    ORDER BY coalesce(l.ended_at, l.last_event_at) DESC, l.call_id DESC
    LIMIT 1)
GROUP BY c.source, coalesce(c.conversation_id, c.call_id);
"
    };
}

/// Version 6, model v1.1: the `calls` columns of the conversation and leg, the queue segment,
/// the abandon point, the disconnect reason and the IVR path (rules in `calls_fold.rs`), and
/// the `conversations` view over them. Rows written before keep NULL there (and `[]` as the
/// IVR path) until their call gets a new event or is replayed: their events were mapped
/// without these fields.
///
/// `conversations` has one row per conversation: `conversation_id`, or the call id of a call
/// that has none (so every call is in one), per source.
/// - `legs`: its calls; `first_started_at`: the earliest `started_at` (else first event);
///   `last_ended_at`: the latest `ended_at`, NULL while any leg has not ended;
/// - `total_talk_seconds`: the sum of the legs' `talk_seconds`; `agents`: the distinct agent
///   numbers, a sorted JSON array;
/// - `answered`: 1 when any leg was answered;
/// - the **final disposition** (`final_disposition`, `final_disconnect_reason`,
///   `final_abandon_point`) is the last leg's: the leg that ended last (`ended_at`, else its
///   last event), ties broken by the greater call id. It says how the conversation ended:
///   answered and transferred, then abandoned on the second agent, ends `abandoned`.
const MIGRATION_6: &str = concat!(
    "
ALTER TABLE calls ADD COLUMN conversation_id TEXT;
ALTER TABLE calls ADD COLUMN leg TEXT;
ALTER TABLE calls ADD COLUMN queue_joined_at TEXT;
ALTER TABLE calls ADD COLUMN queue_left_at TEXT;
ALTER TABLE calls ADD COLUMN queue_seconds INTEGER;
ALTER TABLE calls ADD COLUMN abandon_point TEXT;
ALTER TABLE calls ADD COLUMN disconnect_reason TEXT;
ALTER TABLE calls ADD COLUMN disconnect_reason_raw TEXT;
ALTER TABLE calls ADD COLUMN ivr_path TEXT NOT NULL DEFAULT '[]';
CREATE INDEX calls_conversation ON calls (source, coalesce(conversation_id, call_id));
",
    conversations_view!()
);

/// Version 7 (model v1.1): `events.sequence`, each call event's place among its call's events
/// in the order they were first stored (existing events numbered by `seq`, which is that
/// order), and `calls.status` (`in_progress`, `ended`, `final`, `stale`; existing rows derived
/// from their events' types, see `call_status.rs`), with a partial index for the stale sweep.
const MIGRATION_7: &str = "
ALTER TABLE events ADD COLUMN sequence INTEGER;
UPDATE events SET sequence = numbered.n FROM (
    SELECT seq, row_number() OVER (PARTITION BY source_name, call_id ORDER BY seq) AS n
    FROM events
    WHERE call_id IS NOT NULL AND call_id != '' AND subject = call_id AND type NOT LIKE 'agent.%'
) AS numbered WHERE events.seq = numbered.seq;
ALTER TABLE calls ADD COLUMN status TEXT NOT NULL DEFAULT 'in_progress';
UPDATE calls SET status = CASE
    WHEN EXISTS (SELECT 1 FROM events e WHERE e.source_name = calls.source AND e.subject = calls.call_id
                 AND e.call_id = calls.call_id AND e.type = 'call.cdr') THEN 'final'
    WHEN EXISTS (SELECT 1 FROM events e WHERE e.source_name = calls.source AND e.subject = calls.call_id
                 AND e.call_id = calls.call_id AND e.type = 'call.ended') THEN 'ended'
    ELSE 'in_progress' END;
CREATE INDEX calls_in_progress ON calls (source, last_event_at) WHERE status = 'in_progress';
";

/// Version 8: `events` and `calls` rebuilt so that a live batch writes fewer pages at random
/// places. Each commit writes every page its batch dirtied, and ids are hashes, call ids
/// nearly so, and a call's events arrive minutes apart, in different batches.
///
/// - **`events`**: one index on `(source_name, subject, id)`, unique (`events_key`), is the
///   dedupe and a subject's events, instead of two that each took a random page per event:
///   the unique id alone and `events_subject` (`source_name, subject, time`). The key is as
///   unique as the id: the id hashes the source and the push's dedupe key, and the subject is
///   derived from the same push. The same id under another subject (a mapping that changed
///   the subject) is another event; `replay` matches on the key too. A call's timeline (a few
///   dozen events at most) is sorted after reading it through the key's prefix; an agent's
///   (`agent/<number>`: months of status changes) keeps an index in time order,
///   `events_agent`, partial to agent subjects; its query repeats the index's condition
///   (`subject LIKE 'agent/%'`) so SQLite can use it.
/// - **`calls`** becomes a rowid table (it was `WITHOUT ROWID`, its rows in call-id order): a
///   row now sits where it was inserted, so the calls in progress, the ones a batch updates,
///   share the newest pages. The primary key is an index beside it, written once per call.
///
/// Bench (`normalizer-bench --phases drain`, alternating with the previous binary): 300,000
/// pushes 27.6 / 29.3 k → 35.7 / 35.7 k pushes/s for `events` alone, then 33.0 / 31.3 k →
/// 35.4 / 35.8 k for `calls` (later runs); 1,000,000 pushes 27.3 k → 31.3 k for `calls`.
///
/// SQLite cannot drop a column's `UNIQUE` or a table's `WITHOUT ROWID`, so both tables are
/// rebuilt (the procedure of <https://sqlite.org/lang_altertable.html#otheralter>; the
/// `conversations` view reads `calls`, so it is dropped and created again). Instant on a new
/// file; on an old one a copy of both tables, once: as much free disk as they take, for as
/// long as the copy and the index builds.
const MIGRATION_8: &str = concat!(
    "
CREATE TABLE events_v8 (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL,
    type            TEXT NOT NULL,
    source          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    time            TEXT NOT NULL,
    timesource      TEXT NOT NULL,
    specversion     TEXT NOT NULL,
    datacontenttype TEXT NOT NULL,
    dataschema      TEXT NOT NULL,
    source_name     TEXT NOT NULL,
    call_id         TEXT,
    received_at     TEXT NOT NULL,
    data            TEXT NOT NULL,
    mapping_version INTEGER,
    sequence        INTEGER
);
INSERT INTO events_v8 (seq, id, type, source, subject, time, timesource, specversion,
    datacontenttype, dataschema, source_name, call_id, received_at, data, mapping_version, sequence)
SELECT seq, id, type, source, subject, time, timesource, specversion,
    datacontenttype, dataschema, source_name, call_id, received_at, data, mapping_version, sequence
FROM events ORDER BY seq;
DROP TABLE events;
ALTER TABLE events_v8 RENAME TO events;
CREATE INDEX events_type_time ON events (type, time);
CREATE UNIQUE INDEX events_key ON events (source_name, subject, id);
CREATE INDEX events_agent ON events (source_name, subject, time) WHERE subject LIKE 'agent/%';
DROP VIEW conversations;
CREATE TABLE calls_v8 (
    source                TEXT NOT NULL,
    call_id               TEXT NOT NULL,
    vendor                TEXT NOT NULL,
    direction             TEXT NOT NULL,
    caller                TEXT,
    caller_e164           TEXT,
    callee                TEXT,
    callee_e164           TEXT,
    agent_number          TEXT,
    agent_name            TEXT,
    queue                 TEXT,
    queue_name            TEXT,
    parent_call_id        TEXT,
    first_event_at        TEXT NOT NULL,
    started_at            TEXT,
    ringing_at            TEXT,
    answered_at           TEXT,
    ended_at              TEXT,
    disposition           TEXT,
    disposition_raw       TEXT,
    talk_seconds          INTEGER,
    recording_url         TEXT,
    correlation           TEXT NOT NULL,
    events_count          INTEGER NOT NULL,
    last_event_type       TEXT NOT NULL,
    last_event_at         TEXT NOT NULL,
    revision              INTEGER NOT NULL DEFAULT 0,
    conversation_id       TEXT,
    leg                   TEXT,
    queue_joined_at       TEXT,
    queue_left_at         TEXT,
    queue_seconds         INTEGER,
    abandon_point         TEXT,
    disconnect_reason     TEXT,
    disconnect_reason_raw TEXT,
    ivr_path              TEXT NOT NULL DEFAULT '[]',
    status                TEXT NOT NULL DEFAULT 'in_progress',
    PRIMARY KEY (source, call_id)
);
INSERT INTO calls_v8 (
    source, call_id, vendor, direction, caller, caller_e164, callee, callee_e164,
    agent_number, agent_name, queue, queue_name, parent_call_id, first_event_at, started_at, ringing_at,
    answered_at, ended_at, disposition, disposition_raw, talk_seconds, recording_url, correlation, events_count,
    last_event_type, last_event_at, revision, conversation_id, leg, queue_joined_at, queue_left_at, queue_seconds,
    abandon_point, disconnect_reason, disconnect_reason_raw, ivr_path, status)
SELECT
    source, call_id, vendor, direction, caller, caller_e164, callee, callee_e164,
    agent_number, agent_name, queue, queue_name, parent_call_id, first_event_at, started_at, ringing_at,
    answered_at, ended_at, disposition, disposition_raw, talk_seconds, recording_url, correlation, events_count,
    last_event_type, last_event_at, revision, conversation_id, leg, queue_joined_at, queue_left_at, queue_seconds,
    abandon_point, disconnect_reason, disconnect_reason_raw, ivr_path, status
FROM calls ORDER BY first_event_at;
DROP TABLE calls;
ALTER TABLE calls_v8 RENAME TO calls;
CREATE INDEX calls_first_event_at ON calls (first_event_at);
CREATE INDEX calls_agent ON calls (source, agent_number, first_event_at);
CREATE INDEX calls_conversation ON calls (source, coalesce(conversation_id, call_id));
CREATE INDEX calls_in_progress ON calls (source, last_event_at) WHERE status = 'in_progress';
",
    conversations_view!()
);

/// Page cache bound of the sink's connection, in KiB (`PRAGMA cache_size` takes it negated).
const SQLITE_CACHE_KIB: i64 = 8 * 1024;

/// Sets the per-connection pragmas: WAL, `synchronous=FULL`, the busy timeout.
pub(crate) fn configure(
    connection: &Connection,
    busy_timeout: std::time::Duration,
) -> rusqlite::Result<()> {
    connection.busy_timeout(busy_timeout)?;
    // `journal_mode` answers with the mode in force; WAL persists in the file once set.
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "sqlite sink database is not in WAL mode");
    }
    // NORMAL: a commit is durable against a crash of the process at once, and against a power
    // loss once the WAL is synced (at the next checkpoint). A power loss can only take back the
    // last batches whole, their offsets with them: the normalizer maps those records again from
    // the raw log, which is synced at every acknowledgement (see the module docs of `super`).
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // A batch inserts into `events` and its indexes at random places (ids are hashes): with
    // SQLite's default 2 MiB page cache, a batch of 1,000 pushes spilled dirty pages to the WAL
    // mid-transaction and read them back (the bench showed ~10 page writes and ~8 page reads
    // per event). The cache is allocated as pages are used, up to this bound.
    connection.pragma_update(None, "cache_size", -SQLITE_CACHE_KIB)?;
    // The WAL grows to this many bytes before a checkpoint copies it into the database file:
    // pages that many batches dirty are copied once, and checkpoints (each a pair of fsyncs)
    // are 20x rarer than at SQLite's default of 1000 pages of 4 KiB (bench: CPU per push of a
    // 100k drain 7.9 -> 6.3 CPU-seconds). `wal_autocheckpoint` counts pages of the file's size.
    // The sink then hands the checkpoints to a thread of their own at the same bound
    // (`super::checkpoint`), which replaces this automatic one on its connection.
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    connection.pragma_update(
        None,
        "wal_autocheckpoint",
        super::checkpoint::CHECKPOINT_AT_BYTES / page_size.max(512),
    )?;
    Ok(())
}

/// Page cache of a bulk fill, in KiB, allocated as pages are used. What a rebuild reads and
/// writes at random (the unique `events.id` index and `events_subject` before schema v8,
/// `events_key` since, and the `calls` rows,
/// rewritten as their calls go on) is about 290 bytes per push: at 256 MiB a 1,000,000-push
/// rebuild outgrew the cache and spilled and re-read pages (40.7 s); at 1 GiB it holds them
/// (22.0 s, peak RSS 1.3 GB). A longer log degrades gradually past about 3.5 M pushes.
const BULK_CACHE_KIB: i64 = 1024 * 1024;

/// The page size of a bulk-filled file (a file the live sink creates has SQLite's 4096; a
/// file keeps its page size for good). Bench, two runs each, alternating: a 1,000,000-push
/// rebuild took 20.3-20.6 s at 4096 and 18.8-19.0 s at 8192 (its deferred index build,
/// final commit and fsync touch half as many pages). For the live sink 8192 bought nothing:
/// a 500,000-push drain ran at the same rate and wrote a third more bytes (each commit
/// writes whole pages, and a batch dirties about as many pages whatever their size), which
/// is what a rebuilt file costs once a normalizer takes it over.
const BULK_PAGE_SIZE_BYTES: i64 = 8192;

/// Sets the pragmas of a bulk fill of a new file (see `SqliteSink::open_bulk`).
pub(crate) fn configure_bulk(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "page_size", BULK_PAGE_SIZE_BYTES)?;
    connection.pragma_update(None, "journal_mode", "OFF")?;
    connection.pragma_update(None, "synchronous", "OFF")?;
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    connection.pragma_update(None, "cache_size", -BULK_CACHE_KIB)?;
    Ok(())
}

/// The index a bulk fill keeps: the dedupe, through which its writes also read a call's
/// stored events.
const BULK_KEPT_INDEX: &str = "events_key";

/// Drops the secondary indexes a bulk fill can build at its end (every index with a `CREATE`
/// statement but [`BULK_KEPT_INDEX`]; the primary-key index has none and stays); returns
/// their `CREATE` statements.
pub(crate) fn drop_deferrable_indexes(connection: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL \
         AND name != ?1 ORDER BY name",
    )?;
    let indexes = statement
        .query_map([BULK_KEPT_INDEX], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut creates = Vec::with_capacity(indexes.len());
    for (name, create) in indexes {
        connection.execute_batch(&format!("DROP INDEX \"{name}\""))?;
        creates.push(create);
    }
    Ok(creates)
}

/// Turns a bulk-filled file into an ordinary one: WAL, normal locking.
pub(crate) fn finish_bulk(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "locking_mode", "NORMAL")?;
    let _: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    Ok(())
}

/// Returns the file's `user_version`.
pub fn user_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the schema to [`SCHEMA_VERSION`]; returns the version found before migrating.
pub(crate) fn migrate(connection: &mut Connection) -> Result<i64> {
    let found = user_version(connection)?;
    if found > SCHEMA_VERSION {
        return Err(SqliteSinkError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let applied = usize::try_from(found).map_err(|_| SqliteSinkError::CorruptRow {
        table: "user_version",
        detail: format!("negative version {found}"),
    })?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
        tracing::info!(version = index + 1, "sqlite sink schema migrated");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_migrate_in_memory_reaches_latest_and_is_idempotent() {
        let mut connection = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut connection).unwrap(), 0);
        assert_eq!(user_version(&connection).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut connection).unwrap(), SCHEMA_VERSION);
        let tables: i64 = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 6);
    }

    #[test]
    fn test_a_version_5_file_upgrades_and_its_calls_are_conversations() {
        let mut connection = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..5] {
            connection.execute_batch(migration).unwrap();
        }
        connection.pragma_update(None, "user_version", 5).unwrap();
        connection
            .execute_batch(
                "INSERT INTO calls (source, call_id, vendor, direction, first_event_at, \
                 ended_at, talk_seconds, correlation, events_count, last_event_type, \
                 last_event_at, disposition) VALUES ('s', 'old', '7moor', 'inbound', \
                 '2024-01-01T00:00:00.000000000Z', '2024-01-01T00:01:00.000000000Z', 42, '{}', \
                 2, 'call.cdr', '2024-01-01T00:01:00.000000000Z', 'answered')",
            )
            .unwrap();
        assert_eq!(migrate(&mut connection).unwrap(), 5);
        let (conversation, leg, ivr_path): (Option<String>, Option<String>, String) = connection
            .query_row(
                "SELECT conversation_id, leg, ivr_path FROM calls WHERE call_id = 'old'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!((conversation, leg, ivr_path.as_str()), (None, None, "[]"));
        let (id, legs, talk, agents, last): (String, i64, i64, String, String) = connection
            .query_row(
                "SELECT conversation_id, legs, total_talk_seconds, agents, final_disposition \
                 FROM conversations",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (id.as_str(), legs, talk, agents.as_str(), last.as_str()),
            ("old", 1, 42, "[]", "answered")
        );
    }

    #[test]
    fn test_migration_7_numbers_stored_events_and_derives_statuses() {
        let mut connection = Connection::open_in_memory().unwrap();
        for (index, migration) in MIGRATIONS[..5].iter().enumerate() {
            connection.execute_batch(migration).unwrap();
            connection
                .pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
        }
        let event = |seq: i64, id: &str, kind: &str, subject: &str, call: Option<&str>| {
            connection
                .execute(
                    "INSERT INTO events (seq, id, type, source, subject, time, timesource, specversion, \
                     datacontenttype, dataschema, source_name, call_id, received_at, data) \
                     VALUES (?1, ?2, ?3, 's', ?4, 't', 'vendor', '1.0', 'application/json', 'x', 'src', ?5, 't', '{}')",
                    rusqlite::params![seq, id, kind, subject, call],
                )
                .unwrap();
        };
        event(1, "a2", "call.ended", "c1", Some("c1"));
        event(2, "b1", "call.ringing", "c2", Some("c2"));
        event(3, "a1", "call.ringing", "c1", Some("c1"));
        event(4, "g1", "agent.status_changed", "agent/1", Some("c1"));
        event(5, "a3", "call.cdr", "c1", Some("c1"));
        for call in ["c1", "c2"] {
            connection
                .execute(
                    "INSERT INTO calls (source, call_id, vendor, direction, first_event_at, correlation, \
                     events_count, last_event_type, last_event_at) \
                     VALUES ('src', ?1, '7moor', 'unknown', 't', '{}', 1, 'call.ringing', 't')",
                    [call],
                )
                .unwrap();
        }
        assert_eq!(migrate(&mut connection).unwrap(), 5);
        let sequences: Vec<(String, Option<i64>)> = connection
            .prepare("SELECT id, sequence FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [
            ("a2", Some(1)),
            ("b1", Some(1)),
            ("a1", Some(2)),
            ("g1", None),
            ("a3", Some(3)),
        ];
        let expected: Vec<(String, Option<i64>)> = expected
            .iter()
            .map(|(id, n)| ((*id).to_owned(), *n))
            .collect();
        assert_eq!(sequences, expected);
        let statuses: Vec<String> = connection
            .prepare("SELECT status FROM calls ORDER BY call_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(statuses, ["final", "in_progress"]);
    }

    #[test]
    fn test_migration_8_keeps_every_event_and_call_and_dedupes_on_the_event_key() {
        let mut connection = Connection::open_in_memory().unwrap();
        for (index, migration) in MIGRATIONS[..7].iter().enumerate() {
            connection.execute_batch(migration).unwrap();
            connection
                .pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
        }
        let insert = |connection: &Connection, seq: i64, id: &str, subject: &str| {
            connection.execute(
                "INSERT OR IGNORE INTO events (seq, id, type, source, subject, time, timesource, \
                 specversion, datacontenttype, dataschema, source_name, call_id, received_at, data, \
                 mapping_version, sequence) VALUES (?1, ?2, 'call.ringing', 's', ?3, 't', 'vendor', \
                 '1.0', 'application/json', 'x', 'src', ?3, 't', '{}', 4, ?1)",
                rusqlite::params![seq, id, subject],
            )
        };
        insert(&connection, 7, "a", "c1").unwrap();
        insert(&connection, 9, "b", "c2").unwrap();
        for (call, first, revision) in [("c2", "t2", 3), ("c1", "t1", 5)] {
            connection
                .execute(
                    "INSERT INTO calls (source, call_id, vendor, direction, first_event_at, \
                     correlation, events_count, last_event_type, last_event_at, revision, \
                     conversation_id, status) VALUES ('src', ?1, '7moor', 'inbound', ?2, '{}', 1, \
                     'call.cdr', ?2, ?3, 'conv', 'final')",
                    rusqlite::params![call, first, revision],
                )
                .unwrap();
        }
        // Before: the id alone is unique.
        assert_eq!(insert(&connection, 10, "a", "c2").unwrap(), 0);
        assert_eq!(migrate(&mut connection).unwrap(), 7);
        let rows: Vec<(i64, String, String, i64, i64)> = connection
            .prepare("SELECT seq, id, subject, mapping_version, sequence FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [(7, "a", "c1", 4, 7), (9, "b", "c2", 4, 9)];
        let expected: Vec<(i64, String, String, i64, i64)> = expected
            .iter()
            .map(|(seq, id, subject, version, n)| {
                (*seq, (*id).to_owned(), (*subject).to_owned(), *version, *n)
            })
            .collect();
        assert_eq!(rows, expected);
        // After: the key is; a re-sent event is ignored, the same id under another subject
        // is another event, and new rows continue the insertion order.
        assert_eq!(insert(&connection, 11, "a", "c1").unwrap(), 0);
        assert_eq!(insert(&connection, 12, "a", "c2").unwrap(), 1);
        let plan: String = connection
            .query_row(
                "EXPLAIN QUERY PLAN SELECT sequence FROM events \
                 WHERE source_name = 'src' AND subject = 'c1' AND id = 'a'",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("events_key"), "{plan}");
        let indexes: Vec<String> = connection
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(indexes, ["events_agent", "events_key", "events_type_time"]);
        // `calls` keeps its rows, now in a rowid table in `first_event_at` order, and the
        // view over it works again.
        let calls: Vec<(i64, String, i64, String)> = connection
            .prepare("SELECT rowid, call_id, revision, status FROM calls ORDER BY rowid")
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [(1, "c1", 5, "final"), (2, "c2", 3, "final")];
        let expected: Vec<(i64, String, i64, String)> = expected
            .iter()
            .map(|(rowid, call, revision, status)| {
                (*rowid, (*call).to_owned(), *revision, (*status).to_owned())
            })
            .collect();
        assert_eq!(calls, expected);
        let legs: i64 = connection
            .query_row(
                "SELECT legs FROM conversations WHERE conversation_id = 'conv'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(legs, 2);
        let indexes: Vec<String> = connection
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'calls' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "calls_agent",
                "calls_conversation",
                "calls_first_event_at",
                "calls_in_progress",
                "sqlite_autoindex_calls_1"
            ]
        );
    }

    #[test]
    fn test_newer_schema_is_refused() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut connection),
            Err(SqliteSinkError::SchemaTooNew { .. })
        ));
    }
}
