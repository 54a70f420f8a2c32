//! ZYCOO CooCenter call flows: Asterisk events relayed as JS object literals (also JSON or form
//! bodies, per PBX), shaped like `normalizer/fixtures/coocenter/` and mapped per
//! `normalizer/docs/coocenter.md`.
//!
//! Every push of a call names the calling channel's `uniqueid` (the `uuid` of `ivr`/`cc_cdr`),
//! so a call is one `calls` row; the called leg's `hangup` is not sent (it would be a call of
//! its own, keyed by the `destuniqueid`). Expected rows: queue calls end with a `cc_cdr`
//! (`bridged` → answered, `queue` + `NO_AGENT_ANSWER` → no_answer, `queue` + another miss cause
//! or `ivr` → abandoned; `callType` `incoming` → inbound); direct outbound calls end with an
//! Asterisk `cdr` (`ANSWERED`, `NO ANSWER`, `BUSY`; `calltype` `outbound`). The CDR outranks
//! the `dialend` of the same call.

use callhook_schemas::{Direction, DispositionValue};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngExt;
use serde_json::{json, Map, Value};

use super::format::{asterisk_timestamp, form, hex, js_literal, json_compact, local, mobile};
use super::FlowCtx;
use crate::flow::{ExpectedCall, Scenario, VendorRequest};

/// The scenarios this dialect tells, with their weights.
pub const SCENARIOS: &[(Scenario, u32)] = &[
    (Scenario::InboundAnswered, 30),
    (Scenario::InboundNoAnswer, 10),
    (Scenario::InboundAbandoned, 12),
    (Scenario::OutboundAnswered, 25),
    (Scenario::OutboundNoAnswer, 8),
    (Scenario::OutboundBusy, 7),
    (Scenario::AgentSession, 8),
];

const EXTENSIONS: &[&str] = &[
    "801", "802", "803", "804", "805", "806", "807", "808", "809", "810", "811", "812",
];

const DID: &str = "4008001234";
const QUEUE: &str = "630";

/// Asterisk hangup cause 16.
const NORMAL_CLEARING: (u32, &str) = (16, "Normal Clearing");

/// How one PBX encodes its pushes.
#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    /// JS object literal, as documented, with no content type.
    Literal,
    /// JS object literal sent as `text/plain`.
    LiteralText,
    /// Strict JSON.
    Json,
    /// A form body.
    Form,
}

/// One call as its pushes describe it.
struct Call {
    uniqueid: String,
    customer: String,
    ext: &'static str,
    encoding: Encoding,
    dial_event: &'static str,
}

/// Generates one flow of `scenario`.
pub(crate) fn generate(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    match scenario {
        Scenario::InboundAnswered | Scenario::InboundNoAnswer => inbound(ctx, scenario),
        Scenario::InboundAbandoned => abandoned(ctx),
        Scenario::OutboundAnswered | Scenario::OutboundNoAnswer | Scenario::OutboundBusy => {
            outbound(ctx, scenario)
        }
        _ => agent_session(ctx),
    }
}

fn new_call(ctx: &mut FlowCtx<'_>) -> Call {
    let encoding = match ctx.rng.random_range(0..20u32) {
        0..=7 => Encoding::Literal,
        8..=11 => Encoding::LiteralText,
        12..=16 => Encoding::Json,
        _ => Encoding::Form,
    };
    // Asterisk's uniqueid is `epoch.sequence`; the index keeps sequences unique in a run.
    let sequence = ctx.index * 10 + ctx.rng.random_range(0..10u64);
    Call {
        uniqueid: format!("{}.{sequence}", ctx.start.timestamp()),
        customer: mobile(&mut ctx.rng),
        ext: ctx.pick(EXTENSIONS),
        encoding,
        dial_event: if ctx.chance(0.5) {
            "dialbegein"
        } else {
            "dialbegin"
        },
    }
}

