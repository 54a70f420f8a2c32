//! The admin listener over loopback: health, readiness following the log, metrics text.

mod common;

use bytes::Bytes;
use callhook_ingest::IngestConfig;
use common::{get, open_sources, send, start};
use http_body_util::Full;

#[tokio::test]
async fn test_healthz_and_readyz_follow_the_log() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let health = get(&server.admin_url("/healthz")).await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    assert_eq!(get(&server.admin_url("/readyz")).await.status, 200);
    server.log.set_writable(false);
    let not_ready = get(&server.admin_url("/readyz")).await;
    assert_eq!(not_ready.status, 503);
    assert!(
        not_ready.text().contains("test log is read-only"),
        "{}",
        not_ready.text()
    );
    server.log.set_writable(true);
    assert_eq!(get(&server.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&server.admin_url("/nope")).await.status, 404);
    let post = send(
        http::Request::post(server.admin_url("/healthz"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 405);
    server.stop().await;
}

#[tokio::test]
async fn test_metrics_count_requests_and_keep_labels_bounded() {
    let server = start(IngestConfig::default(), open_sources(&["metricsrc"])).await;
    assert_eq!(
        get(&server.url("/hooks/metricsrc?CallSheetID=1"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&server.url("/hooks/metricsrc?CallSheetID=2"))
            .await
            .status,
        200
    );
    assert_eq!(get(&server.url("/hooks/random-name-1")).await.status, 404);
    server.log.fail_overloaded();
    assert_eq!(get(&server.url("/hooks/metricsrc")).await.status, 503);
    let reply = get(&server.admin_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = reply.text();
    for line in [
        r#"callhook_ingest_requests_total{source="metricsrc",status="200"} 2"#,
        r#"callhook_ingest_requests_total{source="metricsrc",status="503"} 1"#,
        r#"callhook_ingest_rejected_total{reason="overloaded",source="metricsrc"} 1"#,
        r#"callhook_ingest_request_bytes_count{source="metricsrc"} 2"#,
        r#"callhook_ingest_ack_seconds_count{source="metricsrc"} 2"#,
        r#"callhook_ingest_rejected_total{reason="unknown_source",source="_unknown"}"#,
        "callhook_ingest_connections ",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        !text.contains("random-name-1"),
        "unknown names never become labels"
    );
    server.stop().await;
}
