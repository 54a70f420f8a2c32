//! `callhook simulate --verify`: checks a sink database against a ledger.
//!
//! What it checks (each failure is a [`Mismatch`] with a kind and a readable detail):
//!
//! 1. **Every acknowledged push is accounted for**: for one of its candidate dedupe keys
//!    ([`expect`]) the first event id it yields is in `events` (the sink recognises a push by
//!    its first event's deterministic id), and so is every other event id that key yields
//!    (`push_missing`, `events_missing`). A ledger push the mapper rejects is
//!    `unmappable_push`.
//! 2. **No duplicate or stray events**: every event of a ledger source received during the
//!    run (± the clock skew) is an event of a ledger push (`unexpected_event`); a push stored
//!    under more keys than it was sent times is `stored_too_often`. A vendor retry of an
//!    exact-key push therefore must not have added a row. (A retry of a time-bucketed push that
//!    crossed a slot boundary is a new event by the mapper's design and is counted, not
//!    flagged.)
//! 3. **One `calls` row per simulated call, as expected**: for each call whose every push was
//!    acknowledged, the row exists with the expected direction, disposition and parent
//!    (`call_missing`, `call_direction`, `call_disposition`, `call_parent`); no other call
//!    appears among the run's events (`unexpected_call`). Calls with an unacknowledged push
//!    are counted as incomplete and not checked.
//! 4. **No dead letters** for the ledger's sources during the run (`dead_letter`).
//!
//! With `wait`, the checks are repeated until they pass or the time is up, so the verifier
//! can run while the normalizer catches up.

mod db;
pub mod expect;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use crate::ledger::{CallLine, Ledger};
use db::Database;
use expect::{expect, group_pushes, merge_indistinguishable, ExpectedPush};
pub use report::{Mismatch, MismatchKind, VerifyReport};

/// Why verification could not run (a failed check is a [`Mismatch`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The database could not be opened or read.
    #[error("database `{path}`: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The ledger has no acknowledged push.
    #[error("the ledger holds no acknowledged push: nothing to verify")]
    EmptyLedger,
}

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The sink database (`<data_dir>/callhook.db`).
    pub db: PathBuf,
    /// How long to keep re-checking while there are mismatches.
    pub wait: Duration,
    /// How far the receiver's clock may be from the simulator's.
    pub clock_skew: Duration,
}

