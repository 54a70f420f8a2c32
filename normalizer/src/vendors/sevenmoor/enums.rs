//! 7moor's enum tables: vendor codes to canonical values.
//!
//! Every function returns `None` (or `unknown`) for a value it does not know, so the caller keeps
//! the raw value; nothing here fails. Matching is case-insensitive where 7moor's own spelling
//! varies (`dialTransfer` / `dialtransfer`).

use callhook_schemas::{AgentState, Direction, DispositionValue, HangupSideValue};

/// v7 `statusNumber` (坐席状态编号) to a canonical agent state.
///
/// 8 (未连接, not connected) and 9 (失效, invalid / disabled) both mean the agent cannot take
/// calls, so both are `offline`; the raw code tells them apart. 100 and above are
/// account-defined custom states whose meaning callhook cannot know: `unknown`.
pub fn agent_state_from_code(code: &str) -> Option<AgentState> {
    let state = match code.trim() {
        "0" => AgentState::Idle,
        "1" => AgentState::Busy,
        "2" => AgentState::Dialing,
        "3" => AgentState::Ringing,
        "4" => AgentState::Talking,
        "5" => AgentState::WrapUp,
        "6" => AgentState::Hold,
        "7" => AgentState::Mute,
        "8" | "9" => AgentState::Offline,
        _ => return None,
    };
    Some(state)
}

/// v7 `statusName` (the documented Chinese labels) to a canonical agent state; used only when
/// `statusNumber` is absent or not a code of the table.
pub fn agent_state_from_label(label: &str) -> Option<AgentState> {
    let state = match label.trim() {
        "空闲" => AgentState::Idle,
        "忙碌" => AgentState::Busy,
        "呼叫中" => AgentState::Dialing,
        "振铃" => AgentState::Ringing,
        "通话中" => AgentState::Talking,
        "整理" => AgentState::WrapUp,
        "保持" => AgentState::Hold,
        "静音" => AgentState::Mute,
        "未连接" | "失效" => AgentState::Offline,
        _ => return None,
    };
    Some(state)
}

/// The kind of call event a v7 `callEvent` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    /// `calling` (呼叫).
    Calling,
    /// `ring` (振铃).
    Ring,
    /// `link` (接通).
    Link,
    /// `hangup` (挂机).
    Hangup,
}

/// v7 `callEvent` to its kind.
pub fn call_event(value: &str) -> Option<CallEvent> {
    let event = match value.trim().to_ascii_lowercase().as_str() {
        "calling" => CallEvent::Calling,
        "ring" | "ringing" => CallEvent::Ring,
        "link" => CallEvent::Link,
        "hangup" => CallEvent::Hangup,
        _ => return None,
    };
    Some(event)
}

/// v7 `callType` and v2 `CallType` to a direction (v2's values also appear on v7 records).
///
/// `transfer` is an inbound call transferred (v2: 转接电话, inbound transfer) and
/// `dialTransfer` an outbound one, as the v2 documentation defines them.
pub fn direction(call_type: &str) -> Direction {
    match call_type.trim().to_ascii_lowercase().as_str() {
        "incoming" | "normal" | "transfer" | "in" | "inbound" => Direction::Inbound,
        "dialout" | "webcall" | "previewdialout" | "autodialout" | "dialtransfer" | "out"
        | "outbound" => Direction::Outbound,
        "internal" => Direction::Internal,
        _ => Direction::Unknown,
    }
}

/// v7 cdr `status` (接听状态) to a disposition.
///
/// `IVR` (the caller hung up in the IVR, never reaching a queue or agent) is `abandoned`, like
/// v2's `leak`. Values the documentation does not list (e.g. `LEAK`) return `None`.
pub fn cdr_status(status: &str) -> Option<DispositionValue> {
    let value = match status.trim().to_ascii_uppercase().as_str() {
        "ANSWER" | "ANSWERED" => DispositionValue::Answered,
        "QUEUE_ABANDON" | "IVR" => DispositionValue::Abandoned,
        "AGENT_NO_ANSWER" | "CUSTOMER_NO_ANSWER" => DispositionValue::NoAnswer,
        _ => return None,
    };
    Some(value)
}

