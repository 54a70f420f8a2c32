//! `abuse`: a well-behaved client's ack latency beside hostile clients (issue 8: "their p99
//! stays within 2× of the unloaded figure").
//!
//! Starts `callhook serve` (default settings, a fresh data directory), then for each abuse in
//! turn: starts the hostile clients ([`callhook_bench::abuse`]), waits until they are in place,
//! sends 1 KB pushes at a fixed rate from `127.0.0.1` (the load engine, open loop: a request
//! waiting for a free connection counts from its due time), stops them. Each such phase runs
//! with keep-alive connections and with a new connection per push, each right after an
//! unloaded phase of the same client (the machine is shared; a baseline taken minutes earlier
//! would compare different loads), for a few rounds. Each abuse gets a fresh server. Prints a
//! Markdown table of medians over the rounds: the client's throughput, p50 and p99, p99 over
//! the unloaded p99 just before, its failures, the server's peak RSS and what the server
//! refused or closed (`callhook_ingest_connections_shed_total`).
//!
//! The hostile clients run in this process on their own runtime; all share the machine's CPUs
//! with the server, so the CPU pressure of each phase is shown too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callhook_bench::abuse::{Abuse, Attack};
use callhook_bench::body::PushTemplate;
use callhook_bench::load::{self, LoadOptions, LoadReport};
use callhook_bench::probe::Pressure;
use callhook_bench::process::{http_get, Server};
use callhook_bench::report::{mebibytes, millis};
use clap::Parser;

/// Measures a well-behaved client's ack latency under each kind of abuse.
#[derive(Parser)]
#[command(name = "abuse")]
struct Args {
    /// Where the release `callhook` binary is.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Measured seconds of each phase (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds per abuse and client mode, each an unloaded phase then an abused one; the table
    /// gives medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Pushes per second of the well-behaved client.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Connections of the well-behaved client.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Only these abuses (names as in the table's first column), comma-separated; the
    /// unloaded baseline always runs.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A config file for `callhook serve` (default: none, every default applies).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// One measured phase.
struct Row {
    abuse: Abuse,
    keep_alive: bool,
    report: LoadReport,
    shed: BTreeMap<String, f64>,
    attacker_connections: u64,
    cpu_pressure_percent: Option<f64>,
}

/// The rounds of one abuse and client mode, summarized.
struct Summary {
    abuse: Abuse,
    keep_alive: bool,
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
    unloaded_p99_us: u64,
    /// Median over rounds of p99 / the unloaded p99 just before.
    ratio: f64,
    failed: u64,
    server_peak_rss_kib: u64,
    shed: BTreeMap<String, f64>,
    attacker_connections: u64,
    cpu_pressure_percent: Option<f64>,
    unloaded_cpu_pressure_percent: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The server inherits it; the hostile clients need ~10,000 descriptors here too.
    let fd_limit = callhook_ingest::raise_fd_limit()?;
    anyhow::ensure!(
        fd_limit >= 12_000,
        "RLIMIT_NOFILE hard limit {fd_limit} < 12,000"
    );
    let work = tempfile::Builder::new()
        .prefix("callhook-abuse")
        .tempdir()?;
    let nonce = std::process::id().into();
    let status_time = chrono::Utc::now().timestamp();
    let bench = Bench {
        args: &args,
        client_runtime: runtime(1)?,
        attack_runtime: runtime(2)?,
        client_template: Arc::new(PushTemplate::new(1024, nonce, status_time)),
        attack_template: Arc::new(PushTemplate::new(1024, nonce ^ 0xabad_cafe, status_time)),
    };
    let mut summaries = Vec::new();
    for abuse in Abuse::ALL.into_iter().filter(|abuse| args.wants(*abuse)) {
        // A fresh server per abuse: its peak RSS is this abuse's.
        let dir = work.path().join(abuse.name());
        let server = start_callhook(&args.bin_dir, args.config.as_deref(), &dir)?;
        let mut by_mode = Vec::new();
        for keep_alive in [true, false] {
            let mut rounds = Vec::new();
            for _ in 0..args.rounds.max(1) {
                // The machine is shared: each abused phase follows its own unloaded one.
                let unloaded = bench.measure(&server, Abuse::None, keep_alive);
                let abused = bench.measure(&server, abuse, keep_alive);
                rounds.push((unloaded, abused));
            }
            by_mode.push(rounds);
        }
        let peak = server.stop(Duration::from_secs(30))?.peak_rss_kib;
        for rounds in by_mode {
            summaries.push(summarize(&rounds, peak));
        }
    }
    println!("{}", table(&summaries, &args));
    Ok(())
}

impl Args {
    fn wants(&self, abuse: Abuse) -> bool {
        abuse != Abuse::None
            && (self.only.is_empty() || self.only.iter().any(|name| name == abuse.name()))
    }
}

/// What every phase uses.
struct Bench<'a> {
    args: &'a Args,
    client_runtime: tokio::runtime::Runtime,
    attack_runtime: tokio::runtime::Runtime,
    client_template: Arc<PushTemplate>,
    attack_template: Arc<PushTemplate>,
}

impl Bench<'_> {
    /// Starts `abuse`, waits until it is in place, measures the well-behaved client, stops it.
    fn measure(&self, server: &Server, abuse: Abuse, keep_alive: bool) -> Row {
        eprintln!("[abuse] {} ({})", abuse.name(), mode(keep_alive));
        let shed_before = shed_counts(server);
        let pressure = Pressure::now();
        let mut attack = self.attack_runtime.block_on(async {
            Attack::start(abuse, server.addr, Arc::clone(&self.attack_template))
        });
        self.attack_runtime
            .block_on(attack.established(Duration::from_secs(60)));
        let options = load_options(self.args, server, keep_alive, &self.client_template);
        let report = self.client_runtime.block_on(load::run(options, None));
        let attacker_connections = attack.stats.connections.load(Ordering::Relaxed);
        self.attack_runtime.block_on(attack.stop());
        let row = Row {
            abuse,
            keep_alive,
            report,
            shed: difference(&shed_counts(server), &shed_before),
            attacker_connections,
            cpu_pressure_percent: pressure.share_since().cpu_some_percent,
        };
        settle(server);
        row
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

fn mode(keep_alive: bool) -> &'static str {
    if keep_alive {
        "keep-alive"
    } else {
        "new conn / push"
    }
}

