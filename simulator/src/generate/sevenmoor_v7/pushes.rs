//! The v7 push bodies, field for field in the order of 7moor's examples; each builder appends
//! its push to the flow.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::super::format::{epoch, hex, json_compact, json_lines, local, object, uuid};
use super::super::FlowCtx;
use crate::flow::VendorRequest;

/// Agent states (`statusNumber`, `statusName`).
pub(super) const CALLING: (&str, &str) = ("2", "呼叫中");
pub(super) const RINGING: (&str, &str) = ("3", "振铃");
pub(super) const TALKING: (&str, &str) = ("4", "通话中");
pub(super) const WRAP_UP: (&str, &str) = ("5", "整理");
pub(super) const IDLE: (&str, &str) = ("0", "空闲");
pub(super) const BUSY: (&str, &str) = ("1", "忙碌");

/// One call (or transfer leg) as every push of it describes it.
pub(super) struct Call {
    pub(super) id: String,
    /// The main call (inbound calls and legs; equal to `id` except on a leg).
    pub(super) super_id: Option<String>,
    pub(super) account: String,
    pub(super) customer: String,
    pub(super) display: String,
    pub(super) trunk: String,
    /// `dialout`, `incoming` or `transfer`.
    pub(super) call_type: &'static str,
    pub(super) agent: (&'static str, &'static str),
}

impl Call {
    fn outbound(&self) -> bool {
        self.call_type == "dialout"
    }
}

fn post(body: String) -> VendorRequest {
    VendorRequest::post(Some("application/json"), body)
}

/// The fields every call push shares, in the vendor's order.
fn call_fields(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    push_type: Option<&str>,
    time: DateTime<Utc>,
    call_event: &str,
) -> Map<String, Value> {
    let mut fields = Map::new();
    // The incoming ring/hangup pushes (no pushType) sometimes come without an event id.
    if push_type.is_some() || ctx.chance(0.5) {
        fields.insert("eventUniqueId".into(), json!(hex(&mut ctx.rng, 32)));
    }
    fields.insert("accountId".into(), json!(call.account));
    if let Some(super_id) = &call.super_id {
        fields.insert("superUniqueId".into(), json!(super_id));
    }
    fields.insert("callUniqueId".into(), json!(call.id));
    if let Some(push_type) = push_type {
        fields.insert("pushType".into(), json!(push_type));
    }
    fields.insert("customerNumber".into(), json!(call.customer));
    fields.insert("trunkNumber".into(), json!(call.trunk));
    fields.insert("displayNumber".into(), json!(call.display));
    fields.insert("statusTime".into(), json!(epoch(time)));
    fields.insert("callEvent".into(), json!(call_event));
    fields.insert("callType".into(), json!(call.call_type));
    fields.insert("agentNumber".into(), json!(call.agent.0));
    fields.insert("agentName".into(), json!(call.agent.1));
    fields
}

/// `dialoutRing`/`dialoutHangup`, or with `push_type` `None` the incoming ring/hangup push.
pub(super) fn call_event(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    push_type: Option<&str>,
    time: DateTime<Utc>,
    event: &str,
) {
    let mut fields = call_fields(ctx, call, push_type, time, event);
    fields.insert("extras".into(), json!(""));
    if push_type == Some("dialoutHangup") {
        fields.insert("groupIdList".into(), json!([""]));
        fields.insert("groupNameList".into(), json!([""]));
    }
    let label = match push_type {
        Some(push_type) => format!("v7/{push_type}"),
        None => format!("v7/incoming/{event}"),
    };
    ctx.push(Some(&call.id), time, &label, post(json_lines(&fields)));
}

/// A `callStatus` of a call: the call event and the agent's new state.
pub(super) fn call_status(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    time: DateTime<Utc>,
    event: &str,
    (number, name): (&str, &str),
) {
    let mut fields = call_fields(ctx, call, Some("callStatus"), time, event);
    fields.insert("statusName".into(), json!(name));
    fields.insert("statusNumber".into(), json!(number));
    fields.insert("extras".into(), json!(""));
    let label = format!("v7/callStatus/{event}");
    ctx.push(Some(&call.id), time, &label, post(json_lines(&fields)));
}