/// v7 cdr `failureReason` (失败原因) to a disposition, for records whose `status` says nothing.
///
/// `cancel` (请求中止) is the calling side giving up before an answer: the caller abandoned an
/// inbound call; on an outbound call it is the customer not answering in time.
pub fn failure_reason(reason: &str, direction: Direction) -> Option<DispositionValue> {
    let value = match reason.trim() {
        "forbidden" => DispositionValue::Blocked,
        "serviceUnavailable" => DispositionValue::Failed,
        "requestTimeout" => DispositionValue::NoAnswer,
        "decline" => DispositionValue::Rejected,
        "cancel" if direction == Direction::Inbound => DispositionValue::Abandoned,
        "cancel" => DispositionValue::NoAnswer,
        _ => return None,
    };
    Some(value)
}

/// Returns true for a `failureReason` that means "no failure" (`0`, as the cdr query sends it).
pub fn is_no_failure(reason: &str) -> bool {
    matches!(reason.trim(), "0" | "null")
}

/// A SIP failure response code to a disposition, the last resort when `status` and
/// `failureReason` say nothing. `200` is deliberately absent: the IVR answers inbound calls
/// with 200 too, so it does not prove a person answered.
pub fn sip_code(code: &str) -> Option<DispositionValue> {
    let value = match code.trim() {
        "486" | "600" => DispositionValue::Busy,
        "603" => DispositionValue::Rejected,
        "408" | "480" | "487" => DispositionValue::NoAnswer,
        "403" => DispositionValue::Blocked,
        "404" | "484" | "500" | "502" | "503" | "504" => DispositionValue::Failed,
        _ => return None,
    };
    Some(value)
}

/// v7 cdr `hangUpSide` (挂机方) to a canonical side.
pub fn hangup_side(side: &str) -> HangupSideValue {
    match side.trim().to_ascii_uppercase().as_str() {
        "AGENT" => HangupSideValue::Agent,
        "CUSTOMER" | "USER" => HangupSideValue::Customer,
        "CALLER" => HangupSideValue::Caller,
        "CALLEE" | "CALLED" => HangupSideValue::Callee,
        "SYSTEM" | "PLATFORM" => HangupSideValue::System,
        _ => HangupSideValue::Unknown,
    }
}

/// v7 `preMediaFailureReason` (early-media recognition result) to a disposition.
///
/// The documentation shows one value (`onThePhone`, 正在通话); the others are the usual
/// Chinese-carrier announcements, matched loosely (case, spaces and `_` ignored).
pub fn media_failure_reason(reason: &str) -> Option<DispositionValue> {
    let key: String = reason
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    let value = match key.as_str() {
        "onthephone" | "busy" | "userbusy" => DispositionValue::Busy,
        "reject" | "rejected" | "refuse" | "refused" | "decline" => DispositionValue::Rejected,
        "noanswer" | "notanswer" | "unanswered" => DispositionValue::NoAnswer,
        "emptynumber" | "empty" | "vacant" | "nonexistent" | "notexist" | "poweroff"
        | "shutdown" | "halt" | "stopped" | "outofservice" | "unreachable" | "notreachable"
        | "outofarea" | "arrears" | "restricted" | "callrestricted" => DispositionValue::Failed,
        _ => return None,
    };
    Some(value)
}

/// v7 `preMediaKeyWord` (the recognized Chinese announcement) to a disposition, used when
/// `preMediaFailureReason` is not one [`media_failure_reason`] knows.
pub fn media_keyword(keyword: &str) -> Option<DispositionValue> {
    const BUSY: [&str; 3] = ["正在通话", "通话中", "忙"];
    const REJECTED: [&str; 2] = ["拒接", "拒绝"];
    const NO_ANSWER: [&str; 2] = ["无人接听", "无应答"];
    const FAILED: [&str; 8] = [
        "空号",
        "关机",
        "停机",
        "无法接通",
        "不在服务区",
        "欠费",
        "暂停服务",
        "限制",
    ];
    let contains_any = |words: &[&str]| words.iter().any(|word| keyword.contains(word));
    if contains_any(&REJECTED) {
        Some(DispositionValue::Rejected)
    } else if contains_any(&FAILED) {
        Some(DispositionValue::Failed)
    } else if contains_any(&NO_ANSWER) {
        Some(DispositionValue::NoAnswer)
    } else if contains_any(&BUSY) {
        Some(DispositionValue::Busy)
    } else {
        None
    }
}

/// The v2 `CallState` event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2CallState {
    /// `Ring`: the call entered the call center.
    Ring,
    /// `Ringing`: the called side rings.
    Ringing,
    /// `Link`: answered.
    Link,
    /// `Hangup`, or `Unlink` (documented as the same as Hangup).
    Hangup,
}

