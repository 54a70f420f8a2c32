//! Hostile input as classes: bodies nested 100,000 levels and more through every dialect and
//! every parser path, bare and inside a field of an otherwise valid push; oversized bodies and
//! fields; declared charsets; exact decimals. Each is a typed dead-letter reason (never a
//! stack overflow, never a panic), and whatever maps can be stored and read back.

use callhook_normalizer::limits::{MAX_BODY_BYTES, MAX_NESTING};
use callhook_normalizer::{map_push, Dialect, MapError, RawPush, SourceContext};
use serde_json::Value;

const LEVELS: usize = 100_000;

fn ctx(dialect: Dialect) -> SourceContext {
    SourceContext::new(dialect.as_str(), dialect)
}

fn push<'a>(content_type: Option<&'a str>, query: Option<&'a str>, body: &'a [u8]) -> RawPush<'a> {
    RawPush {
        method: if body.is_empty() { "GET" } else { "POST" },
        content_type,
        query,
        headers: &[],
        body,
        received_at: chrono::DateTime::from_timestamp(1_620_455_977, 0).unwrap(),
    }
}

fn map(dialect: Dialect, push: &RawPush<'_>) -> Result<Vec<Value>, MapError> {
    map_push(push, &ctx(dialect)).map(|mapped| {
        mapped
            .events
            .iter()
            .map(|event| {
                // What the sinks store must read back: serde_json's recursion limit is 128.
                let text = serde_json::to_string(event).unwrap();
                serde_json::from_str::<Value>(&text).expect("an event reads back")
            })
            .collect()
    })
}

fn deep_json(levels: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
}