fn inbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let call = new_call(ctx);
    let ivr_seconds = ctx.secs(3, 10);
    ivr(ctx, &call, ivr_seconds);
    let queue_seconds = ctx.secs(2, 20);
    let ring_start = ctx.at(ivr_seconds + queue_seconds);
    let dial = Dial::inbound(ctx, &call);
    dial_begin(ctx, &call, &dial, ring_start);
    extension_status(ctx, call.encoding, call.ext, 8, "Ringing", ring_start);
    let answered = scenario == Scenario::InboundAnswered;
    let ring_seconds = if answered {
        ctx.secs(2, 10)
    } else {
        ctx.secs(15, 30)
    };
    let answer = ring_start + TimeDelta::seconds(ring_seconds);
    let talk_seconds = if answered { ctx.secs(20, 300) } else { 0 };
    let end = answer + TimeDelta::seconds(talk_seconds);
    let status = if answered { "ANSWER" } else { "NOANSWER" };
    dial_end(ctx, &call, &dial, answer, status);
    if answered {
        extension_status(ctx, call.encoding, call.ext, 1, "InUse", answer);
    }
    hangup(ctx, &call, &call.customer, call.ext, end, NORMAL_CLEARING);
    extension_status(ctx, call.encoding, call.ext, 0, "Idle", end);
    let cdr = QueueCdr {
        state: if answered { "bridged" } else { "queue" },
        miss_cause: if answered { "" } else { "NO_AGENT_ANSWER" },
        agent: call.ext,
        ivr_seconds,
        queue_seconds,
        ring_seconds,
        talk_seconds,
        end,
    };
    queue_cdr(ctx, &call, &cdr);
    let disposition = if answered {
        DispositionValue::Answered
    } else {
        DispositionValue::NoAnswer
    };
    expect(ctx, &call, Direction::Inbound, disposition);
}

/// The caller leaves the queue (or the IVR) before any agent answers.
fn abandoned(ctx: &mut FlowCtx<'_>) {
    let call = new_call(ctx);
    let ivr_seconds = ctx.secs(3, 10);
    ivr(ctx, &call, ivr_seconds);
    let in_ivr = ctx.chance(0.25);
    let queue_seconds = if in_ivr { 0 } else { ctx.secs(3, 60) };
    let end = ctx.at(ivr_seconds + queue_seconds);
    hangup(ctx, &call, &call.customer, DID, end, NORMAL_CLEARING);
    let miss_cause = ctx.pick(&["MEMBER_CANCEL", "NO_ASSIGN", "NO_AGENT_LOGIN"]);
    let cdr = QueueCdr {
        state: if in_ivr { "ivr" } else { "queue" },
        miss_cause: if in_ivr { "" } else { miss_cause },
        agent: "",
        ivr_seconds,
        queue_seconds,
        ring_seconds: 0,
        talk_seconds: 0,
        end,
    };
    queue_cdr(ctx, &call, &cdr);
    expect(ctx, &call, Direction::Inbound, DispositionValue::Abandoned);
}

