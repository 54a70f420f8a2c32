//! End to end, model v1.1: a transferred 7moor call, two v2 call sheets linked by
//! `refCallSheetId` (no `CallID`, so the link is the sheet reference alone), posted to the real
//! `callhook serve` as 7moor sends them (GET query strings), the second sheet's pushes first.
//! The SQLite sink holds one `calls` row per sheet and one conversation with two legs. Also a
//! UinCall call abandoned while the agent rang and a CooCenter call abandoned in the queue.

mod common;

use common::Server;
use rusqlite::types::Value;

/// Sheet A: the customer's inbound call, answered by agent 8001 and transferred.
const SHEET_A: [&str; 3] = [
    "CallNo=13912345678&CalledNo=4008001234&CallSheetID=sheet-a&CallType=normal&Ring=2021-02-05%2020%3A00%3A00&QueueTime=2021-02-05%2020%3A00%3A05&CallState=Ring",
    "CallNo=13912345678&CalledNo=4008001234&CallSheetID=sheet-a&CallType=normal&Ring=2021-02-05%2020%3A00%3A00&Begin=2021-02-05%2020%3A00%3A10&Agent=8001&AgentName=Li&CallState=Link",
    "CallNo=13912345678&CalledNo=4008001234&CallSheetID=sheet-a&CallType=normal&Ring=2021-02-05%2020%3A00%3A00&QueueTime=2021-02-05%2020%3A00%3A05&Begin=2021-02-05%2020%3A00%3A10&End=2021-02-05%2020%3A01%3A10&Agent=8001&AgentName=Li&State=dealing&IVRKEY=10004%401&CallState=Hangup",
];

/// Sheet B: the same customer after the transfer, answered by agent 8002.
const SHEET_B: [&str; 2] = [
    "CallNo=13912345678&CalledNo=8002&CallSheetID=sheet-b&refCallSheetId=sheet-a&CallType=transfer&Ring=2021-02-05%2020%3A01%3A10&RingingDate=2021-02-05%2020%3A01%3A11&Begin=2021-02-05%2020%3A01%3A15&Agent=8002&AgentName=Wang&CallState=Link",
    "CallNo=13912345678&CalledNo=8002&CallSheetID=sheet-b&refCallSheetId=sheet-a&CallType=transfer&Ring=2021-02-05%2020%3A01%3A10&RingingDate=2021-02-05%2020%3A01%3A11&Begin=2021-02-05%2020%3A01%3A15&End=2021-02-05%2020%3A03%3A15&Agent=8002&AgentName=Wang&State=dealing&CallState=Hangup",
];

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

fn query(db: &rusqlite::Connection, sql: &str, columns: usize) -> Vec<Vec<Value>> {
    let mut statement = db.prepare(sql).expect(sql);
    statement
        .query_map([], |row| (0..columns).map(|i| row.get(i)).collect())
        .expect("query")
        .map(|row| row.expect("row"))
        .collect()
}

