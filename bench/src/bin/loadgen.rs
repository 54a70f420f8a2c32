//! `loadgen`: a tight HTTP/1.1 load generator for the receiver and the bare-hyper ceiling.
//!
//! Prints one JSON object (the [`callhook_bench::load::LoadReport`], its own peak RSS and,
//! with `--e2e-db`, the end-to-end report) on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhook_bench::body::PushTemplate;
use callhook_bench::e2e::{AckTracker, Poller};
use callhook_bench::load::{self, LoadOptions};
use callhook_bench::procfs::own_memory;
use clap::Parser;

/// Sends 7moor v7 pushes with unique ids to a receiver and reports throughput and latency.
#[derive(Parser)]
#[command(name = "loadgen")]
struct Args {
    /// The server address.
    #[arg(long)]
    addr: SocketAddr,
    /// The request path.
    #[arg(long, default_value = "/hooks/7moor")]
    path: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Open a new connection per request (`Connection: close`) instead of keep-alive.
    #[arg(long)]
    new_connection_per_request: bool,
    /// Run for this many seconds (warm-up included).
    #[arg(long)]
    duration_seconds: Option<f64>,
    /// Send this many requests (with `--rate`, default: rate × duration).
    #[arg(long)]
    count: Option<u64>,
    /// Requests started during the first seconds are not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Target requests per second over all connections (open loop); default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Measure end-to-end latency by polling this database's `events` table.
    #[arg(long)]
    e2e_db: Option<PathBuf>,
    /// Poll period of `--e2e-db`, in microseconds.
    #[arg(long, default_value_t = 1000)]
    e2e_poll_us: u64,
    /// How long to wait for the last rows after the load, in seconds.
    #[arg(long, default_value_t = 15.0)]
    e2e_grace_seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.duration_seconds.is_none() && args.count.is_none() {
        anyhow::bail!("give --duration-seconds or --count");
    }
    let nonce = run_nonce();
    let status_time = chrono::Utc::now().timestamp();
    let template = Arc::new(PushTemplate::new(args.body_bytes, nonce, status_time));
    let duration = args.duration_seconds.map(Duration::from_secs_f64);
    let count = match (args.count, args.rate, duration) {
        (Some(count), _, _) => Some(count),
        (None, Some(rate), Some(duration)) => Some((rate * duration.as_secs_f64()).ceil() as u64),
        _ => None,
    };
    let tracker = match (&args.e2e_db, count) {
        (Some(_), Some(count)) => Some(Arc::new(AckTracker::new(count))),
        (Some(_), None) => anyhow::bail!("--e2e-db needs --count or --rate with a duration"),
        _ => None,
    };
    let poller = match (&args.e2e_db, &tracker) {
        (Some(db), Some(tracker)) => Some(Poller::start(
            db.clone(),
            Duration::from_micros(args.e2e_poll_us.max(1)),
            Arc::clone(tracker),
            Arc::clone(&template),
        )),
        _ => None,
    };
    let options = LoadOptions {
        addr: args.addr,
        path: args.path.clone(),
        connections: args.connections.max(1),
        keep_alive: !args.new_connection_per_request,
        duration,
        count,
        warmup: Duration::from_secs_f64(args.warmup_seconds.max(0.0)),
        rate_per_second: args.rate.filter(|rate| *rate > 0.0),
        template,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let started = Instant::now();
    let report = runtime.block_on(load::run(options.clone(), tracker.clone()));
    let e2e = match (poller, &tracker) {
        (Some(poller), Some(tracker)) => Some(poller.finish(
            tracker,
            Duration::from_secs_f64(args.e2e_grace_seconds),
            started + options.warmup,
        )?),
        _ => None,
    };
    let output = serde_json::json!({
        "load": report,
        "e2e": e2e,
        "loadgen_memory": own_memory(),
    });
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}

/// A per-run value that keeps ids unique across runs against the same database.
fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
