//! 7moor v7 call flows (JSON POSTs), shaped like the seed examples in
//! `normalizer/fixtures/7moor/0x–2x` and mapped per `normalizer/docs/7moor.md`.
//!
//! Expected rows: every call but a transfer leg ends with a `cdr`, whose `status` decides the
//! disposition (`ANSWER` → answered, `CUSTOMER_NO_ANSWER`/`AGENT_NO_ANSWER` → no_answer,
//! `QUEUE_ABANDON`/`IVR` → abandoned) and whose `callType` the direction; the CDR outranks the
//! `mediaFailreason` busy of a busy line (7moor reports that call as `CUSTOMER_NO_ANSWER`). A
//! transfer leg has no CDR of its own: it is answered because its `callStatus link` gives it
//! an answer time, inbound because of `callType` `transfer`, and its `superUniqueId` names the
//! main call as its parent.

mod pushes;

use callhook_schemas::{Direction, DispositionValue};
use chrono::TimeDelta;
use serde_json::json;

use super::format::{landline, mobile};
use super::FlowCtx;
use crate::flow::{ExpectedCall, Scenario};
use pushes::{Call, Cdr, BUSY, CALLING, IDLE, RINGING, TALKING, WRAP_UP};

/// The scenarios this dialect tells, with their weights.
pub const SCENARIOS: &[(Scenario, u32)] = &[
    (Scenario::InboundAnswered, 30),
    (Scenario::InboundNoAnswer, 8),
    (Scenario::InboundAbandoned, 10),
    (Scenario::InboundTransferred, 5),
    (Scenario::OutboundAnswered, 25),
    (Scenario::OutboundNoAnswer, 10),
    (Scenario::OutboundBusy, 5),
    (Scenario::AgentSession, 7),
];

const AGENTS: &[(&str, &str)] = &[
    ("20001", "sc的坐席"),
    ("20002", "王五"),
    ("20003", "李娜"),
    ("20004", "张伟"),
    ("20005", "刘洋"),
    ("20006", "陈静"),
    ("20007", "杨帆"),
    ("20008", "赵磊"),
];

const QUEUES: &[(&str, &str)] = &[
    ("10001", "售后服务"),
    ("10002", "销售咨询"),
    ("10003", "技术支持"),
];

/// Generates one flow of `scenario`.
pub(crate) fn generate(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    match scenario {
        Scenario::OutboundAnswered | Scenario::OutboundNoAnswer | Scenario::OutboundBusy => {
            outbound(ctx, scenario)
        }
        Scenario::InboundAnswered | Scenario::InboundNoAnswer => inbound(ctx, scenario),
        Scenario::InboundAbandoned => abandoned(ctx),
        Scenario::InboundTransferred => transferred(ctx),
        _ => agent_session(ctx),
    }
}

fn new_call(ctx: &mut FlowCtx<'_>, call_type: &'static str) -> Call {
    let prefix = ctx.secs(0, 99_999_999_999);
    let id = format!("4{prefix:011}{:06}", ctx.index % 1_000_000);
    let outbound = call_type == "dialout";
    let customer = mobile(&mut ctx.rng);
    let display = if outbound {
        landline(&mut ctx.rng)
    } else {
        String::new()
    };
    Call {
        super_id: (!outbound).then(|| id.clone()),
        id,
        account: ctx.run.sevenmoor_account.clone(),
        customer,
        display,
        trunk: if outbound { "" } else { "4008001234" }.to_owned(),
        call_type,
        agent: ctx.pick(AGENTS),
    }
}

