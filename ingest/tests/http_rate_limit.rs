//! Per-source rate limits over real HTTP: `429` with `Retry-After`, nothing stored for it, and
//! a vendor that retries on 429 gets every push stored in the end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use callhook_ingest::{IngestConfig, RateLimitConfig, SourceSettings};
use common::{metric, post, start};

fn limited_source(name: &str, per_second: u32, burst: u32) -> BTreeMap<String, SourceSettings> {
    let limit = RateLimitConfig {
        per_second,
        burst: Some(burst),
    }
    .validate()
    .unwrap();
    let settings = SourceSettings::default().with_rate_limit(Some(limit));
    BTreeMap::from([(name.to_owned(), settings)])
}

fn push_body(number: usize) -> String {
    format!(r#"{{"eventUniqueId":"rate-{number}","callEvent":"ring"}}"#)
}

#[tokio::test]
async fn test_429_with_retry_after_and_nothing_stored() {
    let server = start(IngestConfig::default(), limited_source("limited", 1, 3)).await;
    let url = server.url("/hooks/limited");
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for number in 0..6 {
        let reply = post(&url, Some("application/json"), push_body(number).as_bytes()).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            let seconds: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            retry_after.push(seconds);
        }
    }
    // The burst of 3 passes (the bucket refills 1/s, far slower than these requests).
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(
        statuses[3..].iter().all(|status| *status == 429),
        "{statuses:?}"
    );
    assert!(
        retry_after.iter().all(|seconds| *seconds >= 1),
        "{retry_after:?}"
    );
    assert_eq!(server.log.records().len(), 3, "nothing stored for a 429");
    let rejected = metric(
        &server,
        r#"callhook_ingest_rejected_total{reason="rate_limited",source="limited"}"#,
    )
    .await;
    assert!(
        rejected >= 3.0,
        "rate_limited counted by source: {rejected}"
    );
    let answered_429 = metric(
        &server,
        r#"callhook_ingest_requests_total{source="limited",status="429"}"#,
    )
    .await;
    assert!(answered_429 >= 3.0, "{answered_429}");
    server.stop().await;
}

#[tokio::test]
async fn test_a_client_retrying_on_429_gets_every_push_stored() {
    let server = start(IngestConfig::default(), limited_source("retrying", 20, 5)).await;
    let url = server.url("/hooks/retrying");
    let pushes = 40;
    let mut refused = 0;
    for number in 0..pushes {
        loop {
            let reply = post(&url, Some("application/json"), push_body(number).as_bytes()).await;
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 429);
            refused += 1;
            // A vendor waits `Retry-After` seconds; this one retries sooner (within the test's
            // time) but still backs off, which is what the limit asks of it.
            assert!(reply.header("retry-after").is_some());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        refused > 0,
        "40 pushes at full speed exceed 20/s with a burst of 5"
    );
    let stored: BTreeSet<String> = server
        .log
        .records()
        .into_iter()
        .map(|(_, record)| String::from_utf8(record.body.to_vec()).unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..pushes).map(push_body).collect();
    assert_eq!(stored, expected, "every push stored exactly once");
    assert_eq!(server.log.records().len(), pushes);
    server.stop().await;
}

#[tokio::test]
async fn test_sources_without_a_limit_are_not_limited() {
    let server = start(IngestConfig::default(), common::open_sources(&["open"])).await;
    let url = server.url("/hooks/open");
    for number in 0..50 {
        let reply = post(&url, Some("application/json"), push_body(number).as_bytes()).await;
        assert_eq!(reply.status, 200);
    }
    server.stop().await;
}
