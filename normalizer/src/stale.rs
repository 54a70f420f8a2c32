//! Stale calls: a call with no terminal event (`call.ended`, `call.cdr`) its source's
//! `stale_after` after its last event gets a `call.stale` event (since v1.1).
//!
//! # How, and what it guarantees
//!
//! - **Measured on callhook's clock.** "After its last event" is the greatest `received_at` of
//!   the call's stored events, compared with an injectable [`Clock`]. Vendor times are not
//!   used: a vendor clock that runs wrong (or a zone-less time read in the wrong zone) would
//!   make calls stale early or never.
//! - **The sweep** ([`StaleSweep::sweep`]) reads a projection ([`StaleCandidates`]: PostgreSQL
//!   when the process has `[sink.postgres]`, it holds every normalizer's calls; else the SQLite
//!   sink's file) for calls whose `status` is `in_progress` (through a partial index) and, for each call found, appends a **notice** to
//!   the raw log: a record of the call's source marked `x-callhook-origin: stale-sweep` whose
//!   body is a [`StaleNotice`]. It runs beside the receiver, where the raw log is written
//!   (`src/stages/stale.rs`), like reconciliation.
//! - **The normal path does the rest.** The normalizer maps a notice ([`map_notice`]) to one
//!   `call.stale` event, dedupes it, numbers it (`sequence`) and projects it like any push: in
//!   `events`, on the Kafka events topic, and into the `calls` row (`status = stale`). Because
//!   the notice is a raw record, `callhook replay` rebuilds the same `call.stale` with the
//!   same `sequence`, and an in-place replay keeps it.
//! - **Once per call.** The notice's dedupe key is `callhook.stale:<call id>`, so its event id
//!   is deterministic: a notice appended twice (a second sweep before the first notice was
//!   projected, a restart) is a duplicate and adds nothing. A call that was declared stale is
//!   not `in_progress` any more, so it is not swept again; a hangup or CDR that arrives later
//!   moves its row on to `ended` or `final` as usual.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use callhook_rawlog::RawRecord;
use callhook_schemas::{CallEventData, EventType};
use callhook_sinks::sqlite::stale::StaleCandidate;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::build::{finish, Draft, Mapped};
use crate::error::{MapError, Result};
use crate::push::{RawPush, SourceContext};

/// The header that marks a stale notice, and its value.
pub const ORIGIN_HEADER: (&str, &str) = ("x-callhook-origin", "stale-sweep");

/// The `vendor_event` of a `call.stale` event (callhook's, not a vendor's).
pub const VENDOR_EVENT: &str = "callhook.stale";

