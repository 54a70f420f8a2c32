//! Dead letters an operator works with: listing them, and redriving them through a fixed
//! mapping (`callhook dead-letters`).
//!
//! A dead letter is *open* until its record maps: [`super::SqliteSink::redrive`] stores the events of
//! the records that map now, with the push-level dedupe as always, and marks their dead
//! letters resolved in the same transaction, so a redrive that dies midway leaves every dead
//! letter either open or resolved with its events stored. Records that still do not map keep
//! their dead letter, with the reason the current mapping gives. Redriving again changes
//! nothing: resolved dead letters are not redriven, and the events' ids are deterministic.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection};
use serde::Serialize;

use super::codec::{decode_time, encode_time};
use super::error::Result;

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredDeadLetter {
    /// Where its raw record sits (`partition:offset`, or `topic:partition:offset`).
    pub raw_ref: String,
    /// The source it arrived on.
    pub source: String,
    /// The reason code.
    pub reason: String,
    /// The detail.
    pub detail: String,
    /// When the push was received.
    pub received_at: DateTime<Utc>,
    /// When it was resolved (its record maps now), if it was.
    pub resolved_at: Option<DateTime<Utc>>,
    /// How: `redrive` or `replay`.
    pub resolution: Option<String>,
}

/// Which dead letters to list or redrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only those received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this raw record.
    pub raw_ref: Option<String>,
    /// Resolved ones too.
    pub include_resolved: bool,
    /// At most this many (newest first).
    pub limit: Option<u64>,
}

/// Returns the dead letters `filter` selects, newest first.
pub fn list(connection: &Connection, filter: &DeadLetterFilter) -> Result<Vec<StoredDeadLetter>> {
    let mut sql = String::from(
        "SELECT raw_ref, source, reason, detail, received_at, resolved_at, resolution \
         FROM dead_letters WHERE 1",
    );
    let mut values = Vec::new();
    if !filter.include_resolved {
        sql.push_str(" AND resolved_at IS NULL");
    }
    let mut condition = |column: &str, op: &str, value: Option<String>| {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} {op} ?"));
            values.push(Sql::Text(value));
        }
    };
    condition("source", "=", filter.source.clone());
    condition("reason", "=", filter.reason.clone());
    condition("received_at", ">=", filter.since.as_ref().map(encode_time));
    condition("raw_ref", "=", filter.raw_ref.clone());
    sql.push_str(" ORDER BY seq DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query(params_from_iter(values.iter()))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(StoredDeadLetter {
            raw_ref: row.get(0)?,
            source: row.get(1)?,
            reason: row.get(2)?,
            detail: row.get(3)?,
            received_at: decode_time("dead_letters", &row.get::<_, String>(4)?)?,
            resolved_at: row
                .get::<_, Option<String>>(5)?
                .map(|text| decode_time("dead_letters", &text))
                .transpose()?,
            resolution: row.get(6)?,
        });
    }
    Ok(found)
}

/// Dead letters by state (`open` or `resolved`) and reason.
pub fn counts_by_state(connection: &Connection) -> Result<Vec<(&'static str, String, u64)>> {
    let mut statement = connection.prepare_cached(
        "SELECT resolved_at IS NULL, reason, count(*) FROM dead_letters GROUP BY 1, 2",
    )?;
    let rows = statement.query_map([], |row| {
        let state = if row.get::<_, bool>(0)? {
            "open"
        } else {
            "resolved"
        };
        Ok((state, row.get(1)?, row.get::<_, i64>(2)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveOutcome {
    /// Dead letters whose record maps now: resolved, their events stored.
    pub resolved: u64,
    /// Events stored for them (a re-sent push's events were already stored: 0 for it).
    pub events_inserted: u64,
    /// Dead letters that still do not map.
    pub still_dead: u64,
    /// Of those, how many got another reason.
    pub reason_changed: u64,
}
