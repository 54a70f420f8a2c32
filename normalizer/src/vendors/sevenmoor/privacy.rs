//! The privacy-number (小号, AXB) CDR that 7moor sends to the same URL as the v2 call events
//! (snake_case: `caller`, `called`, `called_show`, `recorder_id`, `result` ...): one `call.cdr`
//! with dialect `7moor.v2` and vendor event `privacy_cdr`.
//!
//! Direction is `unknown`: in an AXB binding either party may call the X number and the record
//! does not say which side is the customer.
//!
//! Dedupe key: `7moor.v2:privacy:<recorder_id>:<payload hash>`; a record with no `recorder_id`
//! and no time at all also gets the receive bucket (`:rb<epoch>`), since two identical
//! bodies then cannot be told apart from a retry any other way.

use callhook_schemas::EventType;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::common::{
    disposition, new_data, push_unique, seconds_between, take_phone_first, take_time_alias,
    DIALECT_V2,
};
use super::enums;
use super::journey;
use crate::build::{payload_hash, receive_bucket, Draft};
use crate::error::Result;
use crate::fields::Fields;
use crate::push::{RawPush, SourceContext};

/// The vendor event name given to this shape (it carries no discriminator of its own).
pub const VENDOR_EVENT: &str = "privacy_cdr";

const TIME_FIELDS: [&str; 4] = [
    "begin_time",
    "alerting_time",
    "connect_time",
    "release_time",
];

/// Maps one privacy-number CDR.
pub fn map(
    push: &RawPush<'_>,
    payload: Map<String, Value>,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let hash = payload_hash(&payload);
    let mut fields = Fields::new(payload, ctx.utc_offset);
    let record_id = fields.peek_str("recorder_id");
    let has_time = TIME_FIELDS.iter().any(|key| fields.peek_str(key).is_some());
    let mut dedupe_key = format!(
        "{DIALECT_V2}:privacy:{}:{hash}",
        record_id.clone().unwrap_or_default()
    );
    if record_id.is_none() && !has_time {
        dedupe_key.push_str(&format!(":rb{}", receive_bucket(push.received_at)));
    }
    let mut data = new_data(DIALECT_V2, VENDOR_EVENT, ctx);
    data.account = fields.take_str("account");
    data.call_id = fields.take_str("recorder_id");
    data.caller = fields.take_phone("caller");
    data.callee = fields.take_phone("called");
    data.display_number = take_phone_first(&mut fields, &["called_show", "calldisplay"]);
    data.started_at = fields.take_time("begin_time");
    data.ringing_at = fields.take_time("alerting_time");
    data.answered_at =
        take_time_alias(&mut fields, &["connect_time", "answerTime"], ctx.utc_offset);
    data.ended_at = fields.take_time("release_time");
    data.talk_seconds = fields
        .take_seconds("call_duration")
        .or_else(|| seconds_between(data.answered_at, data.ended_at));
    data.total_seconds = seconds_between(data.started_at, data.ended_at);
    let ring_end: Option<DateTime<Utc>> = data.answered_at.or(data.ended_at);
    data.ring_seconds = seconds_between(data.ringing_at, ring_end);
    data.disposition = fields
        .take_str("result")
        .map(|raw| disposition(enums::privacy_result(&raw), raw));
    journey::from_disposition(&mut data);
    data.conversation_id = data.call_id.clone();
    push_unique(&mut data.recording_urls, fields.take_str("record_file_url"));
    fields.take_correlation("userData", &mut data.correlation);
    fields.take_correlation("mappingId", &mut data.correlation);
    let time = data.ended_at;
    data.vendor_fields = fields.into_vendor_fields();
    Ok((dedupe_key, vec![Draft::new(EventType::CallCdr, time, data)]))
}