fn outbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let call = new_call(ctx, "dialout");
    let start = ctx.start;
    let customer_start = ctx.at_random(0, 2, 5);
    let answered = scenario == Scenario::OutboundAnswered;
    let answer = customer_start + TimeDelta::seconds(ctx.secs(3, 15));
    let end = if answered {
        answer + TimeDelta::seconds(ctx.secs(20, 300))
    } else {
        customer_start + TimeDelta::seconds(ctx.secs(20, 45))
    };
    pushes::call_status(ctx, &call, start, "calling", CALLING);
    pushes::call_event(ctx, &call, Some("dialoutRing"), customer_start, "ring");
    if answered {
        pushes::link(ctx, &call, answer);
        pushes::call_status(ctx, &call, answer, "link", TALKING);
    }
    if scenario == Scenario::OutboundBusy {
        pushes::media_failure(ctx, &call, customer_start);
    }
    pushes::call_event(ctx, &call, Some("dialoutHangup"), end, "hangup");
    pushes::call_status(ctx, &call, end, "hangup", WRAP_UP);
    let (status, failure_reason, sip_code) = match scenario {
        Scenario::OutboundAnswered => ("ANSWER", None, json!(200)),
        Scenario::OutboundNoAnswer => ("CUSTOMER_NO_ANSWER", Some("requestTimeout"), json!("480")),
        _ => ("CUSTOMER_NO_ANSWER", Some("unknow"), json!(486)),
    };
    let cdr = Cdr {
        status,
        failure_reason,
        sip_code,
        start,
        join_queue: None,
        agent_leg: Some((start, Some(customer_start))),
        customer_leg: Some((customer_start, answered.then_some(answer))),
        end,
        queue: None,
    };
    pushes::cdr(ctx, &call, &cdr);
    pushes::idle_later(ctx, &call, end);
    let disposition = if answered {
        DispositionValue::Answered
    } else {
        DispositionValue::NoAnswer
    };
    expect(ctx, &call, Direction::Outbound, disposition);
}

fn inbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let call = new_call(ctx, "incoming");
    let ivr = ctx.secs(3, 10);
    let queue = ctx.pick(QUEUES);
    let ring_start = ctx.at_random(ivr, 2, 20);
    let answered = scenario == Scenario::InboundAnswered;
    let ring = if answered {
        ctx.secs(2, 10)
    } else {
        ctx.secs(15, 30)
    };
    let answer = ring_start + TimeDelta::seconds(ring);
    let talk = if answered { ctx.secs(20, 300) } else { 0 };
    let end = answer + TimeDelta::seconds(talk);
    pushes::call_event(ctx, &call, None, ring_start, "ring");
    pushes::call_status(ctx, &call, ring_start, "ring", RINGING);
    if answered {
        pushes::link(ctx, &call, answer);
        pushes::call_status(ctx, &call, answer, "link", TALKING);
    }
    pushes::call_event(ctx, &call, None, end, "hangup");
    let after = if answered { WRAP_UP } else { IDLE };
    pushes::call_status(ctx, &call, end, "hangup", after);
    let cdr = Cdr {
        status: if answered {
            "ANSWER"
        } else {
            "AGENT_NO_ANSWER"
        },
        failure_reason: (!answered).then_some("cancel"),
        sip_code: json!(if answered { 200 } else { 487 }),
        start: ctx.start,
        join_queue: Some(ctx.at(ivr)),
        agent_leg: Some((ring_start, answered.then_some(answer))),
        customer_leg: None,
        end,
        queue: Some(queue),
    };
    pushes::cdr(ctx, &call, &cdr);
    if answered {
        pushes::idle_later(ctx, &call, end);
    }
    let disposition = if answered {
        DispositionValue::Answered
    } else {
        DispositionValue::NoAnswer
    };
    expect(ctx, &call, Direction::Inbound, disposition);
}

