//! The SQL side of `callhook replay`: what a database rebuilt from the raw log through the
//! current mapping would change in the live one ([`diff`]), and making those changes in place
//! ([`apply`]).
//!
//! The rebuilt database is attached to a connection on the live one as `rebuilt`. Both sides
//! are compared over the same [`ReplayScope`]: the receive times the replay covered (the raw log
//! may no longer hold older records) and its filters. Events are matched by their key
//! `(source_name, subject, id)` (the sink's dedupe key, [`crate::EventKey`]; ids are
//! deterministic, so the same push re-derived has the same id): a key only the rebuilt side
//! has is *added*, one only the live side has (in scope) is *removed*, one whose type, time,
//! source or data differ is *changed*. An event the new mapping gives another subject is
//! removed under the old one and added under the new. A `calls` row changes only if one of its
//! call's events does; its new value is the fold of the live events outside the scope plus
//! the rebuilt ones, so a call that crosses the scope's edge is compared whole.
//!
//! [`apply`] writes in short transactions of at most [`CHUNK`] rows each, so a running
//! normalizer (the only other writer) waits at most one chunk for the write lock; every
//! `calls` row it rewrites gets a new revision, so that normalizer's in-memory fold of that
//! call is rebuilt from the stored events instead of overwriting the change. Applying twice
//! changes nothing the second time: the ids are the same, and the rows already are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use callhook_schemas::{CloudEvent, TimeSource};
use chrono::{DateTime, Utc};
use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OpenFlags, TransactionBehavior};
use serde::Serialize;

use super::agents::agent_update;
use super::calls_fold::{fold_call, CallRow, StoredCallEvent};
use super::codec::{decode_event_type, decode_time, encode_time};
use super::error::{Result, SqliteSinkError};
use super::writes;

/// Rows per write transaction of [`apply`].
pub const CHUNK: i64 = 5_000;
/// Examples of changed calls a diff keeps.
const CALL_EXAMPLES: usize = 5;

/// Which events and dead letters a replay covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayScope {
    /// Only this source.
    pub source: Option<String>,
    /// Only this call id.
    pub call_id: Option<String>,
    /// The earliest receive time replayed.
    pub received_from: DateTime<Utc>,
    /// The latest receive time replayed.
    pub received_to: DateTime<Utc>,
}

impl ReplayScope {
    /// `AND ...` conditions on `alias`'s `received_at`, `source`/`source_name` and `call_id`
    /// (`events` when `events`, else `dead_letters`), with their parameters.
    fn conditions(&self, alias: &str, events: bool) -> (String, Vec<Sql>) {
        let mut sql = format!(" AND {alias}.received_at >= ? AND {alias}.received_at <= ?");
        let mut values = vec![
            Sql::Text(encode_time(&self.received_from)),
            Sql::Text(encode_time(&self.received_to)),
        ];
        if let Some(source) = &self.source {
            let column = if events { "source_name" } else { "source" };
            sql.push_str(&format!(" AND {alias}.{column} = ?"));
            values.push(Sql::Text(source.clone()));
        }
        if let Some(call_id) = self.call_id.as_ref().filter(|_| events) {
            sql.push_str(&format!(" AND {alias}.call_id = ?"));
            values.push(Sql::Text(call_id.clone()));
        }
        (sql, values)
    }

    fn contains(&self, source: &str, call_id: Option<&str>, received_at: &str) -> bool {
        let from = encode_time(&self.received_from);
        let to = encode_time(&self.received_to);
        (from.as_str()..=to.as_str()).contains(&received_at)
            && self.source.as_deref().is_none_or(|wanted| wanted == source)
            && self
                .call_id
                .as_deref()
                .is_none_or(|wanted| Some(wanted) == call_id)
    }
}

/// Events added, removed and changed, for one type and source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The source name.
    pub source: String,
    /// Only the rebuilt side has them.
    pub added: u64,
    /// Only the live side has them.
    pub removed: u64,
    /// Both have them, with different content.
    pub changed: u64,
}