/// An extension dials out through the SIP trunk; the Asterisk `cdr` closes the call.
fn outbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let call = new_call(ctx);
    let start = ctx.start;
    extension_status(ctx, call.encoding, call.ext, 1, "InUse", start);
    let dial = Dial {
        channel: format!("SIP/{}-{}", call.ext, hex(&mut ctx.rng, 8)),
        caller: call.ext.to_owned(),
        dest_channel: format!("SIP/chinatelecom-{}", hex(&mut ctx.rng, 8)),
        dest_number: call.customer.clone(),
        dial_string: format!("chinatelecom/9{}", call.customer),
    };
    dial_begin(ctx, &call, &dial, start);
    let (status, disposition, cause, ring) = match scenario {
        Scenario::OutboundAnswered => ("ANSWER", "ANSWERED", NORMAL_CLEARING, (3, 15)),
        Scenario::OutboundBusy => ("BUSY", "BUSY", (17, "User busy"), (1, 3)),
        _ => ("NOANSWER", "NO ANSWER", (19, "No answer"), (25, 45)),
    };
    let ring_seconds = ctx.secs(ring.0, ring.1);
    let dial_done = start + TimeDelta::seconds(ring_seconds);
    dial_end(ctx, &call, &dial, dial_done, status);
    let answered = scenario == Scenario::OutboundAnswered;
    let talk_seconds = if answered { ctx.secs(20, 300) } else { 0 };
    let end = dial_done + TimeDelta::seconds(talk_seconds);
    hangup(ctx, &call, call.ext, &call.customer, end, cause);
    extension_status(ctx, call.encoding, call.ext, 0, "Idle", end);
    let times = (start, answered.then_some(dial_done), end);
    asterisk_cdr(ctx, &call, times, disposition, talk_seconds);
    let expected = match scenario {
        Scenario::OutboundAnswered => DispositionValue::Answered,
        Scenario::OutboundBusy => DispositionValue::Busy,
        _ => DispositionValue::NoAnswer,
    };
    expect(ctx, &call, Direction::Outbound, expected);
}

/// The Asterisk CDR (通话日志1) of a direct outbound call; `times` = start, answer, end.
fn asterisk_cdr(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    (start, answer, end): (DateTime<Utc>, Option<DateTime<Utc>>, DateTime<Utc>),
    disposition: &str,
    talk_seconds: i64,
) {
    let recording = answer.map(|at| {
        let day = at.format("%Y/%m/%d");
        let stamp = at.format("%Y%m%d-%H%M%S");
        let (customer, ext, id) = (&call.customer, call.ext, &call.uniqueid);
        format!("{day}/out-{customer}-{ext}-{stamp}-{id}.wav")
    });
    let fields = super::format::object([
        ("event", json!("cdr")),
        ("callerid", json!(format!("\"{0}\" <{0}>", call.ext))),
        ("source", json!(call.ext)),
        ("destination", json!(call.customer)),
        ("starttime", json!(local(start))),
        ("answertime", json!(answer.map(local).unwrap_or_default())),
        ("endtime", json!(local(end))),
        ("disposition", json!(disposition)),
        ("duration", json!((end - start).num_seconds().to_string())),
        ("billableseconds", json!(talk_seconds.to_string())),
        ("calltype", json!("outbound")),
        ("recordfile", json!(recording.unwrap_or_default())),
        ("uniqueid", json!(call.uniqueid)),
        ("mac", json!(ctx.run.coocenter_mac)),
    ]);
    let request = encode(call.encoding, &fields, '"');
    ctx.push(Some(&call.uniqueid), end, "coocenter/cdr", request);
}

/// An extension comes online, goes idle, busy (DND) and idle again: agent events only.
fn agent_session(ctx: &mut FlowCtx<'_>) {
    let call = new_call(ctx);
    let mut time = ctx.start;
    for (status, text) in [(4, "Unavailable"), (0, "Idle"), (2, "Busy"), (0, "Idle")] {
        extension_status(ctx, call.encoding, call.ext, status, text, time);
        time += TimeDelta::seconds(ctx.secs(1, 120));
    }
}

fn expect(ctx: &mut FlowCtx<'_>, call: &Call, direction: Direction, disposition: DispositionValue) {
    ctx.expect(ExpectedCall {
        call_id: call.uniqueid.clone(),
        direction,
        disposition: Some(disposition),
        parent_call_id: None,
    });
}

fn encode(encoding: Encoding, fields: &Map<String, Value>, quote: char) -> VendorRequest {
    match encoding {
        Encoding::Literal => VendorRequest::post(None, js_literal(fields, quote)),
        Encoding::LiteralText => VendorRequest::post(Some("text/plain"), js_literal(fields, quote)),
        Encoding::Json => VendorRequest::post(Some("application/json"), json_compact(fields)),
        Encoding::Form => {
            VendorRequest::post(Some("application/x-www-form-urlencoded"), form(fields))
        }
    }
}

