//! 7moor legacy v2 call events: GET query strings (`Ring`, `Ringing`, `Link`, `Hangup`), shaped
//! like `normalizer/fixtures/7moor/4x–5x` and mapped per `normalizer/docs/7moor.md`.
//!
//! Each stage repeats the call's fields with every time known so far. Expected rows: the
//! `Hangup` carries `State`, which decides the disposition (`dealing` → answered, `notDeal` →
//! no_answer, `queueLeak`/`leak` → abandoned, `blackList` → blocked); `CallType` `normal` and
//! `transfer` are inbound, `dialout` outbound; a transferred leg's `refCallSheetId` is its
//! parent.

use callhook_schemas::{Direction, DispositionValue};
use chrono::{DateTime, TimeDelta, Utc};

use super::format::{digits, landline, local, mobile, query, uuid};
use super::FlowCtx;
use crate::flow::{ExpectedCall, Scenario, VendorRequest};

/// The scenarios this dialect tells, with their weights.
pub const SCENARIOS: &[(Scenario, u32)] = &[
    (Scenario::InboundAnswered, 30),
    (Scenario::InboundNoAnswer, 10),
    (Scenario::InboundAbandoned, 12),
    (Scenario::InboundBlocked, 3),
    (Scenario::InboundTransferred, 8),
    (Scenario::OutboundAnswered, 25),
    (Scenario::OutboundNoAnswer, 12),
];

const AGENTS: &[(&str, &str)] = &[
    ("8001", "张三"),
    ("8002", "李四"),
    ("8003", "王五"),
    ("8004", "赵六"),
    ("8005", "孙七"),
];

const QUEUES: &[&str] = &["售后服务", "技术支持", "销售热线"];

const FILE_SERVER: &str = "http://sx3-fileserver.7moor.com/";

/// Everything the stages of one call report, filled in as the call progresses.
#[derive(Clone)]
struct Call {
    sheet_id: String,
    parent: Option<String>,
    caller: String,
    called: String,
    call_type: &'static str,
    channel: String,
    ring: DateTime<Utc>,
    ringing: Option<DateTime<Utc>>,
    begin: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    queue_time: Option<DateTime<Utc>>,
    agent: Option<(&'static str, &'static str)>,
    queue: Option<&'static str>,
    state: Option<&'static str>,
}

/// Generates one flow of `scenario`.
pub(crate) fn generate(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    match scenario {
        Scenario::OutboundAnswered | Scenario::OutboundNoAnswer => outbound(ctx, scenario),
        Scenario::InboundAbandoned => abandoned(ctx),
        Scenario::InboundBlocked => blocked(ctx),
        Scenario::InboundTransferred => transferred(ctx),
        _ => inbound(ctx, scenario == Scenario::InboundAnswered),
    }
}

fn new_call(ctx: &mut FlowCtx<'_>, call_type: &'static str) -> Call {
    let outbound = call_type == "dialout";
    let customer = mobile(&mut ctx.rng);
    Call {
        sheet_id: uuid(&mut ctx.rng),
        parent: None,
        caller: if outbound {
            landline(&mut ctx.rng)
        } else {
            customer.clone()
        },
        called: if outbound {
            customer
        } else {
            "4008001234".to_owned()
        },
        call_type,
        channel: format!("{}.{}", ctx.start.timestamp(), digits(&mut ctx.rng, 5)),
        ring: ctx.start,
        ringing: None,
        begin: None,
        end: None,
        queue_time: None,
        agent: None,
        queue: None,
        state: None,
    }
}

fn inbound(ctx: &mut FlowCtx<'_>, answered: bool) {
    let mut call = new_call(ctx, "normal");
    let queued = ctx.secs(3, 12);
    call.queue_time = Some(ctx.at(queued));
    call.queue = Some(ctx.pick(QUEUES));
    stage(ctx, &call, "Ring", call.ring);
    call.agent = Some(ctx.pick(AGENTS));
    let ringing = ctx.at_random(queued, 1, 15);
    call.ringing = Some(ringing);
    stage(ctx, &call, "Ringing", ringing);
    let end = if answered {
        let begin = ringing + TimeDelta::seconds(ctx.secs(2, 10));
        call.begin = Some(begin);
        stage(ctx, &call, "Link", begin);
        begin + TimeDelta::seconds(ctx.secs(20, 300))
    } else {
        ringing + TimeDelta::seconds(ctx.secs(15, 35))
    };
    call.end = Some(end);
    call.state = Some(if answered { "dealing" } else { "notDeal" });
    stage(ctx, &call, "Hangup", end);
    let disposition = if answered {
        DispositionValue::Answered
    } else {
        DispositionValue::NoAnswer
    };
    expect(ctx, &call, Direction::Inbound, disposition);
}

