//! The statements a batch runs inside the sink's transaction, one function per table.
//!
//! Every function takes the transaction's connection and neither commits nor rolls back: the
//! caller ([`super::sink::SqliteSink::commit_batch`]) owns the transaction, so an error in any
//! of them leaves nothing of the batch behind.

use std::sync::LazyLock;

use callhook_schemas::TimeSource;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Statement};

use super::agents::AgentUpdate;
use super::calls_fold::{CallRow, StoredCallEvent};
use super::codec::{decode_event_type, decode_time, encode_time, to_sql_integer};
use super::error::{Result, SqliteSinkError};
use crate::batch::{EventKey, SinkEvent};

/// Inserts one event, unless its key is stored (see [`insert_event`]).
pub(crate) const INSERT_EVENT_SQL: &str =
    "INSERT OR IGNORE INTO events (id, type, source, subject, time, timesource, specversion, \
     datacontenttype, dataschema, source_name, call_id, received_at, data, mapping_version, \
     sequence) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Stores an event (its data as the mapping stage serialized it) with `statement`, prepared
/// from [`INSERT_EVENT_SQL`] once per batch; returns false when an event with its id is
/// already stored.
pub(crate) fn insert_event(
    statement: &mut Statement<'_>,
    sink_event: &SinkEvent,
    received_at: &DateTime<Utc>,
    sequence: Option<u64>,
) -> Result<bool> {
    let event = &sink_event.event;
    let data = &sink_event.data_json;
    let timesource = match event.timesource {
        TimeSource::Vendor => "vendor",
        TimeSource::Received => "received",
    };
    let inserted = statement.execute(params![
        event.id,
        event.event_type.as_str(),
        event.source,
        event.subject,
        encode_time(&event.time),
        timesource,
        event.specversion,
        event.datacontenttype,
        event.dataschema,
        event.data.source_name,
        event.data.call_id,
        encode_time(received_at),
        data,
        event.mappingversion,
        sequence.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
    ])?;
    Ok(inserted == 1)
}

/// Returns the greatest `sequence` stored for a call's events (0 when none).
///
/// The maximum is taken here rather than by SQL `max()`: SQLite 3.50 plans an aggregate over
/// `events` anew for every new binding of the subject (a statement with `max(sequence)` or
/// `ORDER BY sequence` re-prepared on each call; `sqlite3_stmt_status` counted one
/// re-prepare per execution), which was half of this read's time in the live drain. A plain
/// `SELECT` keeps its plan, and a call has a few dozen events at most.
pub(crate) fn max_sequence(connection: &Connection, source: &str, call_id: &str) -> Result<u64> {
    let mut statement = connection.prepare_cached(
        "SELECT sequence FROM events WHERE source_name = ?1 AND subject = ?2 AND call_id = ?2",
    )?;
    let mut rows = statement.query(params![source, call_id])?;
    let mut max = 0;
    while let Some(row) = rows.next()? {
        let sequence: Option<i64> = row.get(0)?;
        max = max.max(sequence.unwrap_or(0));
    }
    Ok(u64::try_from(max).unwrap_or(0))
}

/// Applies an agent status if it is newer by `(time, id)` than the stored one; returns true
/// when the row was inserted or replaced.
pub(crate) fn upsert_agent(connection: &Connection, update: &AgentUpdate<'_>) -> Result<bool> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO agents (source, agent_number, status, raw_code, raw_label, agent_name, status_at, event_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (source, agent_number) DO UPDATE SET \
         status = excluded.status, raw_code = excluded.raw_code, raw_label = excluded.raw_label, \
         agent_name = excluded.agent_name, status_at = excluded.status_at, event_id = excluded.event_id \
         WHERE (excluded.status_at, excluded.event_id) > (agents.status_at, agents.event_id)",
    )?;
    let changed = statement.execute(params![
        update.source,
        update.agent_number,
        update.status.as_str(),
        update.raw_code,
        update.raw_label,
        update.agent_name,
        encode_time(&update.status_at),
        update.event_id,
    ])?;
    Ok(changed == 1)
}

/// A dead letter as stored.
pub(crate) struct DeadLetterRow<'a> {
    pub(crate) raw_ref: &'a str,
    pub(crate) source: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) detail: &'a str,
    pub(crate) received_at: &'a DateTime<Utc>,
}

/// Stores a dead letter; returns false when its `raw_ref` is already stored.
pub(crate) fn insert_dead_letter(connection: &Connection, row: &DeadLetterRow<'_>) -> Result<bool> {
    let mut statement = connection.prepare_cached(
        "INSERT OR IGNORE INTO dead_letters (raw_ref, source, reason, detail, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let inserted = statement.execute(params![
        row.raw_ref,
        row.source,
        row.reason,
        row.detail,
        encode_time(row.received_at),
    ])?;
    Ok(inserted == 1)
}

