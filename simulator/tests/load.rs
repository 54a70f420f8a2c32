//! The load engine over real loopback HTTP against a small hyper server: exact connection
//! counts with and without keep-alive, failure classes, the observer's calls, and pacing.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use callhook_simulator::load::{
    run_load, LoadOptions, Pace, Plan, Push, PushObserver, ScheduledPush, Target,
};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Answers `200`/`200`, except `/hooks/fail` (`503`) and `/hooks/odd` (`200` with body `OK`).
/// Returns its address and a count of accepted connections.
async fn start_server() -> (Target, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let _ = request.into_body().collect().await;
                    let (status, body) = match path.as_str() {
                        "/hooks/fail" => (503, "busy"),
                        "/hooks/odd" => (200, "OK"),
                        _ => (200, "200"),
                    };
                    let response = Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (Target::from_addr(addr), accepted)
}

#[derive(Default)]
struct Recording {
    acknowledged: AtomicU64,
    failed: Mutex<Vec<String>>,
}

impl PushObserver for Recording {
    fn acknowledged(&self, _: &ScheduledPush, sent_at: DateTime<Utc>, acked_at: DateTime<Utc>) {
        assert!(sent_at <= acked_at);
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, push: &ScheduledPush, _: DateTime<Utc>, _: DateTime<Utc>, class: &str) {
        let path = push.push.path_and_query.path().to_owned();
        self.failed.lock().unwrap().push(format!("{path} {class}"));
    }
}

fn push(target: &Target, source: &str) -> Arc<Push> {
    let path = target.hook_path(source, Some("a=1"));
    Arc::new(Push::post(&path, Some("application/json"), Bytes::from_static(b"{}")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_keep_alive_reuses_exactly_the_configured_connections() {
    let (target, accepted) = start_server().await;
    let options = LoadOptions::new(target.clone(), 4);
    let observer = Arc::new(Recording::default());
    let plan = Plan::repeat(push(&target, "7moor"), 200);
    let report = run_load(plan, &options, observer.clone()).await;
    assert_eq!(
        (report.sent, report.acknowledged, report.failed),
        (200, 200, 0)
    );
    assert_eq!(report.connections_opened, 4);
    assert_eq!(accepted.load(Ordering::Relaxed), 4);
    assert_eq!(report.latency.samples, 200);
    assert!(report.latency.p50_ms <= report.latency.p99_ms);
    assert!(report.latency.p99_ms <= report.latency.max_ms);
    assert_eq!(observer.acknowledged.load(Ordering::Relaxed), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_without_keep_alive_every_push_opens_a_connection() {
    let (target, accepted) = start_server().await;
    let mut options = LoadOptions::new(target.clone(), 3);
    options.keep_alive = false;
    let plan = Plan::repeat(push(&target, "coocenter"), 50);
    let report = run_load(plan, &options, Arc::new(Recording::default())).await;
    assert_eq!(report.acknowledged, 50);
    assert_eq!(report.connections_opened, 50);
    assert_eq!(accepted.load(Ordering::Relaxed), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_failures_are_counted_by_class_and_observed() {
    let (target, _) = start_server().await;
    let mixed: Vec<ScheduledPush> = ["7moor", "fail", "odd", "fail", "uincall"]
        .into_iter()
        .map(|source| ScheduledPush {
            at: Duration::ZERO,
            push: push(&target, source),
            copy: 0,
        })
        .collect();
    let observer = Arc::new(Recording::default());
    let options = LoadOptions::new(target, 2);
    let report = run_load(
        Plan::new(mixed.into_iter(), Some(5)),
        &options,
        observer.clone(),
    )
    .await;
    assert_eq!((report.sent, report.acknowledged, report.failed), (5, 2, 3));
    assert_eq!(report.failures["status_503"], 2);
    assert_eq!(report.failures["unexpected_body"], 1);
    let mut failed = observer.failed.lock().unwrap().clone();
    failed.sort();
    assert_eq!(
        failed,
        [
            "/hooks/fail status_503",
            "/hooks/fail status_503",
            "/hooks/odd unexpected_body"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_unreachable_target_fails_with_connect() {
    // Bind and drop a listener: its port now refuses connections.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = Target::from_addr(addr);
    let report = run_load(
        Plan::repeat(push(&target, "7moor"), 3),
        &LoadOptions::new(target, 1),
        Arc::new(Recording::default()),
    )
    .await;
    assert_eq!(report.failures.get("connect"), Some(&3));
    assert_eq!(report.acknowledged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scheduled_pace_waits_for_each_push() {
    let (target, _) = start_server().await;
    let one = push(&target, "7moor");
    let plan: Vec<ScheduledPush> = (0..5u32)
        .map(|i| ScheduledPush {
            at: Duration::from_millis(50) * i,
            push: Arc::clone(&one),
            copy: 0,
        })
        .collect();
    let mut options = LoadOptions::new(target, 2);
    options.pace = Pace::Scheduled;
    let started = Instant::now();
    let report = run_load(
        Plan::new(plan.into_iter(), Some(5)),
        &options,
        Arc::new(Recording::default()),
    )
    .await;
    // The last push is due 200 ms in: the run cannot end before that.
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(report.acknowledged, 5);
}

#[tokio::test]
async fn test_target_parsing() {
    let target = Target::resolve("http://127.0.0.1:8080/prefix/")
        .await
        .unwrap();
    assert_eq!(target.hook_path("7moor", None), "/prefix/hooks/7moor");
    assert_eq!(
        target.hook_path("7moor", Some("a=1")),
        "/prefix/hooks/7moor?a=1"
    );
    assert_eq!(target.addr().port(), 8080);
    assert!(Target::resolve("https://127.0.0.1").await.is_err());
    assert!(Target::resolve("not a url").await.is_err());
}