/// One column of a `calls` row that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The column.
    pub column: &'static str,
    /// Its live value.
    pub before: Option<String>,
    /// Its value after the replay.
    pub after: Option<String>,
}

/// One `calls` row that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallChange {
    /// The source.
    pub source: String,
    /// The call id.
    pub call_id: String,
    /// What changes.
    pub changes: Vec<FieldChange>,
}

/// What a replay changes in the live database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayDiff {
    /// Events by type and source (only those with a change).
    pub events: Vec<EventCounts>,
    /// Events of both sides by `(live mapping version, rebuilt mapping version)`.
    pub mapping_versions: Vec<(Option<i64>, Option<i64>, u64)>,
    /// `calls` rows the replay creates.
    pub calls_added: u64,
    /// `calls` rows the replay deletes (their call has no event left).
    pub calls_removed: u64,
    /// `calls` rows whose columns change.
    pub calls_changed: u64,
    /// The columns that change, and how many rows each.
    pub call_columns_changed: BTreeMap<&'static str, u64>,
    /// A few changed rows.
    pub call_examples: Vec<CallChange>,
    /// Dead letters that would now map, by their reason.
    pub dead_letters_now_mapping: BTreeMap<String, u64>,
    /// Records that would become dead letters, by reason.
    pub dead_letters_new: BTreeMap<String, u64>,
    /// Dead letters whose reason changes.
    pub dead_letters_reason_changed: u64,
}

impl ReplayDiff {
    /// Returns true when the replay changes nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.calls_added + self.calls_removed + self.calls_changed == 0
            && self.dead_letters_now_mapping.is_empty()
            && self.dead_letters_new.is_empty()
            && self.dead_letters_reason_changed == 0
    }
}

