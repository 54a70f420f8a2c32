//! `bench-harness`: everything `bench/run.sh` measures, in one run on this machine.
//!
//! Every ingest figure is measured beside the bare-hyper ceiling under the same load
//! generator in the same run, alternating the servers round by round, and reported as a ratio
//! (the machine is shared and noisy; absolute figures drift, ratios much less). Each server
//! run gets a fresh process and, for callhook, a fresh data directory. The disk's `fdatasync`
//! latency and the CPU / I/O pressure of each phase are recorded beside the figures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use callhook_bench::probe::{fdatasync_latency, Pressure};
use callhook_bench::process::{http_get, run_json, Server};
use callhook_bench::report::{
    markdown_table, markdown_targets, number, pressure_note, summarize, Profile,
};
use clap::Parser;
use serde_json::{json, Value};

/// Runs every benchmark and writes `<out-dir>/<sha>-<date>.json` and `latest.json`.
#[derive(Parser)]
#[command(name = "bench-harness")]
struct Args {
    /// Shorter runs (about 3 minutes instead of about 12).
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

const FULL: Profile = Profile {
    name: "full",
    ingest_seconds: 15.0,
    warmup_seconds: 3.0,
    keep_alive_rounds: 3,
    new_connection_seconds: 10.0,
    new_connection_rounds: 2,
    e2e_seconds: 40.0,
    e2e_rate: 2000.0,
    normalizer_pushes: 1_000_000,
    dedupe_keys: 1_000_000,
    fsync_samples: 200,
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
    fsync_samples: 100,
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
    fsync_samples: 20,
};

/// Connections of the ingest runs.
const CONNECTIONS: usize = 64;
/// Connections of the end-to-end run.
const E2E_CONNECTIONS: usize = 32;
/// The fixed-rate latency run sends at this share of the round's bare-hyper throughput.
const LATENCY_RUN_SHARE: f64 = 0.5;

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
        let path = args.bin_dir.join(name);
        std::fs::metadata(&path).with_context(|| format!("{} is missing", path.display()))?;
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
    let pressure = Pressure::now();
    let results = harness.run_all()?;
    let (rows, targets) = summarize(&results, profile);
    let date = chrono::Utc::now();
    let document = json!({
        "git_sha": args.git_sha,
        "date": date.to_rfc3339(),
        "profile": profile.name,
        "machine": machine(),
        "pressure": pressure.share_since(),
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
    println!("{}", pressure_note(&document));
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
        let fsync_before = fdatasync_latency(self.work.path(), profile.fsync_samples)?;
        eprintln!("[bench] ingest, keep-alive, {CONNECTIONS} connections");
        let keep_alive = self.phase(|h| h.ingest(true))?;
        eprintln!("[bench] ingest, new connection per request");
        let new_connection = self.phase(|h| h.ingest(false))?;
        eprintln!("[bench] end-to-end at {}/s", profile.e2e_rate);
        let e2e = self.phase(Harness::end_to_end)?;
        eprintln!(
            "[bench] normalizer: drain {} pushes",
            profile.normalizer_pushes
        );
        let normalizer = self.phase(Harness::normalizer)?;
        let fsync_after = fdatasync_latency(self.work.path(), profile.fsync_samples)?;
        Ok(json!({
            "ingest_keep_alive": keep_alive,
            "ingest_new_connection": new_connection,
            "end_to_end": e2e,
            "normalizer": normalizer,
            "disk_fdatasync": { "before": fsync_before, "after": fsync_after },
        }))
    }

    /// Runs one phase and adds the CPU / I/O pressure during it to its result.
    fn phase(
        &mut self,
        run: impl FnOnce(&mut Harness) -> anyhow::Result<Value>,
    ) -> anyhow::Result<Value> {
        let pressure = Pressure::now();
        let mut result = run(self)?;
        if let Value::Object(map) = &mut result {
            map.insert("pressure".to_owned(), json!(pressure.share_since()));
        }
        Ok(result)
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

    /// Starts `binary` (bare-hyper, kafka-receiver: `--listen`) or callhook serve.
    fn start(&mut self, binary: &str) -> anyhow::Result<(Server, PathBuf)> {
        let dir = self.next_dir(binary)?;
        let mut command = Command::new(self.bin(binary));
        let marker = if binary == "callhook" {
            command.arg("serve").arg("--data-dir").arg(dir.join("data"));
            command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
            "callhook listening".to_owned()
        } else {
            command.args(["--listen", "127.0.0.1:0"]);
            format!("{binary} listening")
        };
        let server = Server::start(command, &marker, &dir.join("stderr.log"))?;
        Ok((server, dir))
    }

    fn loadgen(&self, server: &Server, dir: &Path, extra: &[String]) -> anyhow::Result<Value> {
        let mut command = Command::new(self.bin("loadgen"));
        command.arg("--addr").arg(server.addr.to_string());
        command.args(extra);
        run_json(command, &dir.join("loadgen.log"))
    }

    /// Starts `binary`, runs the load against it, stops it; returns the loadgen report with
    /// the server's memory and a few of its metrics. With `catch_up`, it first waits (up to
    /// [`CATCH_UP_LIMIT`]) for callhook's normalizer to work off the backlog the burst left,
    /// and records how long that took and the peak RSS including it.
    fn measure(&mut self, binary: &str, load: &[String], catch_up: bool) -> anyhow::Result<Value> {
        let (server, dir) = self.start(binary)?;
        let mut report = self.loadgen(&server, &dir, load)?;
        let metrics = scrape(&server);
        let memory_under_load = server.memory();
        let catch_up = catch_up.then(|| wait_for_catch_up(&server));
        let memory = server.stop(Duration::from_secs(60))?;
        if let Value::Object(map) = &mut report {
            map.insert("server_memory".to_owned(), json!(memory_under_load));
            map.insert("server_metrics".to_owned(), metrics);
            if let Some(catch_up) = catch_up {
                map.insert("catch_up".to_owned(), catch_up);
                map.insert("server_memory_after_catch_up".to_owned(), json!(memory));
            }
        }
        Ok(report)
    }

    fn load_args(&self, keep_alive: bool, seconds: f64) -> Vec<String> {
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
        load
    }

    /// Alternates bare-hyper and callhook round by round under the same load; keep-alive
    /// rounds also measure callhook at half the round's ceiling (latency at a sustainable
    /// rate) and the Kafka-mode receiver.
    fn ingest(&mut self, keep_alive: bool) -> anyhow::Result<Value> {
        let profile = self.profile;
        let (seconds, rounds) = if keep_alive {
            (profile.ingest_seconds, profile.keep_alive_rounds)
        } else {
            (
                profile.new_connection_seconds,
                profile.new_connection_rounds,
            )
        };
        let load = self.load_args(keep_alive, seconds);
        let kafka = keep_alive && self.bin("kafka-receiver").exists();
        let mut results = Vec::new();
        for round in 0..rounds {
            let bare = self.measure("bare-hyper", &load, false)?;
            let callhook = self.measure("callhook", &load, keep_alive && round == 0)?;
            let ceiling = number(&bare, "/load/throughput_per_second");
            let mut entry = json!({
                "bare_hyper": bare,
                "callhook": callhook,
                "ratio": number(&callhook, "/load/throughput_per_second") / ceiling.max(1.0),
            });
            if keep_alive {
                let rate = (ceiling * LATENCY_RUN_SHARE).round().max(1.0);
                let mut at_rate = load.clone();
                at_rate.extend(["--rate".to_owned(), rate.to_string()]);
                entry["callhook_at_half_ceiling"] = self.measure("callhook", &at_rate, false)?;
            }
            if kafka {
                let kafka_run = self.measure("kafka-receiver", &load, false)?;
                entry["kafka_ratio"] =
                    json!(number(&kafka_run, "/load/throughput_per_second") / ceiling.max(1.0));
                entry["kafka"] = kafka_run;
            }
            eprintln!(
                "[bench]   round {round}: ratio {:.3}",
                number(&entry, "/ratio")
            );
            results.push(entry);
        }
        Ok(json!({ "rounds": results, "median": median_round(&results) }))
    }

    fn end_to_end(&mut self) -> anyhow::Result<Value> {
        let (server, dir) = self.start("callhook")?;
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
            .arg(&dir)
            // The PostgreSQL sink beside the SQLite sink on the same mapped batches, against a
            // local PostgreSQL the bench starts (the test kit's, fsync on).
            .args(["--phases", "mapping,rebuild,drain,sinks"])
            .arg("--sinks-pushes")
            .arg(self.profile.normalizer_pushes.min(100_000).to_string());
        let result = run_json(command, &dir.join("stderr.log"));
        // The pre-filled log and the database are large; they are not kept.
        for file in [
            "rawlog.db",
            "rawlog.db-wal",
            "callhook.db",
            "callhook.db-wal",
        ] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        result
    }
}

/// Longest wait for the normalizer to catch up after a burst.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(240);

/// Waits until callhook's normalizer lag is 0; returns the backlog and how long it took.
fn wait_for_catch_up(server: &Server) -> Value {
    let lag = || -> Option<f64> {
        let text = http_get(server.admin?, "/metrics").ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("callhook_normalizer_lag_records "))
            .and_then(|value| value.trim().parse().ok())
    };
    let started = Instant::now();
    let backlog = lag();
    let mut last = backlog;
    while last.is_some_and(|lag| lag > 0.0) && started.elapsed() < CATCH_UP_LIMIT {
        std::thread::sleep(Duration::from_millis(250));
        last = lag();
    }
    json!({
        "backlog_records": backlog,
        "seconds": started.elapsed().as_secs_f64(),
        "lag_left_records": last,
    })
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
        "callhook_rawlog_commit_seconds_sum",
        "callhook_rawlog_commit_seconds_count",
        "callhook_normalizer_lag_records",
        "callhook_normalizer_batch_records_sum",
        "callhook_normalizer_batch_records_count",
        "callhook_sink_commit_seconds_sum",
        "callhook_sink_commit_seconds_count",
    ];
    let mut found = serde_json::Map::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = key.split('{').next().unwrap_or(key);
        if let (true, Ok(value)) = (wanted.contains(&name), value.parse::<f64>()) {
            found.insert(key.to_owned(), json!(value));
        }
    }
    Value::Object(found)
}

