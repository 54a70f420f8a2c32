//! ZYCOO CooCenter (an Asterisk-based IP-PBX): the `主动推送` pushes.
//!
//! The PBX POSTs one object per event, documented as a JavaScript object literal (the payload
//! parser already accepts JSON, JS literals and forms). The `event` field is the discriminator,
//! matched case-insensitively; `data.vendor_event` keeps it as sent.
//!
//! | `event` | canonical type | module |
//! |---|---|---|
//! | `dialbegein` (sic), `dialbegin` | `call.ringing` | [`live`] |
//! | `dialend` | `call.answered` (`ANSWER`) or `call.ended` | [`live`] |
//! | `hangup` | `call.ended` | [`live`] |
//! | `extensionstatus` | `agent.status_changed` | [`status`] |
//! | `ivr` | `ivr.completed` | [`records`] |
//! | `cdr`, `cc_cdr` | `call.cdr` | [`records`] |
//!
//! `mac` is the account (trimmed, lowercased). Every field not mapped reaches
//! `data.vendor_fields` as sent (blank ones dropped). The full mapping and every judgement
//! call are in `normalizer/docs/coocenter.md`.
//!
//! # Dedupe key
//!
//! `coocenter:<event>:<id>:<when>:<payload_hash>`: `<event>` lowercased, `<id>` the call's
//! `uniqueid`/`uuid` (the extension for `extensionstatus`, `-` if absent), `<when>` the
//! vendor time as sent (`timestamp`, `endTime`, `endtime`). Without a vendor time:
//! - `hangup`: `-`, since Asterisk hangs a channel (its `uniqueid`) up exactly once;
//! - `extensionstatus`: `s<10-second receive bucket>`. Identical status bodies recur within
//!   minutes (`Idle` → `Ringing` → `Idle`), so the shared 5-minute bucket would drop real
//!   transitions; 10 s still covers the PBX's 2-second re-sends most of the time, and a
//!   re-send that slips through only repeats a status (harmless);
//! - any other event: `b<`[`receive_bucket`]`>` (5 minutes).

mod channel;
mod live;
mod outcome;
mod records;
mod status;

use callhook_schemas::{Agent, CallEventData};
use chrono::{DateTime, Utc};

use crate::build::{payload_hash, receive_bucket, Draft};
use crate::error::{MapError, Result};
use crate::fields::Fields;
use crate::payload::Payload;
use crate::push::{RawPush, SourceContext};

/// The vendor and dialect name.
const VENDOR: &str = "coocenter";

/// The receive-time bucket of `extensionstatus` keys (see the module docs).
const EXTENSION_STATUS_BUCKET_SECONDS: i64 = 10;

/// The events CooCenter documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    DialBegin,
    DialEnd,
    Hangup,
    ExtensionStatus,
    Ivr,
    Cdr,
    CcCdr,
}

impl EventKind {
    /// Parses the discriminator, case-insensitively; the doc's typo `dialbegein` and the
    /// Asterisk spelling `dialbegin` are the same event.
    fn parse(name: &str) -> Option<EventKind> {
        match name.to_ascii_lowercase().as_str() {
            "dialbegein" | "dialbegin" => Some(EventKind::DialBegin),
            "dialend" => Some(EventKind::DialEnd),
            "hangup" => Some(EventKind::Hangup),
            "extensionstatus" => Some(EventKind::ExtensionStatus),
            "ivr" => Some(EventKind::Ivr),
            "cdr" => Some(EventKind::Cdr),
            "cc_cdr" => Some(EventKind::CcCdr),
            _ => None,
        }
    }

    /// The field that identifies the call (or the extension) in the dedupe key.
    fn id_field(self) -> &'static str {
        match self {
            EventKind::DialBegin | EventKind::DialEnd | EventKind::Hangup | EventKind::Cdr => {
                "uniqueid"
            }
            EventKind::Ivr | EventKind::CcCdr => "uuid",
            EventKind::ExtensionStatus => "exten",
        }
    }

    /// The vendor time of the occurrence (`timestamp` is undocumented on `hangup` and
    /// `extensionstatus`, but used when a firmware sends it).
    fn time_field(self) -> &'static str {
        match self {
            EventKind::Ivr | EventKind::CcCdr => "endTime",
            EventKind::Cdr => "endtime",
            _ => "timestamp",
        }
    }
}

