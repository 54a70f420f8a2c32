//! Builders shared by the SQLite sink's integration tests: hand-made canonical events, pushes,
//! batches, and raw reads of the database through a second connection.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use callhook_schemas::{CallEventData, CloudEvent, EventType, TimeSource, DATA_SCHEMA_URI};
use callhook_sinks::{SinkBatch, SinkItem, SqliteSink, SqliteSinkConfig};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rusqlite::types::Value;

/// The configured source name every test event uses.
pub const SOURCE: &str = "moor-main";

/// The consumer name every test batch uses.
pub const CONSUMER: &str = "normalizer";

/// Returns a fresh temporary directory, on tmpfs (`/dev/shm`) when the machine has one.
///
/// These tests check what the sink writes, not how long fsync takes; on a disk every commit
/// may wait several milliseconds for an fsync (the WAL at checkpoints), which would make the exhaustive
/// permutation tests take minutes. The files are still real SQLite files in WAL mode.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("callhook-sinks-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory can be created")
}

/// Opens a sink on `<dir>/callhook.db` with the default config.
pub fn open_sink(dir: &Path) -> SqliteSink {
    let settings = SqliteSinkConfig::default()
        .validate(dir)
        .expect("default config is valid");
    SqliteSink::open(&settings).expect("sink opens")
}

/// Returns 2024-05-01T02:00:00Z plus `seconds`.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap() + TimeDelta::seconds(seconds)
}

/// Returns a 32-hex-digit event id for `n`.
pub fn event_id(n: u128) -> String {
    format!("{n:032x}")
}

/// Returns the lookup key of the event `id` of `call_id` from [`SOURCE`].
pub fn call_key<'a>(call_id: &'a str, id: &'a str) -> callhook_sinks::EventKey<'a> {
    callhook_sinks::EventKey {
        source_name: SOURCE,
        subject: call_id,
        id,
    }
}

/// Returns an event of `call_id` with empty data apart from the call id.
pub fn call_event(
    id: String,
    event_type: EventType,
    time: DateTime<Utc>,
    call_id: &str,
) -> CloudEvent {
    let mut data = CallEventData::new("7moor", "7moor.v7", event_type.as_str(), SOURCE);
    data.call_id = Some(call_id.to_owned());
    envelope(id, event_type, time, call_id.to_owned(), data)
}

/// Returns an agent event for `agent_number` with empty data apart from the agent.
pub fn agent_event(
    id: String,
    event_type: EventType,
    time: DateTime<Utc>,
    agent_number: &str,
) -> CloudEvent {
    let mut data = CallEventData::new("7moor", "7moor.v7", event_type.as_str(), SOURCE);
    data.agent = Some(callhook_schemas::Agent {
        number: Some(agent_number.to_owned()),
        name: None,
        extension: None,
    });
    envelope(id, event_type, time, format!("agent/{agent_number}"), data)
}

fn envelope(
    id: String,
    event_type: EventType,
    time: DateTime<Utc>,
    subject: String,
    data: CallEventData,
) -> CloudEvent {
    CloudEvent {
        id,
        specversion: "1.0".to_owned(),
        source: "7moor/20000153".to_owned(),
        subject,
        event_type,
        time,
        timesource: TimeSource::Vendor,
        datacontenttype: "application/json".to_owned(),
        dataschema: DATA_SCHEMA_URI.to_owned(),
        mappingversion: Some(2),
        sequence: None,
        data,
    }
}

/// Returns a push item of [`SOURCE`] received at [`at`]`(1000)`.
pub fn push(dedupe_key: &str, events: Vec<CloudEvent>) -> SinkItem {
    SinkItem::Push {
        raw_ref: format!("push:{dedupe_key}"),
        source: SOURCE.to_owned(),
        dedupe_key: dedupe_key.to_owned(),
        received_at: at(1000),
        events: callhook_sinks::SinkEvent::encode_all(events).expect("events encode"),
    }
}

/// Returns a dead-letter item of [`SOURCE`].
pub fn dead_letter(raw_ref: &str, reason: &str) -> SinkItem {
    SinkItem::DeadLetter {
        raw_ref: raw_ref.to_owned(),
        source: SOURCE.to_owned(),
        reason: reason.to_owned(),
        detail: format!("detail of {raw_ref}"),
        received_at: at(1000),
    }
}

/// Returns a batch of [`CONSUMER`].
pub fn batch(items: Vec<SinkItem>, offsets: Vec<(u32, u64)>) -> SinkBatch {
    SinkBatch {
        consumer: CONSUMER.to_owned(),
        offsets,
        items,
    }
}

/// Runs `sql` on a second connection to the database in `dir` and returns every row.
pub fn rows(dir: &Path, sql: &str) -> Vec<Vec<Value>> {
    let connection = rusqlite::Connection::open(dir.join("callhook.db")).expect("database opens");
    let mut statement = connection.prepare(sql).expect("query prepares");
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .map(|index| row.get::<_, Value>(index))
                .collect()
        })
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

/// Runs a `SELECT count(*)`-shaped `sql` and returns the number.
pub fn count(dir: &Path, sql: &str) -> i64 {
    match rows(dir, sql).first().and_then(|row| row.first()) {
        Some(Value::Integer(number)) => *number,
        other => panic!("`{sql}` returned {other:?}"),
    }
}

/// Returns every permutation of `0..n`, in lexicographic order.
pub fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn extend(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == n {
            out.push(prefix.clone());
            return;
        }
        for next in 0..n {
            if !prefix.contains(&next) {
                prefix.push(next);
                extend(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::new(), n, &mut out);
    out
}

/// Returns a phone number.
pub fn phone(
    raw: &str,
    e164: Option<&str>,
    kind: callhook_schemas::NumberKind,
) -> callhook_schemas::PhoneNumber {
    callhook_schemas::PhoneNumber {
        raw: raw.to_owned(),
        e164: e164.map(str::to_owned),
        kind,
    }
}

/// Returns an agent with a number and a name.
pub fn agent(number: &str, name: &str) -> Option<callhook_schemas::Agent> {
    Some(callhook_schemas::Agent {
        number: Some(number.to_owned()),
        name: Some(name.to_owned()),
        extension: None,
    })
}

/// Returns a disposition.
pub fn disposition(
    value: callhook_schemas::DispositionValue,
    raw: Option<&str>,
) -> Option<callhook_schemas::Disposition> {
    Some(callhook_schemas::Disposition {
        value,
        raw: raw.map(str::to_owned),
    })
}
