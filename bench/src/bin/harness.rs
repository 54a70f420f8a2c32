//! `bench-harness`: everything `bench/run.sh` measures, in one run on this machine.
//!
//! Every ingest figure is measured beside the bare-hyper ceiling under the same load
//! generator in the same run, alternating the two servers round by round, and reported as a
//! ratio (the machine is shared and noisy; absolute figures drift, ratios much less). Each
//! server run gets a fresh process and, for callhook, a fresh data directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use callhook_bench::process::{http_get, run_json, Server};
use callhook_bench::report::{
    markdown_table, markdown_targets, mebibytes, millis, number, per_second, thousands, Row, Target,
};
use clap::Parser;
use serde_json::{json, Value};

/// Runs every benchmark and writes `<out-dir>/<sha>-<date>.json` and `latest.json`.
#[derive(Parser)]
#[command(name = "bench-harness")]
struct Args {
    /// Shorter runs (about 2 minutes instead of about 10).
    #[arg(long)]
    quick: bool,
    /// Tiny runs that only check that the harness works (results are not written).
    #[arg(long)]
    smoke: bool,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// The commit measured (for the file name).
    #[arg(long, default_value = "unknown")]
    git_sha: String,
}

/// Durations and sizes of one kind of run.
struct Profile {
    name: &'static str,
    ingest_seconds: f64,
    warmup_seconds: f64,
    keep_alive_rounds: usize,
    new_connection_seconds: f64,
    new_connection_rounds: usize,
    e2e_seconds: f64,
    e2e_rate: f64,
    normalizer_pushes: u64,
    dedupe_keys: u64,
}

const FULL: Profile = Profile {
    name: "full",
    ingest_seconds: 20.0,
    warmup_seconds: 3.0,
    keep_alive_rounds: 3,
    new_connection_seconds: 12.0,
    new_connection_rounds: 2,
    e2e_seconds: 40.0,
    e2e_rate: 2000.0,
    normalizer_pushes: 1_000_000,
    dedupe_keys: 1_000_000,
};

const QUICK: Profile = Profile {
    name: "quick",
    ingest_seconds: 6.0,
    warmup_seconds: 1.0,
    keep_alive_rounds: 1,
    new_connection_seconds: 5.0,
    new_connection_rounds: 1,
    e2e_seconds: 12.0,
    e2e_rate: 2000.0,
    normalizer_pushes: 100_000,
    dedupe_keys: 1_000_000,
};

const SMOKE: Profile = Profile {
    name: "smoke",
    ingest_seconds: 1.5,
    warmup_seconds: 0.3,
    keep_alive_rounds: 1,
    new_connection_seconds: 1.0,
    new_connection_rounds: 1,
    e2e_seconds: 2.0,
    e2e_rate: 200.0,
    normalizer_pushes: 3_000,
    dedupe_keys: 10_000,
};

/// Connections of the ingest runs.
const CONNECTIONS: usize = 64;
/// Connections of the end-to-end run (enough for 2,000/s at a few ms each).
const E2E_CONNECTIONS: usize = 16;

struct Harness {
    profile: &'static Profile,
    bin_dir: PathBuf,
    work: tempfile::TempDir,
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = match (args.smoke, args.quick) {
        (true, _) => &SMOKE,
        (false, true) => &QUICK,
        _ => &FULL,
    };
    for name in ["bare-hyper", "loadgen", "normalizer-bench", "callhook"] {
        ensure_exists(&args.bin_dir.join(name))?;
    }
    let harness = Harness {
        profile,
        bin_dir: args.bin_dir.clone(),
        work: tempfile::Builder::new()
            .prefix("callhook-bench")
            .tempdir()?,
        runs: 0,
    };
    let started = Instant::now();
    let results = harness.run_all()?;
    let (rows, targets) = summarize(&results, profile);
    let date = chrono::Utc::now();
    let document = json!({
        "git_sha": args.git_sha,
        "date": date.to_rfc3339(),
        "profile": profile.name,
        "machine": machine(),
        "harness_seconds": started.elapsed().as_secs_f64().round(),
        "table": rows,
        "targets": targets,
        "results": results,
    });
    println!(
        "\ncallhook bench, {} profile, commit {}, {}\n",
        profile.name,
        args.git_sha,
        date.format("%Y-%m-%d %H:%M UTC")
    );
    println!("{}", markdown_table(&rows));
    println!("{}", markdown_targets(&targets));
    if args.smoke {
        println!("smoke run: results not written");
        return Ok(());
    }
    std::fs::create_dir_all(&args.out_dir)?;
    let text = serde_json::to_string_pretty(&document)?;
    let name = format!("{}-{}.json", args.git_sha, date.format("%Y%m%dT%H%M%SZ"));
    std::fs::write(args.out_dir.join(&name), &text)?;
    std::fs::write(args.out_dir.join("latest.json"), &text)?;
    println!("written: {}", args.out_dir.join(name).display());
    Ok(())
}