/// Maps one CooCenter push to its dedupe key and its one event.
pub fn map(
    push: &RawPush<'_>,
    payload: Payload,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let hash = payload_hash(&payload.fields);
    let mut fields = Fields::new(payload.fields, ctx.utc_offset);
    let Some(sent) = fields.peek_str("event") else {
        return Err(MapError::UnrecognizedShape(
            "no `event` field: not a CooCenter push".to_owned(),
        ));
    };
    let kind = EventKind::parse(&sent).ok_or_else(|| MapError::UnknownEvent(sent.clone()))?;
    fields.discard("event");
    let key = dedupe_key(kind, &sent, &fields, &hash, push.received_at);
    let mut data = CallEventData::new(VENDOR, VENDOR, &sent, &ctx.name);
    data.account = fields.take_str("mac").map(|mac| mac.to_ascii_lowercase());
    let mut draft = match kind {
        EventKind::DialBegin => live::dial_begin(fields, data)?,
        EventKind::DialEnd => live::dial_end(fields, data)?,
        EventKind::Hangup => live::hangup(fields, data)?,
        EventKind::ExtensionStatus => status::extension_status(fields, data)?,
        EventKind::Ivr => records::ivr(fields, data),
        EventKind::Cdr => records::cdr(fields, data),
        EventKind::CcCdr => records::cc_cdr(fields, data),
    };
    if !draft.event_type.is_agent_event() {
        outcome::conversation(&mut draft.data);
    }
    Ok((key, vec![draft]))
}

/// Builds the dedupe key (see the module docs) from the fields before any is taken.
fn dedupe_key(
    kind: EventKind,
    sent: &str,
    fields: &Fields,
    hash: &str,
    received_at: DateTime<Utc>,
) -> String {
    let id = fields.peek_str(kind.id_field());
    let when = match (fields.peek_str(kind.time_field()), kind, &id) {
        (Some(time), _, _) => time,
        (None, EventKind::Hangup, Some(_)) => "-".to_owned(),
        (None, EventKind::ExtensionStatus, _) => format!(
            "s{}",
            received_at
                .timestamp()
                .div_euclid(EXTENSION_STATUS_BUCKET_SECONDS)
                * EXTENSION_STATUS_BUCKET_SECONDS
        ),
        (None, _, _) => format!("b{}", receive_bucket(received_at)),
    };
    format!(
        "{VENDOR}:{}:{}:{when}:{hash}",
        sent.to_ascii_lowercase(),
        id.as_deref().unwrap_or("-")
    )
}

/// Returns a CooCenter agent: an extension, which is also the agent's number
/// (`extensionstatus` `exten`, `cc_cdr` `agentCode` "坐席分机").
fn extension_agent(extension: String) -> Agent {
    Agent {
        number: Some(extension.clone()),
        name: None,
        extension: Some(extension),
    }
}