/// Opens `live` (read-only unless `write`) with `rebuilt` attached.
fn open_pair(live: &Path, rebuilt: &Path, write: bool) -> Result<Connection> {
    let flags = match write {
        true => OpenFlags::SQLITE_OPEN_READ_WRITE,
        false => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        Connection::open_with_flags(live, flags).map_err(|source| SqliteSinkError::Open {
            path: live.to_owned(),
            source,
        })?;
    connection.busy_timeout(std::time::Duration::from_secs(30))?;
    connection.execute(
        "ATTACH DATABASE ?1 AS rebuilt",
        [format!("file:{}?mode=ro", rebuilt.display())],
    )?;
    Ok(connection)
}

/// The changed-content condition between `m` (live) and `r` (rebuilt) events.
const CHANGED: &str = "(m.type IS NOT r.type OR m.time IS NOT r.time \
     OR m.source IS NOT r.source OR m.data IS NOT r.data OR m.timesource IS NOT r.timesource)";

/// Computes what replacing the live events in `scope` with the rebuilt ones would change.
pub fn diff(live: &Path, rebuilt: &Path, scope: &ReplayScope) -> Result<ReplayDiff> {
    let connection = open_pair(live, rebuilt, false)?;
    let mut diff = ReplayDiff::default();
    let (live_scope, live_values) = scope.conditions("m", true);
    let mut counts: BTreeMap<(String, String), EventCounts> = BTreeMap::new();
    let mut count = |sql: &str, values: &[Sql], slot: fn(&mut EventCounts) -> &mut u64| {
        let mut statement = connection.prepare(sql)?;
        let mut rows = statement.query(params_from_iter(values.iter()))?;
        while let Some(row) = rows.next()? {
            let key: (String, String) = (row.get(0)?, row.get(1)?);
            let entry = counts.entry(key.clone()).or_insert_with(|| EventCounts {
                event_type: key.0,
                source: key.1,
                ..EventCounts::default()
            });
            *slot(entry) += row.get::<_, i64>(2)? as u64;
        }
        Ok::<_, SqliteSinkError>(())
    };
    count(
        "SELECT r.type, r.source_name, count(*) FROM rebuilt.events r \
         WHERE NOT EXISTS (SELECT 1 FROM main.events m WHERE m.source_name = r.source_name AND m.subject = r.subject AND m.id = r.id) GROUP BY 1, 2",
        &[],
        |entry| &mut entry.added,
    )?;
    count(
        &format!(
            "SELECT m.type, m.source_name, count(*) FROM main.events m WHERE 1{live_scope} \
             AND NOT EXISTS (SELECT 1 FROM rebuilt.events r WHERE r.source_name = m.source_name AND r.subject = m.subject AND r.id = m.id) GROUP BY 1, 2"
        ),
        &live_values,
        |entry| &mut entry.removed,
    )?;
    count(
        &format!(
            "SELECT r.type, r.source_name, count(*) FROM rebuilt.events r \
             JOIN main.events m ON m.source_name = r.source_name AND m.subject = r.subject AND m.id = r.id WHERE {CHANGED} GROUP BY 1, 2"
        ),
        &[],
        |entry| &mut entry.changed,
    )?;
    diff.events = counts.into_values().collect();
    let mut versions = connection.prepare(
        "SELECT m.mapping_version, r.mapping_version, count(*) FROM rebuilt.events r \
         JOIN main.events m ON m.source_name = r.source_name AND m.subject = r.subject AND m.id = r.id GROUP BY 1, 2 ORDER BY 1, 2",
    )?;
    diff.mapping_versions = versions
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    drop(versions);
    diff_calls(&connection, scope, &mut diff)?;
    diff_dead_letters(&connection, scope, &mut diff)?;
    Ok(diff)
}

/// The `(source, call_id)` of every call with an added, removed or changed event.
fn affected_calls(
    connection: &Connection,
    scope: &ReplayScope,
) -> Result<BTreeSet<(String, String)>> {
    let (live_scope, live_values) = scope.conditions("m", true);
    let sql = format!(
        "SELECT r.source_name, r.call_id FROM rebuilt.events r \
         LEFT JOIN main.events m ON m.source_name = r.source_name AND m.subject = r.subject AND m.id = r.id \
         WHERE r.call_id IS NOT NULL AND (m.id IS NULL OR {CHANGED}) \
         UNION SELECT m.source_name, m.call_id FROM main.events m WHERE m.call_id IS NOT NULL{live_scope} \
         AND NOT EXISTS (SELECT 1 FROM rebuilt.events r WHERE r.source_name = m.source_name AND r.subject = m.subject AND r.id = m.id)"
    );
    let mut statement = connection.prepare(&sql)?;
    let calls = statement
        .query_map(params_from_iter(live_values.iter()), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(calls)
}

/// The events a call would have after the replay: the rebuilt ones, plus the live ones the
/// replay did not cover.
fn call_events_after(
    connection: &Connection,
    scope: &ReplayScope,
    source: &str,
    call_id: &str,
) -> Result<Vec<StoredCallEvent>> {
    let rebuilt = load_events(connection, "rebuilt", source, call_id)?;
    let ids: BTreeSet<String> = rebuilt.iter().map(|(event, _)| event.id.clone()).collect();
    let mut events: Vec<StoredCallEvent> = rebuilt.into_iter().map(|(event, _)| event).collect();
    for (event, received_at) in load_events(connection, "main", source, call_id)? {
        if !ids.contains(&event.id) && !scope.contains(source, Some(call_id), &received_at) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Loads a call's events from `schema` (`main` or `rebuilt`), with their receive times.
fn load_events(
    connection: &Connection,
    schema: &str,
    source: &str,
    call_id: &str,
) -> Result<Vec<(StoredCallEvent, String)>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT id, type, time, data, received_at FROM {schema}.events \
         WHERE source_name = ?1 AND subject = ?2 AND call_id = ?2"
    ))?;
    let mut rows = statement.query([source, call_id])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let event = StoredCallEvent {
            event_type: decode_event_type("events", &row.get::<_, String>(1)?)?,
            time: decode_time("events", &row.get::<_, String>(2)?)?,
            data: serde_json::from_str(&row.get::<_, String>(3)?).map_err(|error| {
                SqliteSinkError::CorruptRow {
                    table: "events",
                    detail: format!("data of `{id}`: {error}"),
                }
            })?,
            id,
        };
        events.push((event, row.get(4)?));
    }
    Ok(events)
}

