//! UinCall 云客服 call flows: JSON POSTs with `command`/`dir`, shaped like the seed examples in
//! `normalizer/fixtures/uincall/01–14` and mapped per `normalizer/docs/uincall.md`.
//!
//! No UinCall push carries a time, so every event is timed by its receipt and the pushes
//! without ids (`agentDialout` UP, `agentstatus`, `setAgentType`) are keyed by a 5-minute
//! receive bucket: identical ones within a bucket are one event by design.
//!
//! Expected rows: `calldirection` (`call out`/`call in`) gives the direction. The
//! disposition: a call with `call_talking` and `call_result` -1 everywhere is answered (the
//! answer time, no vendor outcome); `call_hangup` with `call_result` 0 is `unknown` (the
//! platform placed the call, nothing more); 1/2 is `failed`; an inbound call that rang and
//! was hung up with -1 has no disposition at all.

use callhook_schemas::{Direction, DispositionValue};
use serde_json::{json, Map, Value};

use super::format::{hex, json_indented, landline, mobile, uuid};
use super::FlowCtx;
use crate::flow::{ExpectedCall, Scenario, VendorRequest};

/// The scenarios this dialect tells, with their weights.
pub const SCENARIOS: &[(Scenario, u32)] = &[
    (Scenario::OutboundAnswered, 30),
    (Scenario::OutboundNoAnswer, 12),
    (Scenario::OutboundFailed, 5),
    (Scenario::InboundAnswered, 30),
    (Scenario::InboundNoAnswer, 10),
    (Scenario::AgentSession, 8),
];

const AGENTS: &[&str] = &[
    "8011", "8012", "8013", "8014", "8015", "8016", "8017", "8018",
];

const REMARK: &str = "http://10.10.21.182:9099/third/push/data";

/// One call as its pushes describe it.
struct Call {
    session_id: String,
    call_id: String,
    agent: &'static str,
    direction: &'static str,
    dnis: String,
    ani: String,
    queue_id: Option<String>,
}

/// Generates one flow of `scenario`.
pub(crate) fn generate(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    match scenario {
        Scenario::OutboundAnswered | Scenario::OutboundNoAnswer | Scenario::OutboundFailed => {
            outbound(ctx, scenario)
        }
        Scenario::InboundAnswered | Scenario::InboundNoAnswer => inbound(ctx, scenario),
        _ => agent_session(ctx),
    }
}

fn outbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let call = Call {
        session_id: uuid(&mut ctx.rng),
        call_id: uuid(&mut ctx.rng),
        agent: ctx.pick(AGENTS),
        direction: "call out",
        dnis: mobile(&mut ctx.rng),
        ani: landline(&mut ctx.rng),
        queue_id: None,
    };
    let mut time = ctx.start;
    let request = agent_only(ctx, call.agent, "UP", "agentDialout", 0);
    ctx.push(None, time, "uincall/agentDialout/UP", request);
    let failed = scenario == Scenario::OutboundFailed;
    let result = if failed { 2 } else { -1 };
    time += chrono::TimeDelta::seconds(1);
    let response = call_push(ctx, &call, "agentDialout", Some("response"), result);
    ctx.push(
        Some(&call.call_id),
        time,
        "uincall/agentDialout/DN",
        response,
    );
    let commands: &[&str] = match scenario {
        Scenario::OutboundAnswered => &["callout_process", "call_process", "call_talking"],
        Scenario::OutboundNoAnswer => &["callout_process", "call_process"],
        _ => &[],
    };
    for command in commands {
        time += chrono::TimeDelta::seconds(ctx.secs(1, 10));
        let request = call_push(ctx, &call, command, Some("event"), -1);
        ctx.push(
            Some(&call.call_id),
            time,
            &format!("uincall/{command}"),
            request,
        );
    }
    let (hangup_result, disposition) = match scenario {
        Scenario::OutboundAnswered => (-1, DispositionValue::Answered),
        Scenario::OutboundNoAnswer => (0, DispositionValue::Unknown),
        _ => (2, DispositionValue::Failed),
    };
    time += chrono::TimeDelta::seconds(ctx.secs(20, 200));
    let hangup = call_push(ctx, &call, "call_hangup", Some("event"), hangup_result);
    ctx.push(Some(&call.call_id), time, "uincall/call_hangup", hangup);
    let status = agent_only(ctx, call.agent, "DN", "agentstatus", 0);
    ctx.push(None, time, "uincall/agentstatus", status);
    expect(ctx, &call, Direction::Outbound, Some(disposition));
}