/// Moves the consumer's offsets forward (never back) to `offsets`.
pub(crate) fn store_offsets(
    connection: &Connection,
    consumer: &str,
    offsets: &[(u32, u64)],
) -> Result<()> {
    let mut statement = connection.prepare_cached(
        "INSERT INTO consumer_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3) \
         ON CONFLICT (consumer, partition) DO UPDATE SET \
         next_offset = max(next_offset, excluded.next_offset)",
    )?;
    for (partition, next_offset) in offsets {
        let next_offset = to_sql_integer("next_offset", *next_offset)?;
        statement.execute(params![consumer, partition, next_offset])?;
    }
    Ok(())
}

/// Reads back every stored event of one call.
pub(crate) fn load_call_events(
    connection: &Connection,
    source: &str,
    call_id: &str,
) -> Result<Vec<StoredCallEvent>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, type, time, data FROM events \
         WHERE source_name = ?1 AND subject = ?2 AND call_id = ?2",
    )?;
    let mut rows = statement.query(params![source, call_id])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let event_type = decode_event_type("events", &row.get::<_, String>(1)?)?;
        let time = decode_time("events", &row.get::<_, String>(2)?)?;
        let data = serde_json::from_str(&row.get::<_, String>(3)?).map_err(|error| {
            SqliteSinkError::CorruptRow {
                table: "events",
                detail: format!("data of `{id}`: {error}"),
            }
        })?;
        events.push(StoredCallEvent {
            id,
            event_type,
            time,
            data,
        });
    }
    Ok(events)
}

/// Returns the revision of a call's row, or `None` when it has none.
pub(crate) fn call_revision(
    connection: &Connection,
    source: &str,
    call_id: &str,
) -> Result<Option<i64>> {
    let mut statement = connection
        .prepare_cached("SELECT revision FROM calls WHERE source = ?1 AND call_id = ?2")?;
    Ok(statement
        .query_row(params![source, call_id], |row| row.get(0))
        .optional()?)
}

/// The columns a `calls` row is written with, in the order of [`call_row_params`].
const CALL_COLUMNS: [&str; 36] = [
    "source",
    "call_id",
    "vendor",
    "direction",
    "caller",
    "caller_e164",
    "callee",
    "callee_e164",
    "agent_number",
    "agent_name",
    "queue",
    "queue_name",
    "parent_call_id",
    "first_event_at",
    "started_at",
    "ringing_at",
    "answered_at",
    "ended_at",
    "disposition",
    "disposition_raw",
    "talk_seconds",
    "recording_url",
    "correlation",
    "events_count",
    "last_event_type",
    "last_event_at",
    // Model v1.1 (schema version 6).
    "conversation_id",
    "leg",
    "queue_joined_at",
    "queue_left_at",
    "queue_seconds",
    "abandon_point",
    "disconnect_reason",
    "disconnect_reason_raw",
    "ivr_path",
    // Since v1.1 (schema version 7).
    "status",
];

/// `INSERT INTO calls (...) VALUES (?1, ...)` with revision 1.
static INSERT_CALL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO calls ({}, revision) VALUES ({}, 1)",
        CALL_COLUMNS.join(", "),
        (1..=CALL_COLUMNS.len())
            .map(|n| format!("?{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
});

