//! The PostgreSQL schema and its versioned migrations.
//!
//! `MIGRATIONS[n]` takes the database from version `n` to `n + 1`; versions applied are rows
//! of `callhook_schema_migrations`. [`migrate`] runs in one transaction that first takes a
//! transaction-level advisory lock ([`MIGRATION_LOCK`]), so processes that start at the same
//! time migrate one after the other: the second finds the versions applied and does nothing.
//! PostgreSQL's DDL is transactional, so a crash mid-migration leaves the previous version.
//! Migrations are only ever appended; a database whose version is newer than this build knows
//! is refused rather than written to.
//!
//! (`refinery` was the candidate crate: it does not lock, so two processes starting at once
//! race on its history table, which is the case this sink must handle; the lock and the
//! history table are a dozen lines here.)
//!
//! The tables mean what the SQLite sink's mean (see `sqlite/schema.rs`), with native types:
//! `timestamptz` (microseconds) for times, `jsonb` for `data` and `correlation`. There is no
//! `dedupe_keys` table: a re-sent push is recognised by its first event's deterministic id,
//! as in the SQLite sink since its schema version 5.

use postgres::Client;

use super::error::{PostgresSinkError, Result};

/// The advisory lock key the migrations hold (`callhook` in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6361_6c6c_686f_6f6b;

/// The migrations, in order.
const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: every table of the sink, and the indexes README's queries use.
const MIGRATION_1: &str = r#"
CREATE TABLE events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text COLLATE "C" NOT NULL UNIQUE,
    type            text NOT NULL,
    source          text NOT NULL,
    subject         text NOT NULL,
    time            timestamptz NOT NULL,
    timesource      text NOT NULL,
    specversion     text NOT NULL,
    datacontenttype text NOT NULL,
    dataschema      text NOT NULL,
    source_name     text NOT NULL,
    call_id         text,
    received_at     timestamptz NOT NULL,
    data            jsonb NOT NULL,
    mapping_version integer
);
CREATE INDEX events_type_time ON events (type, time);
-- Timelines of calls and agents, and a call's events for its fold (a call event's subject is
-- its call id), as in the SQLite sink: no separate (source_name, call_id) index to maintain.
CREATE INDEX events_subject ON events (source_name, subject, time);

CREATE TABLE calls (
    source          text NOT NULL,
    call_id         text NOT NULL,
    vendor          text NOT NULL,
    direction       text NOT NULL,
    caller          text,
    caller_e164     text,
    callee          text,
    callee_e164     text,
    agent_number    text,
    agent_name      text,
    queue           text,
    queue_name      text,
    parent_call_id  text,
    first_event_at  timestamptz NOT NULL,
    started_at      timestamptz,
    ringing_at      timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    disposition     text,
    disposition_raw text,
    talk_seconds    bigint,
    recording_url   text,
    correlation     jsonb NOT NULL,
    events_count    bigint NOT NULL,
    last_event_type text NOT NULL,
    last_event_at   timestamptz NOT NULL,
    revision        bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (source, call_id)
);
CREATE INDEX calls_first_event_at ON calls (first_event_at);
CREATE INDEX calls_agent ON calls (source, agent_number, first_event_at);
CREATE INDEX calls_queue ON calls (queue, first_event_at);
CREATE INDEX calls_in_progress ON calls (first_event_at) WHERE ended_at IS NULL;

CREATE TABLE agents (
    source       text NOT NULL,
    agent_number text NOT NULL,
    status       text NOT NULL,
    raw_code     text,
    raw_label    text,
    agent_name   text,
    status_at    timestamptz NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    PRIMARY KEY (source, agent_number)
);

CREATE TABLE dead_letters (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    raw_ref     text NOT NULL UNIQUE,
    source      text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    received_at timestamptz NOT NULL,
    resolved_at timestamptz,
    resolution  text
);
CREATE INDEX dead_letters_source_received_at ON dead_letters (source, received_at);
CREATE INDEX dead_letters_open ON dead_letters (reason) WHERE resolved_at IS NULL;

CREATE TABLE consumer_offsets (
    consumer    text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (consumer, partition)
);
"#;

