//! Receiver limits over loopback: body size, slow clients, the connection cap, and graceful
//! shutdown. Raw TCP is used where a well-behaved client cannot produce the case.

mod common;

use std::time::Duration;

use callhook_ingest::{IngestConfig, SourceSettings};
use common::{get, open_sources, post, raw_exchange, read_to_close, read_until_close, start};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn small_limits() -> IngestConfig {
    IngestConfig {
        max_body_bytes: 1024,
        body_read_timeout_ms: 300,
        header_read_timeout_ms: 300,
        ..IngestConfig::default()
    }
}

#[tokio::test]
async fn test_413_by_content_length_before_reading() {
    let server = start(small_limits(), open_sources(&["7moor"])).await;
    // Only the head is sent: the refusal must not wait for the body.
    let head = b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n";
    let response = raw_exchange(server.addr, head, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    // At the limit it is accepted.
    let exact = post(&server.url("/hooks/7moor"), None, &[b'x'; 1024]).await;
    assert_eq!(exact.status, 200);
    assert_eq!(server.log.only_record().1.body.len(), 1024);
    server.stop().await;
}

#[tokio::test]
async fn test_413_chunked_without_content_length() {
    let server = start(small_limits(), open_sources(&["7moor"])).await;
    let mut request =
        b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'y'; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw_exchange(server.addr, &request, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(server.log.records().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn test_per_source_body_limit_overrides_global() {
    let mut sources = open_sources(&["7moor"]);
    sources.insert(
        "big".to_owned(),
        SourceSettings::new(Default::default(), Some(4096)).unwrap(),
    );
    let server = start(small_limits(), sources).await;
    assert_eq!(
        post(&server.url("/hooks/big"), None, &[b'z'; 3000])
            .await
            .status,
        200
    );
    let refused = raw_exchange(
        server.addr,
        b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 413 "), "{refused}");
    assert_eq!(server.log.only_record().1.source, "big");
    server.stop().await;
}

#[tokio::test]
async fn test_408_when_the_body_stalls() {
    let server = start(small_limits(), open_sources(&["7moor"])).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let response = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(server.log.records().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn test_slow_headers_close_the_connection() {
    let server = start(small_limits(), open_sources(&["7moor"])).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /hooks/7moor HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed by the header timeout"
    );
    assert!(!response.contains("200 OK"), "{response}");
    assert!(server.log.records().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn test_idle_keep_alive_connection_is_closed() {
    let server = start(small_limits(), open_sources(&["7moor"])).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /hooks/7moor?n=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "an idle keep-alive connection is closed by the header timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn test_connection_cap_holds_new_connections_while_all_are_busy() {
    let config = IngestConfig {
        max_connections: 1,
        header_read_timeout_ms: 10_000,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    // The first connection takes the only place with a request in the handler (its body is
    // still coming): never shed.
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    holder
        .write_all(b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting
        .write_all(b"GET /hooks/7moor?q=held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = read_until_close(&mut waiting, Duration::from_millis(300)).await;
    assert_eq!(early, "", "not served while the cap is reached");
    assert!(server.log.records().is_empty());
    drop(holder);
    let late = read_until_close(&mut waiting, Duration::from_secs(5)).await;
    assert!(late.starts_with("HTTP/1.1 200 OK"), "{late}");
    assert_eq!(server.log.only_record().1.query.as_deref(), Some("q=held"));
    server.stop().await;
}

#[tokio::test]
async fn test_connection_cap_sheds_an_idle_connection_for_a_new_one() {
    let config = IngestConfig {
        max_connections: 1,
        header_read_timeout_ms: 60_000,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    // The only place is taken by a connection that sends nothing.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = get(&server.url("/hooks/7moor?q=new")).await;
    assert_eq!(reply.status, 200);
    // The idle one was closed without a response to make room.
    let idle_saw = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(idle_saw.as_deref(), Some(""), "closed, with nothing sent");
    assert_eq!(server.log.only_record().1.query.as_deref(), Some("q=new"));
    server.stop().await;
}

#[tokio::test]
async fn test_graceful_shutdown_finishes_in_flight_request() {
    let mut server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    server.log.set_append_delay(Duration::from_millis(300));
    let log = server.log.clone();
    let started = log.append_started();
    let url = server.url("/hooks/7moor?CallSheetID=inflight");
    let in_flight = tokio::spawn(async move { get(&url).await });
    started.await;
    let server_task = server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), server_task)
        .await
        .expect("run returns once the in-flight request is done")
        .unwrap();
    // The append takes 300 ms: had `run` not waited for it, nothing would be stored yet.
    assert_eq!(server.log.only_record().0, "inflight");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"200");
    // The listener is gone: new connections are refused.
    assert!(TcpStream::connect(server.addr).await.is_err());
}
