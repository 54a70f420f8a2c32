//! End-to-end receiver tests over loopback HTTP: what vendors send is stored byte for byte and
//! acknowledged with `200`/`200` only after the append; errors store nothing.

mod common;

use std::time::Duration;

use bytes::Bytes;
use callhook_ingest::IngestConfig;
use common::{get, open_sources, post, raw_exchange, send, start};
use http_body_util::Full;

fn assert_acked(reply: &common::Reply) {
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!(&reply.body[..], b"200");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn test_get_with_query_7moor_v2() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let query = "CallNo=13800000000&CalledNo=8001&CallSheetID=a1b2-c3&CallState=Hangup\
                 &AgentName=%E5%BC%A0%E4%B8%89&Begin=2024-03-01+10%3A00%3A00";
    let reply = get(&server.url(&format!("/hooks/7moor?{query}"))).await;
    assert_acked(&reply);
    let (key, record) = server.log.only_record();
    assert_eq!(key, "a1b2-c3", "CallSheetID is the partition key");
    assert_eq!(record.source, "7moor");
    assert_eq!(record.method, "GET");
    assert_eq!(record.query.as_deref(), Some(query));
    assert!(record.body.is_empty());
    assert_eq!(record.content_type, None);
    assert_eq!(
        reply.header("x-request-id"),
        Some(record.request_id.as_str())
    );
    assert_eq!(record.request_id.len(), 16);
    assert!(record
        .remote_addr
        .as_deref()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(record.received_at.timestamp_subsec_nanos() % 1_000_000, 0);
    server.stop().await;
}

#[tokio::test]
async fn test_post_json_keeps_exact_bytes_and_headers() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let body = "{\"pushType\":\"dialoutHangup\", \"callUniqueId\":\"100200300400500600\",\
                \"agentName\":\"张三\" ,\"extras\":\"\"}";
    let request = http::Request::post(server.url("/hooks/7moor"))
        .header("content-type", "application/json;charset=UTF-8")
        .header("user-agent", "7moor-push/7")
        .header("authorization", "Bearer secret-never-stored")
        .header("x-request-id", "vendor-id-1")
        .header("x-other", "not selected")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = send(request).await;
    assert_acked(&reply);
    let (key, record) = server.log.only_record();
    assert_eq!(key, "100200300400500600");
    assert_eq!(record.body, body.as_bytes());
    assert_eq!(record.method, "POST");
    assert_eq!(
        record.content_type.as_deref(),
        Some("application/json;charset=UTF-8")
    );
    let names: Vec<&str> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"user-agent") && names.contains(&"content-type"));
    assert!(record
        .headers
        .contains(&("x-request-id".to_owned(), "vendor-id-1".to_owned())));
    assert!(
        !names.contains(&"authorization"),
        "credentials are never stored"
    );
    assert!(!names.contains(&"x-other"));
    assert_ne!(reply.header("x-request-id"), Some("vendor-id-1"));
    server.stop().await;
}

#[tokio::test]
async fn test_post_form_text_and_untyped_bodies() {
    let server = start(
        IngestConfig::default(),
        open_sources(&["coocenter", "uincall"]),
    )
    .await;
    let form = b"event=hangup&uniqueid=1534993059.785&CallSheetID=f-1";
    assert_acked(
        &post(
            &server.url("/hooks/coocenter"),
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .await,
    );
    // A CooCenter JS-literal "JSON" and a GBK-encoded body are stored untouched.
    let literal = b"{ event: 'hangup', calleridnum: \"808\", // comment\n }";
    assert_acked(&post(&server.url("/hooks/coocenter"), Some("text/plain"), literal).await);
    let gbk = b"name=\xd5\xc5\xc8\xfd";
    assert_acked(&post(&server.url("/hooks/coocenter"), None, gbk).await);
    let uincall = br#"{"tenant_id":"t","session_id":"5e1c-aa","dir":"DN","call_result":-1}"#;
    assert_acked(&post(&server.url("/hooks/uincall/"), None, uincall).await);

    let records = server.log.records();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].0, "f-1");
    assert_eq!(records[0].1.body, &form[..]);
    assert_eq!(
        records[1].0, "coocenter",
        "no call id: the source name is the key"
    );
    assert_eq!(records[1].1.body, &literal[..]);
    assert_eq!(records[1].1.content_type.as_deref(), Some("text/plain"));
    assert_eq!(records[2].1.body, &gbk[..]);
    assert_eq!(records[2].1.content_type, None);
    assert_eq!(records[3].0, "5e1c-aa");
    assert_eq!(records[3].1.source, "uincall");
    server.stop().await;
}

#[tokio::test]
async fn test_chunked_body_is_reassembled() {
    let server = start(IngestConfig::default(), open_sources(&["uincall"])).await;
    let request = b"POST /hooks/uincall HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        5\r\n{\"a\":\r\n0B\r\n\"chunked\"}\n\r\n0\r\n\r\n";
    let response = raw_exchange(server.addr, request, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\n200"), "{response}");
    let (_, record) = server.log.only_record();
    assert_eq!(record.body, &b"{\"a\":\"chunked\"}\n"[..]);
    server.stop().await;
}

#[tokio::test]
async fn test_unknown_source_other_paths_and_methods() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let unknown = post(&server.url("/hooks/nope"), None, b"{}").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.header("x-request-id").is_some());
    assert_eq!(get(&server.url("/")).await.status, 404);
    assert_eq!(get(&server.url("/hooks/7moor/a/b")).await.status, 404);
    // A token segment for a source that takes no token is not a route.
    assert_eq!(get(&server.url("/hooks/7moor/sometoken")).await.status, 404);
    let put = send(
        http::Request::put(server.url("/hooks/7moor"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST"));
    assert!(server.log.records().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn test_append_errors_answer_503_with_retry_after() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    server.log.fail_overloaded();
    let overloaded = get(&server.url("/hooks/7moor?CallSheetID=x")).await;
    assert_eq!(overloaded.status, 503);
    assert_eq!(overloaded.header("retry-after"), Some("1"));
    server.log.fail_unavailable();
    let unavailable = post(&server.url("/hooks/7moor"), Some("application/json"), b"{}").await;
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.header("retry-after"), Some("5"));
    assert_ne!(&unavailable.body[..], b"200");
    assert!(server.log.records().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn test_keep_alive_serves_several_requests_per_connection() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let two = b"GET /hooks/7moor?n=1 HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /hooks/7moor?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(server.addr, two, Duration::from_secs(5)).await;
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 2, "{response}");
    let queries: Vec<_> = server
        .log
        .records()
        .into_iter()
        .map(|(_, record)| record.query.unwrap())
        .collect();
    assert_eq!(queries, ["n=1", "n=2"]);
    server.stop().await;
}
