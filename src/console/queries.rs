//! The console's reads of the SQLite sink: short, indexed, paginated queries on a read-only
//! connection (a WAL reader never blocks the normalizer's commits). Every function is blocking
//! and runs on tokio's blocking pool.
//!
//! | page | query | index |
//! |---|---|---|
//! | Live | calls whose `first_event_at` is in the last hours | `calls_first_event_at` |
//! | Calls | newest first, keyset-paginated by `first_event_at`; by agent | `calls_first_event_at`, `calls_agent` |
//! | Call | the row by key; its events | primary key, `events_key` |
//! | Agents | the status board; recent changes per agent | primary key, `events_agent` |

use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;

/// Rows per list page.
pub const PAGE_ROWS: usize = 50;
/// Calls shown as in progress when their first event is at most this old (a call whose end
/// never arrived must not stay "live" forever). The Live query scans this range of
/// `calls_first_event_at`: with 12 hours it read ~17k rows at 1M calls a month (p99 85 ms in
/// `bench/console.sh`), with 4 hours a third of that.
const LIVE_WINDOW_HOURS: i64 = 4;
/// Ended calls stay on the Live page this long.
pub const RECENT_ENDED_MINUTES: i64 = 10;

/// Opens the sink read-only.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(2))?;
    Ok(connection)
}

/// Returns `time` as the sink stores it (fixed-width RFC 3339, so text order is time order).
pub fn encode_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// One `calls` row as the pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    pub source: String,
    pub call_id: String,
    pub direction: String,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub agent_number: Option<String>,
    pub agent_name: Option<String>,
    pub queue: Option<String>,
    pub first_event_at: String,
    pub ringing_at: Option<String>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub disposition: Option<String>,
    pub talk_seconds: Option<i64>,
    pub last_event_type: String,
    /// `ringing`, `talking`, `ended` or `started`.
    pub state: &'static str,
}

const CALL_COLUMNS: &str = "source, call_id, direction, caller, callee, agent_number, agent_name, \
     COALESCE(queue_name, queue), first_event_at, ringing_at, answered_at, ended_at, disposition, \
     talk_seconds, last_event_type";

fn call_row(row: &Row<'_>) -> rusqlite::Result<CallRow> {
    let ringing_at: Option<String> = row.get(9)?;
    let answered_at: Option<String> = row.get(10)?;
    let ended_at: Option<String> = row.get(11)?;
    let state = match (&ringing_at, &answered_at, &ended_at) {
        (_, _, Some(_)) => "ended",
        (_, Some(_), None) => "talking",
        (Some(_), None, None) => "ringing",
        (None, None, None) => "started",
    };
    Ok(CallRow {
        source: row.get(0)?,
        call_id: row.get(1)?,
        direction: row.get(2)?,
        caller: row.get(3)?,
        callee: row.get(4)?,
        agent_number: row.get(5)?,
        agent_name: row.get(6)?,
        queue: row.get(7)?,
        first_event_at: row.get(8)?,
        ringing_at,
        answered_at,
        ended_at,
        disposition: row.get(12)?,
        talk_seconds: row.get(13)?,
        last_event_type: row.get(14)?,
        state,
    })
}

/// The calls of the Live page.
#[derive(Debug, Serialize)]
pub struct LiveCalls {
    pub in_progress: Vec<CallRow>,
    pub recently_ended: Vec<CallRow>,
}

/// Calls in progress (newest first) and calls ended in the last minutes.
pub fn live_calls(connection: &Connection, now: DateTime<Utc>) -> rusqlite::Result<LiveCalls> {
    let since = encode_time(&(now - Duration::hours(LIVE_WINDOW_HOURS)));
    let ended_since = encode_time(&(now - Duration::minutes(RECENT_ENDED_MINUTES)));
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE first_event_at >= ?1 \
         AND (ended_at IS NULL OR ended_at >= ?2) ORDER BY first_event_at DESC LIMIT 500"
    ))?;
    let rows = statement
        .query_map([&since, &ended_since], call_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (recently_ended, in_progress) = rows.into_iter().partition(|row| row.state == "ended");
    Ok(LiveCalls {
        in_progress,
        recently_ended,
    })
}

/// The Calls page's search.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct CallSearch {
    /// A caller or callee number (raw or E.164), exact.
    pub number: Option<String>,
    /// A call id, exact.
    pub call: Option<String>,
    /// An agent number, exact.
    pub agent: Option<String>,
    /// First event at or after (RFC 3339 or `YYYY-MM-DDTHH:MM` as a browser sends it, UTC).
    pub from: Option<String>,
    /// First event before.
    pub to: Option<String>,
    /// Keyset cursor: the `first_event_at` of the previous page's last row.
    pub before: Option<String>,
}

impl CallSearch {
    fn clean(value: &Option<String>) -> Option<&str> {
        value
            .as_deref()
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }
}

/// Parses a time from a search form; `None` when empty or not a time.
pub fn parse_form_time(text: Option<&str>) -> Option<String> {
    let text = text?.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(encode_time(&time.with_timezone(&Utc)));
    }
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
        .ok()?;
    Some(encode_time(&naive.and_utc()))
}

/// How far back a number search looks when the form gives no start: numbers have no index
/// (every fold write would pay for four), so the search scans a bounded `first_event_at` range,
/// about 1 ms per 1,000 calls in it (`bench/console.sh`: 24 hours of a 1M-calls-a-month
/// database took 28 ms at p50 but 120 ms at p99 on a loaded machine).
pub const NUMBER_SEARCH_DEFAULT_HOURS: i64 = 6;