impl Harness {
    fn run_all(mut self) -> anyhow::Result<Value> {
        let profile = self.profile;
        eprintln!("[bench] ingest, keep-alive, {CONNECTIONS} connections");
        let keep_alive = self.ingest(true, profile.ingest_seconds, profile.keep_alive_rounds)?;
        eprintln!("[bench] ingest, new connection per request");
        let new_connection = self.ingest(
            false,
            profile.new_connection_seconds,
            profile.new_connection_rounds,
        )?;
        eprintln!("[bench] end-to-end at {}/s", profile.e2e_rate);
        let e2e = self.end_to_end()?;
        eprintln!(
            "[bench] normalizer: drain {} pushes",
            profile.normalizer_pushes
        );
        let normalizer = self.normalizer()?;
        eprintln!("[bench] kafka mode");
        let kafka = self.kafka();
        Ok(json!({
            "ingest_keep_alive": keep_alive,
            "ingest_new_connection": new_connection,
            "end_to_end": e2e,
            "normalizer": normalizer,
            "kafka_ingest": kafka,
        }))
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn next_dir(&mut self, label: &str) -> anyhow::Result<PathBuf> {
        self.runs += 1;
        let dir = self.work.path().join(format!("{:02}-{label}", self.runs));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn start_bare(&mut self) -> anyhow::Result<(Server, PathBuf)> {
        let dir = self.next_dir("bare-hyper")?;
        let mut command = Command::new(self.bin("bare-hyper"));
        command.args(["--listen", "127.0.0.1:0"]);
        let server = Server::start(command, "bare-hyper listening", &dir.join("stderr.log"))?;
        Ok((server, dir))
    }

    fn start_callhook(&mut self) -> anyhow::Result<(Server, PathBuf)> {
        let dir = self.next_dir("callhook")?;
        let mut command = Command::new(self.bin("callhook"));
        command.arg("serve").arg("--data-dir").arg(dir.join("data"));
        command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
        let server = Server::start(command, "callhook listening", &dir.join("stderr.log"))?;
        Ok((server, dir))
    }

    fn loadgen(&self, server: &Server, dir: &Path, extra: &[String]) -> anyhow::Result<Value> {
        let mut command = Command::new(self.bin("loadgen"));
        command.arg("--addr").arg(server.addr.to_string());
        command.args(extra);
        run_json(command, &dir.join("loadgen.log"))
    }

    /// Alternates bare-hyper and callhook `rounds` times under the same load.
    fn ingest(&mut self, keep_alive: bool, seconds: f64, rounds: usize) -> anyhow::Result<Value> {
        let mut load = vec![
            "--connections".to_owned(),
            CONNECTIONS.to_string(),
            "--duration-seconds".to_owned(),
            seconds.to_string(),
            "--warmup-seconds".to_owned(),
            self.profile.warmup_seconds.to_string(),
        ];
        if !keep_alive {
            load.push("--new-connection-per-request".to_owned());
        }
        let mut results = Vec::new();
        for round in 0..rounds {
            let (bare, bare_dir) = self.start_bare()?;
            let bare_load = self.loadgen(&bare, &bare_dir, &load)?;
            let bare_memory = bare.stop(Duration::from_secs(10))?;
            let (callhook, dir) = self.start_callhook()?;
            let callhook_load = self.loadgen(&callhook, &dir, &load)?;
            let metrics = scrape(&callhook);
            let callhook_memory = callhook.stop(Duration::from_secs(60))?;
            let ratio = number(&callhook_load, "/load/throughput_per_second")
                / number(&bare_load, "/load/throughput_per_second").max(1.0);
            eprintln!("[bench]   round {round}: ratio {ratio:.3}");
            results.push(json!({
                "bare_hyper": bare_load,
                "bare_hyper_memory": bare_memory,
                "callhook": callhook_load,
                "callhook_memory": callhook_memory,
                "callhook_metrics": metrics,
                "ratio": ratio,
            }));
        }
        Ok(json!({ "rounds": results, "median": median_round(&results) }))
    }

    fn end_to_end(&mut self) -> anyhow::Result<Value> {
        let (server, dir) = self.start_callhook()?;
        let db = dir.join("data").join("callhook.db");
        let load = [
            "--connections".to_owned(),
            E2E_CONNECTIONS.to_string(),
            "--duration-seconds".to_owned(),
            self.profile.e2e_seconds.to_string(),
            "--rate".to_owned(),
            self.profile.e2e_rate.to_string(),
            "--warmup-seconds".to_owned(),
            self.profile.warmup_seconds.to_string(),
            "--e2e-db".to_owned(),
            db.display().to_string(),
        ];
        let report = self.loadgen(&server, &dir, &load)?;
        let metrics = scrape(&server);
        let memory = server.stop(Duration::from_secs(60))?;
        Ok(json!({ "report": report, "callhook_memory": memory, "callhook_metrics": metrics }))
    }

    fn normalizer(&mut self) -> anyhow::Result<Value> {
        let dir = self.next_dir("normalizer")?;
        let mut command = Command::new(self.bin("normalizer-bench"));
        command
            .arg("--pushes")
            .arg(self.profile.normalizer_pushes.to_string())
            .arg("--dedupe-keys")
            .arg(self.profile.dedupe_keys.to_string())
            .arg("--dir")
            .arg(&dir);
        let result = run_json(command, &dir.join("stderr.log"));
        // The pre-filled log and the database are large; they are not kept.
        let _ = std::fs::remove_file(dir.join("rawlog.db"));
        result
    }

    /// Kafka mode: the in-process MockCluster bench, when its binary exists.
    fn kafka(&mut self) -> Value {
        let binary = self.bin("kafka-ingest-bench");
        if !binary.exists() {
            return json!({
                "status": "pending",
                "reason": "Kafka mode (rawlog/src/kafka) is not finished in this tree; \
                           no MockCluster ingest bench to run",
            });
        }
        let mut run = || -> anyhow::Result<Value> {
            let dir = self.next_dir("kafka")?;
            let mut command = Command::new(&binary);
            command.args([
                "--duration-seconds",
                &self.profile.ingest_seconds.to_string(),
            ]);
            command.args(["--warmup-seconds", &self.profile.warmup_seconds.to_string()]);
            run_json(command, &dir.join("stderr.log"))
        };
        run().unwrap_or_else(|error| json!({ "status": "failed", "reason": format!("{error:#}") }))
    }
}

/// Reads a few callhook metrics after a run (what explains the figures: batch sizes, lag).
fn scrape(server: &Server) -> Value {
    let Some(admin) = server.admin else {
        return Value::Null;
    };
    let Ok(text) = http_get(admin, "/metrics") else {
        return Value::Null;
    };
    let wanted = [
        "callhook_rawlog_batch_records_sum",
        "callhook_rawlog_batch_records_count",
        "callhook_normalizer_lag_records",
        "callhook_ingest_requests_total",
    ];
    let mut found = serde_json::Map::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        if let Some(name) = wanted.iter().find(|name| line.starts_with(**name)) {
            if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                let key = line.rsplit_once(' ').map_or(*name, |(key, _)| key);
                found.insert(key.to_owned(), json!(value));
            }
        }
    }
    Value::Object(found)
}

