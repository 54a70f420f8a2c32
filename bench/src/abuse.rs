//! The hostile clients of the `abuse` bench (issue 8, "Hostile and odd input"): each
//! [`Abuse`] runs as tokio tasks against a receiver until stopped, from loopback addresses
//! other than `127.0.0.1` (Linux routes all of 127.0.0.0/8 to `lo`), so that the
//! well-behaved client measured beside it is a different client address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::body::PushTemplate;

/// Pause between two bytes of a slowloris client.
const DRIP_PAUSE: Duration = Duration::from_secs(1);
/// Pause before a closed or refused hostile client connects again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// Connections of the idle floods.
const IDLE_CONNECTIONS: usize = 10_000;
/// Connects in flight at once in the idle floods.
const IDLE_CONNECT_CONCURRENCY: usize = 256;

/// One kind of abuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// No abuse: the baseline.
    None,
    /// 1,000 connections from one address dribbling a header byte a second.
    SlowHeads,
    /// 2,048 connections from 64 addresses dribbling a header byte a second: more than
    /// `max_connections`, each address under `max_connections_per_ip`.
    SlowHeadsSpread,
    /// 1,000 connections from one address dribbling a body byte a second.
    SlowBodies,
    /// 4 clients in a loop: a 1 MiB header, 5,000 headers, a 100 KB URI, an endless head.
    HugeHeads,
    /// 10,000 connections from 64 addresses that send nothing.
    IdleFresh,
    /// 10,000 connections from 64 addresses idle after one answered request.
    IdleKeepAlive,
    /// 2 clients pipelining 300 pushes at a time, and 1 that pipelines and never reads.
    Pipelined,
    /// 4 clients in a loop: send a push, reset the connection at once.
    DropDuringAppend,
}

impl Abuse {
    /// Every abuse, the baseline first.
    pub const ALL: [Abuse; 9] = [
        Abuse::None,
        Abuse::SlowHeads,
        Abuse::SlowHeadsSpread,
        Abuse::SlowBodies,
        Abuse::HugeHeads,
        Abuse::IdleFresh,
        Abuse::IdleKeepAlive,
        Abuse::Pipelined,
        Abuse::DropDuringAppend,
    ];

    /// Returns the short name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Abuse::None => "none",
            Abuse::SlowHeads => "slow-heads",
            Abuse::SlowHeadsSpread => "slow-heads-spread",
            Abuse::SlowBodies => "slow-bodies",
            Abuse::HugeHeads => "huge-heads",
            Abuse::IdleFresh => "idle",
            Abuse::IdleKeepAlive => "idle-keep-alive",
            Abuse::Pipelined => "pipelined",
            Abuse::DropDuringAppend => "drop-during-append",
        }
    }

    /// Returns the table's description.
    pub fn describe(self) -> &'static str {
        match self {
            Abuse::None => "none (unloaded)",
            Abuse::SlowHeads => "slowloris heads: 1,000 conns, 1 address, 1 B/s",
            Abuse::SlowHeadsSpread => "slowloris heads: 2,048 conns, 64 addresses, 1 B/s",
            Abuse::SlowBodies => "slowloris bodies: 1,000 conns, 1 address, 1 B/s",
            Abuse::HugeHeads => "huge heads: 1 MiB header, 5,000 headers, 100 KB URI, endless",
            Abuse::IdleFresh => "10,000 idle conns (nothing sent), 64 addresses",
            Abuse::IdleKeepAlive => "10,000 idle keep-alive conns (after 1 request)",
            Abuse::Pipelined => "pipelined: 2 × 300 pushes in flight + 1 never reading",
            Abuse::DropDuringAppend => "reset right after sending a push, 4 loops",
        }
    }
}

/// What the hostile clients did.
#[derive(Debug, Default)]
pub struct AttackStats {
    /// Connections opened.
    pub connections: AtomicU64,
    /// Connections the server closed (or reset) under them.
    pub closed_by_server: AtomicU64,
}

/// A running abuse.
pub struct Attack {
    stop: watch::Sender<bool>,
    established: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    /// What its clients did so far.
    pub stats: Arc<AttackStats>,
}

/// What every hostile task gets.
#[derive(Clone)]
struct Context {
    target: SocketAddr,
    stop: watch::Receiver<bool>,
    stats: Arc<AttackStats>,
    template: Arc<PushTemplate>,
}

impl Context {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for `pause`, or less if the attack stops.
    async fn pause(&mut self, pause: Duration) {
        tokio::select! {
            _ = self.stop.changed() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }

    async fn connect(&self, from: Ipv4Addr) -> Option<TcpStream> {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((from, 0))).ok()?;
        let stream = socket.connect(self.target).await.ok()?;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Some(stream)
    }