/// `UPDATE calls SET ... , revision = revision + 1` of one row, the last parameter the
/// expected revision (`NULL`: any).
static UPDATE_CALL_SQL: LazyLock<String> = LazyLock::new(|| {
    let assignments = CALL_COLUMNS[2..]
        .iter()
        .enumerate()
        .map(|(index, column)| format!("{column} = ?{}", index + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let check = CALL_COLUMNS.len() + 1;
    format!(
        "UPDATE calls SET {assignments}, revision = revision + 1 \
         WHERE source = ?1 AND call_id = ?2 AND (?{check} IS NULL OR revision = ?{check}) \
         RETURNING revision"
    )
});

/// Inserts a new `calls` row, revision 1.
pub(crate) fn insert_call_row(connection: &Connection, row: &CallRow) -> Result<()> {
    let mut statement = connection.prepare_cached(&INSERT_CALL_SQL)?;
    let values = call_row_params(row)?;
    statement.execute(rusqlite::params_from_iter(values.iter()))?;
    Ok(())
}

/// Rewrites a `calls` row and bumps its revision; with `expected`, only if the stored
/// revision is that one. Returns the new revision, or `None` when nothing was written (another
/// revision, or no row).
pub(crate) fn update_call_row(
    connection: &Connection,
    row: &CallRow,
    expected: Option<i64>,
) -> Result<Option<i64>> {
    let mut statement = connection.prepare_cached(&UPDATE_CALL_SQL)?;
    let mut values = call_row_params(row)?;
    values.push(expected.map_or(
        rusqlite::types::Value::Null,
        rusqlite::types::Value::Integer,
    ));
    Ok(statement
        .query_row(rusqlite::params_from_iter(values.iter()), |found| {
            found.get(0)
        })
        .optional()?)
}

/// Deletes a call's row (its events are gone).
pub(crate) fn delete_call_row(connection: &Connection, source: &str, call_id: &str) -> Result<()> {
    connection
        .prepare_cached("DELETE FROM calls WHERE source = ?1 AND call_id = ?2")?
        .execute(params![source, call_id])?;
    Ok(())
}

/// A `calls` row's values, in the order of [`CALL_COLUMNS`].
fn call_row_params(row: &CallRow) -> Result<Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value as Sql;
    let correlation =
        serde_json::to_string(&row.correlation).map_err(|source| SqliteSinkError::Encode {
            id: row.call_id.clone(),
            source,
        })?;
    let ivr_path =
        serde_json::to_string(&row.journey.ivr_path).map_err(|source| SqliteSinkError::Encode {
            id: row.call_id.clone(),
            source,
        })?;
    let text = |value: Option<&str>| value.map_or(Sql::Null, |text| Sql::Text(text.to_owned()));
    let time = |value: &Option<DateTime<Utc>>| text(value.as_ref().map(encode_time).as_deref());
    Ok(vec![
        Sql::Text(row.source.clone()),
        Sql::Text(row.call_id.clone()),
        Sql::Text(row.vendor.clone()),
        Sql::Text(row.direction.as_str().to_owned()),
        text(row.caller.as_ref().map(|number| number.raw.as_str())),
        text(
            row.caller
                .as_ref()
                .and_then(|number| number.e164.as_deref()),
        ),
        text(row.callee.as_ref().map(|number| number.raw.as_str())),
        text(
            row.callee
                .as_ref()
                .and_then(|number| number.e164.as_deref()),
        ),
        text(row.agent_number.as_deref()),
        text(row.agent_name.as_deref()),
        text(row.queue.as_deref()),
        text(row.queue_name.as_deref()),
        text(row.parent_call_id.as_deref()),
        Sql::Text(encode_time(&row.first_event_at)),
        time(&row.started_at),
        time(&row.ringing_at),
        time(&row.answered_at),
        time(&row.ended_at),
        text(row.disposition.map(|value| value.as_str())),
        text(row.disposition_raw.as_deref()),
        row.talk_seconds.map_or(Sql::Null, |seconds| {
            Sql::Integer(i64::try_from(seconds).unwrap_or(i64::MAX))
        }),
        text(row.recording_url.as_deref()),
        Sql::Text(correlation),
        Sql::Integer(to_sql_integer("events_count", row.events_count)?),
        Sql::Text(row.last_event_type.as_str().to_owned()),
        Sql::Text(encode_time(&row.last_event_at)),
        // Model v1.1 (schema version 6).
        text(row.journey.conversation_id.as_deref()),
        text(row.journey.leg.map(|leg| leg.as_str())),
        time(&row.journey.queue_joined_at),
        time(&row.journey.queue_left_at),
        row.journey.queue_seconds.map_or(Sql::Null, |seconds| {
            Sql::Integer(i64::try_from(seconds).unwrap_or(i64::MAX))
        }),
        text(row.journey.abandon_point.map(|point| point.as_str())),
        text(row.journey.disconnect_reason.map(|reason| reason.as_str())),
        text(row.journey.disconnect_reason_raw.as_deref()),
        Sql::Text(ivr_path),
        Sql::Text(row.status.as_str().to_owned()),
    ])
}

/// Returns the stored `sequence` of the event `key` (`Some(None)`: stored without one), or
/// `None` when it is not stored.
pub(crate) fn stored_sequence(
    connection: &Connection,
    key: EventKey<'_>,
) -> Result<Option<Option<u64>>> {
    let mut statement = connection.prepare_cached(
        "SELECT sequence FROM events WHERE source_name = ?1 AND subject = ?2 AND id = ?3",
    )?;
    let found: Option<Option<i64>> = statement
        .query_row(params![key.source_name, key.subject, key.id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(found.map(|sequence| sequence.and_then(|n| u64::try_from(n).ok())))
}
