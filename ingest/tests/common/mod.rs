//! Test harness: an in-memory `LogAppender` double and a receiver served on `127.0.0.1:0`.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use callhook_ingest::{
    AdminState, IngestConfig, LogReadiness, Receiver, SourceAuthConfig, SourceSettings,
};
use callhook_rawlog::{AppendError, BoxFuture, LogAppender, Position, RawRecord};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

const MODE_OK: u8 = 0;
const MODE_OVERLOADED: u8 = 1;
const MODE_UNAVAILABLE: u8 = 2;

/// An in-memory raw log: records in a Vec, with switches for failures and a slow append.
#[derive(Clone, Default)]
pub struct MemoryLog(Arc<MemoryLogInner>);

#[derive(Default)]
pub struct MemoryLogInner {
    records: Mutex<Vec<(String, RawRecord)>>,
    mode: AtomicU8,
    not_writable: AtomicBool,
    append_delay: Mutex<Option<Duration>>,
    append_started: Notify,
}

impl MemoryLog {
    pub fn records(&self) -> Vec<(String, RawRecord)> {
        self.0.records.lock().unwrap().clone()
    }

    pub fn only_record(&self) -> (String, RawRecord) {
        let records = self.records();
        assert_eq!(records.len(), 1, "expected exactly one stored record");
        records.into_iter().next().unwrap()
    }

    pub fn fail_overloaded(&self) {
        self.0.mode.store(MODE_OVERLOADED, Ordering::SeqCst);
    }

    pub fn fail_unavailable(&self) {
        self.0.mode.store(MODE_UNAVAILABLE, Ordering::SeqCst);
    }

    pub fn set_writable(&self, writable: bool) {
        self.0.not_writable.store(!writable, Ordering::SeqCst);
    }

    pub fn set_append_delay(&self, delay: Duration) {
        *self.0.append_delay.lock().unwrap() = Some(delay);
    }

    /// Resolves when an append has started (registers before the append can notify).
    pub fn append_started(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.0.append_started.notified()
    }
}

impl LogAppender for MemoryLog {
    fn append(
        &self,
        key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, Result<Position, AppendError>> {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            inner.append_started.notify_waiters();
            let delay = *inner.append_delay.lock().unwrap();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match inner.mode.load(Ordering::SeqCst) {
                MODE_OVERLOADED => return Err(AppendError::Overloaded("test bound")),
                MODE_UNAVAILABLE => return Err(AppendError::Unavailable("test disk".into())),
                _ => {}
            }
            let mut records = inner.records.lock().unwrap();
            records.push((key, record));
            Ok(Position {
                partition: 0,
                offset: records.len() as u64 - 1,
            })
        })
    }

    fn check_writable(&self) -> Result<(), String> {
        if self.0.not_writable.load(Ordering::SeqCst) {
            Err("test log is read-only".into())
        } else {
            Ok(())
        }
    }
}

/// A receiver (and its admin listener) running on loopback.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub log: MemoryLog,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
}

/// Sources with open auth, as the binary configures them by default.
pub fn open_sources(names: &[&str]) -> BTreeMap<String, SourceSettings> {
    names
        .iter()
        .map(|name| ((*name).to_owned(), SourceSettings::default()))
        .collect()
}

/// One source with the given auth TOML (the `[sources.<name>.auth]` table).
pub fn source_with_auth(name: &str, auth_toml: &str) -> BTreeMap<String, SourceSettings> {
    let config: SourceAuthConfig = toml::from_str(auth_toml).unwrap();
    let settings = SourceSettings::new(config.validate().unwrap(), None).unwrap();
    BTreeMap::from([(name.to_owned(), settings)])
}

pub async fn start(config: IngestConfig, sources: BTreeMap<String, SourceSettings>) -> TestServer {
    let log = MemoryLog::default();
    let appender: Arc<dyn LogAppender> = Arc::new(log.clone());
    let receiver =
        Receiver::new(config.validate().unwrap(), sources, Arc::clone(&appender)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (admin_tx, admin_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(callhook_ingest::run(
        listener,
        Arc::new(receiver),
        async move {
            let _ = shutdown_rx.await;
            let _ = admin_tx.send(());
        },
    ));
    let admin = tokio::spawn(callhook_ingest::run_admin(
        admin_listener,
        Arc::new(AdminState::new(Arc::new(LogReadiness(appender)))),
        async move {
            let _ = admin_rx.await;
        },
    ));
    TestServer {
        addr,
        admin_addr,
        log,
        shutdown: Some(shutdown_tx),
        server,
        admin,
    }
}

impl TestServer {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// Signals shutdown and returns the server task, to await its end.
    pub fn begin_shutdown(&mut self) -> &mut JoinHandle<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        &mut self.server
    }

    pub async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("server stops")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), &mut self.admin)
            .await
            .expect("admin stops")
            .unwrap();
    }
}

/// A response as the tests look at it.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request with the hyper client.
pub async fn send(request: http::Request<Full<Bytes>>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("response within 10 s")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(url: &str) -> Reply {
    send(http::Request::get(url).body(Full::default()).unwrap()).await
}

pub async fn post(url: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
    let mut builder = http::Request::post(url);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    send(
        builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap(),
    )
    .await
}

/// Writes raw bytes on a fresh connection and returns everything read until the server closes
/// or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream, wait).await
}

/// Reads until EOF, an error (e.g. a reset after the response), or `wait`.
pub async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads until the server closes the connection (EOF or reset) and returns what was read;
/// `None` when it is still open after `wait` (a hang guard, not a speed check).
pub async fn read_to_close(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// Connects to `addr` from the loopback address `from` (Linux routes all of 127.0.0.0/8 to
/// `lo`), so that a test can play a second client host.
pub async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// Returns true when the server has closed `stream` (EOF or reset), without waiting: a
/// connection the runtime has not yet seen closing counts as open, so callers poll.
pub fn closed_by_server(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Polls `streams` until at most `most_open` of them are still open, giving up after `wait`
/// (a hang guard); returns how many are still open.
pub async fn wait_until_open_at_most(
    streams: &[TcpStream],
    most_open: usize,
    wait: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let open = streams.iter().filter(|s| !closed_by_server(s)).count();
        if open <= most_open || tokio::time::Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts `count` small pushes as a well-behaved vendor that opens a connection per push and
/// returns their statuses, in order.
pub async fn post_pushes(server: &TestServer, tag: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(count);
    for index in 0..count {
        let body = format!("{{\"callId\":\"{tag}-{index}\"}}");
        let reply = post(
            &server.url("/hooks/7moor"),
            Some("application/json"),
            body.as_bytes(),
        )
        .await;
        statuses.push(reply.status);
    }
    statuses
}

/// Returns the value of one sample of the admin listener's `/metrics`, e.g.
/// `callhook_ingest_connections_shed_total{reason="ip_limit"}` (0 when absent). Metrics are
/// process-wide: tests running in parallel in one binary add to the same counters.
pub async fn metric(server: &TestServer, sample: &str) -> f64 {
    let text = get(&server.admin_url("/metrics")).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Returns `callhook_ingest_connections_shed_total` for `reason`.
pub async fn shed_total(server: &TestServer, reason: &str) -> f64 {
    metric(
        server,
        &format!("callhook_ingest_connections_shed_total{{reason=\"{reason}\"}}"),
    )
    .await
}
