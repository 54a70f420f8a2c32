//! UinCall 优音 云客服 pushes (dialect `uincall`, account = `tenant_id` / `account`).
//!
//! Two shapes arrive on a `uincall` source, told apart by their discriminator:
//! - [`call_event`]: the 云客服 call-event push, a flat JSON object keyed by `command` + `dir`
//!   (`agentDialout`, `agentstatus`, `callout_process`, `call_process`, `call_talking`,
//!   `call_hangup`, `incoming`, `setAgentType`).
//! - [`push_call_event`]: the sister product's pushCallEvent, whose body wraps the event as a
//!   JSON string in `eventData` (`{"eventData": "{\"account\":…,\"event\":\"alert\"}"}`),
//!   keyed by `event`.
//!
//! `eventData` (a JSON string, a string holding a JSON string, or an object) is unwrapped
//! first and merged with the outer fields, so either shape may come wrapped or flat. The
//! mapping tables and every judgement call are in `normalizer/docs/uincall.md`.

mod call_event;
mod codes;
mod journey;
mod push_call_event;

use serde_json::{Map, Value};

use crate::build::Draft;
use crate::error::{MapError, Result};
use crate::payload::{json_kind, Payload};
use crate::push::{RawPush, SourceContext};

/// `data.vendor`.
const VENDOR: &str = "uincall";
/// `data.dialect` (both shapes: they are one vendor's pushes on one source).
const DIALECT: &str = "uincall";
/// The wrapper of the pushCallEvent body.
const EVENT_DATA: &str = "eventData";
/// How many JSON-string layers of `eventData` are decoded (one is documented; a second
/// covers a sender that serializes twice). Bounded so a hostile body cannot loop.
const MAX_STRING_LAYERS: usize = 2;
/// Longest discriminator quoted in an error message.
const MAX_QUOTED_CHARS: usize = 64;

/// Maps one push of this dialect.
pub fn map(
    push: &RawPush<'_>,
    payload: Payload,
    ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    let (fields, wrapped) = unwrap_event_data(payload.fields)?;
    for key in ["command", push_call_event::EVENT] {
        if let Some(value @ (Value::Object(_) | Value::Array(_))) = fields.get(key) {
            return Err(MapError::UnrecognizedShape(format!(
                "`{key}` is a JSON {}, not text",
                json_kind(value)
            )));
        }
    }
    if has_text(&fields, "command") {
        call_event::map(push, fields, ctx)
    } else if has_text(&fields, push_call_event::EVENT) {
        push_call_event::map(push, fields, ctx)
    } else if wrapped {
        Err(MapError::UnrecognizedShape(
            "`eventData` holds no `event` or `command` field".to_owned(),
        ))
    } else {
        Err(MapError::UnrecognizedShape(
            "no `command` field (call-event push) and no `eventData`/`event` (pushCallEvent)"
                .to_owned(),
        ))
    }
}

/// Replaces an `eventData` wrapper by its object, merged with the outer fields; an outer field
/// that clashes with an inner one is kept as `envelope.<name>`. Returns whether it unwrapped.
fn unwrap_event_data(mut outer: Map<String, Value>) -> Result<(Map<String, Value>, bool)> {
    let Some(raw) = outer.remove(EVENT_DATA) else {
        return Ok((outer, false));
    };
    let Some(mut merged) = event_data_object(raw)? else {
        // A blank `eventData` is absent, like any blank field.
        return Ok((outer, false));
    };
    for (name, value) in outer {
        match merged.get(&name) {
            None => {
                merged.insert(name, value);
            }
            Some(existing) if *existing == value => {}
            Some(_) => {
                merged.insert(format!("envelope.{name}"), value);
            }
        }
    }
    Ok((merged, true))
}

/// Decodes `eventData` into an object; `None` when it is blank.
fn event_data_object(raw: Value) -> Result<Option<Map<String, Value>>> {
    let mut value = raw;
    let mut layers = 0;
    loop {
        value = match value {
            Value::Object(map) => return Ok(Some(map)),
            Value::Null => return Ok(None),
            Value::String(text) if text.trim().is_empty() => return Ok(None),
            Value::String(text) if layers < MAX_STRING_LAYERS => {
                layers += 1;
                parse_json_text(text.trim())?
            }
            Value::String(_) => {
                return Err(MapError::UnrecognizedShape(
                    "`eventData` is nested in too many JSON strings".to_owned(),
                ))
            }
            other => {
                return Err(MapError::UnrecognizedShape(format!(
                    "`eventData` is a JSON {}, not an object",
                    json_kind(&other)
                )))
            }
        };
    }
}

fn parse_json_text(text: &str) -> Result<Value> {
    crate::limits::parse_json_text(text, true).map_err(|error| match error {
        MapError::UnparseableBody(_) => {
            MapError::UnparseableBody("`eventData` is not JSON".to_owned())
        }
        bound => bound,
    })
}

/// Returns true when the field is a non-blank scalar.
fn has_text(map: &Map<String, Value>, key: &str) -> bool {
    match map.get(key) {
        Some(Value::String(text)) => !text.trim().is_empty(),
        Some(Value::Number(_) | Value::Bool(_)) => true,
        _ => false,
    }
}

/// A dedupe-key component: the value, or `-` when absent.
fn field_or_dash(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

/// Shortens vendor text quoted in an error (a dead letter's message, a log line).
fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests;