fn ivr(ctx: &mut FlowCtx<'_>, call: &Call, seconds: i64) {
    let end = ctx.at(seconds);
    let fields = super::format::object([
        ("event", json!("ivr")),
        ("uuid", json!(call.uniqueid)),
        ("caller", json!(call.customer)),
        ("called", json!(DID)),
        ("callType", json!("IN")),
        ("queueCode", json!(QUEUE)),
        ("startTime", json!(local(ctx.start))),
        ("endTime", json!(local(end))),
        ("duration", json!(seconds.to_string())),
        ("ivrId", json!("610")),
        ("ivrName", json!("workingtime")),
        ("ivrDtmf", json!("1")),
        ("trunkNumber", json!(DID)),
        ("mac", json!(ctx.run.coocenter_mac)),
    ]);
    let request = encode(call.encoding, &fields, '\'');
    ctx.push(Some(&call.uniqueid), end, "coocenter/ivr", request);
}

/// One dial attempt: the calling side and the called side.
struct Dial {
    channel: String,
    caller: String,
    dest_channel: String,
    dest_number: String,
    dial_string: String,
}

impl Dial {
    /// A trunk (DAHDI span or SIP trunk) dialing the call's extension.
    fn inbound(ctx: &mut FlowCtx<'_>, call: &Call) -> Dial {
        let channel = if ctx.chance(0.5) {
            let span = ctx.rng.random_range(1..99u32);
            format!("DAHDI/i1/{}-{span}", call.customer)
        } else {
            format!("SIP/chinatelecom-{}", hex(&mut ctx.rng, 8))
        };
        Dial {
            channel,
            caller: call.customer.clone(),
            dest_channel: format!("SIP/{}-{}", call.ext, hex(&mut ctx.rng, 8)),
            dest_number: call.ext.to_owned(),
            dial_string: format!("SIP/{}", call.ext),
        }
    }
}

fn dial_fields(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    dial: &Dial,
    event: &str,
    time: DateTime<Utc>,
) -> Map<String, Value> {
    let micros = ctx.rng.random_range(0..1_000_000u32);
    super::format::object([
        ("event", json!(event)),
        ("timestamp", json!(asterisk_timestamp(time, micros))),
        ("channel", json!(dial.channel)),
        ("calleridnum", json!(dial.caller)),
        ("destchannel", json!(dial.dest_channel)),
        ("destcalleridnum", json!(dial.dest_number)),
        (
            "destuniqueid",
            json!(format!("{}.9{}", time.timestamp(), ctx.index)),
        ),
        ("dialstring", json!(dial.dial_string)),
        ("uniqueid", json!(call.uniqueid)),
        ("mac", json!(ctx.run.coocenter_mac)),
    ])
}

fn dial_begin(ctx: &mut FlowCtx<'_>, call: &Call, dial: &Dial, time: DateTime<Utc>) {
    let fields = dial_fields(ctx, call, dial, call.dial_event, time);
    let request = encode(call.encoding, &fields, '"');
    ctx.push(Some(&call.uniqueid), time, "coocenter/dialbegin", request);
}

fn dial_end(ctx: &mut FlowCtx<'_>, call: &Call, dial: &Dial, time: DateTime<Utc>, status: &str) {
    let mut fields = dial_fields(ctx, call, dial, "dialend", time);
    fields.insert("dialstatus".into(), json!(status));
    let request = encode(call.encoding, &fields, '"');
    ctx.push(Some(&call.uniqueid), time, "coocenter/dialend", request);
}