/// v2 `CallState` to its kind (case-insensitive).
pub fn v2_call_state(value: &str) -> Option<V2CallState> {
    let state = match value.trim().to_ascii_lowercase().as_str() {
        "ring" => V2CallState::Ring,
        "ringing" => V2CallState::Ringing,
        "link" => V2CallState::Link,
        "hangup" | "unlink" => V2CallState::Hangup,
        _ => return None,
    };
    Some(state)
}

/// v2 `State` (answer result) to a disposition.
///
/// `leak` is documented as abandoned in the IVR and `queueLeak` as abandoned in the queue: both
/// `abandoned`. `limit` (the account's concurrency limit refused the call) is `failed`: the call
/// could not be placed or delivered, nobody chose to end it.
pub fn v2_state(state: &str) -> Option<DispositionValue> {
    let value = match state.trim().to_ascii_lowercase().as_str() {
        "dealing" => DispositionValue::Answered,
        "notdeal" => DispositionValue::NoAnswer,
        "leak" | "queueleak" => DispositionValue::Abandoned,
        "blacklist" => DispositionValue::Blocked,
        "voicemail" => DispositionValue::Voicemail,
        "limit" => DispositionValue::Failed,
        _ => return None,
    };
    Some(value)
}

/// Privacy-number (小号) CDR `result` to a disposition: 0 success, 2 no answer, 9 failed,
/// 11 caller not bound to the number (the platform refused the call: `blocked`).
pub fn privacy_result(result: &str) -> Option<DispositionValue> {
    let value = match result.trim() {
        "0" => DispositionValue::Answered,
        "2" => DispositionValue::NoAnswer,
        "9" => DispositionValue::Failed,
        "11" => DispositionValue::Blocked,
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_agent_codes_cover_the_documented_table() {
        let expected = [
            ("0", AgentState::Idle),
            ("1", AgentState::Busy),
            ("2", AgentState::Dialing),
            ("3", AgentState::Ringing),
            ("4", AgentState::Talking),
            ("5", AgentState::WrapUp),
            ("6", AgentState::Hold),
            ("7", AgentState::Mute),
            ("8", AgentState::Offline),
            ("9", AgentState::Offline),
        ];
        for (code, state) in expected {
            assert_eq!(agent_state_from_code(code), Some(state), "{code}");
        }
        for code in ["10", "100", "101", "-1", "", "idle"] {
            assert_eq!(agent_state_from_code(code), None, "{code}");
        }
    }

    #[test]
    fn test_agent_labels_match_codes() {
        let labels = [
            "空闲",
            "忙碌",
            "呼叫中",
            "振铃",
            "通话中",
            "整理",
            "保持",
            "静音",
            "未连接",
            "失效",
        ];
        for (code, label) in labels.iter().enumerate() {
            assert_eq!(
                agent_state_from_label(label),
                agent_state_from_code(&code.to_string()),
                "{label}"
            );
        }
        assert_eq!(agent_state_from_label("小休"), None);
    }

    #[test]
    fn test_call_events() {
        assert_eq!(call_event("calling"), Some(CallEvent::Calling));
        assert_eq!(call_event("ring"), Some(CallEvent::Ring));
        assert_eq!(call_event("LINK"), Some(CallEvent::Link));
        assert_eq!(call_event("hangup"), Some(CallEvent::Hangup));
        assert_eq!(call_event("transfer"), None);
    }

    #[test]
    fn test_directions() {
        for inbound in ["incoming", "normal", "transfer"] {
            assert_eq!(direction(inbound), Direction::Inbound, "{inbound}");
        }
        for outbound in [
            "dialout",
            "webcall",
            "previewDialout",
            "autoDialout",
            "dialTransfer",
            "dialtransfer",
        ] {
            assert_eq!(direction(outbound), Direction::Outbound, "{outbound}");
        }
        assert_eq!(direction("conference"), Direction::Unknown);
        assert_eq!(direction(""), Direction::Unknown);
    }

    #[test]
    fn test_cdr_status_failure_and_sip() {
        assert_eq!(cdr_status("ANSWER"), Some(DispositionValue::Answered));
        assert_eq!(
            cdr_status("QUEUE_ABANDON"),
            Some(DispositionValue::Abandoned)
        );
        assert_eq!(cdr_status("IVR"), Some(DispositionValue::Abandoned));
        assert_eq!(
            cdr_status("AGENT_NO_ANSWER"),
            Some(DispositionValue::NoAnswer)
        );
        assert_eq!(
            cdr_status("CUSTOMER_NO_ANSWER"),
            Some(DispositionValue::NoAnswer)
        );
        assert_eq!(cdr_status("LEAK"), None);
        let out = Direction::Outbound;
        assert_eq!(
            failure_reason("forbidden", out),
            Some(DispositionValue::Blocked)
        );
        assert_eq!(
            failure_reason("serviceUnavailable", out),
            Some(DispositionValue::Failed)
        );
        assert_eq!(
            failure_reason("requestTimeout", out),
            Some(DispositionValue::NoAnswer)
        );
        assert_eq!(
            failure_reason("decline", out),
            Some(DispositionValue::Rejected)
        );
        assert_eq!(
            failure_reason("cancel", out),
            Some(DispositionValue::NoAnswer)
        );
        assert_eq!(
            failure_reason("cancel", Direction::Inbound),
            Some(DispositionValue::Abandoned)
        );
        assert_eq!(failure_reason("unknow", out), None);
        assert!(is_no_failure("0"));
        assert!(!is_no_failure("cancel"));
        assert_eq!(sip_code("486"), Some(DispositionValue::Busy));
        assert_eq!(sip_code("603"), Some(DispositionValue::Rejected));
        assert_eq!(sip_code("199"), None);
        assert_eq!(sip_code("200"), None);
    }

    #[test]
    fn test_hangup_sides() {
        assert_eq!(hangup_side("AGENT"), HangupSideValue::Agent);
        assert_eq!(hangup_side("customer"), HangupSideValue::Customer);
        assert_eq!(hangup_side("SYSTEM"), HangupSideValue::System);
        assert_eq!(hangup_side("BOTH"), HangupSideValue::Unknown);
    }

    #[test]
    fn test_media_failures() {
        assert_eq!(
            media_failure_reason("onThePhone"),
            Some(DispositionValue::Busy)
        );
        assert_eq!(
            media_failure_reason("empty number"),
            Some(DispositionValue::Failed)
        );
        assert_eq!(
            media_failure_reason("power_off"),
            Some(DispositionValue::Failed)
        );
        assert_eq!(
            media_failure_reason("reject"),
            Some(DispositionValue::Rejected)
        );
        assert_eq!(media_failure_reason("something"), None);
        assert_eq!(media_keyword("正在通话"), Some(DispositionValue::Busy));
        assert_eq!(
            media_keyword("您拨打的电话是空号"),
            Some(DispositionValue::Failed)
        );
        assert_eq!(media_keyword("用户拒接"), Some(DispositionValue::Rejected));
        assert_eq!(media_keyword("你好"), None);
    }

    #[test]
    fn test_v2_call_states_and_states() {
        assert_eq!(v2_call_state("Ring"), Some(V2CallState::Ring));
        assert_eq!(v2_call_state("Ringing"), Some(V2CallState::Ringing));
        assert_eq!(v2_call_state("Link"), Some(V2CallState::Link));
        assert_eq!(v2_call_state("Hangup"), Some(V2CallState::Hangup));
        assert_eq!(v2_call_state("Unlink"), Some(V2CallState::Hangup));
        assert_eq!(v2_call_state("Transfer"), None);
        let expected = [
            ("dealing", DispositionValue::Answered),
            ("notDeal", DispositionValue::NoAnswer),
            ("leak", DispositionValue::Abandoned),
            ("queueLeak", DispositionValue::Abandoned),
            ("blackList", DispositionValue::Blocked),
            ("voicemail", DispositionValue::Voicemail),
            ("limit", DispositionValue::Failed),
        ];
        for (state, value) in expected {
            assert_eq!(v2_state(state), Some(value), "{state}");
        }
        assert_eq!(v2_state("busy"), None);
    }

    #[test]
    fn test_privacy_results() {
        assert_eq!(privacy_result("0"), Some(DispositionValue::Answered));
        assert_eq!(privacy_result("2"), Some(DispositionValue::NoAnswer));
        assert_eq!(privacy_result("9"), Some(DispositionValue::Failed));
        assert_eq!(privacy_result("11"), Some(DispositionValue::Blocked));
        assert_eq!(privacy_result("7"), None);
    }
}