fn diff_calls(connection: &Connection, scope: &ReplayScope, diff: &mut ReplayDiff) -> Result<()> {
    for (source, call_id) in affected_calls(connection, scope)? {
        let after = fold_call(
            &source,
            &call_id,
            call_events_after(connection, scope, &source, &call_id)?,
        );
        let before = stored_call(connection, &source, &call_id)?;
        match (before, after) {
            (None, None) => {}
            (None, Some(_)) => diff.calls_added += 1,
            (Some(_), None) => diff.calls_removed += 1,
            (Some(before), Some(after)) => {
                let changes = compare_rows(&before, &after);
                if changes.is_empty() {
                    continue;
                }
                diff.calls_changed += 1;
                for change in &changes {
                    *diff.call_columns_changed.entry(change.column).or_default() += 1;
                }
                if diff.call_examples.len() < CALL_EXAMPLES {
                    diff.call_examples.push(CallChange {
                        source,
                        call_id,
                        changes,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The live `calls` row of a call, as the fold's row type (what a diff compares).
fn stored_call(connection: &Connection, source: &str, call_id: &str) -> Result<Option<CallRow>> {
    let events = load_events(connection, "main", source, call_id)?
        .into_iter()
        .map(|(event, _)| event)
        .collect();
    let exists: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.calls WHERE source = ?1 AND call_id = ?2)",
        [source, call_id],
        |row| row.get(0),
    )?;
    Ok(fold_call(source, call_id, events).filter(|_| exists))
}

/// The columns that differ between two rows of one call.
fn compare_rows(before: &CallRow, after: &CallRow) -> Vec<FieldChange> {
    let time = |value: &Option<DateTime<Utc>>| value.as_ref().map(encode_time);
    let number = |value: &Option<callhook_schemas::PhoneNumber>| {
        value.as_ref().map(|number| number.raw.clone())
    };
    let columns: [(&'static str, Option<String>, Option<String>); 14] = [
        (
            "direction",
            Some(before.direction.as_str().into()),
            Some(after.direction.as_str().into()),
        ),
        (
            "disposition",
            before.disposition.map(|d| d.as_str().into()),
            after.disposition.map(|d| d.as_str().into()),
        ),
        (
            "disposition_raw",
            before.disposition_raw.clone(),
            after.disposition_raw.clone(),
        ),
        (
            "talk_seconds",
            before.talk_seconds.map(|t| t.to_string()),
            after.talk_seconds.map(|t| t.to_string()),
        ),
        (
            "started_at",
            time(&before.started_at),
            time(&after.started_at),
        ),
        (
            "ringing_at",
            time(&before.ringing_at),
            time(&after.ringing_at),
        ),
        (
            "answered_at",
            time(&before.answered_at),
            time(&after.answered_at),
        ),
        ("ended_at", time(&before.ended_at), time(&after.ended_at)),
        ("caller", number(&before.caller), number(&after.caller)),
        ("callee", number(&before.callee), number(&after.callee)),
        (
            "agent_number",
            before.agent_number.clone(),
            after.agent_number.clone(),
        ),
        ("queue", before.queue.clone(), after.queue.clone()),
        (
            "recording_url",
            before.recording_url.clone(),
            after.recording_url.clone(),
        ),
        (
            "events_count",
            Some(before.events_count.to_string()),
            Some(after.events_count.to_string()),
        ),
    ];
    columns
        .into_iter()
        .chain(before.journey.compared_columns(&after.journey))
        .filter(|(_, before, after)| before != after)
        .map(|(column, before, after)| FieldChange {
            column,
            before,
            after,
        })
        .collect()
}

fn diff_dead_letters(
    connection: &Connection,
    scope: &ReplayScope,
    diff: &mut ReplayDiff,
) -> Result<()> {
    let (live_scope, live_values) = scope.conditions("m", false);
    let group = |sql: &str, values: &[Sql]| -> Result<BTreeMap<String, u64>> {
        let mut statement = connection.prepare(sql)?;
        let rows = statement.query_map(params_from_iter(values.iter()), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    };
    diff.dead_letters_now_mapping = group(
        &format!(
            "SELECT m.reason, count(*) FROM main.dead_letters m WHERE m.resolved_at IS NULL{live_scope} \
             AND NOT EXISTS (SELECT 1 FROM rebuilt.dead_letters r WHERE r.raw_ref = m.raw_ref) GROUP BY 1"
        ),
        &live_values,
    )?;
    diff.dead_letters_new = group(
        "SELECT r.reason, count(*) FROM rebuilt.dead_letters r \
         WHERE NOT EXISTS (SELECT 1 FROM main.dead_letters m WHERE m.raw_ref = r.raw_ref) GROUP BY 1",
        &[],
    )?;
    diff.dead_letters_reason_changed = connection.query_row(
        "SELECT count(*) FROM rebuilt.dead_letters r JOIN main.dead_letters m ON m.raw_ref = r.raw_ref \
         WHERE m.reason IS NOT r.reason",
        [],
        |row| row.get::<_, i64>(0),
    )? as u64;
    Ok(())
}

/// What [`apply`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyOutcome {
    /// Events inserted.
    pub events_added: u64,
    /// Events deleted.
    pub events_removed: u64,
    /// Events whose content or mapping version was updated.
    pub events_updated: u64,
    /// `calls` rows rewritten or deleted.
    pub calls_rewritten: u64,
    /// `agents` rows recomputed.
    pub agents_recomputed: u64,
    /// Dead letters marked resolved (they map now).
    pub dead_letters_resolved: u64,
    /// Dead letters added or given a new reason.
    pub dead_letters_written: u64,
}

/// Makes the live database what the replay says, in chunks (see the module docs).
pub fn apply(live: &Path, rebuilt: &Path, scope: &ReplayScope) -> Result<ApplyOutcome> {
    let mut connection = open_pair(live, rebuilt, true)?;
    let mut outcome = ApplyOutcome::default();
    let calls = affected_calls(&connection, scope)?;
    let agents = affected_agents(&connection, scope)?;
    let (live_scope, live_values) = scope.conditions("main.events", true);
    let max_rowid = |sql: &str| -> Result<i64> {
        Ok(connection
            .query_row(sql, [], |row| row.get::<_, Option<i64>>(0))?
            .unwrap_or(0))
    };
    let rebuilt_max = max_rowid("SELECT max(seq) FROM rebuilt.events")?;
    let live_max = max_rowid("SELECT max(seq) FROM main.events")?;
    let columns =
        "type, source, subject, time, timesource, specversion, datacontenttype, dataschema, \
                   source_name, call_id, received_at, data, mapping_version";
    let update = format!(
        "UPDATE main.events SET ({columns}) = (r.type, r.source, r.subject, r.time, r.timesource, \
         r.specversion, r.datacontenttype, r.dataschema, r.source_name, r.call_id, r.received_at, \
         r.data, r.mapping_version) FROM rebuilt.events r \
         WHERE main.events.source_name = r.source_name AND main.events.subject = r.subject AND main.events.id = r.id AND r.seq > ?1 AND r.seq <= ?2 AND \
         (main.events.mapping_version IS NOT r.mapping_version OR {})",
        CHANGED.replace("m.", "main.events.")
    );
    let insert = format!(
        "INSERT INTO main.events (id, {columns}) SELECT r.id, {} FROM rebuilt.events r \
         WHERE r.seq > ?1 AND r.seq <= ?2 AND NOT EXISTS (SELECT 1 FROM main.events m WHERE m.source_name = r.source_name AND m.subject = r.subject AND m.id = r.id)",
        columns
            .split(", ")
            .map(|column| format!("r.{column}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let delete = format!(
        "DELETE FROM main.events WHERE seq > ? AND seq <= ?{live_scope} \
         AND NOT EXISTS (SELECT 1 FROM rebuilt.events r WHERE r.source_name = main.events.source_name AND r.subject = main.events.subject AND r.id = main.events.id)"
    );
    let mut low = 0;
    while low < rebuilt_max.max(live_max) {
        let high = low + CHUNK;
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        outcome.events_updated += transaction.execute(&update, [low, high])? as u64;
        outcome.events_added += transaction.execute(&insert, [low, high])? as u64;
        let mut values = vec![Sql::Integer(low), Sql::Integer(high)];
        values.extend(live_values.iter().cloned());
        outcome.events_removed +=
            transaction.execute(&delete, params_from_iter(values.iter()))? as u64;
        transaction.commit()?;
        low = high;
    }
    number_added_events(&mut connection)?;
    for chunk in calls.iter().collect::<Vec<_>>().chunks(CHUNK as usize) {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (source, call_id) in chunk {
            super::calls::rewrite_call(&transaction, source, call_id)?;
            outcome.calls_rewritten += 1;
        }
        transaction.commit()?;
    }
    outcome.agents_recomputed = recompute_agents(&mut connection, &agents)?;
    apply_dead_letters(&mut connection, scope, &mut outcome)?;
    Ok(outcome)
}

fn apply_dead_letters(
    connection: &mut Connection,
    scope: &ReplayScope,
    outcome: &mut ApplyOutcome,
) -> Result<()> {
    let (live_scope, live_values) = scope.conditions("dead_letters", false);
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut values = vec![Sql::Text(encode_time(&Utc::now()))];
    values.extend(live_values);
    outcome.dead_letters_resolved += transaction.execute(
        &format!(
            "UPDATE main.dead_letters SET resolved_at = ?, resolution = 'replay' \
             WHERE resolved_at IS NULL{live_scope} \
             AND NOT EXISTS (SELECT 1 FROM rebuilt.dead_letters r WHERE r.raw_ref = dead_letters.raw_ref)"
        ),
        params_from_iter(values.iter()),
    )? as u64;
    outcome.dead_letters_written += transaction.execute(
        "UPDATE main.dead_letters SET reason = r.reason, detail = r.detail \
         FROM rebuilt.dead_letters r WHERE r.raw_ref = main.dead_letters.raw_ref \
         AND main.dead_letters.reason IS NOT r.reason",
        [],
    )? as u64;
    outcome.dead_letters_written += transaction.execute(
        "INSERT OR IGNORE INTO main.dead_letters (raw_ref, source, reason, detail, received_at) \
         SELECT raw_ref, source, reason, detail, received_at FROM rebuilt.dead_letters",
        [],
    )? as u64;
    transaction.commit()?;
    Ok(())
}

/// The `(source, agent number)` of every agent with an added, removed or changed event that
/// sets a status.
fn affected_agents(
    connection: &Connection,
    scope: &ReplayScope,
) -> Result<BTreeSet<(String, String)>> {
    let (live_scope, live_values) = scope.conditions("m", true);
    let sets_status = |alias: &str| {
        format!(
            "({alias}.type LIKE 'agent.%' OR json_extract({alias}.data, '$.agent_status') IS NOT NULL)"
        )
    };
    let sql = format!(
        "SELECT r.source_name, json_extract(r.data, '$.agent.number') FROM rebuilt.events r \
         LEFT JOIN main.events m ON m.source_name = r.source_name AND m.subject = r.subject AND m.id = r.id WHERE {} AND (m.id IS NULL OR {CHANGED}) \
         UNION SELECT m.source_name, json_extract(m.data, '$.agent.number') FROM main.events m \
         WHERE {}{live_scope} AND NOT EXISTS (SELECT 1 FROM rebuilt.events r WHERE r.source_name = m.source_name AND r.subject = m.subject AND r.id = m.id)",
        sets_status("r"),
        sets_status("m"),
    );
    let mut statement = connection.prepare(&sql)?;
    let agents = statement
        .query_map(params_from_iter(live_values.iter()), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })?
        .filter_map(|row| match row {
            Ok((source, Some(number))) => Some(Ok((source, number))),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<rusqlite::Result<_>>()?;
    Ok(agents)
}

/// Recomputes the `agents` rows of `agents` from the stored events (one scan per source).
fn recompute_agents(
    connection: &mut Connection,
    agents: &BTreeSet<(String, String)>,
) -> Result<u64> {
    let sources: BTreeSet<&str> = agents.iter().map(|(source, _)| source.as_str()).collect();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (source, number) in agents {
        transaction.execute(
            "DELETE FROM main.agents WHERE source = ?1 AND agent_number = ?2",
            [source, number],
        )?;
    }
    for source in sources {
        let mut statement = transaction.prepare(
            "SELECT id, type, source, subject, time, timesource, specversion, datacontenttype, \
             dataschema, data FROM main.events WHERE source_name = ?1 \
             AND (type LIKE 'agent.%' OR json_extract(data, '$.agent_status') IS NOT NULL)",
        )?;
        let mut rows = statement.query([source])?;
        while let Some(row) = rows.next()? {
            let event = event_of_row(row)?;
            if let Some(update) = agent_update(&event) {
                if agents.contains(&(source.to_owned(), update.agent_number.to_owned())) {
                    writes::upsert_agent(&transaction, &update)?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(agents.len() as u64)
}

/// Numbers the call events `apply` added (they come without a `sequence`: the rebuilt file's
/// numbers may cover only the replay's scope) after their call's live ones, in insertion order;
/// the live events keep theirs (see `crate::sequence`).
fn number_added_events(connection: &mut Connection) -> Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute(
        "UPDATE main.events SET sequence = numbered.n FROM ( \
             SELECT e.seq, (SELECT coalesce(max(m.sequence), 0) FROM main.events m \
                 WHERE m.source_name = e.source_name AND m.subject = e.call_id AND m.call_id = e.call_id) \
               + row_number() OVER (PARTITION BY e.source_name, e.call_id ORDER BY e.seq) AS n \
             FROM main.events e WHERE e.sequence IS NULL AND e.call_id IS NOT NULL \
             AND e.call_id != '' AND e.subject = e.call_id AND e.type NOT LIKE 'agent.%' \
         ) AS numbered WHERE main.events.seq = numbered.seq",
        [],
    )?;
    transaction.commit()?;
    Ok(())
}

/// Rebuilds a [`CloudEvent`] from a row of `id, type, source, subject, time, timesource,
/// specversion, datacontenttype, dataschema, data`.
fn event_of_row(row: &rusqlite::Row<'_>) -> Result<CloudEvent> {
    let id: String = row.get(0)?;
    let data = serde_json::from_str(&row.get::<_, String>(9)?).map_err(|error| {
        SqliteSinkError::CorruptRow {
            table: "events",
            detail: format!("data of `{id}`: {error}"),
        }
    })?;
    Ok(CloudEvent {
        event_type: decode_event_type("events", &row.get::<_, String>(1)?)?,
        source: row.get(2)?,
        subject: row.get(3)?,
        time: decode_time("events", &row.get::<_, String>(4)?)?,
        timesource: match row.get::<_, String>(5)?.as_str() {
            "received" => TimeSource::Received,
            _ => TimeSource::Vendor,
        },
        specversion: row.get(6)?,
        datacontenttype: row.get(7)?,
        dataschema: row.get(8)?,
        mappingversion: None,
        sequence: None,
        data,
        id,
    })
}
