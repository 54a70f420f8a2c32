//! Per-source auth over loopback HTTP: each scheme's success is `200` and its failure `401`
//! with nothing stored. Signatures are computed here with the primitives directly, not with
//! the receiver's code.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use callhook_ingest::IngestConfig;
use chrono::{FixedOffset, Utc};
use common::{get, post, send, source_with_auth, start, Reply};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use md5::{Digest, Md5};
use sha2::Sha256;

const TOKEN: &str = "Tok3n-abcdefghijklmnop";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

async fn post_with(url: &str, headers: &[(&str, String)], body: &'static [u8]) -> Reply {
    let mut builder = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    send(builder.body(Full::new(Bytes::from_static(body))).unwrap()).await
}

async fn metrics_text(server: &common::TestServer) -> String {
    get(&server.admin_url("/metrics")).await.text()
}

#[tokio::test]
async fn test_token_in_path_or_query() {
    let server = start(
        IngestConfig::default(),
        source_with_auth("tok", &format!("token = \"{TOKEN}\"")),
    )
    .await;
    let in_path = get(&server.url(&format!("/hooks/tok/{TOKEN}?CallSheetID=p"))).await;
    assert_eq!(in_path.status, 200);
    let in_query = get(&server.url(&format!("/hooks/tok?a=%E5%8C%97&token={TOKEN}&b=2"))).await;
    assert_eq!(in_query.status, 200);
    let wrong = get(&server.url("/hooks/tok/Tok3n-abcdefghijklmnoX")).await;
    assert_eq!(wrong.status, 401);
    let missing = get(&server.url("/hooks/tok?a=1")).await;
    assert_eq!(missing.status, 401);

    let records = server.log.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].1.query.as_deref(), Some("CallSheetID=p"));
    assert_eq!(
        records[1].1.query.as_deref(),
        Some("a=%E5%8C%97&b=2"),
        "the token never reaches the log"
    );
    let metrics = metrics_text(&server).await;
    assert!(
        metrics
            .contains(r#"callhook_ingest_auth_failures_total{reason="bad_token",source="tok"} 1"#),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"callhook_ingest_auth_failures_total{reason="missing_token",source="tok"} 1"#));
    assert!(metrics.contains(r#"callhook_ingest_requests_total{source="tok",status="401"} 2"#));
    server.stop().await;
}

#[tokio::test]
async fn test_ip_allowlist_and_trusted_proxy() {
    let denied = start(
        IngestConfig::default(),
        source_with_auth("ipdeny", "ip_allowlist = [\"10.0.0.0/8\"]"),
    )
    .await;
    assert_eq!(get(&denied.url("/hooks/ipdeny")).await.status, 401);
    assert!(denied.log.records().is_empty());
    denied.stop().await;

    let allowed = start(
        IngestConfig::default(),
        source_with_auth("ipallow", "ip_allowlist = [\"127.0.0.1\"]"),
    )
    .await;
    assert_eq!(get(&allowed.url("/hooks/ipallow")).await.status, 200);
    allowed.stop().await;

    let proxied = start(
        IngestConfig::default(),
        source_with_auth(
            "ipproxy",
            "ip_allowlist = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"127.0.0.0/8\"]",
        ),
    )
    .await;
    let via = |client: &'static str| {
        http::Request::get(proxied.url("/hooks/ipproxy"))
            .header("x-forwarded-for", client)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(via("10.1.2.3")).await.status, 200);
    assert_eq!(send(via("10.1.2.3, 8.8.8.8")).await.status, 401);
    let (_, record) = proxied.log.only_record();
    assert!(record
        .headers
        .contains(&("x-forwarded-for".to_owned(), "10.1.2.3".to_owned())));
    proxied.stop().await;
}

#[tokio::test]
async fn test_hmac_header_signature() {
    let config = "[hmac]\nsecret = \"shh\"\nheader = \"X-Hub-Signature-256\"\nprefix = \"sha256=\"";
    let server = start(IngestConfig::default(), source_with_auth("signed", config)).await;
    let body: &'static [u8] = br#"{"session_id":"s-1"}"#;
    let good = format!("sha256={}", hex::encode(hmac_sha256(b"shh", &[body])));
    let url = server.url("/hooks/signed");
    assert_eq!(
        post_with(&url, &[("x-hub-signature-256", good.clone())], body)
            .await
            .status,
        200
    );
    let other_body = post_with(&url, &[("x-hub-signature-256", good)], b"{}").await;
    assert_eq!(other_body.status, 401);
    let wrong_key = format!("sha256={}", hex::encode(hmac_sha256(b"shx", &[body])));
    assert_eq!(
        post_with(&url, &[("x-hub-signature-256", wrong_key)], body)
            .await
            .status,
        401
    );
    assert_eq!(post(&url, Some("application/json"), body).await.status, 401);
    assert_eq!(server.log.only_record().0, "s-1");
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains(
            r#"callhook_ingest_auth_failures_total{reason="bad_signature",source="signed"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"callhook_ingest_auth_failures_total{reason="missing_signature",source="signed"} 1"#
    ));
    server.stop().await;
}

#[tokio::test]
async fn test_hmac_base64_signature() {
    let config = "[hmac]\nsecret = \"shh\"\nencoding = \"base64\"";
    let server = start(
        IngestConfig::default(),
        source_with_auth("signed64", config),
    )
    .await;
    let body: &'static [u8] = b"CallNo=1";
    let good = BASE64.encode(hmac_sha256(b"shh", &[body]));
    let url = server.url("/hooks/signed64");
    assert_eq!(
        post_with(&url, &[("x-signature", good)], body).await.status,
        200
    );
    let hex_instead = hex::encode(hmac_sha256(b"shh", &[body]));
    assert_eq!(
        post_with(&url, &[("x-signature", hex_instead)], body)
            .await
            .status,
        401
    );
    server.stop().await;
}

const SW_OLD_KEY: &[u8] = b"old-signing-key-0123456789";
const SW_NEW_KEY: &[u8] = b"new-signing-key-9876543210";
const SW_BODY: &[u8] = br#"{"type":"call.ended"}"#;

/// Starts a server whose source `name` accepts Standard Webhooks signed by either key.
async fn standard_webhooks_server(name: &str) -> common::TestServer {
    let config = format!(
        "[standard_webhooks]\nsecrets = [\"whsec_{}\", \"whsec_{}\"]",
        BASE64.encode(SW_OLD_KEY),
        BASE64.encode(SW_NEW_KEY)
    );
    start(IngestConfig::default(), source_with_auth(name, &config)).await
}

/// Posts `SW_BODY` with Standard Webhooks headers; `signature` is the whole header value.
async fn post_standard(url: &str, id: &str, timestamp: i64, signature: String) -> u16 {
    let headers = [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    post_with(url, &headers, SW_BODY).await.status
}

fn sign_standard(key: &[u8], id: &str, timestamp: i64) -> String {
    let timestamp = timestamp.to_string();
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", SW_BODY];
    format!("v1,{}", BASE64.encode(hmac_sha256(key, &signed)))
}

#[tokio::test]
async fn test_standard_webhooks_with_key_rotation() {
    let server = standard_webhooks_server("sw").await;
    let url = server.url("/hooks/sw");
    let now = Utc::now().timestamp();
    let rotated = format!("v1,AAAA {}", sign_standard(SW_NEW_KEY, "msg_1", now));
    assert_eq!(post_standard(&url, "msg_1", now, rotated).await, 200);
    let by_old_key = sign_standard(SW_OLD_KEY, "msg_2", now);
    assert_eq!(post_standard(&url, "msg_2", now, by_old_key).await, 200);
    let records = server.log.records();
    assert_eq!(records.len(), 2);
    assert!(records[0]
        .1
        .headers
        .contains(&("webhook-id".to_owned(), "msg_1".to_owned())));
    server.stop().await;
}

#[tokio::test]
async fn test_standard_webhooks_failures() {
    let server = standard_webhooks_server("swbad").await;
    let url = server.url("/hooks/swbad");
    let now = Utc::now().timestamp();
    let stale = sign_standard(SW_NEW_KEY, "msg_3", now - 600);
    assert_eq!(post_standard(&url, "msg_3", now - 600, stale).await, 401);
    let future = sign_standard(SW_NEW_KEY, "msg_4", now + 600);
    assert_eq!(post_standard(&url, "msg_4", now + 600, future).await, 401);
    let other_id = sign_standard(SW_NEW_KEY, "msg_5", now);
    assert_eq!(post_standard(&url, "msg_6", now, other_id).await, 401);
    let unknown_key = sign_standard(b"never-configured", "msg_7", now);
    assert_eq!(post_standard(&url, "msg_7", now, unknown_key).await, 401);
    assert_eq!(post_with(&url, &[], SW_BODY).await.status, 401);
    assert!(server.log.records().is_empty());
    let metrics = metrics_text(&server).await;
    for line in [
        r#"callhook_ingest_auth_failures_total{reason="stale_timestamp",source="swbad"} 2"#,
        r#"callhook_ingest_auth_failures_total{reason="bad_signature",source="swbad"} 2"#,
        r#"callhook_ingest_auth_failures_total{reason="missing_signature",source="swbad"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn test_coocenter_daily_webkey() {
    let config = "[coocenter_webkey]\nwebkey = \"zycoo-key\"";
    let server = start(IngestConfig::default(), source_with_auth("cc", config)).await;
    let url = server.url("/hooks/cc");
    let beijing = FixedOffset::east_opt(8 * 3600).unwrap();
    let date = Utc::now()
        .with_timezone(&beijing)
        .format("%Y-%m-%d")
        .to_string();
    let key = hex::encode(Md5::digest(format!("zycoo-key{date}").as_bytes()));
    let body: &'static [u8] = b"{event: 'hangup'}";
    assert_eq!(
        post_with(&url, &[("authorization", key.clone())], body)
            .await
            .status,
        200
    );
    assert_eq!(
        post_with(&url, &[("authentication", key)], body)
            .await
            .status,
        200
    );
    let a_week_ago = (Utc::now().with_timezone(&beijing) - chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();
    let old = hex::encode(Md5::digest(format!("zycoo-key{a_week_ago}").as_bytes()));
    assert_eq!(
        post_with(&url, &[("authorization", old)], body)
            .await
            .status,
        401
    );
    assert_eq!(post_with(&url, &[], body).await.status, 401);
    assert_eq!(server.log.records().len(), 2);
    let (_, record) = &server.log.records()[0];
    assert!(
        record
            .headers
            .iter()
            .all(|(name, _)| name != "authorization"),
        "the daily key is a credential and is not stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn test_unauthorised_body_is_not_read() {
    // A token failure is decided on the head: a huge declared body is not waited for.
    let config = IngestConfig {
        body_read_timeout_ms: 60_000,
        ..IngestConfig::default()
    };
    let server = start(
        config,
        source_with_auth("tok2", &format!("token = \"{TOKEN}\"")),
    )
    .await;
    let response = common::raw_exchange(
        server.addr,
        b"POST /hooks/tok2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 401 "), "{response}");
    server.stop().await;
}
