//! Hostile clients over loopback TCP against the real `run()`: slowloris heads and bodies,
//! oversized and numerous headers, idle connections, pipelined floods, clients that leave
//! during the append. Each test checks that a well-behaved client keeps getting `200`s while
//! the abuse goes on, and what the abusive connections saw. No test measures speed: waits
//! below are hang guards. The 10,000-connection flood is in `http_idle_flood.rs`.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use callhook_ingest::{IngestConfig, Receiver};
use callhook_rawlog::embedded::{EmbeddedLog, EmbeddedLogConfig};
use callhook_rawlog::LogAppender;
use common::{
    connect_from, get, open_sources, post_pushes, read_to_close, shed_total, start,
    wait_until_open_at_most, TestServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The loopback address the well-behaved client connects from (the default one).
const GOOD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// How long any single step may take before the test fails as hung.
const HANG_GUARD: Duration = Duration::from_secs(20);
/// Pause between two bytes of a slow client.
const DRIP_PAUSE: Duration = Duration::from_millis(50);

fn all_ok(statuses: &[u16]) -> bool {
    !statuses.is_empty() && statuses.iter().all(|status| *status == 200)
}

/// A client that writes `head`, then one `drip` byte every [`DRIP_PAUSE`] for as long as the
/// connection is open. Returns what the server sent if it closed the connection, `None` if the
/// client was still connected when told to stop.
async fn slow_client(
    from: Ipv4Addr,
    server: std::net::SocketAddr,
    head: &'static [u8],
    drip: u8,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let Ok(mut stream) = connect_from(from, server).await else {
        return Some(String::new());
    };
    let _ = stream.write_all(head).await;
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&received).into_owned()),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            },
            _ = stop.changed() => return None,
            () = tokio::time::sleep(DRIP_PAUSE) => {
                // A failed write means the server is gone: the read above reports it.
                let _ = stream.write_all(&[drip]).await;
            }
        }
    }
}