/// The 用户接通 push: the call's fields under `content`, keyed by `superUniqueId` only.
pub(super) fn link(ctx: &mut FlowCtx<'_>, call: &Call, time: DateTime<Utc>) {
    let content = object([
        ("accountId", json!(call.account)),
        ("superUniqueId", json!(call.id)),
        ("customerNumber", json!(call.customer)),
        ("trunkNumber", json!(call.trunk)),
        ("displayNumber", json!(call.display)),
        ("statusTime", json!(epoch(time))),
        ("callEvent", json!("link")),
        ("callType", json!(call.call_type)),
        ("extras", json!("")),
        ("agentNumber", json!(call.agent.0)),
        ("agentName", json!(call.agent.1)),
    ]);
    let body = object([
        ("content", Value::Object(content)),
        ("uniqueId", json!(hex(&mut ctx.rng, 32))),
    ]);
    ctx.push(Some(&call.id), time, "v7/link", post(json_compact(&body)));
}

/// The 媒体识别 push of a busy line (no `statusTime`: the receive time is used).
pub(super) fn media_failure(ctx: &mut FlowCtx<'_>, call: &Call, time: DateTime<Utc>) {
    let fields = object([
        ("eventUniqueId", json!(hex(&mut ctx.rng, 32))),
        ("accountId", json!(call.account)),
        ("callUniqueId", json!(call.id)),
        ("pushType", json!("mediaFailreason")),
        ("agentNumber", json!(call.agent.0)),
        ("preMediaFailureReason", json!("onThePhone")),
        ("preMediaCode", json!(15)),
        ("preMediaKeyWord", json!("正在通话")),
    ]);
    let request = post(json_lines(&fields));
    ctx.push(Some(&call.id), time, "v7/mediaFailreason", request);
}

/// An agent-only `callStatus` (no call).
pub(super) fn agent_status(
    ctx: &mut FlowCtx<'_>,
    agent: (&str, &str),
    time: DateTime<Utc>,
    (number, name): (&str, &str),
) {
    let fields = object([
        ("eventUniqueId", json!(hex(&mut ctx.rng, 32))),
        ("accountId", json!(ctx.run.sevenmoor_account)),
        ("pushType", json!("callStatus")),
        ("statusTime", json!(epoch(time))),
        ("agentNumber", json!(agent.0)),
        ("agentName", json!(agent.1)),
        ("statusName", json!(name)),
        ("statusNumber", json!(number)),
    ]);
    ctx.push(
        None,
        time,
        "v7/callStatus/agent",
        post(json_compact(&fields)),
    );
}

/// The agent is idle again after wrap-up.
pub(super) fn idle_later(ctx: &mut FlowCtx<'_>, call: &Call, end: DateTime<Utc>) {
    let time = end + TimeDelta::seconds(ctx.secs(5, 30));
    agent_status(ctx, call.agent, time, IDLE);
}

/// `login` or `logout` (`statusTime` as local text, as 7moor sends it there).
pub(super) fn session(
    ctx: &mut FlowCtx<'_>,
    agent: (&str, &str),
    time: DateTime<Utc>,
    push_type: &str,
    (type_field, type_value): (&str, &str),
) {
    let fields = object([
        ("eventUniqueId", json!(hex(&mut ctx.rng, 32))),
        ("accountId", json!(ctx.run.sevenmoor_account)),
        ("pushType", json!(push_type)),
        (type_field, json!(type_value)),
        ("statusTime", json!(local(time))),
        ("agentNumber", json!(agent.0)),
        ("agentName", json!(agent.1)),
    ]);
    let label = format!("v7/{push_type}");
    ctx.push(None, time, &label, post(json_lines(&fields)));
}

/// What a CDR says about a call.
pub(super) struct Cdr {
    pub(super) status: &'static str,
    pub(super) failure_reason: Option<&'static str>,
    pub(super) sip_code: Value,
    pub(super) start: DateTime<Utc>,
    pub(super) join_queue: Option<DateTime<Utc>>,
    /// When the agent's leg started ringing, and when it was answered.
    pub(super) agent_leg: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// When the customer's leg started ringing, and when it was answered (outbound).
    pub(super) customer_leg: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    pub(super) end: DateTime<Utc>,
    pub(super) queue: Option<(&'static str, &'static str)>,
}