fn inbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let call = Call {
        session_id: uuid(&mut ctx.rng),
        call_id: uuid(&mut ctx.rng),
        agent: ctx.pick(AGENTS),
        direction: "call in",
        dnis: "02863208372".to_owned(),
        ani: mobile(&mut ctx.rng),
        queue_id: Some(hex(&mut ctx.rng, 32)),
    };
    let mut time = ctx.start;
    let incoming = call_push(ctx, &call, "incoming", Some("event"), -1);
    ctx.push(Some(&call.call_id), time, "uincall/incoming", incoming);
    let answered = scenario == Scenario::InboundAnswered;
    if answered {
        time += chrono::TimeDelta::seconds(ctx.secs(2, 10));
        let talking = call_push(ctx, &call, "call_talking", Some("event"), -1);
        ctx.push(Some(&call.call_id), time, "uincall/call_talking", talking);
    }
    time += chrono::TimeDelta::seconds(ctx.secs(15, 200));
    let hangup = call_push(ctx, &call, "call_hangup", Some("event"), -1);
    ctx.push(Some(&call.call_id), time, "uincall/call_hangup", hangup);
    let status = agent_only(ctx, call.agent, "DN", "agentstatus", 0);
    ctx.push(None, time, "uincall/agentstatus", status);
    let disposition = answered.then_some(DispositionValue::Answered);
    expect(ctx, &call, Direction::Inbound, disposition);
}

/// 坐席登录 (an `agentstatus`), a switch of answering mode (`setAgentType` UP), and the status
/// push that follows it.
fn agent_session(ctx: &mut FlowCtx<'_>) {
    let agent = ctx.pick(AGENTS);
    let mut time = ctx.start;
    let login = agent_only(ctx, agent, "DN", "agentstatus", 0);
    ctx.push(None, time, "uincall/agentstatus", login);
    time += chrono::TimeDelta::seconds(ctx.secs(5, 60));
    let mode = agent_only(ctx, agent, "UP", "setAgentType", 6);
    ctx.push(None, time, "uincall/setAgentType", mode);
    time += chrono::TimeDelta::seconds(1);
    let status = agent_only(ctx, agent, "DN", "agentstatus", 6);
    ctx.push(None, time, "uincall/agentstatus", status);
}

fn expect(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    direction: Direction,
    disposition: Option<DispositionValue>,
) {
    ctx.expect(ExpectedCall {
        call_id: call.call_id.clone(),
        direction,
        disposition,
        parent_call_id: None,
    });
}

fn post(fields: &Map<String, Value>) -> VendorRequest {
    VendorRequest::post(Some("application/json"), json_indented(fields))
}

/// A push with no session or call id: keyed by the agent and the receive bucket.
fn agent_only(
    ctx: &mut FlowCtx<'_>,
    agent: &str,
    dir: &str,
    command: &str,
    agent_type: i64,
) -> VendorRequest {
    let mut fields = Map::new();
    fields.insert("tenant_id".into(), json!(ctx.run.uincall_tenant));
    fields.insert("remark".into(), json!(REMARK));
    if dir == "DN" {
        fields.insert("type".into(), json!("event"));
    }
    fields.insert("dir".into(), json!(dir));
    fields.insert("agent_num".into(), json!(agent));
    fields.insert("command".into(), json!(command));
    fields.insert("agent_type".into(), json!(agent_type));
    fields.insert("call_result".into(), json!(-1));
    post(&fields)
}

fn call_push(
    ctx: &mut FlowCtx<'_>,
    call: &Call,
    command: &str,
    push_type: Option<&str>,
    call_result: i64,
) -> VendorRequest {
    let mut fields = Map::new();
    fields.insert("tenant_id".into(), json!(ctx.run.uincall_tenant));
    fields.insert("session_id".into(), json!(call.session_id));
    fields.insert("remark".into(), json!(REMARK));
    if let Some(push_type) = push_type {
        fields.insert("type".into(), json!(push_type));
    }
    fields.insert("dir".into(), json!("DN"));
    fields.insert("agent_num".into(), json!(call.agent));
    fields.insert("command".into(), json!(command));
    fields.insert("call_id".into(), json!(call.call_id));
    fields.insert("agent_type".into(), json!(0));
    // The dial-out response carries no call details (seed 1.3.1.2).
    if command != "agentDialout" {
        fields.insert("calldirection".into(), json!(call.direction));
        fields.insert("dnis".into(), json!(call.dnis));
        fields.insert("ani".into(), json!(call.ani));
        if let Some(queue_id) = &call.queue_id {
            fields.insert("queue_id".into(), json!(queue_id));
        }
    }
    fields.insert("call_result".into(), json!(call_result));
    post(&fields)
}