/// Takes the first non-blank of several number fields as a phone number.
fn take_first_phone(fields: &mut Fields, keys: &[&str]) -> Option<callhook_schemas::PhoneNumber> {
    fields
        .take_first_str(keys)
        .and_then(|raw| crate::phone::parse_phone(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Dialect;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    fn push(body: &[u8], received_at: DateTime<Utc>) -> RawPush<'_> {
        RawPush {
            method: "POST",
            content_type: None,
            query: None,
            headers: &[],
            body,
            received_at,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn run(body: &str, received_at: &str) -> Result<(String, Vec<Draft>)> {
        let ctx = SourceContext::new("coocenter", Dialect::CooCenter);
        let raw = push(body.as_bytes(), at(received_at));
        let payload = crate::payload::parse_payload(&raw, &ctx)?;
        map(&raw, payload, &ctx)
    }

    #[test]
    fn test_event_names() {
        for (name, kind) in [
            ("dialbegein", EventKind::DialBegin),
            ("DialBegin", EventKind::DialBegin),
            ("DIALEND", EventKind::DialEnd),
            ("hangup", EventKind::Hangup),
            ("ExtensionStatus", EventKind::ExtensionStatus),
            ("ivr", EventKind::Ivr),
            ("cdr", EventKind::Cdr),
            ("CC_CDR", EventKind::CcCdr),
        ] {
            assert_eq!(EventKind::parse(name), Some(kind), "{name}");
        }
        assert_eq!(EventKind::parse("newchannel"), None);
        assert_eq!(EventKind::parse("cc-cdr"), None);
    }

    #[test]
    fn test_dedupe_key_ignores_key_order_and_white_space() {
        let a = run(
            r#"{"event":"cdr","uniqueid":"1.2","endtime":"2012-01-05 15:10:11","source":"808"}"#,
            "2024-01-01T00:00:00Z",
        )
        .unwrap();
        let b = run(
            "{source:'808', endtime:'2012-01-05 15:10:11',\n uniqueid:'1.2', event:'cdr'}",
            "2024-01-01T03:00:00Z",
        )
        .unwrap();
        assert_eq!(a.0, b.0);
        assert!(a.0.starts_with("coocenter:cdr:1.2:2012-01-05 15:10:11:"));
    }

    #[test]
    fn test_status_repeats_are_new_events_but_quick_resends_are_not() {
        let idle = r#"{"event":"extensionstatus","exten":"808","status":"0","statustext":"Idle"}"#;
        let first = run(idle, "2024-01-01T00:00:01Z").unwrap().0;
        let resend = run(idle, "2024-01-01T00:00:03Z").unwrap().0;
        let later = run(idle, "2024-01-01T00:00:41Z").unwrap().0;
        assert_eq!(first, resend);
        assert_ne!(first, later);
    }

    #[test]
    fn test_hangup_key_needs_no_bucket() {
        let body = r#"{"event":"hangup","uniqueid":"1325747409.260","calleridnum":"808"}"#;
        let first = run(body, "2024-01-01T00:00:01Z").unwrap().0;
        let next_day = run(body, "2024-01-02T00:00:01Z").unwrap().0;
        assert_eq!(first, next_day);
        assert!(first.starts_with("coocenter:hangup:1325747409.260:-:"));
    }

    #[test]
    fn test_other_events_without_a_time_use_the_receive_bucket() {
        let body = r#"{"event":"cc_cdr","uuid":"9.1","cdrState":"bridged"}"#;
        let key = run(body, "2024-01-01T00:04:59Z").unwrap().0;
        assert!(
            key.starts_with("coocenter:cc_cdr:9.1:b1704067200:"),
            "{key}"
        );
    }

    #[test]
    fn test_shape_errors() {
        let none = run(r#"{"uniqueid":"1.2"}"#, "2024-01-01T00:00:00Z").unwrap_err();
        assert_eq!(none.reason(), "unrecognized_shape");
        let blank = run(r#"{"event":" "}"#, "2024-01-01T00:00:00Z").unwrap_err();
        assert_eq!(blank.reason(), "unrecognized_shape");
        let unknown = run(r#"{"event":"newstate"}"#, "2024-01-01T00:00:00Z").unwrap_err();
        assert_eq!(unknown, MapError::UnknownEvent("newstate".to_owned()));
    }

    #[test]
    fn test_account_is_the_trimmed_lowercase_mac() {
        let (_, drafts) = run(
            "{event:'ivr', uuid:'1.5', mac:'68:69:2E:03:8B:3E '}",
            "2024-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(drafts[0].data.account.as_deref(), Some("68:69:2e:03:8b:3e"));
    }

    #[test]
    fn test_queue_seconds_past_what_a_time_holds_leave_the_segment_unknown() {
        // Found by fuzzing (map_coocenter): a 21-digit `ivrTime` made chrono panic.
        let cdr = |ivr: &str, queue: &str| {
            format!(
                r#"{{"event":"cc_cdr","uuid":"1718873400.122","caller":"13912345678",
                "called":"4008001234","queueCode":"630","callType":"incoming",
                "cdrState":"queue","startTime":"2024-06-20 16:50:00",
                "endTime":"2024-06-20 16:50:40","duration":"40","queueTime":"{queue}",
                "ivrTime":"{ivr}","mac":"68:69:2e:03:8b:3e"}}"#
            )
        };
        for ivr in [
            "001111111111111111110",
            "9223372036854775807",
            "99999999999999",
        ] {
            let (_, drafts) = run(&cdr(ivr, "30"), "2024-06-20T08:51:00Z").unwrap();
            assert!(drafts[0].data.queue_joined_at.is_none(), "{ivr}");
        }
        for queue in ["9223372036854775807", "99999999999999"] {
            let (_, drafts) = run(&cdr("10", queue), "2024-06-20T08:51:00Z").unwrap();
            let joined = drafts[0].data.queue_joined_at;
            assert_eq!(joined, Some(at("2024-06-20T08:50:10Z")), "{queue}");
        }
        let (_, drafts) = run(&cdr("10", "30"), "2024-06-20T08:51:00Z").unwrap();
        let data = &drafts[0].data;
        assert_eq!(data.queue_joined_at, Some(at("2024-06-20T08:50:10Z")));
        assert_eq!(data.queue_left_at, Some(at("2024-06-20T08:50:40Z")));
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[ -~]{0,24}".prop_map(Value::String),
            "(-?[0-9]{1,3}|[0-9]{10}\\.[0-9]{1,6}|20[0-9]{2}-[01][0-9]-[0-3][0-9] ?[0-2][0-9]:[0-5][0-9]:[0-5][0-9])"
                .prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    const KNOWN_FIELDS: [&str; 40] = [
        "timestamp",
        "channel",
        "channelstate",
        "calleridnum",
        "calleridname",
        "destchannel",
        "destchannelstate",
        "destcalleridnum",
        "destexten",
        "destuniqueid",
        "dialstring",
        "uniqueid",
        "mac",
        "dialstatus",
        "connectedlinenum",
        "connectedlinename",
        "cause",
        "exten",
        "status",
        "statustext",
        "uuid",
        "caller",
        "called",
        "callType",
        "queueCode",
        "startTime",
        "endTime",
        "duration",
        "trunkNumber",
        "callerid",
        "source",
        "destination",
        "endtime",
        "disposition",
        "calltype",
        "agentCode",
        "cdrState",
        "missCause",
        "voicemailState",
        "hangupSide",
    ];

    fn payload_for(event: &'static str) -> impl Strategy<Value = Map<String, Value>> {
        let known = proptest::sample::subsequence(KNOWN_FIELDS.to_vec(), 0..KNOWN_FIELDS.len())
            .prop_flat_map(|keys| {
                proptest::collection::vec(value(), keys.len()).prop_map(move |values| {
                    keys.iter()
                        .map(|k| k.to_string())
                        .zip(values)
                        .collect::<Vec<_>>()
                })
            });
        let extra = proptest::collection::btree_map("[a-zA-Z_]{1,8}", value(), 0..4);
        (known, extra).prop_map(move |(known, extra)| {
            let mut map: Map<String, Value> = extra.into_iter().collect();
            map.extend(known);
            map.insert("event".to_owned(), json!(event));
            map
        })
    }

    fn has_blank_string(value: &Value) -> bool {
        match value {
            Value::String(text) => text.trim().is_empty(),
            Value::Array(items) => items.iter().any(has_blank_string),
            Value::Object(map) => map.values().any(has_blank_string),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn test_arbitrary_payloads_never_panic(
            fields in prop_oneof![
                payload_for("dialbegein"),
                payload_for("dialend"),
                payload_for("hangup"),
                payload_for("extensionstatus"),
                payload_for("ivr"),
                payload_for("cdr"),
                payload_for("cc_cdr"),
            ],
            offset in 0i64..1_000_000,
        ) {
            let ctx = SourceContext::new("coocenter", Dialect::CooCenter);
            let received_at = DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(1_700_000_000 + offset);
            let raw = push(b"", received_at);
            let payload = Payload {
                fields,
                body_format: crate::payload::BodyFormat::Json,
                from_query: false,
            };
            match map(&raw, payload, &ctx) {
                Ok((key, drafts)) => {
                    prop_assert!(key.starts_with("coocenter:"));
                    prop_assert_eq!(drafts.len(), 1);
                    for draft in drafts {
                        let Value::Object(mut data) = serde_json::to_value(&draft.data).unwrap() else {
                            unreachable!()
                        };
                        let vendor_fields = data.remove("vendor_fields").unwrap_or_default();
                        data.remove("correlation");
                        prop_assert!(!has_blank_string(&Value::Object(data.clone())), "blank in {:?}", data);
                        for value in vendor_fields.as_object().into_iter().flat_map(|m| m.values()) {
                            prop_assert!(!value.is_null() && value.as_str().is_none_or(|s| !s.trim().is_empty()));
                        }
                    }
                }
                Err(error) => prop_assert!(MapError::REASONS.contains(&error.reason())),
            }
        }
    }
}