fn text_time(time: Option<DateTime<Utc>>) -> Value {
    json!(time.map(local).unwrap_or_default())
}

fn seconds_between(from: Option<DateTime<Utc>>, to: DateTime<Utc>) -> i64 {
    from.map(|from| (to - from).num_seconds()).unwrap_or(0)
}

/// The 通话记录 push (`cdr`), timed by its `endTime`.
pub(super) fn cdr(ctx: &mut FlowCtx<'_>, call: &Call, cdr: &Cdr) {
    let side = if ctx.chance(0.5) { "AGENT" } else { "CUSTOMER" };
    let (queue_number, queue_name) = cdr.queue.unwrap_or_default();
    let mut fields = object([
        ("eventUniqueId", json!(hex(&mut ctx.rng, 32))),
        ("callUniqueId", json!(call.id)),
        ("accountId", json!(call.account)),
        ("pushType", json!("cdr")),
        ("actionId", json!("")),
        ("callId", json!(uuid(&mut ctx.rng))),
        ("callType", json!(call.call_type)),
        ("cdrType", json!("callRecord")),
        ("status", json!(cdr.status)),
        ("sipCode", cdr.sip_code.clone()),
        ("hangUpSide", json!(side)),
        ("customerNumber", json!(call.customer)),
        ("displayNumber", json!(call.display)),
        ("trunkNumber", json!(call.trunk)),
        ("hotLineNumber", json!(call.trunk)),
        ("agentNumber", json!(call.agent.0)),
        ("agentName", json!(call.agent.1)),
        ("queueNumber", json!(queue_number)),
        ("queueName", json!(queue_name)),
    ]);
    fields.extend(cdr_times(call, cdr));
    fields.insert("customerProvince".into(), json!("北京"));
    fields.insert("customerCity".into(), json!("北京"));
    fields.insert("extras".into(), json!(""));
    if let Some(reason) = cdr.failure_reason {
        fields.insert("failureReason".into(), json!(reason));
    }
    ctx.push(Some(&call.id), cdr.end, "v7/cdr", post(json_lines(&fields)));
}

/// The CDR's times, durations and recording.
fn cdr_times(call: &Call, cdr: &Cdr) -> Map<String, Value> {
    let (agent_start, agent_answer) = cdr.agent_leg.unzip();
    let agent_answer = agent_answer.flatten();
    let (customer_start, customer_answer) = cdr.customer_leg.unzip();
    let customer_answer = customer_answer.flatten();
    let bridge = if call.outbound() {
        customer_answer
    } else {
        agent_answer
    };
    let recording = bridge.map(|at| {
        let stamp = at.format("%Y%m%d%H%M%S");
        let (account, id) = (&call.account, &call.id);
        format!("https://v7call.cos.ap-beijing.myqcloud.com/recording/{account}/{stamp}-{id}.mp3")
    });
    let ring = |start: Option<DateTime<Utc>>, answer: Option<DateTime<Utc>>| {
        seconds_between(start, answer.unwrap_or(cdr.end))
    };
    let system_answer = (!call.outbound()).then_some(cdr.start);
    object([
        ("startTime", json!(local(cdr.start))),
        ("systemAnswerTime", text_time(system_answer)),
        ("joinQueueTime", text_time(cdr.join_queue)),
        ("agentStartTime", text_time(agent_start)),
        ("agentAnswerTime", text_time(agent_answer)),
        ("customerStartTime", text_time(customer_start)),
        ("customerAnswerTime", text_time(customer_answer)),
        ("bridgeTime", text_time(bridge)),
        ("hangupTime", json!(local(cdr.end))),
        ("endTime", json!(local(cdr.end))),
        ("agentRingDuration", json!(ring(agent_start, agent_answer))),
        (
            "customerRingDuration",
            json!(ring(customer_start, customer_answer)),
        ),
        ("bridgeDuration", json!(seconds_between(bridge, cdr.end))),
        ("totalDuration", json!((cdr.end - cdr.start).num_seconds())),
        ("waitDuration", json!(ring(cdr.join_queue, agent_start))),
        ("recordFileUrl", json!(recording.unwrap_or_default())),
        ("doubleTrackFileUrl", json!("")),
    ])
}