#[test]
fn test_a_transferred_7moor_call_is_one_conversation_with_two_legs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    for push in SHEET_B.iter().chain(SHEET_A.iter()) {
        let (status, body) = server.request("GET", &format!("/hooks/7moor?{push}"), None, b"");
        assert_eq!((status, body.as_str()), (200, "200"), "{push}");
    }
    server.wait_until_normalized();
    let db = server.db();

    let calls = query(
        &db,
        "SELECT call_id, conversation_id, leg, parent_call_id, agent_number, disposition, \
         talk_seconds, queue_joined_at, queue_left_at, queue_seconds, abandon_point, ivr_path \
         FROM calls WHERE source = '7moor' ORDER BY call_id",
        12,
    );
    assert_eq!(
        calls,
        vec![
            vec![
                text("sheet-a"),
                text("sheet-a"),
                text("customer"),
                Value::Null,
                text("8001"),
                text("answered"),
                Value::Integer(60),
                text("2021-02-05T12:00:05.000000000Z"),
                text("2021-02-05T12:00:10.000000000Z"),
                Value::Integer(5),
                text("none"),
                text(r#"[{"node":"10004","keys":"1"}]"#),
            ],
            vec![
                text("sheet-b"),
                text("sheet-a"),
                text("transfer"),
                text("sheet-a"),
                text("8002"),
                text("answered"),
                Value::Integer(120),
                Value::Null,
                Value::Null,
                Value::Null,
                text("none"),
                text("[]"),
            ],
        ]
    );

    let conversations = query(
        &db,
        "SELECT conversation_id, legs, first_started_at, last_ended_at, total_talk_seconds, \
         agents, answered, final_disposition FROM conversations WHERE source = '7moor'",
        8,
    );
    assert_eq!(
        conversations,
        vec![vec![
            text("sheet-a"),
            Value::Integer(2),
            text("2021-02-05T12:00:00.000000000Z"),
            text("2021-02-05T12:03:15.000000000Z"),
            Value::Integer(180),
            text(r#"["8001","8002"]"#),
            Value::Integer(1),
            text("answered"),
        ]]
    );
}

/// UinCall says nothing per push about where a caller gave up: the `calls` fold derives it.
/// An inbound call offered to the agent (`incoming`) that ended (`call_hangup`) without
/// `call_talking` was abandoned while the agent's phone rang. CooCenter's `ivr` and `cc_cdr`
/// of one call give its IVR path, queue segment, abandon point and disconnect reason.
#[test]
fn test_abandon_points_of_uincall_and_coocenter_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let uincall = [
        r#"{"tenant_id":"acf528a2-d0e2-4a7b-8513-74cb3995cfab","session_id":"d13606a0-0f43-11ee-be46-5159e7892b86","type":"event","dir":"DN","agent_num":"8014","command":"incoming","call_id":"caf98a77-a652-4b39-cbb3-38ec8ced5192","agent_type":0,"calldirection":"call in","dnis":"02863208372","ani":"15609288360","queue_id":"7e42697c076c4ff5a05e464ac0f28c90","call_result":-1}"#,
        r#"{"tenant_id":"acf528a2-d0e2-4a7b-8513-74cb3995cfab","session_id":"d13606a0-0f43-11ee-be46-5159e7892b86","type":"event","dir":"DN","agent_num":"8014","command":"call_hangup","call_id":"caf98a77-a652-4b39-cbb3-38ec8ced5192","agent_type":0,"calldirection":"call in","dnis":"02863208372","ani":"15609288360","queue_id":"7e42697c076c4ff5a05e464ac0f28c90","call_result":-1}"#,
    ];
    for body in uincall {
        let (status, _) = server.request(
            "POST",
            "/hooks/uincall",
            Some("application/json"),
            body.as_bytes(),
        );
        assert_eq!(status, 200);
    }
    let coocenter = [
        "{event:'ivr',uuid:'1541416000.900',caller:'85322361',called:'',callType:'IN',queueCode:'630',startTime:'2018-11-05 19:10:00',endTime:'2018-11-05 19:10:06',duration:'6',ivrId:'610',ivrName:'workingtime',ivrDtmf:'2',trunkNumber:'123456',mac:'68:69:2e:03:8b:3e'}",
        "{event:'cc_cdr',uuid:'1541416000.900',caller:'85322361',called:'',queueCode:'630',agentCode:'',callType:'incoming',cdrState:'queue',hangupSide:'caller',hangupCause:'',startTime:'2018-11-05 19:10:00',endTime:'2018-11-05 19:10:15',duration:'15',queueTime:'9',ivrTime:'6',ringTime:'0',holdTime:0,pauseTime:0,talkingTime:'0',voicemailState:'0',ivrId:'610',ivrName:'workingtime',ivrDtmf:'2',missCause:'MEMBER_CANCEL',mac:'68:69:2e:03:8b:3e'}",
    ];
    for body in coocenter {
        let (status, _) = server.request("POST", "/hooks/coocenter", None, body.as_bytes());
        assert_eq!(status, 200);
    }
    server.wait_until_normalized();
    let db = server.db();
    let calls = query(
        &db,
        "SELECT source, conversation_id, leg, abandon_point, disconnect_reason, \
         disconnect_reason_raw, queue_joined_at, queue_left_at, queue_seconds, ivr_path \
         FROM calls ORDER BY source",
        10,
    );
    assert_eq!(
        calls,
        vec![
            vec![
                text("coocenter"),
                text("1541416000.900"),
                text("customer"),
                text("queue"),
                text("customer_hangup"),
                text("MEMBER_CANCEL"),
                text("2018-11-05T11:10:06.000000000Z"),
                text("2018-11-05T11:10:15.000000000Z"),
                Value::Integer(9),
                // One node, from the ivr push (the cc_cdr's copy of it is not repeated).
                text(r#"[{"node":"610","name":"workingtime","keys":"2"}]"#),
            ],
            vec![
                text("uincall"),
                text("d13606a0-0f43-11ee-be46-5159e7892b86"),
                text("customer"),
                text("agent_ringing"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                text("[]"),
            ],
        ]
    );
}