    fn closed_by_server(&self) {
        self.stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}

impl Attack {
    /// Starts `abuse` against `target` on the current runtime. Pushes it sends use
    /// `template` (ids of their own, apart from the measured client's).
    pub fn start(abuse: Abuse, target: SocketAddr, template: Arc<PushTemplate>) -> Attack {
        let (stop, stop_rx) = watch::channel(false);
        let (established_tx, established) = watch::channel(false);
        let context = Context {
            target,
            stop: stop_rx,
            stats: Arc::default(),
            template,
        };
        let stats = Arc::clone(&context.stats);
        let mut tasks = JoinSet::new();
        spawn_clients(abuse, &context, &mut tasks, established_tx);
        Attack {
            stop,
            established,
            tasks,
            stats,
        }
    }

    /// Resolves once the abuse is in place (every idle connection opened), or after `limit`.
    pub async fn established(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.established.wait_for(|done| *done)).await;
    }

    /// Stops every hostile client and closes its connections.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn spawn_clients(
    abuse: Abuse,
    context: &Context,
    tasks: &mut JoinSet<()>,
    established: watch::Sender<bool>,
) {
    let address = |third: u8, fourth: u8| Ipv4Addr::new(127, 0, third, fourth);
    let head: &'static [u8] = b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let body_head: &'static [u8] =
        b"POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{";
    match abuse {
        Abuse::None => {}
        Abuse::SlowHeads => {
            for _ in 0..1000 {
                tasks.spawn(slow_client(context.clone(), address(0, 2), head));
            }
        }
        Abuse::SlowHeadsSpread => {
            for index in 0..2048u32 {
                let from = address(2, 1 + (index % 64) as u8);
                tasks.spawn(slow_client(context.clone(), from, head));
            }
        }
        Abuse::SlowBodies => {
            for _ in 0..1000 {
                tasks.spawn(slow_client(context.clone(), address(0, 3), body_head));
            }
        }
        Abuse::HugeHeads => {
            for index in 0..4 {
                tasks.spawn(huge_heads(context.clone(), address(0, 4), index));
            }
        }
        Abuse::IdleFresh | Abuse::IdleKeepAlive => {
            let one_request = abuse == Abuse::IdleKeepAlive;
            tasks.spawn(idle_flood(
                context.clone(),
                one_request,
                established.clone(),
            ));
        }
        Abuse::Pipelined => {
            for _ in 0..2 {
                tasks.spawn(pipelined_pushes(context.clone(), address(0, 5)));
            }
            tasks.spawn(never_reading(context.clone(), address(0, 6)));
        }
        Abuse::DropDuringAppend => {
            for index in 0..4 {
                tasks.spawn(drop_after_push(context.clone(), address(0, 7), index));
            }
        }
    }
    if !matches!(abuse, Abuse::IdleFresh | Abuse::IdleKeepAlive) {
        let _ = established.send(true);
    }
}

/// Writes `head`, then a byte a second until the server closes; reconnects after a pause.
async fn slow_client(mut context: Context, from: Ipv4Addr, head: &'static [u8]) {
    while !context.stopped() {
        let Some(mut stream) = context.connect(from).await else {
            context.pause(RECONNECT_PAUSE).await;
            continue;
        };
        let _ = stream.write_all(head).await;
        let mut buffer = [0u8; 512];
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = context.stop.changed() => return,
                () = tokio::time::sleep(DRIP_PAUSE) => {
                    let _ = stream.write_all(b"a").await;
                }
            }
        }
        context.closed_by_server();
        context.pause(RECONNECT_PAUSE).await;
    }
}

