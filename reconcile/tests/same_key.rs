//! A backfilled CDR and the webhook of the same call map to the same event id (through the
//! real mapper), so whichever arrives second is a duplicate.

use callhook_normalizer::{map_push, Dialect, RawPush, SourceContext};
use callhook_reconcile::backfill::{now_millis, push_body, raw_record};
use serde_json::{Map, Value};

fn webhook_body() -> Map<String, Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../normalizer/fixtures/7moor/05_v7_cdr.request.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_str(fixture["body"].as_str().unwrap()).unwrap()
}

#[test]
fn test_backfill_and_webhook_share_the_event_id() {
    let ctx = SourceContext::new("7moor", Dialect::SevenMoor);
    let webhook = webhook_body();
    // The query's record of the same call: no pushType, the call id as `_id`, the store's `__v`.
    let mut record = webhook.clone();
    record.remove("pushType");
    let call_id = record.remove("callUniqueId").unwrap();
    record.insert("_id".to_owned(), call_id.clone());
    record.insert("__v".to_owned(), Value::from(0));
    let body = push_body(record, call_id.as_str().unwrap());
    let raw = raw_record("7moor", &body, now_millis());

    let map = |body: &[u8], headers: &[(String, String)]| {
        let push = RawPush {
            method: "POST",
            content_type: Some("application/json"),
            query: None,
            headers,
            body,
            received_at: now_millis(),
        };
        map_push(&push, &ctx).unwrap()
    };
    let from_webhook = map(serde_json::to_vec(&webhook).unwrap().as_slice(), &[]);
    let from_backfill = map(&raw.body, &raw.headers);
    assert_eq!(from_backfill.dedupe_key, "7moor.v7:cdr:403344537650466816");
    assert_eq!(from_webhook.dedupe_key, from_backfill.dedupe_key);
    assert_eq!(from_webhook.events.len(), 1);
    assert_eq!(from_webhook.events[0].id, from_backfill.events[0].id);
    assert_eq!(from_backfill.events[0].event_type.as_str(), "call.cdr");
    assert_eq!(
        from_backfill.events[0].data.call_id.as_deref(),
        Some("403344537650466816")
    );
}