/// Starts `count` slow clients from `from`; returns them and the switch that stops them.
fn slow_clients(
    count: usize,
    from: Ipv4Addr,
    server: &TestServer,
    head: &'static [u8],
    drip: u8,
) -> (JoinSet<Option<String>>, watch::Sender<bool>) {
    let (stop, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    for _ in 0..count {
        clients.spawn(slow_client(from, server.addr, head, drip, stop_rx.clone()));
    }
    (clients, stop)
}

/// Waits for `count` of `clients` to end (the server closed them) and returns what they saw.
async fn next_closed(clients: &mut JoinSet<Option<String>>, count: usize) -> Vec<String> {
    let mut seen = Vec::with_capacity(count);
    for _ in 0..count {
        let ended = tokio::time::timeout(HANG_GUARD, clients.join_next())
            .await
            .expect("the server closes the connection")
            .expect("a client is left")
            .unwrap();
        seen.push(ended.expect("closed by the server, not stopped"));
    }
    seen
}

/// Stops the slow clients still connected and returns how many there were.
async fn stop_all(mut clients: JoinSet<Option<String>>, stop: watch::Sender<bool>) -> usize {
    let _ = stop.send(true);
    let mut still_open = 0;
    while let Some(ended) = clients.join_next().await {
        if ended.unwrap().is_none() {
            still_open += 1;
        }
    }
    still_open
}

/// Limits that only the per-address limit can enforce: timeouts far beyond the hang guard.
fn per_address_limits() -> IngestConfig {
    IngestConfig {
        max_connections: 16,
        max_connections_per_ip: 8,
        header_read_timeout_ms: 120_000,
        body_read_timeout_ms: 120_000,
        ..IngestConfig::default()
    }
}

async fn assert_one_address_cannot_take_the_listener(
    from: Ipv4Addr,
    head: &'static [u8],
    tag: &str,
) {
    let server = start(per_address_limits(), open_sources(&["7moor"])).await;
    let refused_before = shed_total(&server, "ip_limit").await;
    // 24 slow clients from one address against 16 places, 8 per address. Without the
    // per-address limit they would hold all 16 places for the (120 s) timeouts.
    let (mut clients, stop) = slow_clients(24, from, &server, head, b'a');
    let refused = next_closed(&mut clients, 16).await;
    assert!(refused.iter().all(String::is_empty), "{refused:?}");
    let statuses = post_pushes(&server, tag, 10).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    assert_eq!(
        stop_all(clients, stop).await,
        8,
        "8 kept dribbling until stopped"
    );
    assert!(shed_total(&server, "ip_limit").await - refused_before >= 16.0);
    assert_eq!(server.log.records().len(), 10);
    server.stop().await;
}

#[tokio::test]
async fn test_slowloris_heads_from_one_address_leave_room_for_others() {
    let head = b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    assert_one_address_cannot_take_the_listener(Ipv4Addr::new(127, 0, 0, 2), head, "heads").await;
}

#[tokio::test]
async fn test_slowloris_bodies_from_one_address_leave_room_for_others() {
    let head = b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{";
    assert_one_address_cannot_take_the_listener(Ipv4Addr::new(127, 0, 0, 3), head, "bodies").await;
}

#[tokio::test]
async fn test_slowloris_heads_spread_over_addresses_leave_room_for_others() {
    let config = IngestConfig {
        max_connections: 16,
        header_read_timeout_ms: 120_000,
        header_read_timeout_at_capacity_ms: 200,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    let shed_before = shed_total(&server, "slow_head_at_capacity").await;
    // 32 slow heads from 8 addresses, each address far under its limit: every place is busy
    // and only the header timeout (120 s) would free one, but for shedding slow heads.
    let (stop, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    for index in 0..32u8 {
        let from = Ipv4Addr::new(127, 0, 5, 1 + index % 8);
        clients.spawn(slow_client(
            from,
            server.addr,
            b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            b'a',
            stop_rx.clone(),
        ));
    }
    // The first 16 heads made way for the next 16 as they aged.
    let shed = next_closed(&mut clients, 16).await;
    assert!(shed.iter().all(String::is_empty), "{shed:?}");
    let statuses = post_pushes(&server, "spread", 10).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    assert!(shed_total(&server, "slow_head_at_capacity").await - shed_before >= 16.0);
    let still_open = stop_all(clients, stop).await;
    assert!(still_open <= 16, "{still_open}");
    assert_eq!(server.log.records().len(), 10);
    server.stop().await;
}

#[tokio::test]
async fn test_slowloris_dribbling_forever_is_closed_by_the_read_timeouts() {
    let config = IngestConfig {
        header_read_timeout_ms: 300,
        body_read_timeout_ms: 300,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    let timeouts_before = shed_total(&server, "header_timeout").await;
    // Bytes keep coming, but the timers run from the start of the head and of the body.
    let (mut heads, stop_heads) = slow_clients(
        4,
        GOOD,
        &server,
        b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b'a',
    );
    let (mut bodies, stop_bodies) = slow_clients(
        4,
        GOOD,
        &server,
        b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{",
        b'a',
    );
    let statuses = post_pushes(&server, "meanwhile", 5).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    for head_seen in next_closed(&mut heads, 4).await {
        assert_eq!(head_seen, "", "closed without a response");
    }
    for body_seen in next_closed(&mut bodies, 4).await {
        assert!(body_seen.starts_with("HTTP/1.1 408 "), "{body_seen}");
        assert!(body_seen.contains("connection: close"), "{body_seen}");
    }
    assert_eq!(stop_all(heads, stop_heads).await, 0);
    assert_eq!(stop_all(bodies, stop_bodies).await, 0);
    assert!(shed_total(&server, "header_timeout").await - timeouts_before >= 4.0);
    assert_eq!(
        server.log.records().len(),
        5,
        "only the well-behaved pushes"
    );
    server.stop().await;
}

/// Writes `head` (ignoring write errors: the server may close before reading it all) and
/// returns how much was written and what the server answered before closing.
async fn send_head(server: &TestServer, head: Vec<u8>) -> (usize, String) {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let mut written = 0;
        for chunk in head.chunks(64 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                break;
            }
            written += chunk.len();
        }
        (written, writer)
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, reader.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server closes the connection");
    let (written, _writer) = writing.await.unwrap();
    (written, String::from_utf8_lossy(&received).into_owned())
}

fn head_with(request_line: &str, headers: &str) -> Vec<u8> {
    format!("{request_line}\r\nHost: x\r\n{headers}\r\n").into_bytes()
}

#[tokio::test]
async fn test_oversized_and_numerous_headers_are_refused_and_the_connection_closed() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let rejected_before = shed_total(&server, "head_rejected").await;
    let one_header_line = |index: usize| format!("X-H{index}: v\r\n");
    // Over 100 fields, though small: hyper's field limit.
    let many: String = (0..500).map(one_header_line).collect();
    let (_, answer) = send_head(&server, head_with("GET /hooks/7moor HTTP/1.1", &many)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // Thousands of fields, over 32 KiB in all.
    let thousands: String = (0..5000).map(one_header_line).collect();
    let (_, answer) = send_head(&server, head_with("GET /hooks/7moor HTTP/1.1", &thousands)).await;
    assert_head_refused(&answer);
    // One huge header; a huge request line.
    let huge_value = format!("X-Big: {}\r\n", "a".repeat(1024 * 1024));
    let (_, answer) = send_head(&server, head_with("GET /hooks/7moor HTTP/1.1", &huge_value)).await;
    assert_head_refused(&answer);
    let long_uri = format!("GET /hooks/7moor?q={} HTTP/1.1", "u".repeat(100_000));
    let (_, answer) = send_head(&server, head_with(&long_uri, "")).await;
    assert_head_refused(&answer);
    // A head that never ends: the server stops reading at its limit and closes, long before
    // the client is done (64 MiB, more than the loopback socket buffers hold).
    let endless = {
        let mut head = b"GET /hooks/7moor HTTP/1.1\r\nX-Endless: ".to_vec();
        head.resize(64 * 1024 * 1024, b'e');
        head
    };
    let total = endless.len();
    let (written, answer) = send_head(&server, endless).await;
    assert!(
        written < total,
        "the server closed while the head was still coming"
    );
    assert_head_refused(&answer);
    let statuses = post_pushes(&server, "after", 5).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    assert!(shed_total(&server, "head_rejected").await - rejected_before >= 5.0);
    assert_eq!(server.log.records().len(), 5);
    server.stop().await;
}

/// A refused head is answered `431`, unless the client's unread bytes made the close a reset
/// that overtook the answer (hyper has no lingering close); never another status.
fn assert_head_refused(answer: &str) {
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
}

#[tokio::test]
async fn test_uri_over_hypers_limit_gets_414_when_the_head_limit_allows_it() {
    let config = IngestConfig {
        max_header_bytes: 1024 * 1024,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    let long_uri = format!("GET /hooks/7moor?q={} HTTP/1.1", "u".repeat(70_000));
    let (_, answer) = send_head(&server, head_with(&long_uri, "")).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
    assert!(all_ok(&post_pushes(&server, "after", 2).await));
    server.stop().await;
}

/// Opens a keep-alive connection from `from`, has one request answered (a `404`, nothing
/// stored), and leaves it idle.
async fn idle_after_one_request(from: Ipv4Addr, server: &TestServer) -> TcpStream {
    let mut stream = connect_from(from, server.addr).await.unwrap();
    stream
        .write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !received.ends_with(b"Not Found") {
        let n = tokio::time::timeout(HANG_GUARD, stream.read(&mut buffer))
            .await
            .expect("answered")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        received.extend_from_slice(&buffer[..n]);
    }
    stream
}

#[tokio::test]
async fn test_idle_keep_alive_connections_are_shed_for_new_clients() {
    let config = IngestConfig {
        max_connections: 16,
        header_read_timeout_ms: 120_000,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    let shed_before = shed_total(&server, "idle_at_capacity").await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(idle_after_one_request(GOOD, &server).await);
    }
    // Only the header timeout (120 s) would free a place without shedding.
    let statuses = post_pushes(&server, "keep-alive", 10).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    let open = wait_until_open_at_most(&idle, 16, HANG_GUARD).await;
    assert!(open <= 16, "{open} idle connections still open");
    assert!(open > 0, "the newest idle connections stay");
    assert!(shed_total(&server, "idle_at_capacity").await - shed_before >= 24.0);
    drop(idle);
    server.stop().await;
}

#[tokio::test]
async fn test_idle_connections_of_one_address_make_room_for_its_new_ones() {
    let config = IngestConfig {
        max_connections_per_ip: 4,
        header_read_timeout_ms: 120_000,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    let shared_address = Ipv4Addr::new(127, 0, 0, 4);
    let refused_before = shed_total(&server, "ip_limit").await;
    let shed_before = shed_total(&server, "idle_at_ip_limit").await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from(shared_address, server.addr).await.unwrap());
        // Admitted in order, so that the oldest are the ones shed.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A well-behaved client behind the same address (a shared NAT) is still served.
    let mut good = connect_from(shared_address, server.addr).await.unwrap();
    good.write_all(
        b"GET /hooks/7moor?CallSheetID=nat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut good, HANG_GUARD)
        .await
        .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let open = wait_until_open_at_most(&idle, 4, HANG_GUARD).await;
    assert!(open <= 4, "{open}");
    assert_eq!(
        shed_total(&server, "ip_limit").await,
        refused_before,
        "none refused"
    );
    assert!(shed_total(&server, "idle_at_ip_limit").await - shed_before >= 7.0);
    assert_eq!(server.log.only_record().0, "nat");
    drop(idle);
    server.stop().await;
}

fn pipelined_pushes(count: usize) -> Vec<u8> {
    let mut requests = Vec::new();
    for index in 0..count {
        let body = format!("{{\"callId\":\"pipelined-{index}\"}}");
        requests.extend_from_slice(
            format!(
                "POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    requests
}

#[tokio::test]
async fn test_pipelined_flood_is_answered_in_order_while_others_are_served() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    let mut flood = TcpStream::connect(server.addr).await.unwrap();
    // Hundreds of requests in one go; the client reads nothing until the others are served.
    flood.write_all(&pipelined_pushes(500)).await.unwrap();
    let statuses = post_pushes(&server, "beside-the-flood", 10).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    let mut received = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let answered = |received: &[u8]| {
        String::from_utf8_lossy(received)
            .matches("HTTP/1.1 200 OK")
            .count()
    };
    while answered(&received) < 500 {
        let n = tokio::time::timeout(HANG_GUARD, flood.read(&mut buffer))
            .await
            .expect("answers keep coming")
            .unwrap();
        assert!(n > 0, "closed after {} answers", answered(&received));
        received.extend_from_slice(&buffer[..n]);
    }
    let records = server.log.records();
    assert_eq!(records.len(), 510);
    let pipelined: Vec<String> = records
        .iter()
        .map(|(_, record)| String::from_utf8_lossy(&record.body).into_owned())
        .filter(|body| body.contains("pipelined-"))
        .collect();
    let expected: Vec<String> = (0..500)
        .map(|index| format!("{{\"callId\":\"pipelined-{index}\"}}"))
        .collect();
    assert_eq!(pipelined, expected, "stored in the order sent");
    server.stop().await;
}

#[tokio::test]
async fn test_pipelining_client_that_never_reads_is_closed_at_the_write_timeout() {
    let config = IngestConfig {
        response_write_timeout_ms: 300,
        ..IngestConfig::default()
    };
    let server = start(config, open_sources(&["7moor"])).await;
    let timeouts_before = shed_total(&server, "write_timeout").await;
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive window fills after a few responses.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (_reader, mut writer) = stream.into_split();
    // `404`s: cheap answers, nothing stored. Written until the server hangs up.
    let flood = tokio::spawn(async move {
        let requests = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        let mut written = 0usize;
        while writer.write_all(&requests).await.is_ok() {
            written += requests.len();
        }
        written
    });
    let statuses = post_pushes(&server, "beside-the-stall", 10).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    tokio::time::timeout(HANG_GUARD, flood)
        .await
        .expect("the server closes the stalled connection")
        .unwrap();
    assert!(shed_total(&server, "write_timeout").await - timeouts_before >= 1.0);
    // Shutdown does not wait on it either.
    server.stop().await;
}

/// Closes `stream` with a reset, the most abrupt way a client can leave.
#[allow(deprecated)] // `SO_LINGER` blocks on drop only with a non-zero timeout
fn reset(stream: TcpStream) {
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}

#[tokio::test]
async fn test_clients_gone_during_the_append_leave_the_server_serving() {
    let server = start(IngestConfig::default(), open_sources(&["7moor"])).await;
    server.log.set_append_delay(Duration::from_millis(200));
    for index in 0..10 {
        let started = server.log.append_started();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request =
            format!("GET /hooks/7moor?CallSheetID=gone-{index} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(HANG_GUARD, started)
            .await
            .expect("the append starts");
        // Leaves while its push is being appended.
        reset(stream);
    }
    let statuses = post_pushes(&server, "after", 5).await;
    assert!(all_ok(&statuses), "{statuses:?}");
    let reply = get(&server.url("/hooks/7moor?CallSheetID=last")).await;
    assert_eq!(reply.status, 200);
    // Each abandoned append either completed or was dropped whole; none is half there.
    for (key, record) in server.log.records() {
        assert!(
            key.starts_with("gone-") || key == "last" || key == "7moor",
            "{key}"
        );
        assert_eq!(record.source, "7moor");
    }
    // Shutdown waits for every connection task: it returning shows none was left behind.
    server.stop().await;
}

#[tokio::test]
async fn test_clients_gone_during_the_append_to_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let settings = EmbeddedLogConfig::default().validate(dir.path()).unwrap();
    let log = Arc::new(EmbeddedLog::open(settings).unwrap());
    let appender: Arc<dyn LogAppender> = log.clone();
    let config = IngestConfig::default().validate().unwrap();
    let receiver = Receiver::new(config, open_sources(&["7moor"]), appender).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(callhook_ingest::run(
        listener,
        Arc::new(receiver),
        async move {
            let _ = stopped.await;
        },
    ));
    // 50 pushes whose clients reset the connection right after sending them.
    for index in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET /hooks/7moor?CallSheetID=gone-{index} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        reset(stream);
    }
    for index in 0..5 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /hooks/7moor?CallSheetID=kept-{index} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut stream, HANG_GUARD)
            .await
            .expect("answered");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
    let _ = stop.send(());
    tokio::time::timeout(HANG_GUARD, server)
        .await
        .expect("shutdown completes: no connection task left behind")
        .unwrap();
    let reader = log.reader().unwrap();
    let mut queries = Vec::new();
    let mut next = 0;
    loop {
        let chunk = reader.read(0, next, 64).unwrap();
        let Some(last) = chunk.last() else { break };
        next = last.position.offset + 1;
        queries.extend(
            chunk
                .into_iter()
                .map(|stored| stored.record.query.unwrap_or_default()),
        );
    }
    for index in 0..5 {
        let kept = format!("CallSheetID=kept-{index}");
        assert_eq!(
            queries.iter().filter(|query| **query == kept).count(),
            1,
            "{kept}"
        );
    }
    let mut unique = queries.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), queries.len(), "no push stored twice");
    assert!(queries.len() <= 55);
    log.close().unwrap();
}
