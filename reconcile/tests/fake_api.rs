//! One pass against the fake 7moor CDR API (a real hyper server on loopback): no gaps, gaps
//! filled, paging, 7-day windows, a refused signature, the API down.

use std::path::Path;
use std::sync::{Arc, Mutex};

use callhook_rawlog::{AppendError, BoxFuture, LogAppender, Position, RawRecord};
use callhook_reconcile::{PassError, ReconcileConfig, Reconciler};
use callhook_testkit::fake_7moor::{cdr_record, Fake7moor};
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

const SECRET: &str = "test-secret-key";

/// A new account per test: the process shares one request budget per account.
fn next_appkey() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "30001{:02}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// An appender that keeps what it is given.
#[derive(Default)]
struct Collect(Mutex<Vec<(String, RawRecord)>>);

impl LogAppender for Collect {
    fn append(
        &self,
        key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, Result<Position, AppendError>> {
        let mut records = self.0.lock().unwrap();
        records.push((key, record));
        let offset = records.len() as u64 - 1;
        Box::pin(async move {
            Ok(Position {
                partition: 0,
                offset,
            })
        })
    }

    fn check_writable(&self) -> Result<(), String> {
        Ok(())
    }
}

fn reconciler(
    fake: &Fake7moor,
    secret: &str,
    page_size: u32,
    sink: &Path,
    appender: Option<Arc<Collect>>,
) -> Reconciler {
    let (base_url, appkey) = (fake.base_url(), fake.appkey());
    let text = format!("base_url = \"{base_url}\"\nappkey = \"{appkey}\"\nsecret = \"{secret}\"\npage_size = {page_size}\nrequest_timeout_ms = 5000\n");
    let config: ReconcileConfig = toml::from_str(&text).unwrap();
    let settings = config
        .validate("7moor", FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap();
    Reconciler::new(
        settings,
        sink.to_owned(),
        appender.map(|a| a as Arc<dyn LogAppender>),
    )
    .unwrap()
}

/// A sink database holding `call.cdr` events of the given calls.
fn sink_with(dir: &Path, calls: &[&str]) -> std::path::PathBuf {
    let path = dir.join("callhook.db");
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch("CREATE TABLE events (source_name TEXT, subject TEXT, type TEXT)")
        .unwrap();
    for call in calls {
        connection
            .execute(
                "INSERT INTO events VALUES ('7moor', ?1, 'call.cdr')",
                [call],
            )
            .unwrap();
    }
    path
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn calls(fake: &Fake7moor, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count)
        .map(|n| format!("4000000000000000{n:02}"))
        .collect();
    // 2021-03-25 19:54:44 +08:00 is 11:54:44Z.
    fake.add_records(
        ids.iter()
            .enumerate()
            .map(|(n, id)| cdr_record(id, &format!("2021-03-25 19:{:02}:44", 10 + n))),
    );
    ids
}

#[tokio::test]
async fn test_no_gaps_appends_nothing() {
    let fake = Fake7moor::start(&next_appkey(), SECRET);
    let ids = calls(&fake, 3);
    let dir = tempfile::tempdir().unwrap();
    let known: Vec<&str> = ids.iter().map(String::as_str).collect();
    let sink = sink_with(dir.path(), &known);
    let log = Arc::new(Collect::default());
    let reconciler = reconciler(&fake, SECRET, 1000, &sink, Some(log.clone()));
    let report = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        (report.checked, report.missing, report.backfilled),
        (3, 0, 0)
    );
    assert!(log.0.lock().unwrap().is_empty());
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["startTime"], "2021-03-25 19:00:00");
    assert_eq!(seen[0].body["endTime"], "2021-03-25 20:59:59");
}