/// The calling channel hangs up (no time in the push: the receive time is used).
fn hangup(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    number: &str,
    connected: &str,
    time: DateTime<Utc>,
    (cause, cause_text): (u32, &str),
) {
    let fields = super::format::object([
        ("event", json!("hangup")),
        ("calleridnum", json!(number)),
        ("calleridname", json!(number)),
        ("connectedlinenum", json!(connected)),
        ("connectedlinename", json!(connected)),
        ("uniqueid", json!(call.uniqueid)),
        ("cause", json!(cause.to_string())),
        ("cause-txt", json!(cause_text)),
        ("mac", json!(ctx.run.coocenter_mac)),
    ]);
    let request = encode(call.encoding, &fields, '"');
    ctx.push(Some(&call.uniqueid), time, "coocenter/hangup", request);
}

/// An extension's hint state. No id and no time: identical bodies within 10 s collapse by
/// design (see the dedupe key in `normalizer/docs/coocenter.md`).
fn extension_status(
    ctx: &mut FlowCtx<'_>,
    encoding: Encoding,
    ext: &str,
    status: i32,
    text: &str,
    time: DateTime<Utc>,
) {
    let fields = super::format::object([
        ("event", json!("extensionstatus")),
        ("exten", json!(ext)),
        ("status", json!(status.to_string())),
        ("statustext", json!(text)),
        ("mac", json!(ctx.run.coocenter_mac)),
    ]);
    ctx.push(
        None,
        time,
        "coocenter/extensionstatus",
        encode(encoding, &fields, '"'),
    );
}

/// What a call-center CDR says.
struct QueueCdr {
    state: &'static str,
    miss_cause: &'static str,
    agent: &'static str,
    ivr_seconds: i64,
    queue_seconds: i64,
    ring_seconds: i64,
    talk_seconds: i64,
    end: DateTime<Utc>,
}

fn queue_cdr(ctx: &mut FlowCtx<'_>, call: &Call, cdr: &QueueCdr) {
    let recording = (cdr.talk_seconds > 0).then(|| {
        format!(
            "{}/q-{QUEUE}-{}-{}.wav",
            cdr.end.format("%Y/%m/%d"),
            call.customer,
            call.uniqueid
        )
    });
    let fields = super::format::object([
        ("event", json!("cc_cdr")),
        ("uuid", json!(call.uniqueid)),
        ("caller", json!(call.customer)),
        ("called", json!(DID)),
        (
            "queueCode",
            json!(if cdr.state == "ivr" { "" } else { QUEUE }),
        ),
        ("agentCode", json!(cdr.agent)),
        ("callType", json!("incoming")),
        ("cdrState", json!(cdr.state)),
        (
            "hangupSide",
            json!(if ctx.chance(0.6) { "caller" } else { "agent" }),
        ),
        ("hangupCause", json!("ANALOG ANALOG_EVENT_ONHOOK")),
        ("startTime", json!(local(ctx.start))),
        ("endTime", json!(local(cdr.end))),
        (
            "duration",
            json!((cdr.end - ctx.start).num_seconds().to_string()),
        ),
        ("queueTime", json!(cdr.queue_seconds.to_string())),
        ("feedbackTime", json!("0")),
        ("ivrTime", json!(cdr.ivr_seconds.to_string())),
        ("ringTime", json!(cdr.ring_seconds.to_string())),
        ("holdTime", json!(0)),
        ("pauseTime", json!(0)),
        ("talkingTime", json!(cdr.talk_seconds.to_string())),
        ("voicemailState", json!("0")),
        ("ivrId", json!("610")),
        ("ivrName", json!("workingtime")),
        ("ivrDtmf", json!("1")),
        ("fwType", json!("")),
        ("score", json!("0")),
        ("trunkNumber", json!(DID)),
        ("forwardNumber", json!("")),
        ("filePath", json!(recording.unwrap_or_default())),
        ("missCause", json!(cdr.miss_cause)),
        ("mac", json!(ctx.run.coocenter_mac)),
    ]);
    let request = encode(call.encoding, &fields, '\'');
    ctx.push(Some(&call.uniqueid), cdr.end, "coocenter/cc_cdr", request);
}