/// Sends oversized heads in turn, each on a new connection, reading the answer.
async fn huge_heads(mut context: Context, from: Ipv4Addr, first: usize) {
    let heads: [Vec<u8>; 4] = [
        format!(
            "GET /hooks/7moor HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1024 * 1024)
        )
        .into_bytes(),
        format!(
            "GET /hooks/7moor HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..5000)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        )
        .into_bytes(),
        format!(
            "GET /hooks/7moor?q={} HTTP/1.1\r\nHost: x\r\n\r\n",
            "u".repeat(100_000)
        )
        .into_bytes(),
        {
            let mut endless = b"GET /hooks/7moor HTTP/1.1\r\nX-Endless: ".to_vec();
            endless.resize(4 * 1024 * 1024, b'e');
            endless
        },
    ];
    let mut turn = first;
    while !context.stopped() {
        let head = &heads[turn % heads.len()];
        turn += 1;
        let Some(stream) = context.connect(from).await else {
            context.pause(RECONNECT_PAUSE).await;
            continue;
        };
        let (mut reader, mut writer) = stream.into_split();
        let (_, _) = tokio::join!(writer.write_all(head), async {
            let mut answer = Vec::new();
            let _ = reader.read_to_end(&mut answer).await;
        });
        context.closed_by_server();
        context.pause(Duration::from_millis(10)).await;
    }
}

/// Opens [`IDLE_CONNECTIONS`] connections from 64 addresses and holds them until stopped;
/// with `one_request`, each has a `404` answered first.
async fn idle_flood(context: Context, one_request: bool, established: watch::Sender<bool>) {
    let connecting = Arc::new(Semaphore::new(IDLE_CONNECT_CONCURRENCY));
    let mut held = JoinSet::new();
    for index in 0..IDLE_CONNECTIONS {
        let Ok(permit) = Arc::clone(&connecting).acquire_owned().await else {
            break;
        };
        if context.stopped() {
            break;
        }
        let mut context = context.clone();
        let from = Ipv4Addr::new(127, 0, 1, 1 + (index % 64) as u8);
        held.spawn(async move {
            let Some(mut stream) = context.connect(from).await else {
                return;
            };
            if one_request {
                let _ = stream
                    .write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await;
            }
            drop(permit);
            let _ = context.stop.changed().await;
            drop(stream);
        });
    }
    // All connects issued and (but for the last few) done.
    let _ = connecting
        .acquire_many(IDLE_CONNECT_CONCURRENCY as u32)
        .await;
    let _ = established.send(true);
    while held.join_next().await.is_some() {}
}

/// Pipelines 300 pushes, reads the 300 answers, pauses half a second, again.
async fn pipelined_pushes(mut context: Context, from: Ipv4Addr) {
    let mut sequence = 0u64;
    while !context.stopped() {
        let Some(mut stream) = context.connect(from).await else {
            context.pause(RECONNECT_PAUSE).await;
            continue;
        };
        while !context.stopped() {
            let mut requests = Vec::new();
            for _ in 0..300 {
                push_request(&context.template, sequence, &mut requests);
                sequence += 1;
            }
            if stream.write_all(&requests).await.is_err() || !read_answers(&mut stream, 300).await {
                context.closed_by_server();
                break;
            }
            context.pause(Duration::from_millis(500)).await;
        }
    }
}

/// Appends one `POST /hooks/7moor` of push `sequence` to `out`.
fn push_request(template: &PushTemplate, sequence: u64, out: &mut Vec<u8>) {
    let body = template.body(sequence);
    out.extend_from_slice(
        format!(
            "POST /hooks/7moor HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
}

/// Reads until `count` status lines arrived; false if the connection closed first.
async fn read_answers(stream: &mut TcpStream, count: usize) -> bool {
    let marker = b"HTTP/1.1 ";
    let mut seen = 0;
    let mut tail = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while seen < count {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buffer[..n]);
        seen += tail.windows(marker.len()).filter(|w| *w == marker).count();
        // Keep only what could be the start of a marker split across reads.
        let keep = tail.len().min(marker.len() - 1);
        tail.drain(..tail.len() - keep);
    }
    true
}

/// Pipelines `404` requests without ever reading, until the server hangs up; again.
async fn never_reading(mut context: Context, from: Ipv4Addr) {
    let requests = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    while !context.stopped() {
        let Some(stream) = context.connect(from).await else {
            context.pause(RECONNECT_PAUSE).await;
            continue;
        };
        let (_reader, mut writer) = stream.into_split();
        loop {
            tokio::select! {
                written = writer.write_all(&requests) => if written.is_err() { break },
                _ = context.stop.changed() => return,
            }
        }
        context.closed_by_server();
        context.pause(RECONNECT_PAUSE).await;
    }
}

/// Sends one push per connection and resets the connection at once.
async fn drop_after_push(mut context: Context, from: Ipv4Addr, task: u64) {
    let mut sequence = 1_000_000_000 * (task + 1);
    while !context.stopped() {
        let Some(mut stream) = context.connect(from).await else {
            context.pause(RECONNECT_PAUSE).await;
            continue;
        };
        let mut request = Vec::new();
        push_request(&context.template, sequence, &mut request);
        sequence += 1;
        let _ = stream.write_all(&request).await;
        reset(stream);
        context.pause(Duration::from_millis(10)).await;
    }
}

/// Closes `stream` with a reset.
#[allow(deprecated)] // `SO_LINGER` blocks on drop only with a non-zero timeout
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}
