//! Reading the projection tables of the SQLite sink and of the PostgreSQL sink in one
//! comparable form, so that tests can assert that both hold the same rows.
//!
//! Each row becomes a list of optional strings, in a fixed column order per table: times as
//! RFC 3339 UTC with microseconds (PostgreSQL's `timestamptz` precision; SQLite keeps
//! nanoseconds), JSON as canonical text (keys sorted; `jsonb` reorders them), numbers as
//! decimal text. Rows are sorted.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

/// A table's rows, each a list of optional column texts.
pub type Rows = Vec<Vec<Option<String>>>;

/// How a column is compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Time,
    Json,
}

use Kind::{Integer, Json, Text, Time};

/// The compared columns of each table.
fn columns(table: &str) -> Vec<(&'static str, Kind)> {
    match table {
        "events" => vec![
            ("id", Text),
            ("type", Text),
            ("source", Text),
            ("subject", Text),
            ("time", Time),
            ("timesource", Text),
            ("specversion", Text),
            ("datacontenttype", Text),
            ("dataschema", Text),
            ("source_name", Text),
            ("call_id", Text),
            ("received_at", Time),
            ("data", Json),
            ("mapping_version", Integer),
            // Since v1.1.
            ("sequence", Integer),
        ],
        "calls" => vec![
            ("source", Text),
            ("call_id", Text),
            ("vendor", Text),
            ("direction", Text),
            ("caller", Text),
            ("caller_e164", Text),
            ("callee", Text),
            ("callee_e164", Text),
            ("agent_number", Text),
            ("agent_name", Text),
            ("queue", Text),
            ("queue_name", Text),
            ("parent_call_id", Text),
            ("first_event_at", Time),
            ("started_at", Time),
            ("ringing_at", Time),
            ("answered_at", Time),
            ("ended_at", Time),
            ("disposition", Text),
            ("disposition_raw", Text),
            ("talk_seconds", Integer),
            ("recording_url", Text),
            ("correlation", Json),
            ("events_count", Integer),
            ("last_event_type", Text),
            ("last_event_at", Time),
            ("conversation_id", Text),
            ("leg", Text),
            ("queue_joined_at", Time),
            ("queue_left_at", Time),
            ("queue_seconds", Integer),
            ("abandon_point", Text),
            ("disconnect_reason", Text),
            ("disconnect_reason_raw", Text),
            ("ivr_path", Json),
            // Since v1.1.
            ("status", Text),
        ],
        "agents" => vec![
            ("source", Text),
            ("agent_number", Text),
            ("status", Text),
            ("raw_code", Text),
            ("raw_label", Text),
            ("agent_name", Text),
            ("status_at", Time),
            ("event_id", Text),
        ],
        "conversations" => vec![
            ("source", Text),
            ("conversation_id", Text),
            ("legs", Integer),
            ("first_started_at", Time),
            ("last_ended_at", Time),
            ("total_talk_seconds", Integer),
            ("agents", Json),
            ("answered", Integer),
            ("final_disposition", Text),
            ("final_disconnect_reason", Text),
            ("final_abandon_point", Text),
        ],
        "dead_letters" => vec![
            ("raw_ref", Text),
            ("source", Text),
            ("reason", Text),
            ("detail", Text),
            ("received_at", Time),
        ],
        other => panic!("no comparable columns for table `{other}`"),
    }
}

/// Returns `table`'s rows from the SQLite sink's database file.
pub fn sqlite_rows(database: &Path, table: &str) -> Rows {
    let columns = columns(table);
    let connection = rusqlite::Connection::open(database).expect("sqlite database opens");
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let sql = format!("SELECT {} FROM {table}", names.join(", "));
    let mut statement = connection.prepare(&sql).expect("query prepares");
    let mut rows: Rows = statement
        .query_map([], |row| {
            Ok(columns
                .iter()
                .enumerate()
                .map(|(index, (_, kind))| {
                    let value: rusqlite::types::Value = row.get(index).expect("column reads");
                    match value {
                        rusqlite::types::Value::Null => None,
                        rusqlite::types::Value::Integer(n) => Some(n.to_string()),
                        rusqlite::types::Value::Text(text) => Some(normalize(*kind, &text)),
                        other => Some(format!("{other:?}")),
                    }
                })
                .collect())
        })
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("rows read");
    rows.sort();
    rows
}

/// Returns `table`'s rows from the PostgreSQL sink's database at `url`.
pub fn postgres_rows(url: &str, table: &str) -> Rows {
    let columns = columns(table);
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("postgres connects");
    let select: Vec<String> = columns
        .iter()
        .map(|(name, kind)| match kind {
            Text => (*name).to_owned(),
            Integer => format!("{name}::bigint::text"),
            Time => {
                format!("to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            }
            Json => format!("{name}::text"),
        })
        .collect();
    let sql = format!("SELECT {} FROM {table}", select.join(", "));
    let mut rows: Rows = client
        .query(&sql, &[])
        .expect("query runs")
        .iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(index, (_, kind))| {
                    let text: Option<String> = row.get(index);
                    text.map(|text| match kind {
                        Json => normalize(Json, &text),
                        _ => text,
                    })
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

fn normalize(kind: Kind, text: &str) -> String {
    match kind {
        Time => DateTime::parse_from_rfc3339(text)
            .map(|time| {
                time.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
            })
            .unwrap_or_else(|_| text.to_owned()),
        Json => serde_json::from_str::<serde_json::Value>(text)
            .map(|value| canonical(&value))
            .unwrap_or_else(|_| text.to_owned()),
        Text | Integer => text.to_owned(),
    }
}

/// JSON with object keys sorted at every level, numbers as written.
fn canonical(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, String> = map
                .iter()
                .map(|(key, value)| (key, canonical(value)))
                .collect();
            let fields: Vec<String> = sorted
                .into_iter()
                .map(|(key, value)| format!("{}:{value}", serde_json::Value::String(key.clone())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}