/// Checks the database against the ledger, re-checking for up to `options.wait`.
pub fn verify(ledger: &Ledger, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    if ledger.pushes.is_empty() {
        return Err(VerifyError::EmptyLedger);
    }
    let plan = Plan::new(ledger, options.clock_skew);
    let started = Instant::now();
    loop {
        let report = match Database::open(&options.db) {
            Ok(database) => plan.check(&database),
            Err(error) if started.elapsed() >= options.wait => {
                return Err(VerifyError::Database {
                    path: options.db.clone(),
                    source: error,
                })
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        let mut report = report.map_err(|source| VerifyError::Database {
            path: options.db.clone(),
            source,
        })?;
        if report.mismatch_count == 0 || started.elapsed() >= options.wait {
            report.waited_seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Everything computed once from the ledger.
struct Plan<'a> {
    ledger: &'a Ledger,
    expected: Vec<ExpectedPush>,
    unmappable: Vec<Mismatch>,
    sources: BTreeSet<String>,
    window: (DateTime<Utc>, DateTime<Utc>),
    /// Acknowledged distinct pushes per `(flow, call id)`.
    acknowledged_per_call: BTreeMap<(u64, String), BTreeSet<u32>>,
}

impl<'a> Plan<'a> {
    fn new(ledger: &'a Ledger, skew: Duration) -> Plan<'a> {
        let mut expected = Vec::new();
        let mut unmappable = Vec::new();
        for group in group_pushes(ledger) {
            let acknowledged = group.acknowledged > 0;
            match expect(group.clone(), skew) {
                Ok(push) => expected.push(push),
                Err(reason) if acknowledged => unmappable.push(Mismatch::new(
                    MismatchKind::UnmappablePush,
                    &group.source,
                    group.example.2.as_deref(),
                    format!(
                        "flow {} push {}: {reason}",
                        group.example.0, group.example.1
                    ),
                )),
                Err(_) => {}
            }
        }
        let expected = merge_indistinguishable(expected);
        let all = ledger.pushes.iter().chain(&ledger.unacknowledged);
        let skew = TimeDelta::from_std(skew).unwrap_or(TimeDelta::seconds(2));
        let from = all
            .clone()
            .map(|p| p.sent_at)
            .min()
            .unwrap_or_else(Utc::now)
            - skew;
        let to = all.map(|p| p.answered_at).max().unwrap_or_else(Utc::now) + skew;
        let mut acknowledged_per_call: BTreeMap<(u64, String), BTreeSet<u32>> = BTreeMap::new();
        for push in &ledger.pushes {
            if let Some(call_id) = &push.call_id {
                acknowledged_per_call
                    .entry((push.flow, call_id.clone()))
                    .or_default()
                    .insert(push.seq);
            }
        }
        Plan {
            ledger,
            expected,
            unmappable,
            sources: ledger.pushes.iter().map(|p| p.source.clone()).collect(),
            window: (from, to),
            acknowledged_per_call,
        }
    }

    /// Runs every check once against the database as it is now.
    fn check(&self, database: &Database) -> rusqlite::Result<VerifyReport> {
        let mut report = VerifyReport {
            ledger_pushes: self.ledger.pushes.len() as u64,
            unacknowledged_pushes: self.ledger.unacknowledged.len() as u64,
            calls: self.ledger.calls.len() as u64,
            ..VerifyReport::default()
        };
        for mismatch in &self.unmappable {
            report.add(mismatch.clone());
        }
        let allowed = self.check_pushes(database, &mut report)?;
        self.check_window(database, &allowed, &mut report)?;
        for call in &self.ledger.calls {
            self.check_call(database, call, &mut report)?;
        }
        Ok(report)
    }

    /// Check 1 (and `stored_too_often`); returns every event id a ledger push may have made.
    fn check_pushes(
        &self,
        database: &Database,
        report: &mut VerifyReport,
    ) -> rusqlite::Result<HashSet<String>> {
        let mut allowed = HashSet::new();
        for push in &self.expected {
            let mut stored_keys = 0u32;
            let mut missing_events = Vec::new();
            for key in &push.keys {
                let ids = push.event_ids(key);
                allowed.extend(ids.iter().cloned());
                // A push is stored when its first event is (ids are deterministic); one that
                // maps to no event leaves nothing to find, and is accounted for once.
                let stored = match ids.first() {
                    Some(first) => database.has_event(first)?,
                    None => stored_keys == 0,
                };
                if !stored {
                    continue;
                }
                stored_keys += 1;
                report.events_expected += ids.len() as u64;
                for id in ids {
                    if database.has_event(&id)? {
                        report.events_found += 1;
                    } else {
                        missing_events.push(id);
                    }
                }
            }
            judge_push(push, stored_keys, &missing_events, report);
        }
        Ok(allowed)
    }

    /// Checks 2 and 4, and `unexpected_call`: what the run's window holds beyond the ledger.
    fn check_window(
        &self,
        database: &Database,
        allowed: &HashSet<String>,
        report: &mut VerifyReport,
    ) -> rusqlite::Result<()> {
        let calls: HashSet<(&str, &str)> = self
            .ledger
            .calls
            .iter()
            .map(|call| (call.source.as_str(), call.call_id.as_str()))
            .collect();
        let (from, to) = self.window;
        for source in &self.sources {
            let mut unexpected_calls = BTreeSet::new();
            for event in database.events_received(source, from, to)? {
                if !allowed.contains(&event.id) {
                    report.add(Mismatch::new(
                        MismatchKind::UnexpectedEvent,
                        &event.source_name,
                        event.call_id.as_deref(),
                        format!(
                            "event {} ({} {}) belongs to no ledger push",
                            event.id, event.event_type, event.subject
                        ),
                    ));
                }
                let call_event = !event.event_type.starts_with("agent.");
                if let Some(call_id) = event.call_id.filter(|_| call_event) {
                    if !calls.contains(&(source.as_str(), call_id.as_str())) {
                        unexpected_calls.insert(call_id);
                    }
                }
            }
            for call_id in unexpected_calls {
                report.add(Mismatch::new(
                    MismatchKind::UnexpectedCall,
                    source,
                    Some(&call_id),
                    "a call no simulated flow created".to_owned(),
                ));
            }
            for letter in database.dead_letters_received(source, from, to)? {
                report.add(Mismatch::new(
                    MismatchKind::DeadLetter,
                    &letter.source,
                    None,
                    format!("{}: {}", letter.reason, letter.detail),
                ));
            }
        }
        Ok(())
    }

    /// Check 3 for one call.
    fn check_call(
        &self,
        database: &Database,
        call: &CallLine,
        report: &mut VerifyReport,
    ) -> rusqlite::Result<()> {
        let acknowledged = self
            .acknowledged_per_call
            .get(&(call.flow, call.call_id.clone()))
            .map_or(0, BTreeSet::len);
        if acknowledged < call.pushes as usize {
            report.calls_incomplete += 1;
            return Ok(());
        }
        report.calls_checked += 1;
        let found = database.call(&call.source, &call.call_id)?;
        let expected_disposition = call.disposition.map(|d| d.as_str().to_owned());
        let differences = match &found {
            None => vec![(MismatchKind::CallMissing, "no `calls` row".to_owned())],
            Some(row) => [
                (row.direction != call.direction.as_str()).then(|| {
                    let expected = call.direction.as_str();
                    (
                        MismatchKind::CallDirection,
                        format!("direction `{}`, expected `{expected}`", row.direction),
                    )
                }),
                (row.disposition != expected_disposition).then(|| {
                    let detail = format!(
                        "disposition {:?}, expected {expected_disposition:?}",
                        row.disposition
                    );
                    (MismatchKind::CallDisposition, detail)
                }),
                (row.parent_call_id != call.parent_call_id).then(|| {
                    let detail = format!(
                        "parent {:?}, expected {:?}",
                        row.parent_call_id, call.parent_call_id
                    );
                    (MismatchKind::CallParent, detail)
                }),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        if differences.is_empty() {
            report.calls_matching += 1;
        }
        for (kind, detail) in differences {
            let detail = format!("{} {}: {detail}", call.dialect, call.scenario.as_str());
            report.add(Mismatch::new(
                kind,
                &call.source,
                Some(&call.call_id),
                detail,
            ));
        }
        Ok(())
    }
}

/// Counts a push as accounted for, or adds its mismatch; `stored_keys` of its candidate keys
/// are recorded, and `missing_events` of their events are not stored.
fn judge_push(
    push: &ExpectedPush,
    stored_keys: u32,
    missing_events: &[String],
    report: &mut VerifyReport,
) {
    let sendings = push.group.acknowledged + push.group.unacknowledged;
    report.retries_absorbed += u64::from(sendings.saturating_sub(stored_keys.max(1)));
    report.resent_across_slots += u64::from(stored_keys.saturating_sub(1));
    if push.group.acknowledged == 0 {
        // Unacknowledged only: the service may or may not hold it.
        return;
    }
    report.distinct_pushes += 1;
    let (kind, detail) = if stored_keys == 0 {
        let keys = push.keys.len();
        (
            MismatchKind::PushMissing,
            format!("none of its {keys} dedupe key(s) has its events stored"),
        )
    } else if !missing_events.is_empty() {
        let ids = missing_events.join(", ");
        (
            MismatchKind::EventsMissing,
            format!("events {ids} are not in `events`"),
        )
    } else if stored_keys > sendings {
        let detail = format!("stored under {stored_keys} keys, sent {sendings} time(s)");
        (MismatchKind::StoredTooOften, detail)
    } else {
        report.pushes_accounted += 1;
        return;
    };
    let call = push.group.example.2.as_deref();
    let detail = format!("{}: {detail}", push.describe());
    report.add(Mismatch::new(kind, &push.group.source, call, detail));
}