fn outbound(ctx: &mut FlowCtx<'_>, scenario: Scenario) {
    let mut call = new_call(ctx, "dialout");
    call.agent = Some(ctx.pick(AGENTS));
    stage(ctx, &call, "Ring", call.ring);
    let ringing = ctx.at_random(0, 2, 6);
    call.ringing = Some(ringing);
    stage(ctx, &call, "Ringing", ringing);
    let answered = scenario == Scenario::OutboundAnswered;
    let end = if answered {
        let begin = ringing + TimeDelta::seconds(ctx.secs(3, 15));
        call.begin = Some(begin);
        stage(ctx, &call, "Link", begin);
        begin + TimeDelta::seconds(ctx.secs(20, 300))
    } else {
        ringing + TimeDelta::seconds(ctx.secs(20, 45))
    };
    call.end = Some(end);
    call.state = Some(if answered { "dealing" } else { "notDeal" });
    // 7moor documents `Unlink` as the same as `Hangup`; some accounts get one, some the other.
    let last = if ctx.chance(0.2) { "Unlink" } else { "Hangup" };
    stage(ctx, &call, last, end);
    let disposition = if answered {
        DispositionValue::Answered
    } else {
        DispositionValue::NoAnswer
    };
    expect(ctx, &call, Direction::Outbound, disposition);
}

/// Lost in the queue (`queueLeak`) or in the IVR (`leak`): no agent ever rang.
fn abandoned(ctx: &mut FlowCtx<'_>) {
    let mut call = new_call(ctx, "normal");
    stage(ctx, &call, "Ring", call.ring);
    let in_queue = ctx.chance(0.7);
    let ivr = ctx.secs(3, 12);
    let end = if in_queue {
        call.queue_time = Some(ctx.at(ivr));
        call.queue = Some(ctx.pick(QUEUES));
        ctx.at_random(ivr, 5, 60)
    } else {
        ctx.at(ivr)
    };
    call.end = Some(end);
    call.state = Some(if in_queue { "queueLeak" } else { "leak" });
    stage(ctx, &call, "Hangup", end);
    expect(ctx, &call, Direction::Inbound, DispositionValue::Abandoned);
}

/// A blacklisted caller: refused at once, only the `Hangup` is pushed.
fn blocked(ctx: &mut FlowCtx<'_>) {
    let mut call = new_call(ctx, "normal");
    call.end = Some(call.ring);
    call.state = Some("blackList");
    stage(ctx, &call, "Hangup", call.ring);
    expect(ctx, &call, Direction::Inbound, DispositionValue::Blocked);
}