#[tokio::test]
async fn test_gaps_are_backfilled_as_marked_cdr_pushes_across_pages() {
    let fake = Fake7moor::start(&next_appkey(), SECRET);
    let ids = calls(&fake, 5);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_with(dir.path(), &[&ids[0], &ids[3]]);
    let log = Arc::new(Collect::default());
    let reconciler = reconciler(&fake, SECRET, 2, &sink, Some(log.clone()));
    let report = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        (
            report.checked,
            report.missing,
            report.backfilled,
            report.requests
        ),
        (5, 3, 3, 3)
    );
    let pages: Vec<u64> = fake
        .seen()
        .iter()
        .map(|s| s.body["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, [1, 2, 3]);
    let records = log.0.lock().unwrap();
    let keys: Vec<&str> = records.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, [&ids[1], &ids[2], &ids[4]]);
    let (_, record) = &records[0];
    assert_eq!(record.source, "7moor");
    assert!(record
        .headers
        .contains(&("x-callhook-origin".to_owned(), "reconcile".to_owned())));
    let body: Value = serde_json::from_slice(&record.body).unwrap();
    assert_eq!(body["pushType"], "cdr");
    assert_eq!(body["callUniqueId"], ids[1].as_str());
    assert!(body.get("__v").is_none() && body.get("_id").is_none());
}