/// Lost before any agent rang: 7moor pushes only the CDR (`QUEUE_ABANDON`, or `IVR`).
fn abandoned(ctx: &mut FlowCtx<'_>) {
    let mut call = new_call(ctx, "incoming");
    call.agent = ("", "");
    let ivr = ctx.secs(3, 15);
    let in_ivr = ctx.chance(0.3);
    let queued = if in_ivr { 0 } else { ctx.secs(5, 60) };
    let end = ctx.at(ivr + queued);
    let queue = ctx.pick(QUEUES);
    let cdr = Cdr {
        status: if in_ivr { "IVR" } else { "QUEUE_ABANDON" },
        failure_reason: (!in_ivr).then_some("cancel"),
        sip_code: json!(if in_ivr { 200 } else { 487 }),
        start: ctx.start,
        join_queue: (!in_ivr).then(|| ctx.at(ivr)),
        agent_leg: None,
        customer_leg: None,
        end,
        queue: (!in_ivr).then_some(queue),
    };
    pushes::cdr(ctx, &call, &cdr);
    expect(ctx, &call, Direction::Inbound, DispositionValue::Abandoned);
}

/// Agent A answers, then transfers to agent B on a new leg whose `superUniqueId` is the call.
fn transferred(ctx: &mut FlowCtx<'_>) {
    let main = new_call(ctx, "incoming");
    let ring_start = ctx.at_random(0, 5, 20);
    let answer = ring_start + TimeDelta::seconds(ctx.secs(2, 8));
    let transfer = answer + TimeDelta::seconds(ctx.secs(10, 60));
    let leg_answer = transfer + TimeDelta::seconds(ctx.secs(2, 8));
    let end = leg_answer + TimeDelta::seconds(ctx.secs(20, 200));
    let mut leg = new_call(ctx, "transfer");
    leg.id = format!("5{}", &leg.id[1..]);
    leg.super_id = Some(main.id.clone());
    leg.customer = main.customer.clone();
    while leg.agent == main.agent {
        leg.agent = ctx.pick(AGENTS);
    }
    pushes::call_event(ctx, &main, None, ring_start, "ring");
    pushes::call_status(ctx, &main, ring_start, "ring", RINGING);
    pushes::link(ctx, &main, answer);
    pushes::call_status(ctx, &main, answer, "link", TALKING);
    pushes::call_status(ctx, &leg, transfer, "ring", RINGING);
    pushes::call_status(ctx, &main, leg_answer, "hangup", WRAP_UP);
    pushes::call_status(ctx, &leg, leg_answer, "link", TALKING);
    pushes::call_event(ctx, &leg, None, end, "hangup");
    pushes::call_status(ctx, &leg, end, "hangup", WRAP_UP);
    let cdr = Cdr {
        status: "ANSWER",
        failure_reason: None,
        sip_code: json!(200),
        start: ctx.start,
        join_queue: Some(ring_start),
        agent_leg: Some((ring_start, Some(answer))),
        customer_leg: None,
        end,
        queue: Some(QUEUES[0]),
    };
    pushes::cdr(ctx, &main, &cdr);
    expect(ctx, &main, Direction::Inbound, DispositionValue::Answered);
    expect(ctx, &leg, Direction::Inbound, DispositionValue::Answered);
}

/// Login, idle, busy, idle, logout: agent events only.
fn agent_session(ctx: &mut FlowCtx<'_>) {
    let agent = ctx.pick(AGENTS);
    let login_type = ctx.pick(&["PSTN", "SIP", "WEBRTC"]);
    let mut time = ctx.start;
    pushes::session(ctx, agent, time, "login", ("loginType", login_type));
    for status in [IDLE, BUSY, IDLE] {
        time += TimeDelta::seconds(ctx.secs(1, 120));
        pushes::agent_status(ctx, agent, time, status);
    }
    time += TimeDelta::seconds(ctx.secs(1, 60));
    pushes::session(ctx, agent, time, "logout", ("logoutType", "normal"));
}

fn expect(ctx: &mut FlowCtx<'_>, call: &Call, direction: Direction, disposition: DispositionValue) {
    ctx.expect(ExpectedCall {
        call_id: call.id.clone(),
        direction,
        disposition: Some(disposition),
        parent_call_id: call.super_id.clone().filter(|parent| *parent != call.id),
    });
}
