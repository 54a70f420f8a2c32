//! The verifier's report: counts, and every mismatch with a readable detail.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Mismatches kept in full; past this, only counted (a broken run can have millions).
const MAX_KEPT_MISMATCHES: usize = 1000;

/// Mismatches printed per kind in the text report.
const PRINTED_PER_KIND: usize = 10;

/// What kind of check failed (see the module docs of [`crate::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The mapper rejects a push the ledger says was acknowledged.
    UnmappablePush,
    /// No dedupe key of an acknowledged push is recorded.
    PushMissing,
    /// The push's key is recorded but some of its events are not stored.
    EventsMissing,
    /// A push is stored under more keys than it was sent.
    StoredTooOften,
    /// An event of the run belongs to no ledger push.
    UnexpectedEvent,
    /// A call appears that no flow created.
    UnexpectedCall,
    /// A simulated call has no `calls` row.
    CallMissing,
    /// The row's direction differs.
    CallDirection,
    /// The row's disposition differs.
    CallDisposition,
    /// The row's parent differs.
    CallParent,
    /// A push of a ledger source was dead-lettered during the run.
    DeadLetter,
}

impl MismatchKind {
    fn as_str(self) -> &'static str {
        match self {
            MismatchKind::UnmappablePush => "unmappable_push",
            MismatchKind::PushMissing => "push_missing",
            MismatchKind::EventsMissing => "events_missing",
            MismatchKind::StoredTooOften => "stored_too_often",
            MismatchKind::UnexpectedEvent => "unexpected_event",
            MismatchKind::UnexpectedCall => "unexpected_call",
            MismatchKind::CallMissing => "call_missing",
            MismatchKind::CallDirection => "call_direction",
            MismatchKind::CallDisposition => "call_disposition",
            MismatchKind::CallParent => "call_parent",
            MismatchKind::DeadLetter => "dead_letter",
        }
    }
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// What failed.
    pub kind: MismatchKind,
    /// The source.
    pub source: String,
    /// The call, when one is concerned.
    pub call_id: Option<String>,
    /// What was found instead of what was expected.
    pub detail: String,
}

impl Mismatch {
    pub(crate) fn new(
        kind: MismatchKind,
        source: &str,
        call_id: Option<&str>,
        detail: String,
    ) -> Mismatch {
        Mismatch {
            kind,
            source: source.to_owned(),
            call_id: call_id.map(str::to_owned),
            detail,
        }
    }
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Acknowledged sendings in the ledger.
    pub ledger_pushes: u64,
    /// Unacknowledged sendings in the ledger (allowed in the database, not required).
    pub unacknowledged_pushes: u64,
    /// Distinct acknowledged pushes (pushes the mapper cannot tell apart count once).
    pub distinct_pushes: u64,
    /// Distinct acknowledged pushes found with all their events.
    pub pushes_accounted: u64,
    /// Events the stored dedupe keys call for.
    pub events_expected: u64,
    /// Of those, events found.
    pub events_found: u64,
    /// Sendings that added nothing (vendor retries, identical bodies within one slot).
    pub retries_absorbed: u64,
    /// Extra keys of time-slotted pushes re-sent across a slot boundary (new events by design).
    pub resent_across_slots: u64,
    /// Simulated calls in the ledger.
    pub calls: u64,
    /// Calls whose every push was acknowledged, hence checked.
    pub calls_checked: u64,
    /// Checked calls whose row matched.
    pub calls_matching: u64,
    /// Calls with an unacknowledged push (not checked).
    pub calls_incomplete: u64,
    /// Every mismatch found.
    pub mismatch_count: u64,
    /// Mismatch counts by kind.
    pub mismatches_by_kind: BTreeMap<MismatchKind, u64>,
    /// The first mismatches (up to 1000), in the order found.
    pub mismatches: Vec<Mismatch>,
    /// How long the verifier waited for the database to catch up, in seconds.
    pub waited_seconds: f64,
}

impl VerifyReport {
    pub(crate) fn add(&mut self, mismatch: Mismatch) {
        self.mismatch_count += 1;
        *self.mismatches_by_kind.entry(mismatch.kind).or_insert(0) += 1;
        if self.mismatches.len() < MAX_KEPT_MISMATCHES {
            self.mismatches.push(mismatch);
        }
    }

    /// Returns true when every check passed.
    pub fn passed(&self) -> bool {
        self.mismatch_count == 0
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pushes   {} acknowledged sendings ({} distinct pushes, {} unacknowledged sendings)",
            self.ledger_pushes, self.distinct_pushes, self.unacknowledged_pushes
        )?;
        writeln!(
            f,
            "         accounted {}/{}; events {}/{}; sendings absorbed by dedupe {}; re-sent across a receive slot {}",
            self.pushes_accounted,
            self.distinct_pushes,
            self.events_found,
            self.events_expected,
            self.retries_absorbed,
            self.resent_across_slots
        )?;
        writeln!(
            f,
            "calls    {} simulated; checked {}, matching {}; incomplete (a push unacknowledged, not checked) {}",
            self.calls, self.calls_checked, self.calls_matching, self.calls_incomplete
        )?;
        if self.passed() {
            return write!(f, "result   OK (waited {:.1} s)", self.waited_seconds);
        }
        writeln!(
            f,
            "result   {} mismatch(es) after waiting {:.1} s",
            self.mismatch_count, self.waited_seconds
        )?;
        for (kind, count) in &self.mismatches_by_kind {
            writeln!(f, "  {} ({count}):", kind.as_str())?;
            let shown = self.mismatches.iter().filter(|m| m.kind == *kind);
            for mismatch in shown.take(PRINTED_PER_KIND) {
                let call = mismatch
                    .call_id
                    .as_deref()
                    .map(|id| format!(" call {id}"))
                    .unwrap_or_default();
                writeln!(f, "    [{}{call}] {}", mismatch.source, mismatch.detail)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_report_counts_and_caps_mismatches() {
        let mut report = VerifyReport::default();
        assert!(report.passed());
        for n in 0..(MAX_KEPT_MISMATCHES + 5) {
            report.add(Mismatch::new(
                MismatchKind::PushMissing,
                "7moor",
                Some("c"),
                format!("push {n}"),
            ));
        }
        report.add(Mismatch::new(
            MismatchKind::CallDisposition,
            "uincall",
            None,
            "x".into(),
        ));
        assert!(!report.passed());
        assert_eq!(report.mismatch_count, MAX_KEPT_MISMATCHES as u64 + 6);
        assert_eq!(report.mismatches.len(), MAX_KEPT_MISMATCHES);
        assert_eq!(report.mismatches_by_kind[&MismatchKind::CallDisposition], 1);
        let text = report.to_string();
        assert!(text.contains("push_missing (1005)"), "{text}");
        assert!(text.contains("call_disposition (1)"), "{text}");
        assert_eq!(text.matches("[7moor call c]").count(), PRINTED_PER_KIND);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mismatches_by_kind"]["push_missing"], 1005);
    }
}