/// Where "now" comes from: the system clock, or a test's.
pub trait Clock: Send + Sync {
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

impl<F: Fn() -> DateTime<Utc> + Send + Sync> Clock for F {
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// The body of a stale notice: what the sweep knew about the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaleNotice {
    /// The vendor-scoped call id.
    pub call_id: String,
    /// The call's vendor (`data.vendor`).
    pub vendor: String,
    /// The dialect of the call's newest event (`data.dialect`).
    pub dialect: String,
    /// The account of the call's newest event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The type of the call's last event.
    pub last_event_type: String,
    /// When callhook received the call's newest event.
    pub last_received_at: DateTime<Utc>,
    /// The source's `stale_after`, in seconds.
    pub stale_after_seconds: u64,
}

impl StaleNotice {
    /// The written reason a `call.stale` event carries (`data.stale_reason`).
    pub fn reason(&self) -> String {
        format!(
            "no call.ended or call.cdr received within {} of the call's last event \
             (a {} received at {}); the vendor's hangup or CDR may be lost or late",
            human_duration(self.stale_after_seconds),
            self.last_event_type,
            callhook_schemas::canonical_time(&self.last_received_at),
        )
    }
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Returns true when `push` is a stale notice (and not a vendor's push).
pub fn is_notice(push: &RawPush<'_>) -> bool {
    push.headers
        .iter()
        .any(|(name, value)| name == ORIGIN_HEADER.0 && value == ORIGIN_HEADER.1)
}

/// Returns the dedupe key of a call's stale notice: one `call.stale` per call.
pub fn dedupe_key(call_id: &str) -> String {
    format!("callhook.stale:{call_id}")
}

/// Maps a stale notice to its `call.stale` event. Its time is when the sweep appended the
/// notice (`timesource = received`: callhook's clock).
pub fn map_notice(push: &RawPush<'_>, ctx: &SourceContext) -> Result<Mapped> {
    let notice: StaleNotice = serde_json::from_slice(push.body)
        .map_err(|error| MapError::UnrecognizedShape(format!("stale notice: {error}")))?;
    if notice.call_id.is_empty() {
        return Err(MapError::UnrecognizedShape(
            "stale notice without a call id".to_owned(),
        ));
    }
    let mut data = CallEventData::new(&notice.vendor, &notice.dialect, VENDOR_EVENT, &ctx.name);
    data.account = notice.account.clone();
    data.call_id = Some(notice.call_id.clone());
    data.stale_reason = Some(notice.reason());
    let draft = Draft::new(EventType::CallStale, None, data);
    Ok(finish(vec![draft], push, ctx, dedupe_key(&notice.call_id)))
}

/// Builds the raw record of a notice for `source`, received (appended) at `now`.
pub fn notice_record(source: &str, notice: &StaleNotice, now: DateTime<Utc>) -> RawRecord {
    let body = serde_json::to_vec(notice).unwrap_or_default();
    RawRecord {
        source: source.to_owned(),
        received_at: now,
        method: "POST".to_owned(),
        content_type: Some("application/json".to_owned()),
        query: None,
        remote_addr: None,
        request_id: format!(
            "stale-{}",
            &crate::build::event_id(source, &dedupe_key(&notice.call_id), 0)[..16]
        ),
        headers: vec![(ORIGIN_HEADER.0.to_owned(), ORIGIN_HEADER.1.to_owned())],
        body: Bytes::from(body),
    }
}

/// The most calls one sweep of one source declares stale (the rest wait for the next sweep).
pub const MAX_PER_SWEEP: usize = 1000;

/// The sweep: which sources, after how long, on which clock.
pub struct StaleSweep {
    /// Per source name: its `stale_after`.
    pub stale_after: BTreeMap<String, Duration>,
    /// Where "now" comes from.
    pub clock: Box<dyn Clock>,
}

impl StaleSweep {
    /// Returns the notices to append now: per source, the calls still in progress whose newest
    /// event was received more than `stale_after` ago, each with its raw record's partition key
    /// (the call id, as the receiver keys a push).
    pub fn sweep(
        &self,
        projection: &mut dyn StaleCandidates,
    ) -> std::result::Result<Vec<(String, RawRecord)>, String> {
        let now = self.clock.now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let mut records = Vec::new();
        for (source, stale_after) in &self.stale_after {
            let Ok(after) = chrono::TimeDelta::from_std(*stale_after) else {
                continue;
            };
            let candidates = projection.stale_candidates(source, now - after, MAX_PER_SWEEP)?;
            for candidate in candidates {
                let notice = notice_of(&candidate, stale_after.as_secs());
                records.push((
                    candidate.call_id.clone(),
                    notice_record(source, &notice, now),
                ));
            }
        }
        Ok(records)
    }
}

/// Where the sweep finds calls in progress: the SQLite sink's file or the PostgreSQL sink.
pub trait StaleCandidates {
    /// Returns the calls of `source` still `in_progress` whose newest event was received before
    /// `received_before`, oldest first, at most `limit`.
    fn stale_candidates(
        &mut self,
        source: &str,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> std::result::Result<Vec<StaleCandidate>, String>;
}

impl StaleCandidates for rusqlite::Connection {
    fn stale_candidates(
        &mut self,
        source: &str,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> std::result::Result<Vec<StaleCandidate>, String> {
        callhook_sinks::sqlite::stale::stale_candidates(self, source, received_before, limit)
            .map_err(|error| error.to_string())
    }
}

impl StaleCandidates for callhook_sinks::PostgresSink {
    fn stale_candidates(
        &mut self,
        source: &str,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> std::result::Result<Vec<StaleCandidate>, String> {
        callhook_sinks::PostgresSink::stale_candidates(self, source, received_before, limit)
            .map_err(|error| error.to_string())
    }
}

fn notice_of(candidate: &StaleCandidate, stale_after_seconds: u64) -> StaleNotice {
    StaleNotice {
        call_id: candidate.call_id.clone(),
        vendor: candidate.vendor.clone(),
        dialect: candidate.dialect.clone(),
        account: candidate.account.clone(),
        last_event_type: candidate.last_event_type.clone(),
        last_received_at: candidate.last_received_at,
        stale_after_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A projection in memory: one call per source whose last event was received at `last`.
    struct Fake {
        last: DateTime<Utc>,
        asked: Vec<(String, DateTime<Utc>)>,
    }

    impl StaleCandidates for Fake {
        fn stale_candidates(
            &mut self,
            source: &str,
            received_before: DateTime<Utc>,
            _limit: usize,
        ) -> std::result::Result<Vec<StaleCandidate>, String> {
            self.asked.push((source.to_owned(), received_before));
            Ok((self.last < received_before)
                .then(|| StaleCandidate {
                    source: source.to_owned(),
                    call_id: format!("{source}-call"),
                    vendor: "7moor".to_owned(),
                    dialect: "7moor.v7".to_owned(),
                    account: None,
                    last_event_type: "call.ringing".to_owned(),
                    last_received_at: self.last,
                })
                .into_iter()
                .collect())
        }
    }

    fn sweep_at(now: DateTime<Utc>) -> StaleSweep {
        StaleSweep {
            stale_after: BTreeMap::from([
                ("fast".to_owned(), Duration::from_secs(60)),
                ("slow".to_owned(), Duration::from_secs(7200)),
            ]),
            clock: Box::new(move || now),
        }
    }

    #[test]
    fn test_the_cut_off_is_the_injected_now_minus_each_sources_stale_after() {
        let last = Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap();
        let now = last + chrono::TimeDelta::minutes(30);
        let mut fake = Fake {
            last,
            asked: Vec::new(),
        };
        let found = sweep_at(now).sweep(&mut fake).unwrap();
        assert_eq!(
            fake.asked,
            vec![
                ("fast".to_owned(), now - chrono::TimeDelta::seconds(60)),
                ("slow".to_owned(), now - chrono::TimeDelta::hours(2)),
            ]
        );
        // 30 minutes after its last event: stale for `fast` (1 min), not for `slow` (2 h).
        assert_eq!(found.len(), 1);
        let (key, record) = &found[0];
        assert_eq!(key, "fast-call");
        assert_eq!(record.source, "fast");
        assert_eq!(record.received_at, now);
        let notice: StaleNotice = serde_json::from_slice(&record.body).unwrap();
        assert_eq!(notice.stale_after_seconds, 60);
        assert_eq!(notice.last_received_at, last);
        assert!(sweep_at(last + chrono::TimeDelta::seconds(59))
            .sweep(&mut fake)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn test_reason_names_the_threshold_and_the_last_event() {
        let notice = StaleNotice {
            call_id: "c".to_owned(),
            vendor: "uincall".to_owned(),
            dialect: "uincall".to_owned(),
            account: None,
            last_event_type: "call.answered".to_owned(),
            last_received_at: Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap(),
            stale_after_seconds: 5400,
        };
        assert_eq!(
            notice.reason(),
            "no call.ended or call.cdr received within 90 min of the call's last event \
             (a call.answered received at 2026-12-05T08:00:00.000000000Z); the vendor's hangup \
             or CDR may be lost or late"
        );
        assert_eq!(human_duration(7200), "2 h");
        assert_eq!(human_duration(61), "61 s");
    }

    #[test]
    fn test_the_dedupe_key_is_one_per_call() {
        assert_eq!(dedupe_key("42"), "callhook.stale:42");
        let record = notice_record(
            "s",
            &StaleNotice {
                call_id: "42".to_owned(),
                vendor: "7moor".to_owned(),
                dialect: "7moor.v7".to_owned(),
                account: None,
                last_event_type: "call.ringing".to_owned(),
                last_received_at: Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap(),
                stale_after_seconds: 60,
            },
            Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, 0).unwrap(),
        );
        assert!(record
            .headers
            .contains(&(ORIGIN_HEADER.0.to_owned(), ORIGIN_HEADER.1.to_owned())));
    }
}