/// Version 2, model v1.1: the `calls` columns of the conversation and leg, the queue segment,
/// the abandon point, the disconnect reason and the IVR path, and the `conversations` view,
/// as in the SQLite sink's version 6 (`sqlite/schema.rs` defines each view column and the
/// final disposition), with the same values: `answered` is 0 or 1 in both, `agents` a
/// `jsonb` array here.
const MIGRATION_2: &str = r#"
ALTER TABLE calls ADD COLUMN conversation_id text;
ALTER TABLE calls ADD COLUMN leg text;
ALTER TABLE calls ADD COLUMN queue_joined_at timestamptz;
ALTER TABLE calls ADD COLUMN queue_left_at timestamptz;
ALTER TABLE calls ADD COLUMN queue_seconds bigint;
ALTER TABLE calls ADD COLUMN abandon_point text;
ALTER TABLE calls ADD COLUMN disconnect_reason text;
ALTER TABLE calls ADD COLUMN disconnect_reason_raw text;
ALTER TABLE calls ADD COLUMN ivr_path jsonb NOT NULL DEFAULT '[]';
CREATE INDEX calls_conversation ON calls (source, (coalesce(conversation_id, call_id)));
CREATE VIEW conversations AS
SELECT
    g.source,
    g.conversation_id,
    g.legs,
    g.first_started_at,
    g.last_ended_at,
    g.total_talk_seconds,
    g.agents,
    g.answered,
    last.disposition AS final_disposition,
    last.disconnect_reason AS final_disconnect_reason,
    last.abandon_point AS final_abandon_point
FROM (
    SELECT
        c.source,
        coalesce(c.conversation_id, c.call_id) AS conversation_id,
        count(*) AS legs,
        min(coalesce(c.started_at, c.first_event_at)) AS first_started_at,
        CASE WHEN count(c.ended_at) = count(*) THEN max(c.ended_at) END AS last_ended_at,
        sum(c.talk_seconds) AS total_talk_seconds,
        coalesce(
            jsonb_agg(DISTINCT c.agent_number ORDER BY c.agent_number)
                FILTER (WHERE c.agent_number IS NOT NULL),
            '[]'::jsonb) AS agents,
        max(CASE WHEN c.answered_at IS NOT NULL THEN 1 ELSE 0 END) AS answered
    FROM calls c
    GROUP BY c.source, coalesce(c.conversation_id, c.call_id)
) g
CROSS JOIN LATERAL (
    SELECT l.disposition, l.disconnect_reason, l.abandon_point
    FROM calls l
    WHERE l.source = g.source AND coalesce(l.conversation_id, l.call_id) = g.conversation_id
    ORDER BY coalesce(l.ended_at, l.last_event_at) DESC, l.call_id COLLATE "C" DESC
    LIMIT 1
) last;
"#;

/// Version 3 (model v1.1): `events.sequence`, each call event's place among its call's events
/// in the order they were first stored (existing events numbered by `seq`, that order), and
/// `calls.status` (existing rows derived from their events' types, as `call_status.rs` does),
/// with a partial index for the stale sweep.
const MIGRATION_3: &str = r#"
ALTER TABLE events ADD COLUMN sequence bigint;
UPDATE events SET sequence = numbered.n FROM (
    SELECT seq, row_number() OVER (PARTITION BY source_name, call_id ORDER BY seq) AS n
    FROM events
    WHERE call_id IS NOT NULL AND call_id <> '' AND subject = call_id AND type NOT LIKE 'agent.%'
) AS numbered WHERE events.seq = numbered.seq;
ALTER TABLE calls ADD COLUMN status text NOT NULL DEFAULT 'in_progress';
UPDATE calls SET status = CASE
    WHEN EXISTS (SELECT 1 FROM events e WHERE e.source_name = calls.source AND e.subject = calls.call_id
                 AND e.call_id = calls.call_id AND e.type = 'call.cdr') THEN 'final'
    WHEN EXISTS (SELECT 1 FROM events e WHERE e.source_name = calls.source AND e.subject = calls.call_id
                 AND e.call_id = calls.call_id AND e.type = 'call.ended') THEN 'ended'
    ELSE 'in_progress' END;
CREATE INDEX calls_status_in_progress ON calls (source, last_event_at) WHERE status = 'in_progress';
"#;

/// Brings the database to [`SCHEMA_VERSION`]; returns the version found.
pub fn migrate(client: &mut Client) -> Result<i64> {
    let mut transaction = client.transaction()?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    transaction.batch_execute(
        "CREATE TABLE IF NOT EXISTS callhook_schema_migrations (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let found: i64 = transaction
        .query_one(
            "SELECT coalesce(max(version), 0) FROM callhook_schema_migrations",
            &[],
        )?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PostgresSinkError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        transaction.batch_execute(migration)?;
        transaction.execute(
            "INSERT INTO callhook_schema_migrations (version) VALUES ($1)",
            &[&version],
        )?;
        tracing::info!(version, "postgres sink schema migrated");
    }
    transaction.commit()?;
    Ok(found)
}