fn start_callhook(
    bin_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    work: &std::path::Path,
) -> anyhow::Result<Server> {
    let binary = bin_dir.join("callhook");
    std::fs::metadata(&binary).with_context(|| format!("{} is missing", binary.display()))?;
    std::fs::create_dir_all(work)?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(work.join("data"));
    command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    Server::start(command, "callhook listening", &work.join("stderr.log"))
}

fn load_options(
    args: &Args,
    server: &Server,
    keep_alive: bool,
    template: &Arc<PushTemplate>,
) -> LoadOptions {
    let warmup = Duration::from_secs(1);
    let duration = warmup + Duration::from_secs_f64(args.seconds);
    LoadOptions {
        addr: server.addr,
        path: "/hooks/7moor".to_owned(),
        connections: args.connections,
        keep_alive,
        duration: Some(duration),
        count: Some((args.rate * duration.as_secs_f64()).ceil() as u64),
        warmup,
        rate_per_second: Some(args.rate),
        template: Arc::clone(template),
    }
}

/// Reads `callhook_ingest_connections_shed_total` by reason from the admin listener.
fn shed_counts(server: &Server) -> BTreeMap<String, f64> {
    let Some(admin) = server.admin else {
        return BTreeMap::new();
    };
    let text = http_get(admin, "/metrics").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("callhook_ingest_connections_shed_total{reason=\"")?;
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn difference(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(reason, value)| (reason.clone(), value - before.get(reason).unwrap_or(&0.0)))
        .filter(|(_, value)| *value > 0.0)
        .collect()
}

/// Waits (up to 15 s) until the server holds no more than a few connections, so that one
/// phase's leftovers do not weigh on the next.
fn settle(server: &Server) {
    let Some(admin) = server.admin else {
        return;
    };
    for _ in 0..150 {
        let text = http_get(admin, "/metrics").unwrap_or_default();
        let open = text
            .lines()
            .find_map(|line| line.strip_prefix("callhook_ingest_connections "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if open <= 8.0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn summarize(rounds: &[(Row, Row)], server_peak_rss_kib: u64) -> Summary {
    let abused = |pick: fn(&Row) -> f64| median(rounds.iter().map(|(_, row)| pick(row)));
    let first = &rounds[0].1;
    let mut shed = BTreeMap::new();
    for (_, row) in rounds {
        for (reason, count) in &row.shed {
            *shed.entry(reason.clone()).or_insert(0.0) += count;
        }
    }
    Summary {
        abuse: first.abuse,
        keep_alive: first.keep_alive,
        throughput: abused(|row| row.report.throughput_per_second),
        p50_us: abused(|row| row.report.latency.p50_us as f64) as u64,
        p99_us: abused(|row| row.report.latency.p99_us as f64) as u64,
        unloaded_p99_us: median(
            rounds
                .iter()
                .map(|(unloaded, _)| unloaded.report.latency.p99_us as f64),
        ) as u64,
        ratio: median(rounds.iter().map(|(unloaded, row)| {
            row.report.latency.p99_us as f64 / unloaded.report.latency.p99_us.max(1) as f64
        })),
        failed: rounds
            .iter()
            .map(|(_, row)| row.report.requests_failed + row.report.connect_errors)
            .sum(),
        server_peak_rss_kib,
        shed,
        attacker_connections: rounds.iter().map(|(_, row)| row.attacker_connections).sum(),
        cpu_pressure_percent: Some(abused(|row| row.cpu_pressure_percent.unwrap_or(0.0))),
        unloaded_cpu_pressure_percent: Some(median(
            rounds
                .iter()
                .map(|(unloaded, _)| unloaded.cpu_pressure_percent.unwrap_or(0.0)),
        )),
    }
}

/// Returns the median (the mean of the middle two for an even count; 0 when empty).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn table(summaries: &[Summary], args: &Args) -> String {
    let mut out = format!(
        "well-behaved client: {} pushes/s of 1 KB over {} connections from 127.0.0.1; \
         medians of {} rounds of {} s (unloaded phase, then abused phase)\n\n",
        args.rate, args.connections, args.rounds, args.seconds
    );
    out.push_str(
        "| abuse | client | req/s | p50 ms | p99 ms | unloaded p99 ms | p99 ratio | failed | \
         server peak RSS | refused or closed by the server (attacker conns) | CPU pressure |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for summary in summaries {
        let shed: Vec<String> = summary
            .shed
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        let shed = if shed.is_empty() {
            "-".to_owned()
        } else {
            format!("{} ({})", shed.join(", "), summary.attacker_connections)
        };
        let percent =
            |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.0} %"));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {:.2} | {} | {} | {} | {} (unloaded {}) |\n",
            summary.abuse.describe(),
            mode(summary.keep_alive),
            summary.throughput,
            millis(summary.p50_us as f64),
            millis(summary.p99_us as f64),
            millis(summary.unloaded_p99_us as f64),
            summary.ratio,
            summary.failed,
            mebibytes(summary.server_peak_rss_kib as f64),
            shed,
            percent(summary.cpu_pressure_percent),
            percent(summary.unloaded_cpu_pressure_percent),
        ));
    }
    out
}
