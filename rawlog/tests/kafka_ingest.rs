//! End to end in one process: the real receiver (`callhook_ingest::run`) on loopback with the
//! Kafka raw log behind it, real HTTP posts, the broker stopped and restarted mid-way.

mod kafka_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callhook_ingest::{AdminState, IngestConfig, LogReadiness, Receiver, SourceSettings};
use callhook_rawlog::LogAppender;
use callhook_testkit::KafkaBroker;
use kafka_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A response: status, `x-request-id`, body.
struct Reply {
    status: u16,
    request_id: Option<String>,
    body: String,
}

/// One HTTP/1.1 request on its own connection.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: callhook\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let request_id = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-request-id")
            .then(|| value.trim().to_owned())
    });
    Reply {
        status,
        request_id,
        body: body.to_owned(),
    }
}

/// What one client got acknowledged: `(key, seq, request id, sent after the broker stopped)`.
type Acked = Vec<(String, usize, String, bool)>;

const CLIENTS: usize = 6;
const PUSHES_PER_CLIENT: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_http_pushes_acked_during_a_broker_outage_all_reach_the_topic() {
    let mut broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().unwrap();
    let topic = unique_topic("ingest");
    let log = Arc::new(
        start(settings(
            &broker.bootstrap_servers(),
            &topic,
            data_dir.path(),
        ))
        .await,
    );
    let appender: Arc<dyn LogAppender> = log.clone();
    let sources = [("7moor".to_owned(), SourceSettings::default())].into();
    let receiver = Receiver::new(
        IngestConfig::default().validate().unwrap(),
        sources,
        Arc::clone(&appender),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let server = tokio::spawn(callhook_ingest::run(
        listener,
        Arc::new(receiver),
        wait_stop(stop_rx.clone()),
    ));
    let admin = tokio::spawn(callhook_ingest::run_admin(
        admin_listener,
        Arc::new(AdminState::new(Arc::new(LogReadiness(appender)))),
        wait_stop(stop_rx),
    ));

    let posted = Arc::new(AtomicUsize::new(0));
    let broker_stopped = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let posted = Arc::clone(&posted);
            let broker_stopped = Arc::clone(&broker_stopped);
            tokio::spawn(async move {
                let key = format!("call-{client}");
                let mut acked: Acked = Vec::new();
                for seq in 0..PUSHES_PER_CLIENT {
                    let after_stop = broker_stopped.load(Ordering::SeqCst);
                    let body = format!("{{\"callUniqueId\":\"{key}\",\"seq\":{seq}}}");
                    let reply = http(addr, "POST", "/hooks/7moor", &body).await;
                    assert_eq!(reply.status, 200, "push {key}/{seq}: {}", reply.body);
                    acked.push((key.clone(), seq, reply.request_id.unwrap(), after_stop));
                    posted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                acked
            })
        })
        .collect();

    wait_until(Duration::from_secs(20), "a third of the pushes", || {
        posted.load(Ordering::SeqCst) >= CLIENTS * PUSHES_PER_CLIENT / 3
    })
    .await;
    broker_stopped.store(true, Ordering::SeqCst);
    tokio::task::block_in_place(|| broker.stop());
    wait_until(Duration::from_secs(20), "the spool is in use", || {
        log.spool_in_use()
    })
    .await;
    let ready = http(admin_addr, "GET", "/readyz", "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("spool in use"), "{}", ready.body);
    let metrics = http(admin_addr, "GET", "/metrics", "").await;
    assert!(
        metrics.body.contains("callhook_rawlog_spool_in_use 1"),
        "metrics say the spool is in use"
    );
    wait_until(Duration::from_secs(20), "two thirds of the pushes", || {
        posted.load(Ordering::SeqCst) >= CLIENTS * PUSHES_PER_CLIENT * 2 / 3
    })
    .await;
    tokio::task::block_in_place(|| broker.restart());

    let mut acked: Acked = Vec::new();
    for client in clients {
        acked.extend(client.await.unwrap());
    }
    wait_until(Duration::from_secs(20), "the spool drained", || {
        !log.spool_in_use() && log.spool_depth() == 0
    })
    .await;
    let ready = http(admin_addr, "GET", "/readyz", "").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready"));

    // The in-memory broker forgot what it took before it stopped; everything sent from the
    // stop on must be there, per call in the order it was sent.
    let mut must_arrive: Vec<(String, usize, String)> = acked
        .iter()
        .filter(|(_, _, _, after_stop)| *after_stop)
        .map(|(key, seq, id, _)| (key.clone(), *seq, id.clone()))
        .collect();
    must_arrive.sort();
    assert!(must_arrive.len() >= CLIENTS * PUSHES_PER_CLIENT / 2);
    let ordered: Vec<(String, String)> = must_arrive
        .iter()
        .map(|(key, _, id)| (key.clone(), id.clone()))
        .collect();
    let expected: Vec<String> = ordered.iter().map(|(_, id)| id.clone()).collect();
    let brokers = broker.bootstrap_servers();
    let on_topic = tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, &expected))
        .await
        .unwrap();
    let duplicates = check_complete_and_ordered(&on_topic, &ordered);
    assert!(duplicates <= 100, "{duplicates} duplicates");

    stop_tx.send(true).unwrap();
    server.await.unwrap();
    admin.await.unwrap();
    tokio::task::spawn_blocking(move || log.close().unwrap())
        .await
        .unwrap();
}