fn deep_array(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// Bare deep bodies, each reaching a different parser first: strict JSON (objects, arrays),
/// JSON5 (unquoted keys), the lenient JS-literal parser (missing commas, unclosed), a form
/// body that looks like JSON.
fn bare_bodies() -> Vec<(&'static str, Option<&'static str>, String)> {
    let levels = LEVELS;
    vec![
        ("json objects", Some("application/json"), deep_json(levels)),
        ("json arrays", Some("application/json"), deep_array(levels)),
        ("unclosed arrays", None, "[".repeat(levels)),
        (
            "json5 unquoted keys",
            Some("text/plain"),
            format!("{}1{}", "{a:".repeat(levels), "}".repeat(levels)),
        ),
        (
            "js literal",
            None,
            format!("{{event:\"x\"\nb:{}1", "{c:".repeat(levels)),
        ),
        (
            "form type with a JSON body",
            Some("application/x-www-form-urlencoded"),
            deep_json(levels),
        ),
        (
            "single-quoted json5",
            None,
            format!("{}'x'{}", "{'a':".repeat(levels), "}".repeat(levels)),
        ),
    ]
}

#[test]
fn test_bare_deep_bodies_are_too_deep_in_every_dialect() {
    for dialect in [Dialect::SevenMoor, Dialect::CooCenter, Dialect::UinCall] {
        for (name, content_type, body) in bare_bodies() {
            let result = map(dialect, &push(content_type, None, body.as_bytes()));
            assert_eq!(
                result.err().map(|error| error.reason()),
                Some("too_deep"),
                "{dialect:?}: {name}"
            );
        }
    }
}

/// Otherwise valid pushes of each dialect with one field nested deep, in each way a field can
/// carry nesting: a JSON value, a JS-literal value, a JSON document inside a string field
/// (UinCall `eventData`, 7moor's link `content`).
fn pushes_with_a_deep_field(levels: usize) -> Vec<(Dialect, &'static str, String)> {
    let deep = deep_json(levels);
    let deep_text = serde_json::to_string(&deep).unwrap();
    vec![
        (
            Dialect::SevenMoor,
            "v7 extras",
            format!(
                r#"{{"eventUniqueId":"e1","accountId":"1","callUniqueId":"c1","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","extras":{deep}}}"#
            ),
        ),
        (
            Dialect::SevenMoor,
            "v7 link content string",
            format!(r#"{{"uniqueId":"u1","content":{deep_text}}}"#),
        ),
        (
            Dialect::CooCenter,
            "js literal field",
            format!("{{\nevent:\"extensionstatus\"\nexten:\"808\",\nstatus:\"1\",\nx:{deep}\n}}"),
        ),
        (
            Dialect::UinCall,
            "call event field",
            format!(
                r#"{{"tenant_id":"t","session_id":"s","type":"event","dir":"DN","agent_num":"8014","command":"call_talking","call_id":"c","x":{deep}}}"#
            ),
        ),
        (
            Dialect::UinCall,
            "eventData string",
            format!(r#"{{"account":"a","eventData":{deep_text}}}"#),
        ),
    ]
}

#[test]
fn test_a_deep_field_in_a_valid_push_is_too_deep() {
    for (dialect, name, body) in pushes_with_a_deep_field(LEVELS) {
        let result = map(dialect, &push(None, None, body.as_bytes()));
        assert_eq!(
            result.err().map(|error| error.reason()),
            Some("too_deep"),
            "{dialect:?}: {name}"
        );
    }
}

#[test]
fn test_nesting_up_to_the_limit_maps_and_reads_back() {
    // A field nested as deep as the mapper goes still maps, and its event reads back.
    let levels = MAX_NESTING - 1;
    let body = format!(
        r#"{{"eventUniqueId":"e1","accountId":"1","callUniqueId":"c1","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","extras":{}}}"#,
        deep_json(levels)
    );
    let events = map(Dialect::SevenMoor, &push(None, None, body.as_bytes())).unwrap();
    assert_eq!(events.len(), 1);
    let body = format!(
        r#"{{"eventUniqueId":"e1","accountId":"1","callUniqueId":"c1","pushType":"dialoutRing","extras":{}}}"#,
        deep_json(MAX_NESTING)
    );
    assert_eq!(
        map(Dialect::SevenMoor, &push(None, None, body.as_bytes()))
            .unwrap_err()
            .reason(),
        "too_deep"
    );
}

#[test]
fn test_deep_query_and_form_values_are_plain_text() {
    // Query and form values are strings: nesting characters in them are text, not structure.
    let deep = "%5B".repeat(LEVELS);
    let query = format!(
        "CallNo=17319132391&CallSheetID=a1&CallState=Ring&Ring=2021-02-05+20%3A39%3A09&X={deep}"
    );
    let result = map(Dialect::SevenMoor, &push(None, Some(&query), b""));
    assert!(result.is_ok(), "{result:?}");
    let form = format!("event=extensionstatus&exten=808&status=1&x={deep}");
    let result = map(
        Dialect::CooCenter,
        &push(
            Some("application/x-www-form-urlencoded"),
            None,
            form.as_bytes(),
        ),
    );
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn test_hostile_times_and_numbers_stay_vendor_fields() {
    let time = "%25".repeat(LEVELS);
    let phone = "1".repeat(LEVELS);
    let body = format!(
        r#"{{"eventUniqueId":"e1","accountId":"1","callUniqueId":"c1","pushType":"dialoutRing","customerNumber":"{phone}","statusTime":"{time}","callEvent":"ring","callType":"dialout","agentNumber":"20001"}}"#
    );
    let events = map(Dialect::SevenMoor, &push(None, None, body.as_bytes())).unwrap();
    let data = &events[0]["data"];
    assert_eq!(data["callee"]["kind"], "unknown", "{data}");
    assert!(data["vendor_fields"]["statusTime"].is_string(), "{data}");
}

#[test]
fn test_oversized_bodies_and_field_counts_are_too_large() {
    let big = format!(
        r#"{{"pushType":"cdr","x":"{}"}}"#,
        "a".repeat(MAX_BODY_BYTES)
    );
    assert_eq!(
        map(Dialect::SevenMoor, &push(None, None, big.as_bytes()))
            .unwrap_err()
            .reason(),
        "too_large"
    );
    let wide = format!("[{}]", vec!["1"; 30_000].join(","));
    let body = format!(r#"{{"pushType":"cdr","x":{wide}}}"#);
    assert_eq!(
        map(Dialect::SevenMoor, &push(None, None, body.as_bytes()))
            .unwrap_err()
            .reason(),
        "too_large"
    );
    let form = "a=1&".repeat(30_000);
    assert_eq!(
        map(Dialect::CooCenter, &push(None, None, form.as_bytes()))
            .unwrap_err()
            .reason(),
        "too_large"
    );
}

#[test]
fn test_declared_charsets_are_honoured() {
    let (gbk, _, _) = encoding_rs::GBK.encode(
        "{\"event\":\"extensionstatus\",\"exten\":\"808\",\"status\":\"1\",\"name\":\"张三\"}",
    );
    let events = map(
        Dialect::CooCenter,
        &push(Some("application/json; charset=GBK"), None, &gbk),
    )
    .unwrap();
    assert_eq!(events[0]["data"]["vendor_fields"]["name"], "张三");

    let (big5, _, _) = encoding_rs::BIG5.encode("王小明");
    let mut form = b"event=extensionstatus&exten=808&status=1&name=".to_vec();
    form.extend(
        percent_encoding::percent_encode(&big5, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .as_bytes(),
    );
    let events = map(
        Dialect::CooCenter,
        &push(
            Some("application/x-www-form-urlencoded;charset=big5"),
            None,
            &form,
        ),
    )
    .unwrap();
    assert_eq!(events[0]["data"]["vendor_fields"]["name"], "王小明");

    let (gb18030, _, _) = encoding_rs::GB18030.encode("李四");
    let query = format!(
        "CallNo=17319132391&CallSheetID=a1&CallState=Ring&Ring=2021-02-05+20%3A39%3A09&AgentName={}",
        percent_encoding::percent_encode(&gb18030, percent_encoding::NON_ALPHANUMERIC)
    );
    let events = map(
        Dialect::SevenMoor,
        &push(Some("text/plain; charset=\"gb18030\""), Some(&query), b""),
    )
    .unwrap();
    assert_eq!(events[0]["data"]["agent"]["name"], "李四", "{}", events[0]);
}

#[test]
fn test_numbers_keep_the_exact_decimal_sent() {
    let body = r#"{"eventUniqueId":"e1","accountId":"1","callUniqueId":"c1","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":1620455977.123456,"callEvent":"ring","callType":"dialout","agentNumber":"20001","fee":0.30000000000000004000001,"big":123456789012345678901234567890}"#;
    let events = map(Dialect::SevenMoor, &push(None, None, body.as_bytes())).unwrap();
    let event = &events[0];
    assert_eq!(event["time"], "2021-05-08T06:39:37.123456000Z", "{event}");
    let text = serde_json::to_string(&event["data"]["vendor_fields"]).unwrap();
    assert!(text.contains("0.30000000000000004000001"), "{text}");
    assert!(text.contains("123456789012345678901234567890"), "{text}");
}