/// Returns one page of calls matching `search`, newest first. `sources` are the configured
/// source names (the agent search walks `calls_agent` once per source).
pub fn search_calls(
    connection: &Connection,
    search: &CallSearch,
    sources: &[String],
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<CallRow>> {
    let mut conditions = Vec::new();
    let mut values: Vec<String> = Vec::new();
    // The primary key is (source, call_id) and `calls_agent` (source, agent_number, ...): both
    // searches name every configured source, so each is one lookup per source, with or
    // without the statistics SQLite's skip-scan needs.
    let source_list = |values: &mut Vec<String>| {
        let mut placeholders = Vec::new();
        for source in sources {
            values.push(source.clone());
            placeholders.push(format!("?{}", values.len()));
        }
        placeholders.join(", ")
    };
    if let Some(call) = CallSearch::clean(&search.call) {
        values.push(call.to_owned());
        let call_param = values.len();
        let list = source_list(&mut values);
        conditions.push(format!("source IN ({list}) AND call_id = ?{call_param}"));
    }
    if let Some(agent) = CallSearch::clean(&search.agent) {
        values.push(agent.to_owned());
        let agent_param = values.len();
        let list = source_list(&mut values);
        conditions.push(format!(
            "source IN ({list}) AND agent_number = ?{agent_param}"
        ));
    }
    let mut from = parse_form_time(search.from.as_deref());
    if let Some(number) = CallSearch::clean(&search.number) {
        values.push(number.to_owned());
        let n = values.len();
        conditions.push(format!(
            "(caller = ?{n} OR callee = ?{n} OR caller_e164 = ?{n} OR callee_e164 = ?{n})"
        ));
        from.get_or_insert_with(|| {
            encode_time(&(now - Duration::hours(NUMBER_SEARCH_DEFAULT_HOURS)))
        });
    }
    let to = parse_form_time(search.to.as_deref());
    let before = parse_form_time(search.before.as_deref());
    for (time, operator) in [(from, ">="), (to, "<"), (before, "<")] {
        if let Some(time) = time {
            values.push(time);
            conditions.push(format!("first_event_at {operator} ?{}", values.len()));
        }
    }
    let filter = match conditions.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conditions.join(" AND ")),
    };
    let mut statement = connection.prepare(&format!(
        "SELECT {CALL_COLUMNS} FROM calls {filter} ORDER BY first_event_at DESC LIMIT {PAGE_ROWS}"
    ))?;
    let rows = statement
        .query_map(params_from_iter(values.iter()), call_row)?
        .collect();
    rows
}

/// One event of a call's timeline.
#[derive(Debug, Serialize)]
pub struct TimelineEvent {
    pub time: String,
    pub received_at: String,
    pub event_type: String,
    pub data: String,
}

/// A call's row and its events in vendor-time order.
pub fn call_timeline(
    connection: &Connection,
    source: &str,
    call_id: &str,
) -> rusqlite::Result<Option<(CallRow, Vec<TimelineEvent>)>> {
    let call = connection
        .query_row(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE source = ?1 AND call_id = ?2"),
            [source, call_id],
            call_row,
        )
        .optional()?;
    let Some(call) = call else {
        return Ok(None);
    };
    let mut statement = connection.prepare_cached(
        "SELECT time, received_at, type, data FROM events \
         WHERE source_name = ?1 AND subject = ?2 ORDER BY time, seq LIMIT 1000",
    )?;
    // A call's events have its call id as their subject (build.rs `subject_for`).
    let events = statement
        .query_map([source, call_id], |row| {
            Ok(TimelineEvent {
                time: row.get(0)?,
                received_at: row.get(1)?,
                event_type: row.get(2)?,
                data: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some((call, events)))
}

/// One `agents` row.
#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub source: String,
    pub agent_number: String,
    pub agent_name: Option<String>,
    pub status: String,
    pub raw_label: Option<String>,
    pub status_at: String,
}

/// The status board (by source and agent number).
pub fn agents(connection: &Connection) -> rusqlite::Result<Vec<AgentRow>> {
    let mut statement = connection.prepare_cached(
        "SELECT source, agent_number, agent_name, status, raw_label, status_at FROM agents \
         ORDER BY source, agent_number LIMIT 2000",
    )?;
    let rows = statement
        .query_map([], |row| {
            Ok(AgentRow {
                source: row.get(0)?,
                agent_number: row.get(1)?,
                agent_name: row.get(2)?,
                status: row.get(3)?,
                raw_label: row.get(4)?,
                status_at: row.get(5)?,
            })
        })?
        .collect();
    rows
}

/// An agent's recent status events (newest first).
pub fn agent_changes(
    connection: &Connection,
    source: &str,
    agent_number: &str,
) -> rusqlite::Result<Vec<TimelineEvent>> {
    let mut statement = connection.prepare_cached(
        "SELECT time, received_at, type, data FROM events \
         WHERE source_name = ?1 AND subject = ?2 AND subject LIKE 'agent/%' \
         ORDER BY time DESC LIMIT 50",
    )?;
    let subject = format!("agent/{agent_number}");
    let rows = statement
        .query_map([source, subject.as_str()], |row| {
            Ok(TimelineEvent {
                time: row.get(0)?,
                received_at: row.get(1)?,
                event_type: row.get(2)?,
                data: row.get(3)?,
            })
        })?
        .collect();
    rows
}