#[tokio::test]
async fn test_dry_run_counts_without_appending() {
    let fake = Fake7moor::start(&next_appkey(), SECRET);
    calls(&fake, 2);
    let dir = tempfile::tempdir().unwrap();
    let reconciler = reconciler(&fake, SECRET, 1000, &sink_with(dir.path(), &[]), None);
    let report = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        (report.checked, report.missing, report.backfilled),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn test_spans_over_seven_days_are_split() {
    let fake = Fake7moor::start(&next_appkey(), SECRET);
    calls(&fake, 1);
    let dir = tempfile::tempdir().unwrap();
    let reconciler = reconciler(&fake, SECRET, 1000, &sink_with(dir.path(), &[]), None);
    let report = reconciler
        .run_pass(utc("2021-03-10T00:00:00Z"), utc("2021-03-30T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.checked, 1);
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "20 days in 3 queries");
    assert!(
        seen.iter().all(|s| s.code == "200"),
        "the fake refused a query over 7 days"
    );
}

#[tokio::test]
async fn test_a_bad_signature_is_a_clear_config_error() {
    let fake = Fake7moor::start(&next_appkey(), SECRET);
    calls(&fake, 1);
    let dir = tempfile::tempdir().unwrap();
    let reconciler = reconciler(
        &fake,
        "wrong-secret",
        1000,
        &sink_with(dir.path(), &[]),
        None,
    );
    let error = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap_err();
    assert!(error.is_config(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("50015") && text.contains("signature") && text.contains("`secret`"),
        "{text}"
    );
    let metrics = String::from_utf8(
        prometheus::TextEncoder::new()
            .encode_to_string(&prometheus::gather())
            .unwrap()
            .into_bytes(),
    )
    .unwrap();
    assert!(
        metrics.contains("callhook_reconcile_api_errors_total{reason=\"auth\",source=\"7moor\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn test_the_api_down_is_a_transient_error() {
    let fake = Fake7moor::start(&next_appkey(), SECRET);
    fake.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let reconciler = reconciler(&fake, SECRET, 1000, &sink_with(dir.path(), &[]), None);
    let error = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PassError::Api(api) if api.reason() == "http_status"),
        "{error}"
    );
    assert!(!error.is_config());
    drop(fake);
    let closed = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap_err();
    assert!(
        matches!(&closed, PassError::Api(api) if api.reason() == "unreachable"),
        "{closed}"
    );
}

#[tokio::test]
async fn test_a_rate_limit_answer_backs_off_and_retries() {
    let fake = Fake7moor::start("2000199", SECRET);
    calls(&fake, 1);
    fake.limit_next(1);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "base_url = \"{}\"\nappkey = \"2000199\"\nsecret = \"{SECRET}\"\n",
        fake.base_url()
    );
    let config: ReconcileConfig = toml::from_str(&text).unwrap();
    let settings = config
        .validate("limited", FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap();
    let reconciler = Reconciler::new(settings, sink_with(dir.path(), &[]), None).unwrap();
    let started = std::time::Instant::now();
    let report = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap();
    assert_eq!((report.checked, report.requests), (1, 2));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "no back-off: {:?}",
        started.elapsed()
    );
    let codes: Vec<String> = fake.seen().into_iter().map(|seen| seen.code).collect();
    assert_eq!(codes, ["50010", "200"]);
}

#[tokio::test]
async fn test_a_backfill_not_yet_in_the_sink_is_not_appended_again() {
    let fake = Fake7moor::start("2000198", SECRET);
    calls(&fake, 2);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_with(dir.path(), &[]);
    let text = format!(
        "base_url = \"{}\"\nappkey = \"2000198\"\nsecret = \"{SECRET}\"\n",
        fake.base_url()
    );
    let config: ReconcileConfig = toml::from_str(&text).unwrap();
    let settings = config
        .validate("awaiting", FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap();
    let log = Arc::new(Collect::default());
    let reconciler =
        Reconciler::new(settings, sink, Some(log.clone() as Arc<dyn LogAppender>)).unwrap();
    let span = (utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"));
    let first = reconciler.run_pass(span.0, span.1).await.unwrap();
    assert_eq!((first.missing, first.backfilled, first.awaiting), (2, 2, 0));
    // The normalizer has not mapped them yet (or dead-lettered them): no second append.
    let second = reconciler.run_pass(span.0, span.1).await.unwrap();
    assert_eq!(
        (second.missing, second.backfilled, second.awaiting),
        (0, 0, 2)
    );
    assert_eq!(log.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn test_https_speaks_tls_and_reports_a_failed_handshake() {
    // The fake speaks plain HTTP: a TLS client gets no TLS answer from it.
    let fake = Fake7moor::start("2000197", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let url = fake.base_url().replace("http://", "https://");
    let text = format!("base_url = \"{url}\"\nappkey = \"2000197\"\nsecret = \"{SECRET}\"\nrequest_timeout_ms = 3000\n");
    let config: ReconcileConfig = toml::from_str(&text).unwrap();
    let settings = config
        .validate("tls", FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap();
    let reconciler = Reconciler::new(settings, sink_with(dir.path(), &[]), None).unwrap();
    let error = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("TLS handshake"), "{error}");
}

#[tokio::test]
async fn test_a_window_over_ten_thousand_records_is_halved() {
    let fake = Fake7moor::start("2000196", SECRET);
    // 10 001 calls over two hours (the API returns at most 10 000 per query).
    fake.add_records((0..10_001u32).map(|n| {
        let second = n % 7200;
        let start = format!(
            "2021-03-25 {:02}:{:02}:{:02}",
            19 + second / 3600,
            second % 3600 / 60,
            second % 60
        );
        cdr_record(&format!("9{n:017}"), &start)
    }));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "base_url = \"{}\"\nappkey = \"2000196\"\nsecret = \"{SECRET}\"\npage_size = 10000\n",
        fake.base_url()
    );
    let config: ReconcileConfig = toml::from_str(&text).unwrap();
    let settings = config
        .validate("big", FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap();
    let reconciler = Reconciler::new(settings, sink_with(dir.path(), &[]), None).unwrap();
    let report = reconciler
        .run_pass(utc("2021-03-25T11:00:00Z"), utc("2021-03-25T13:00:00Z"))
        .await
        .unwrap();
    assert_eq!((report.checked, report.missing), (10_001, 10_001));
    let windows: Vec<(String, String)> = fake
        .seen()
        .iter()
        .map(|seen| {
            (
                seen.body["startTime"].as_str().unwrap().to_owned(),
                seen.body["endTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        windows,
        [
            (
                "2021-03-25 19:00:00".to_owned(),
                "2021-03-25 20:59:59".to_owned()
            ),
            (
                "2021-03-25 19:00:00".to_owned(),
                "2021-03-25 19:59:59".to_owned()
            ),
            (
                "2021-03-25 20:00:00".to_owned(),
                "2021-03-25 20:59:59".to_owned()
            ),
        ]
    );
}
