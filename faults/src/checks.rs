//! The checks after a fault, each against the real files: the raw log holds every
//! acknowledged push, every `calls` row is the fold of its call's events, both SQLite files
//! pass `PRAGMA integrity_check`, and `callhook log check` finds the raw log clean.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use callhook_rawlog::embedded::{LogSnapshot, ReadRecord};
use callhook_schemas::{CallEventData, EventType};
use callhook_simulator::ledger::Ledger;
use callhook_sinks::sqlite::calls_fold::{fold_call, CallRow, StoredCallEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

/// A push as the raw log stores it: a hash of source, method, query and body (hashed, so a
/// soak's millions of records fit in memory).
pub type RawKey = u64;

/// The raw records of a log: a count per push, and the hashes of the bodies alone.
#[derive(Debug, Clone, Default)]
pub struct RawRecords {
    /// Records per push.
    pub counts: HashMap<RawKey, u64>,
    /// Hashes of the bodies seen, whatever their metadata.
    pub bodies: std::collections::HashSet<u64>,
}

impl RawRecords {
    /// Counts one stored record.
    pub fn add(&mut self, source: &str, method: &str, query: Option<&str>, body: &[u8]) {
        *self
            .counts
            .entry(raw_key(source, method, query, body))
            .or_insert(0) += 1;
        self.bodies.insert(hash_of(&body));
    }
}

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

/// The key of a push (an empty query counts as none).
pub fn raw_key(source: &str, method: &str, query: Option<&str>, body: &[u8]) -> RawKey {
    hash_of(&(
        source,
        method,
        query.filter(|query| !query.is_empty()),
        body,
    ))
}

/// Opens a SQLite file read-only.
pub fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open `{}`", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Returns the `PRAGMA integrity_check` problems of a SQLite file (empty: ok).
pub fn integrity(path: &Path) -> Vec<String> {
    let check = || -> anyhow::Result<Vec<String>> {
        let conn = open_read_only(path)?;
        let mut problems = Vec::new();
        conn.pragma_query(None, "integrity_check", |row| {
            let line: String = row.get(0)?;
            if line != "ok" {
                problems.push(line);
            }
            Ok(())
        })?;
        Ok(problems)
    };
    check().unwrap_or_else(|error| vec![format!("{}: {error:#}", path.display())])
}

/// Acknowledged pushes against the raw log.
#[derive(Debug, Clone, Default)]
pub struct RawCheck {
    /// Acknowledged sendings not in the raw log.
    pub missing: u64,
    /// The first missing pushes: source, method, query, the body's start, and whether a raw
    /// record with the same body but other metadata exists.
    pub missing_examples: Vec<String>,
    /// Raw records beyond every sending of the same bytes (acknowledged or not).
    pub excess: u64,
}

/// Compares the ledger with the raw records (`raw` counts each stored push). Only the ledger's
/// sources are compared (the suite's own probes go to another source).
pub fn raw_check(ledger: &Ledger, raw: &RawRecords) -> RawCheck {
    let key = |push: &callhook_simulator::ledger::PushLine| -> RawKey {
        raw_key(
            &push.source,
            &push.method,
            push.query.as_deref(),
            push.body.as_bytes(),
        )
    };
    let mut acknowledged: HashMap<RawKey, (u64, usize)> = HashMap::new();
    let mut sent: HashMap<RawKey, u64> = HashMap::new();
    for (index, push) in ledger.pushes.iter().enumerate() {
        acknowledged.entry(key(push)).or_insert((0, index)).0 += 1;
        *sent.entry(key(push)).or_default() += 1;
    }
    for push in &ledger.unacknowledged {
        *sent.entry(key(push)).or_default() += 1;
    }
    let mut check = RawCheck::default();
    for (push_key, (count, index)) in &acknowledged {
        let stored = raw.counts.get(push_key).copied().unwrap_or(0);
        let missing = count.saturating_sub(stored);
        check.missing += missing;
        if missing > 0 && check.missing_examples.len() < 3 {
            let push = &ledger.pushes[*index];
            let body_stored = raw.bodies.contains(&hash_of(&push.body.as_bytes()));
            check.missing_examples.push(format!(
                "{} {} {:?} {:.80} (acknowledged {count}, stored {stored}; the body is stored under other metadata: {body_stored})",
                push.source, push.method, push.query, push.body
            ));
        }
    }
    for (push, stored) in &raw.counts {
        if let Some(sendings) = sent.get(push) {
            check.excess += stored.saturating_sub(*sendings);
        }
    }
    check
}

/// Counts the records of an embedded raw log (or spool) file, compacted ones included (read
/// through the log's own reader, as replay reads it).
pub fn embedded_raw_records(path: &Path) -> anyhow::Result<RawRecords> {
    let snapshot = LogSnapshot::open(path)?;
    let mut records = RawRecords::default();
    for partition in 0..snapshot.partitions() {
        let mut next = 0;
        loop {
            let chunk = snapshot.read_each(partition, next, 5_000)?;
            let Some(last) = chunk.last() else {
                break;
            };
            next = last.position().offset + 1;
            for record in chunk {
                match record {
                    ReadRecord::Decoded(stored) => {
                        let raw = &stored.record;
                        records.add(&raw.source, &raw.method, raw.query.as_deref(), &raw.body);
                    }
                    ReadRecord::Undecodable(kept) => {
                        records.add(&kept.source, "", None, &kept.body);
                    }
                }
            }
        }
    }
    Ok(records)
}

/// Returns the sum of a raw log's next offsets (its end), read-only.
pub fn raw_end(path: &Path) -> anyhow::Result<u64> {
    let conn = open_read_only(path)?;
    let total: i64 = conn.query_row(
        "SELECT COALESCE(SUM(next_offset), 0) FROM log_partitions",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Returns the sum of a consumer's stored offsets in the sink (0 when none yet).
pub fn sink_consumed(db: &Path, consumer: &str) -> u64 {
    let read = || -> anyhow::Result<u64> {
        let conn = open_read_only(db)?;
        let total: i64 = conn.query_row(
            "SELECT COALESCE(SUM(next_offset), 0) FROM consumer_offsets WHERE consumer = ?1",
            [consumer],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(total).unwrap_or(0))
    };
    read().unwrap_or(0)
}

/// `calls` rows against the fold of their events.
#[derive(Debug, Clone, Default)]
pub struct CallsCheck {
    /// Calls rows compared.
    pub rows: u64,
    /// Rows that differ from the fold, missing rows, rows without events.
    pub mismatches: u64,
    /// The first differences.
    pub examples: Vec<String>,
}

/// Recomputes every `calls` row from the `events` table with the sink's own fold and compares
/// it, column by column, with the stored row.
pub fn calls_check(db: &Path) -> anyhow::Result<CallsCheck> {
    let conn = open_read_only(db)?;
    let mut stored: BTreeMap<(String, String), Vec<Option<String>>> = BTreeMap::new();
    let mut statement = conn.prepare(&format!(
        "SELECT source, call_id, {} FROM calls",
        COLUMNS.join(", ")
    ))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(COLUMNS.len());
        for index in 0..COLUMNS.len() {
            values.push(text(row.get_ref(index + 2)?));
        }
        stored.insert((row.get(0)?, row.get(1)?), values);
    }
    let mut check = CallsCheck::default();
    // One call at a time, in index order: memory stays bounded by the largest call.
    let mut statement = conn.prepare(
        "SELECT source_name, call_id, id, type, time, data FROM events \
         WHERE call_id IS NOT NULL ORDER BY source_name, call_id",
    )?;
    let mut rows = statement.query([])?;
    let mut current: Option<(String, String)> = None;
    let mut call_events = Vec::new();
    loop {
        let row = rows.next()?;
        let key = match row {
            Some(row) => Some((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
            None => None,
        };
        if key != current {
            if let Some((source, call_id)) = current.take() {
                judge_call(
                    &mut check,
                    &mut stored,
                    source,
                    call_id,
                    std::mem::take(&mut call_events),
                )?;
            }
            current = key.clone();
        }
        let Some(row) = row else {
            break;
        };
        call_events.push(stored_event(row)?);
    }
    let leftover: Vec<(String, String)> = stored.keys().cloned().collect();
    for (source, call_id) in leftover {
        note(
            &mut check,
            format!("{source}/{call_id}: a `calls` row without call events"),
        );
    }
    Ok(check)
}

fn note(check: &mut CallsCheck, text: String) {
    check.mismatches += 1;
    if check.examples.len() < 5 {
        check.examples.push(text);
    }
}

fn stored_event(row: &rusqlite::Row<'_>) -> anyhow::Result<StoredCallEvent> {
    let id: String = row.get(2)?;
    let type_name: String = row.get(3)?;
    let event_type = EventType::ALL
        .into_iter()
        .find(|candidate| candidate.as_str() == type_name)
        .with_context(|| format!("event {id}: unknown type `{type_name}`"))?;
    let time: String = row.get(4)?;
    let time = DateTime::parse_from_rfc3339(&time)
        .with_context(|| format!("event {id}: time `{time}`"))?
        .with_timezone(&Utc);
    let data: String = row.get(5)?;
    let data: CallEventData =
        serde_json::from_str(&data).with_context(|| format!("event {id}: data"))?;
    Ok(StoredCallEvent {
        id,
        event_type,
        time,
        data,
    })
}

/// Folds one call's events and compares the result with its stored row (removed from `stored`).
fn judge_call(
    check: &mut CallsCheck,
    stored: &mut BTreeMap<(String, String), Vec<Option<String>>>,
    source: String,
    call_id: String,
    events: Vec<StoredCallEvent>,
) -> anyhow::Result<()> {
    let Some(expected) = fold_call(&source, &call_id, events) else {
        return Ok(());
    };
    let Some(values) = stored.remove(&(source.clone(), call_id.clone())) else {
        note(check, format!("{source}/{call_id}: no `calls` row"));
        return Ok(());
    };
    check.rows += 1;
    let wanted = columns_of(&expected)?;
    let differing = COLUMNS
        .iter()
        .zip(values.iter().zip(&wanted))
        .find(|(_, (found, want))| found != want);
    if let Some((column, (found, want))) = differing {
        note(
            check,
            format!("{source}/{call_id}: `{column}` is {found:?}, the fold says {want:?}"),
        );
    }
    Ok(())
}

/// The `calls` columns compared, in `SELECT` order.
const COLUMNS: [&str; 24] = [
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
];

fn text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(number) => Some(number.to_string()),
        ValueRef::Real(number) => Some(number.to_string()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}

/// The sink's time encoding (fixed-width RFC 3339, nanoseconds, `Z`).
fn time(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A folded row as the sink writes it (see `sinks/src/sqlite/writes.rs`).
fn columns_of(row: &CallRow) -> anyhow::Result<Vec<Option<String>>> {
    let times = |value: &Option<DateTime<Utc>>| value.as_ref().map(time);
    Ok(vec![
        Some(row.vendor.clone()),
        Some(row.direction.as_str().to_owned()),
        row.caller.as_ref().map(|number| number.raw.clone()),
        row.caller.as_ref().and_then(|number| number.e164.clone()),
        row.callee.as_ref().map(|number| number.raw.clone()),
        row.callee.as_ref().and_then(|number| number.e164.clone()),
        row.agent_number.clone(),
        row.agent_name.clone(),
        row.queue.clone(),
        row.queue_name.clone(),
        row.parent_call_id.clone(),
        Some(time(&row.first_event_at)),
        times(&row.started_at),
        times(&row.ringing_at),
        times(&row.answered_at),
        times(&row.ended_at),
        row.disposition.map(|value| value.as_str().to_owned()),
        row.disposition_raw.clone(),
        row.talk_seconds
            .map(|seconds| seconds.min(i64::MAX as u64).to_string()),
        row.recording_url.clone(),
        Some(serde_json::to_string(&row.correlation)?),
        Some(row.events_count.to_string()),
        Some(row.last_event_type.as_str().to_owned()),
        Some(time(&row.last_event_at)),
    ])
}

/// Runs `callhook log check --config CONFIG --data-dir DIR`; returns (clean, report text).
pub fn log_check(
    bin: &Path,
    config: &Path,
    data_dir: &Path,
    repair: bool,
) -> anyhow::Result<(bool, String)> {
    let mut command = Command::new(bin);
    command
        .args(["log", "check", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir);
    if repair {
        command.arg("--repair");
    }
    let output = command.output().context("cannot run callhook log check")?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}
