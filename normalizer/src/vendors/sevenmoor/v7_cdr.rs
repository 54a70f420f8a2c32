//! The v7 `cdr` push (通话记录推送): the authoritative record of a finished call, `call.cdr`.
//!
//! Which of the record's many times and durations fill the canonical ones depends on the
//! direction, because 7moor records both legs (agent and customer):
//!
//! | canonical | inbound (`incoming`, `transfer`) | outbound (`dialout`, `webcall`, ...) |
//! |---|---|---|
//! | `started_at` | `startTime` | `startTime` |
//! | `ringing_at` | `agentStartTime` (the agent leg rings) | `customerStartTime` (the customer rings) |
//! | `answered_at` | `agentAnswerTime`, else `bridgeTime` | `customerAnswerTime`, else `bridgeTime` |
//! | `ended_at` | `hangupTime`, else `endTime` | idem |
//! | `ring_seconds` | `agentRingDuration` | `customerRingDuration` |
//! | `talk_seconds` / `total_seconds` / `queue_seconds` | `bridgeDuration` / `totalDuration` / `waitDuration` | idem |
//!
//! The event time is `endTime` (the record closes after the satisfaction survey), else the
//! hangup time. Every time or duration not used above stays in `vendor_fields` as sent.

use callhook_schemas::{CallEventData, Direction, DispositionValue, EventType, HangupSide};
use chrono::{DateTime, Utc};

use super::common::{
    disposition, new_data, push_unique, take_seconds_first, take_time_first, DIALECT_V7,
};
use super::enums;
use super::journey;
use super::v7::take_call_common;
use crate::build::Draft;
use crate::fields::Fields;
use crate::push::SourceContext;

/// The record's recording fields, in the order they are listed (`recordFileUrl` first).
const RECORDING_FIELDS: [&str; 5] = [
    "recordFileUrl",
    "agentFileUrl",
    "customerFileUrl",
    "doubleTrackFileUrl",
    "voiceMailUrl",
];

/// Maps a `cdr` push to one `call.cdr`.
pub fn map_cdr(vendor_event: String, mut fields: Fields, ctx: &SourceContext) -> Vec<Draft> {
    let mut data = new_data(DIALECT_V7, &vendor_event, ctx);
    take_call_common(&mut fields, &mut data);
    take_record_id(&mut fields, &mut data);
    let time = take_times(&mut fields, &mut data);
    take_durations(&mut fields, &mut data);
    let status = fields.peek_str("status");
    take_outcome(&mut fields, &mut data);
    journey::v7_cdr(&mut fields, &mut data, status);
    for key in RECORDING_FIELDS {
        push_unique(&mut data.recording_urls, fields.take_str(key));
    }
    data.vendor_fields = fields.into_vendor_fields();
    vec![Draft::new(EventType::CallCdr, time, data)]
}

/// The cdr query returns the call id as `_id` (the same value as `callUniqueId`): use it when
/// the push lacks `callUniqueId`, and drop it when it repeats the call id.
fn take_record_id(fields: &mut Fields, data: &mut CallEventData) {
    let record_id = fields.peek_str("_id");
    match (&data.call_id, record_id) {
        (None, Some(record_id)) => {
            fields.discard("_id");
            data.call_id = Some(record_id);
        }
        (Some(call_id), Some(record_id)) if *call_id == record_id => fields.discard("_id"),
        _ => {}
    }
}

/// Fills the canonical times; returns the event time.
fn take_times(fields: &mut Fields, data: &mut CallEventData) -> Option<DateTime<Utc>> {
    data.started_at = fields.take_time("startTime");
    let (ringing, answered): (&[&str], &[&str]) = match data.direction {
        Direction::Outbound => (
            &["customerStartTime"],
            &["customerAnswerTime", "bridgeTime"],
        ),
        Direction::Inbound => (&["agentStartTime"], &["agentAnswerTime", "bridgeTime"]),
        Direction::Internal | Direction::Unknown => (&["agentStartTime"], &["bridgeTime"]),
    };
    data.ringing_at = take_time_first(fields, ringing);
    data.answered_at = take_time_first(fields, answered);
    let hangup = fields.take_time("hangupTime");
    let end = fields.take_time("endTime");
    data.ended_at = hangup.or(end);
    end.or(hangup)
}

fn take_durations(fields: &mut Fields, data: &mut CallEventData) {
    let ring: &[&str] = match data.direction {
        Direction::Outbound => &["customerRingDuration"],
        _ => &["agentRingDuration"],
    };
    data.ring_seconds = take_seconds_first(fields, ring);
    data.talk_seconds = fields.take_seconds("bridgeDuration");
    data.total_seconds = fields.take_seconds("totalDuration");
    data.queue_seconds = fields.take_seconds("waitDuration");
}

/// Disposition, hangup side and cause.
///
/// `status` decides the disposition. When it is absent or not a documented value, the
/// `failureReason` decides, then the `sipCode`; the raw value kept is the one that decided
/// (an undocumented `status` that decided nothing stays in `vendor_fields`). `failureReason`
/// is also the hangup cause, except `0` (no failure, as the cdr query sends it). `sipCode`
/// always stays in `vendor_fields` as sent (string or number).
fn take_outcome(fields: &mut Fields, data: &mut CallEventData) {
    data.hangup_side = fields.take_str("hangUpSide").map(|raw| HangupSide {
        value: enums::hangup_side(&raw),
        raw: Some(raw),
    });
    let failure = fields
        .peek_str("failureReason")
        .filter(|reason| !enums::is_no_failure(reason));
    if failure.is_some() {
        fields.discard("failureReason");
    }
    let status = fields.peek_str("status");
    let from_status = status.as_deref().and_then(enums::cdr_status);
    let from_failure = failure
        .as_deref()
        .and_then(|reason| enums::failure_reason(reason, data.direction));
    let sip = fields.peek_str("sipCode");
    let from_sip = sip.as_deref().and_then(enums::sip_code);
    data.disposition = match (from_status, status) {
        (Some(value), Some(raw)) => {
            fields.discard("status");
            Some(disposition(Some(value), raw))
        }
        (_, status) => fallback_disposition(fields, status, from_failure, &failure, from_sip, sip),
    };
    data.hangup_cause = failure;
}

fn fallback_disposition(
    fields: &mut Fields,
    status: Option<String>,
    from_failure: Option<DispositionValue>,
    failure: &Option<String>,
    from_sip: Option<DispositionValue>,
    sip: Option<String>,
) -> Option<callhook_schemas::Disposition> {
    if let (Some(value), Some(raw)) = (from_failure, failure) {
        return Some(disposition(Some(value), raw.clone()));
    }
    if let (Some(value), Some(raw)) = (from_sip, sip) {
        return Some(disposition(Some(value), raw));
    }
    let raw = status?;
    fields.discard("status");
    Some(disposition(None, raw))
}
