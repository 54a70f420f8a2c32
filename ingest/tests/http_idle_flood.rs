//! 10,000 idle connections against the real `run()` over loopback: first connections that
//! send nothing, then keep-alive connections left idle after one request, spread over 64
//! client addresses so that the listener's `max_connections` (not the per-address limit) is
//! what they run into. A well-behaved client keeps getting `200`s throughout, and the server
//! never holds more than `max_connections` of them. Its own test binary: it needs ~11,000 file
//! descriptors, and it reads the process-wide connection metrics.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callhook_ingest::IngestConfig;
use common::{connect_from, TestServer};
use common::{metric, open_sources, post_pushes, shed_total, start, wait_until_open_at_most};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const IDLE_CONNECTIONS: usize = 10_000;
const MAX_CONNECTIONS: usize = 1024;
/// Client addresses of the flood: 127.0.1.1 to 127.0.1.64, about 156 connections each.
const FLOOD_ADDRESSES: u8 = 64;
/// Connections opened at once by the flood.
const FLOOD_BATCH: usize = 64;
const HANG_GUARD: Duration = Duration::from_secs(120);

fn flood_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 1 + (index % usize::from(FLOOD_ADDRESSES)) as u8)
}

/// Opens `IDLE_CONNECTIONS` connections; with `one_request`, each has a `404` answered first.
/// Each batch waits until the server has accepted about all the connections before it: a
/// burst past the listen backlog (128 with tokio's `bind`) leaves connections the client
/// thinks open and the kernel dropped, which would never reach the server.
async fn flood(
    server: &TestServer,
    one_request: bool,
    accepted_before: f64,
    good: &AtomicUsize,
) -> Vec<TcpStream> {
    let addr = server.addr;
    let mut streams = Vec::with_capacity(IDLE_CONNECTIONS);
    for batch_start in (0..IDLE_CONNECTIONS).step_by(FLOOD_BATCH) {
        // `good`: the well-behaved client's finished pushes, each a connection of its own.
        while accepted_total(server).await - accepted_before
            < (batch_start + good.load(Ordering::SeqCst)) as f64
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut batch = JoinSet::new();
        for index in batch_start..(batch_start + FLOOD_BATCH).min(IDLE_CONNECTIONS) {
            batch.spawn(async move {
                let mut stream = connect_from(flood_address(index), addr)
                    .await
                    .expect("connect");
                if one_request {
                    one_answered_request(&mut stream).await;
                }
                stream
            });
        }
        while let Some(stream) = batch.join_next().await {
            streams.push(stream.unwrap());
        }
    }
    streams
}

async fn one_answered_request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !received.ends_with(b"Not Found") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed before the answer");
        received.extend_from_slice(&buffer[..n]);
    }
}

async fn accepted_total(server: &TestServer) -> f64 {
    metric(server, "callhook_ingest_connections_accepted_total").await
}

/// Runs the flood while the well-behaved client posts, then checks what the server holds.
async fn flood_while_serving(server: &Arc<TestServer>, one_request: bool, tag: &str) {
    let shed_before = shed_total(server, "idle_at_capacity").await;
    let accepted_before = accepted_total(server).await;
    let good_pushes = Arc::new(AtomicUsize::new(0));
    let flooding = {
        let server = Arc::clone(server);
        let good_pushes = Arc::clone(&good_pushes);
        tokio::spawn(
            async move { flood(&server, one_request, accepted_before, &good_pushes).await },
        )
    };
    // Every place is idle-held for most of the flood; with a 10-minute header timeout only
    // shedding lets these through. A vendor's pace: about a hundred pushes a second.
    let mut statuses = Vec::new();
    while !flooding.is_finished() {
        statuses.extend(post_pushes(server, tag, 1).await);
        good_pushes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let streams = tokio::time::timeout(HANG_GUARD, flooding)
        .await
        .expect("the flood connects")
        .unwrap();
    statuses.extend(post_pushes(server, tag, 20).await);
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    // Every connection of the flood reached the server.
    let expected = (IDLE_CONNECTIONS + statuses.len()) as f64;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut accepted = accepted_total(server).await - accepted_before;
    while accepted < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        accepted = accepted_total(server).await - accepted_before;
    }
    assert!(accepted >= expected, "{accepted} accepted of {expected}");
    // Server side, the bound holds; client side, all but the newest are seen closed.
    let gauge = metric(server, "callhook_ingest_connections").await;
    assert!(gauge <= MAX_CONNECTIONS as f64, "{gauge} connections open");
    let open = wait_until_open_at_most(&streams, MAX_CONNECTIONS, HANG_GUARD).await;
    assert!(
        open <= MAX_CONNECTIONS,
        "{open} idle connections still open"
    );
    let shed = shed_total(server, "idle_at_capacity").await - shed_before;
    assert!(
        shed >= (IDLE_CONNECTIONS - MAX_CONNECTIONS) as f64,
        "{shed} shed"
    );
    assert_eq!(shed_total(server, "ip_limit").await, 0.0, "none refused");
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_ten_thousand_idle_connections_do_not_keep_clients_out() {
    let fd_limit = callhook_ingest::raise_fd_limit().unwrap();
    let needed = IDLE_CONNECTIONS + MAX_CONNECTIONS + 256;
    assert!(
        fd_limit >= needed as u64,
        "RLIMIT_NOFILE hard limit {fd_limit} is below the {needed} this test needs"
    );
    let config = IngestConfig {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout_ms: 600_000,
        ..IngestConfig::default()
    };
    let server = Arc::new(start(config, open_sources(&["7moor"])).await);
    flood_while_serving(&server, false, "fresh-idle").await;
    flood_while_serving(&server, true, "keep-alive-idle").await;
    let stored = server.log.records().len();
    assert!(stored >= 40, "{stored} pushes of the well-behaved client");
    // Client and server share this process: 10,000 client sockets, and at most 1024 server
    // connections with hyper's buffers (~16 KiB each once a request was read). A bound, not a
    // figure: holding all 10,000 connections in hyper would exceed it.
    let peak_kib = peak_rss_kib();
    assert!(peak_kib < 96 * 1024, "peak RSS {peak_kib} KiB");
    let server = Arc::into_inner(server).expect("the flood tasks are done");
    server.stop().await;
}

/// Returns this process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}