/// The median over rounds of each headline figure.
fn median_round(rounds: &[Value]) -> Value {
    let median = |pointer: &str| {
        let mut values: Vec<f64> = rounds.iter().map(|round| number(round, pointer)).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    json!({
        "ratio": median("/ratio"),
        "callhook_per_second": median("/callhook/load/throughput_per_second"),
        "bare_hyper_per_second": median("/bare_hyper/load/throughput_per_second"),
        "callhook_p50_us": median("/callhook/load/latency/p50_us"),
        "callhook_p99_us": median("/callhook/load/latency/p99_us"),
        "callhook_p999_us": median("/callhook/load/latency/p999_us"),
        "bare_hyper_p50_us": median("/bare_hyper/load/latency/p50_us"),
        "bare_hyper_p99_us": median("/bare_hyper/load/latency/p99_us"),
        "bare_hyper_p999_us": median("/bare_hyper/load/latency/p999_us"),
        "callhook_failed": median("/callhook/load/requests_failed"),
        "callhook_peak_rss_kib": rounds.iter().map(|r| number(r, "/callhook_memory/peak_rss_kib")).fold(0.0, f64::max),
        "bare_hyper_peak_rss_kib": rounds.iter().map(|r| number(r, "/bare_hyper_memory/peak_rss_kib")).fold(0.0, f64::max),
        "loadgen_peak_rss_kib": rounds.iter().map(|r| number(r, "/callhook/loadgen_memory/peak_rss_kib")).fold(0.0, f64::max),
    })
}

fn ingest_rows(rows: &mut Vec<Row>, label: &str, result: &Value) {
    let m = |name: &str| number(result, &format!("/median/{name}"));
    rows.push(Row {
        measure: format!("ingest, {label}: req/s"),
        callhook: per_second(m("callhook_per_second")),
        baseline: per_second(m("bare_hyper_per_second")),
        ratio: format!("{:.2}", m("ratio")),
    });
    let latency = |who: &str| {
        format!(
            "{} / {} / {}",
            millis(m(&format!("{who}_p50_us"))),
            millis(m(&format!("{who}_p99_us"))),
            millis(m(&format!("{who}_p999_us")))
        )
    };
    rows.push(Row {
        measure: format!("ingest, {label}: ack p50 / p99 / p99.9 (ms)"),
        callhook: latency("callhook"),
        baseline: latency("bare_hyper"),
        ratio: String::new(),
    });
}

fn summarize(results: &Value, profile: &Profile) -> (Vec<Row>, Vec<Target>) {
    let mut rows = Vec::new();
    let keep_alive = &results["ingest_keep_alive"];
    let new_connection = &results["ingest_new_connection"];
    ingest_rows(
        &mut rows,
        &format!("keep-alive, {CONNECTIONS} conns, 1 KB"),
        keep_alive,
    );
    ingest_rows(
        &mut rows,
        &format!("new connection per push, {CONNECTIONS} conns"),
        new_connection,
    );
    let kafka = &results["kafka_ingest"];
    rows.push(Row {
        measure: "ingest, Kafka mode (MockCluster), keep-alive: req/s".to_owned(),
        callhook: match kafka["status"].as_str() {
            Some(status) => status.to_owned(),
            None => per_second(number(kafka, "/load/throughput_per_second")),
        },
        baseline: String::new(),
        ratio: String::new(),
    });
    let normalizer = &results["normalizer"];
    let pushes = thousands(profile.normalizer_pushes);
    rows.push(Row {
        measure: format!("normalizer: drain {pushes} pushes into SQLite (events/s)"),
        callhook: per_second(number(normalizer, "/drain/events_per_second")),
        baseline: String::new(),
        ratio: String::new(),
    });
    rows.push(Row {
        measure: format!("rebuild the database from the log ({pushes} pushes)"),
        callhook: format!("{:.1} s", number(normalizer, "/drain/seconds")),
        baseline: String::new(),
        ratio: String::new(),
    });
    let e2e = &results["end_to_end"]["report"]["e2e"];
    rows.push(Row {
        measure: format!(
            "end-to-end ack → row at {}/s: p50 / p99 (ms)",
            profile.e2e_rate
        ),
        callhook: format!(
            "{} / {}",
            millis(number(e2e, "/ack_to_row/p50_us")),
            millis(number(e2e, "/ack_to_row/p99_us"))
        ),
        baseline: String::new(),
        ratio: String::new(),
    });
    memory_rows(&mut rows, results);
    let targets = targets(results, profile);
    (rows, targets)
}

fn memory_rows(rows: &mut Vec<Row>, results: &Value) {
    let peak = |pointer: &str| {
        number(&results["ingest_keep_alive"], pointer)
            .max(number(&results["ingest_new_connection"], pointer))
    };
    rows.push(Row {
        measure: "peak RSS under ingest load (serve / loadgen)".to_owned(),
        callhook: format!(
            "{} / {}",
            mebibytes(peak("/median/callhook_peak_rss_kib")),
            mebibytes(peak("/median/loadgen_peak_rss_kib"))
        ),
        baseline: mebibytes(peak("/median/bare_hyper_peak_rss_kib")),
        ratio: String::new(),
    });
    let normalizer = &results["normalizer"];
    rows.push(Row {
        measure: "peak RSS: end-to-end serve / normalizer bench".to_owned(),
        callhook: format!(
            "{} / {}",
            mebibytes(number(
                &results["end_to_end"],
                "/callhook_memory/peak_rss_kib"
            )),
            mebibytes(number(normalizer, "/memory/peak_rss_kib"))
        ),
        baseline: String::new(),
        ratio: String::new(),
    });
    let cache = &normalizer["dedupe_cache"];
    rows.push(Row {
        measure: format!(
            "dedupe cache at {} keys (allocated)",
            thousands(number(cache, "/keys") as u64)
        ),
        callhook: format!(
            "{} ({:.0} B/key)",
            mebibytes(number(cache, "/allocated_bytes") / 1024.0),
            number(cache, "/allocated_bytes_per_key")
        ),
        baseline: String::new(),
        ratio: String::new(),
    });
}

fn targets(results: &Value, profile: &Profile) -> Vec<Target> {
    let keep_alive = &results["ingest_keep_alive"]["median"];
    let ratio = number(keep_alive, "/ratio");
    let p99 = number(keep_alive, "/callhook_p99_us");
    let events = number(&results["normalizer"], "/drain/events_per_second");
    let e2e_p99 = number(&results["end_to_end"], "/report/e2e/ack_to_row/p99_us");
    let rss = number(
        &results["ingest_keep_alive"],
        "/median/callhook_peak_rss_kib",
    )
    .max(number(
        &results["ingest_new_connection"],
        "/median/callhook_peak_rss_kib",
    ));
    vec![
        Target {
            target: "durable ingest ≥ 50% of bare hyper, 64 keep-alive conns".to_owned(),
            measured: format!("{:.0}%", ratio * 100.0),
            met: Some(ratio >= 0.5),
        },
        Target {
            target: "p99 ack ≤ 5 ms at 64 conns".to_owned(),
            measured: format!("{} ms", millis(p99)),
            met: Some(p99 <= 5000.0),
        },
        Target {
            target: "normalizer ≥ 50,000 events/s into SQLite".to_owned(),
            measured: per_second(events),
            met: Some(events >= 50_000.0),
        },
        Target {
            target: format!("end-to-end p99 ≤ 50 ms at {}/s", profile.e2e_rate),
            measured: format!("{} ms", millis(e2e_p99)),
            met: Some(e2e_p99 > 0.0 && e2e_p99 <= 50_000.0),
        },
        Target {
            target: "ingest RSS ≤ 64 MB under load".to_owned(),
            measured: mebibytes(rss),
            met: Some(rss > 0.0 && rss <= 64.0 * 1024.0),
        },
    ]
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_default();
    json!({ "cores": cores, "kernel": kernel.trim(), "cpu": cpu })
}

fn ensure_exists(path: &Path) -> anyhow::Result<()> {
    std::fs::metadata(path).with_context(|| format!("{} is missing", path.display()))?;
    Ok(())
}