/// Agent A answers and transfers to agent B: a new CallSheetID with `CallType=transfer` and
/// `refCallSheetId` naming the first; the first call's `Hangup` comes when A drops out.
fn transferred(ctx: &mut FlowCtx<'_>) {
    let mut main = new_call(ctx, "normal");
    main.queue = Some(QUEUES[0]);
    main.queue_time = Some(ctx.at(3));
    stage(ctx, &main, "Ring", main.ring);
    main.agent = Some(AGENTS[0]);
    let ringing = ctx.at_random(3, 1, 10);
    main.ringing = Some(ringing);
    stage(ctx, &main, "Ringing", ringing);
    let begin = ringing + TimeDelta::seconds(ctx.secs(2, 8));
    main.begin = Some(begin);
    stage(ctx, &main, "Link", begin);
    let transfer = begin + TimeDelta::seconds(ctx.secs(10, 90));

    let mut leg = main.clone();
    leg.sheet_id = uuid(&mut ctx.rng);
    leg.parent = Some(main.sheet_id.clone());
    leg.call_type = "transfer";
    leg.agent = Some(ctx.pick(&AGENTS[1..]));
    leg.called = leg.agent.map(|a| a.0.to_owned()).unwrap_or_default();
    leg.queue = Some(QUEUES[1]);
    leg.queue_time = None;
    leg.ring = transfer;
    leg.ringing = Some(transfer + TimeDelta::seconds(1));
    leg.begin = None;
    stage(ctx, &leg, "Ringing", transfer + TimeDelta::seconds(1));
    let leg_begin = transfer + TimeDelta::seconds(ctx.secs(3, 12));
    leg.begin = Some(leg_begin);
    stage(ctx, &leg, "Link", leg_begin);
    main.end = Some(leg_begin);
    main.state = Some("dealing");
    stage(ctx, &main, "Hangup", leg_begin);
    let end = leg_begin + TimeDelta::seconds(ctx.secs(20, 200));
    leg.end = Some(end);
    leg.state = Some("dealing");
    stage(ctx, &leg, "Hangup", end);
    expect(ctx, &main, Direction::Inbound, DispositionValue::Answered);
    expect(ctx, &leg, Direction::Inbound, DispositionValue::Answered);
}

fn expect(ctx: &mut FlowCtx<'_>, call: &Call, direction: Direction, disposition: DispositionValue) {
    ctx.expect(ExpectedCall {
        call_id: call.sheet_id.clone(),
        direction,
        disposition: Some(disposition),
        parent_call_id: call.parent.clone(),
    });
}

/// Pushes one stage of the call as a GET, with every field known so far.
fn stage(ctx: &mut FlowCtx<'_>, call: &Call, call_state: &str, time: DateTime<Utc>) {
    let time_text = |t: Option<DateTime<Utc>>| t.map(local).unwrap_or_default();
    let mut pairs: Vec<(&str, String)> = vec![
        ("CallNo", call.caller.clone()),
        ("CalledNo", call.called.clone()),
        ("CallSheetID", call.sheet_id.clone()),
    ];
    if let Some(parent) = &call.parent {
        pairs.push(("refCallSheetId", parent.clone()));
    }
    pairs.push(("CallType", call.call_type.to_owned()));
    pairs.push(("CallID", call.channel.clone()));
    pairs.push(("Ring", local(call.ring)));
    if call.ringing.is_some() {
        pairs.push(("RingingDate", time_text(call.ringing)));
    }
    if call.end.is_some() {
        pairs.push(("Begin", time_text(call.begin)));
        pairs.push(("End", time_text(call.end)));
    } else if call.begin.is_some() {
        pairs.push(("Begin", time_text(call.begin)));
    }
    if call.queue_time.is_some() {
        pairs.push(("QueueTime", time_text(call.queue_time)));
    }
    if let Some((number, name)) = call.agent {
        pairs.push(("Agent", number.to_owned()));
        pairs.push(("Exten", number.to_owned()));
        pairs.push(("AgentName", name.to_owned()));
    }
    if let Some(queue) = call.queue {
        pairs.push(("Queue", queue.to_owned()));
    }
    if let Some(state) = call.state {
        pairs.push(("State", state.to_owned()));
    }
    pairs.push(("CallState", call_state.to_owned()));
    pairs.push(("ActionID", String::new()));
    pairs.push(("WebcallActionID", String::new()));
    if call.end.is_some() {
        let record = call.begin.map(|begin| {
            format!(
                "monitor/sx3/{}/{}_{}_{}.mp3",
                begin.format("%Y%m%d"),
                begin.format("%Y%m%d%H%M%S"),
                call.agent.map(|a| a.0).unwrap_or_default(),
                call.caller
            )
        });
        pairs.push(("RecordFile", record.unwrap_or_default()));
        pairs.push(("FileServer", FILE_SERVER.to_owned()));
    }
    pairs.push(("Province", "北京市".to_owned()));
    pairs.push(("District", "北京市".to_owned()));
    let label = format!("v2/{call_state}");
    ctx.push(
        Some(&call.sheet_id),
        time,
        &label,
        VendorRequest::get(query(&pairs)),
    );
}
