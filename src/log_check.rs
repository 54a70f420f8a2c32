//! `callhook log check`: the operator's fsck of the raw log, and the sink's consumed offsets
//! that both the check and every embedded start hold the raw log to.
//!
//! The check itself lives in `callhook_rawlog::embedded::check`; this module finds the files
//! from the config (the embedded log, or the receiver's spool in Kafka mode), reads the SQLite
//! sink's stored offsets read-only, prints the report and turns it into an exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use callhook_rawlog::embedded::check::{check_file, CheckOptions};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::config::Settings;

/// Runs the check on the raw log files `settings` name; returns whether every file is clean.
pub fn run(settings: &Settings, repair: bool) -> anyhow::Result<bool> {
    let mut clean = true;
    for (path, consumer) in raw_log_files(settings) {
        let consumed = match &consumer {
            Some(group) => sink_offsets(&settings.sqlite.path, group)?,
            None => BTreeMap::new(),
        };
        let options = CheckOptions { consumed, repair };
        let report = check_file(&path, &options)
            .with_context(|| format!("cannot check `{}`", path.display()))?;
        println!("{report}");
        clean &= report.is_clean();
    }
    Ok(clean)
}

/// The raw log files of the config, each with the sink consumer that reads it (the embedded
/// log is read by the embedded normalizer; the spool only by its forwarder).
fn raw_log_files(settings: &Settings) -> Vec<(PathBuf, Option<String>)> {
    match &settings.kafka {
        Some(kafka) => vec![(kafka.log.spool.path.clone(), None)],
        None => vec![(
            settings.log.path.clone(),
            Some(settings.normalizer.consumer_group.clone()),
        )],
    }
}

/// Returns the offsets `consumer` stored in the SQLite sink at `path` (read-only; none when the
/// sink does not exist yet). Records below them were acknowledged and consumed.
pub fn sink_offsets(path: &Path, consumer: &str) -> anyhow::Result<BTreeMap<u32, u64>> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let read = || -> rusqlite::Result<BTreeMap<u32, u64>> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let table: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'consumer_offsets'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if table.is_none() {
            return Ok(BTreeMap::new());
        }
        let mut statement = conn
            .prepare("SELECT partition, next_offset FROM consumer_offsets WHERE consumer = ?1")?;
        let rows = statement.query_map([consumer], |row| {
            Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?))
        })?;
        rows.map(|row| {
            row.map(|(partition, offset)| (partition, u64::try_from(offset).unwrap_or(0)))
        })
        .collect()
    };
    read().with_context(|| format!("cannot read the consumed offsets in `{}`", path.display()))
}
