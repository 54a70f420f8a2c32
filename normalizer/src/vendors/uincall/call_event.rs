//! The UinCall 云客服 call-event push: a flat JSON object whose discriminator is the pair
//! `command` + `dir` (`vendor_event` = `call_talking/DN`). One push is one canonical event.
//!
//! Dedupe key (see `normalizer/docs/uincall.md`): with a session or call id,
//! `uincall:<session_id|call_id>:<command>:<dir>:<type>:<payload_hash>`, since each command
//! happens once per session and direction and a vendor retry repeats the body; without one
//! (`agentDialout` UP, `agentstatus`, `setAgentType`) identical bodies can be two real events
//! (an agent toggling back and forth), so the receive-time bucket is added:
//! `uincall:agent/<agent_num>:<command>:<dir>:b<bucket>:<payload_hash>`.

use callhook_schemas::{
    Agent, AgentState, AgentStatus, CallEventData, Direction, Disposition, Queue,
};
use serde_json::{Map, Value};

use super::codes::{parse_call_direction, CallResult, Command};
use super::journey;
use super::{bounded, field_or_dash, DIALECT, VENDOR};
use crate::build::{payload_hash, receive_bucket, Draft};
use crate::error::{MapError, Result};
use crate::fields::Fields;
use crate::push::{RawPush, SourceContext};

const COMMAND: &str = "command";
const DIR: &str = "dir";
const SESSION_ID: &str = "session_id";
const CALL_ID: &str = "call_id";
const TYPE: &str = "type";
const AGENT_NUM: &str = "agent_num";
const AGENT_TYPE: &str = "agent_type";
const CALL_RESULT: &str = "call_result";
const CALL_DIRECTION: &str = "calldirection";

/// The identifiers every part of this mapping needs, read before fields are taken.
struct Keys {
    command_text: String,
    dir: Option<String>,
    session_id: Option<String>,
    call_id: Option<String>,
    kind: Option<String>,
    agent_num: Option<String>,
}

/// Maps one call-event push (already unwrapped and merged into `map`).
pub(super) fn map(
    push: &RawPush<'_>,
    map: Map<String, Value>,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let hash = payload_hash(&map);
    let mut fields = Fields::new(map, ctx.utc_offset);
    let keys = read_keys(&fields)?;
    let vendor_event = match &keys.dir {
        Some(dir) => format!("{}/{dir}", keys.command_text),
        None => keys.command_text.clone(),
    };
    let command = Command::parse(&keys.command_text)
        .ok_or_else(|| MapError::UnknownEvent(bounded(&vendor_event)))?;
    check_required(command, &keys)?;
    let dedupe_key = dedupe_key(&keys, &hash, push);

    fields.discard(COMMAND);
    if keys.dir.is_some() {
        fields.discard(DIR);
    }
    let mut data = CallEventData::new(VENDOR, DIALECT, &vendor_event, &ctx.name);
    data.account = fields.take_str("tenant_id");
    data.agent = fields.take_str(AGENT_NUM).map(|number| Agent {
        number: Some(number),
        ..Agent::default()
    });
    let call_result = fields.peek_str(CALL_RESULT);
    map_call_fields(command, &mut fields, &mut data);
    journey::call_event(command, keys.session_id.clone(), call_result, &mut data);
    if command.event_type().is_agent_event() {
        data.agent_status = Some(agent_status(command, &fields));
    } else {
        data.disposition = take_disposition(command, &mut fields);
    }
    // `agent_type`, `remark`, `type` and an unmapped `call_result` stay in vendor_fields.
    data.vendor_fields = fields.into_vendor_fields();
    // The push carries no time of its own: the receive time stands in (timesource `received`).
    Ok((
        dedupe_key,
        vec![Draft::new(command.event_type(), None, data)],
    ))
}

