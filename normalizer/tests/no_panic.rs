//! Property tests: arbitrary bytes, arbitrary query strings and arbitrary JSON never make any
//! mapper panic; every outcome is events or a typed error with a known reason.

use callhook_normalizer::{map_push, Dialect, MapError, RawPush, SourceContext};
use proptest::prelude::*;
use serde_json::{Map, Value};

const DIALECTS: [Dialect; 3] = [Dialect::SevenMoor, Dialect::CooCenter, Dialect::UinCall];

/// Discriminator fields and values the mappers branch on, so generated objects reach deep paths.
const KEYS: &[&str] = &[
    "pushType",
    "callEvent",
    "eventUniqueId",
    "callUniqueId",
    "superUniqueId",
    "uniqueId",
    "content",
    "statusNumber",
    "statusName",
    "statusTime",
    "accountId",
    "extras",
    "CallState",
    "CallSheetID",
    "CallType",
    "State",
    "Begin",
    "End",
    "Ring",
    "RecordFile",
    "FileServer",
    "event",
    "uniqueid",
    "uuid",
    "timestamp",
    "status",
    "statustext",
    "exten",
    "dialstatus",
    "cdrState",
    "missCause",
    "startTime",
    "endTime",
    "calltype",
    "disposition",
    "command",
    "dir",
    "session_id",
    "call_id",
    "tenant_id",
    "agent_num",
    "call_result",
    "calldirection",
    "eventData",
    "customerNumber",
    "agentNumber",
    "status",
    "sipCode",
    "totalDuration",
    "mac",
];
const WORDS: &[&str] = &[
    "dialoutRing",
    "dialoutHangup",
    "callStatus",
    "cdr",
    "mediaFailreason",
    "login",
    "logout",
    "calling",
    "ring",
    "link",
    "hangup",
    "Ring",
    "Ringing",
    "Link",
    "Hangup",
    "Unlink",
    "dealing",
    "notDeal",
    "queueLeak",
    "limit",
    "dialbegein",
    "dialend",
    "extensionstatus",
    "ivr",
    "cc_cdr",
    "ANSWER",
    "BUSY",
    "9",
    "17",
    "-1",
    "-2",
    "agentDialout",
    "agentstatus",
    "callout_process",
    "call_process",
    "call_talking",
    "call_hangup",
    "incoming",
    "setAgentType",
    "UP",
    "DN",
    "call out",
    "call in",
    "",
    " ",
    "1620455977",
    "1534993059.785012",
    "2018-11-0519:05:31",
    "2021-05-08 14:39:37",
    "100",
    "整理",
    "%E5%8C%97",
    "{\"a\":1}",
    "\"808\" <808>",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(WORDS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |pairs| Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>()
                )
            ),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    proptest::collection::vec((proptest::sample::select(KEYS), json_value()), 0..14).prop_map(
        |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
    )
}

fn check(body: &[u8], query: Option<&str>, content_type: Option<&str>) {
    for dialect in DIALECTS {
        let push = RawPush {
            method: if body.is_empty() { "GET" } else { "POST" },
            content_type,
            query,
            headers: &[],
            body,
            received_at: chrono::DateTime::UNIX_EPOCH,
        };
        match map_push(&push, &SourceContext::new("s", dialect)) {
            Ok(mapped) => {
                assert!(!mapped.dedupe_key.is_empty());
                for event in mapped.events {
                    assert_eq!(event.id.len(), 32);
                    assert!(!event.subject.is_empty());
                }
            }
            Err(error) => assert!(MapError::REASONS.contains(&error.reason())),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn test_arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&body, None, None);
        check(&body, None, Some("application/x-www-form-urlencoded"));
    }

    #[test]
    fn test_arbitrary_query_strings_never_panic(query in "[A-Za-z=&%0-9+._-]{0,80}") {
        check(b"", Some(&query), None);
    }

    #[test]
    fn test_arbitrary_json_never_panics(value in object()) {
        let body = serde_json::to_vec(&value).unwrap();
        check(&body, None, Some("application/json"));
        // The same object as a nested `content` and as a query string of its scalars.
        let wrapped = serde_json::to_vec(&serde_json::json!({"content": value, "uniqueId": "u"})).unwrap();
        check(&wrapped, None, None);
        if let Value::Object(map) = &value {
            let pairs: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            let query = serde_urlencoded::to_string(pairs).unwrap();
            check(b"", Some(&query), None);
        }
    }
}