/// The median over rounds of each figure the table shows.
fn median_round(rounds: &[Value]) -> Value {
    let median = |pointer: &str| {
        let mut values: Vec<f64> = rounds
            .iter()
            .filter(|round| round.pointer(pointer).is_some())
            .map(|round| number(round, pointer))
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let mut out = serde_json::Map::new();
    for (name, pointer) in [
        ("ratio", "/ratio"),
        ("kafka_ratio", "/kafka_ratio"),
        (
            "callhook_per_second",
            "/callhook/load/throughput_per_second",
        ),
        (
            "bare_hyper_per_second",
            "/bare_hyper/load/throughput_per_second",
        ),
        ("kafka_per_second", "/kafka/load/throughput_per_second"),
        (
            "half_ceiling_rate",
            "/callhook_at_half_ceiling/load/rate_target_per_second",
        ),
        (
            "half_ceiling_per_second",
            "/callhook_at_half_ceiling/load/throughput_per_second",
        ),
        (
            "catch_up_backlog_records",
            "/callhook/catch_up/backlog_records",
        ),
        ("catch_up_seconds", "/callhook/catch_up/seconds"),
        (
            "catch_up_lag_left_records",
            "/callhook/catch_up/lag_left_records",
        ),
        (
            "callhook_peak_rss_after_catch_up_kib",
            "/callhook/server_memory_after_catch_up/peak_rss_kib",
        ),
    ] {
        if let Some(value) = median(pointer) {
            out.insert(name.to_owned(), json!(value));
        }
    }
    for who in [
        "callhook",
        "bare_hyper",
        "kafka",
        "callhook_at_half_ceiling",
    ] {
        for quantile in ["p50_us", "p99_us", "p999_us"] {
            if let Some(value) = median(&format!("/{who}/load/latency/{quantile}")) {
                out.insert(format!("{who}_{quantile}"), json!(value));
            }
        }
        let peak = rounds
            .iter()
            .map(|round| number(round, &format!("/{who}/server_memory/peak_rss_kib")))
            .fold(0.0, f64::max);
        out.insert(format!("{who}_peak_rss_kib"), json!(peak));
    }
    let loadgen_peak = rounds
        .iter()
        .map(|round| number(round, "/callhook/loadgen_memory/peak_rss_kib"))
        .fold(0.0, f64::max);
    out.insert("loadgen_peak_rss_kib".to_owned(), json!(loadgen_peak));
    Value::Object(out)
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