fn read_keys(fields: &Fields) -> Result<Keys> {
    let command_text = fields.peek_str(COMMAND).ok_or_else(|| {
        MapError::UnrecognizedShape("no `command` field (UinCall call-event push)".to_owned())
    })?;
    Ok(Keys {
        command_text,
        dir: fields.peek_str(DIR),
        session_id: fields.peek_str(SESSION_ID),
        call_id: fields.peek_str(CALL_ID),
        kind: fields.peek_str(TYPE),
        agent_num: fields.peek_str(AGENT_NUM),
    })
}

/// An agent event needs its agent; a call event needs something to group it by (a call id,
/// or at least the agent, as on the id-less `agentDialout` UP request).
fn check_required(command: Command, keys: &Keys) -> Result<()> {
    if keys.agent_num.is_some() {
        return Ok(());
    }
    if command.event_type().is_agent_event() {
        return Err(MapError::MissingField(AGENT_NUM));
    }
    if keys.session_id.is_none() && keys.call_id.is_none() {
        return Err(MapError::MissingField(CALL_ID));
    }
    Ok(())
}

fn dedupe_key(keys: &Keys, hash: &str, push: &RawPush<'_>) -> String {
    let command = &keys.command_text;
    let dir = field_or_dash(&keys.dir);
    match keys.session_id.as_ref().or(keys.call_id.as_ref()) {
        Some(id) => {
            let kind = field_or_dash(&keys.kind);
            format!("uincall:{id}:{command}:{dir}:{kind}:{hash}")
        }
        None => {
            let agent = field_or_dash(&keys.agent_num);
            let bucket = receive_bucket(push.received_at);
            format!("uincall:agent/{agent}:{command}:{dir}:b{bucket}:{hash}")
        }
    }
}

/// Maps the call's identity, parties, direction and queue.
///
/// `call_id` is the canonical call id (`session_id` when the push has no `call_id`); the
/// session id goes to `correlation` either way, so both keys stay searchable.
fn map_call_fields(command: Command, fields: &mut Fields, data: &mut CallEventData) {
    let session_text = fields.peek_str(SESSION_ID);
    fields.take_correlation(SESSION_ID, &mut data.correlation);
    data.call_id = fields.take_str(CALL_ID).or(session_text);

    data.direction = match fields
        .peek_str(CALL_DIRECTION)
        .as_deref()
        .map(parse_call_direction)
    {
        Some(Some(direction)) => {
            fields.discard(CALL_DIRECTION);
            direction
        }
        // Absent or blank, or a value we do not know (which then stays in vendor_fields as
        // sent).
        _ => command.implied_direction(),
    };
    // ani is the calling side in both directions: the shown business number on a dial-out,
    // the customer on an inbound call; dnis is the called side.
    data.caller = fields.take_phone("ani");
    data.callee = fields.take_phone("dnis");
    match data.direction {
        Direction::Outbound => data.display_number = data.caller.clone(),
        Direction::Inbound => data.trunk_number = data.callee.clone(),
        Direction::Internal | Direction::Unknown => {}
    }
    data.queue = fields.take_str("queue_id").map(|id| Queue {
        id: Some(id),
        name: None,
    });
}

/// The push carries no status value: `agentstatus` only says "it changed". `setAgentType`
/// changes the answering mode, whose code is reported as `raw_code` (and stays in
/// `vendor_fields.agent_type` as sent, like on every other command).
fn agent_status(command: Command, fields: &Fields) -> AgentStatus {
    let raw_code = match command {
        Command::SetAgentType => fields.peek_str(AGENT_TYPE),
        _ => None,
    };
    AgentStatus {
        value: AgentState::Unknown,
        raw_code,
        raw_label: None,
    }
}

/// Reads `call_result` (see [`CallResult::disposition`]); a value that yields no disposition
/// (`-1`, or `0` before the hang-up) stays in `vendor_fields` as sent.
fn take_disposition(command: Command, fields: &mut Fields) -> Option<Disposition> {
    let raw = fields.peek_str(CALL_RESULT)?;
    let value = CallResult::parse(&raw).disposition(command == Command::CallHangup)?;
    fields.discard(CALL_RESULT);
    Some(Disposition {
        value,
        raw: Some(raw),
    })
}
