//! `fault-suite`: callhook under realistic simulated vendor load while things go wrong, then
//! held to the ledger of what it acknowledged. Run it with `faults/run.sh [--quick]`.
//!
//! Faults (each in its own directory under `--work-dir`, each its own `callhook` processes):
//! SIGKILL of `serve` ([`faults::sigkill`]), aborts at the normalizer's crash points
//! ([`faults::failpoints`]), Kafka mode with the broker killed and a normalizer stopped
//! ([`faults::kafka`]), disk full and read-only ([`faults::disk`]), SIGTERM under load
//! ([`faults::sigterm`]), a torn or corrupt raw log ([`faults::torn`]) and a soak at half
//! capacity ([`faults::soak`]).
//!
//! After each fault: `callhook simulate --verify` (every acknowledged push's events in
//! `events` exactly once), the raw log (or raw topic) holds every acknowledged push
//! ([`checks::raw_check`]), every `calls` row equals the sink's fold of its events
//! ([`checks::calls_check`]), `PRAGMA integrity_check` on both SQLite files and `callhook log
//! check`. It prints one table row per fault and exits 1 if anything was lost or duplicated or
//! a check failed.

mod checks;
mod faults;
mod process;
mod sim;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use faults::{Rng, Suite};

/// The fault suite.
#[derive(Parser)]
#[command(name = "fault-suite")]
struct Args {
    /// The `callhook` binary, built with `--features failpoints`.
    #[arg(long)]
    bin: PathBuf,
    /// Where the faults keep their files (emptied per fault).
    #[arg(long, default_value = "target/faults")]
    work_dir: PathBuf,
    /// Fewer iterations, shorter runs, a 2-minute soak.
    #[arg(long)]
    quick: bool,
    /// Only these faults (repeatable): sigkill, failpoints, kafka (or one half: kafka-broker,
    /// kafka-stop), disk, sigterm, torn, soak.
    #[arg(long = "only")]
    only: Vec<String>,
    /// Call flows per second of the load during faults.
    #[arg(long, default_value_t = 40.0)]
    flows_per_second: f64,
    /// Soak length in minutes (default 30, 2 with --quick).
    #[arg(long)]
    soak_minutes: Option<f64>,
    /// Soak rate in flows per second (default: half the capacity measured first).
    #[arg(long)]
    soak_flows_per_second: Option<f64>,
    /// Seed of the random moments (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Write the table here too (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
}

const FAULTS: [&str; 7] = [
    "sigkill",
    "failpoints",
    "kafka",
    "disk",
    "sigterm",
    "torn",
    "soak",
];

/// Names `--only` also takes: one half of the Kafka fault.
const KAFKA_HALVES: [&str; 2] = ["kafka-broker", "kafka-stop"];

fn main() -> ExitCode {
    let args = Args::parse();
    for name in &args.only {
        if !FAULTS.contains(&name.as_str()) && !KAFKA_HALVES.contains(&name.as_str()) {
            eprintln!(
                "error: unknown fault `{name}` (one of {})",
                FAULTS.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    no_core_dumps();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |elapsed| elapsed.as_nanos() as u64)
    });
    let work = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    let mut suite = Suite {
        bin: std::path::absolute(&args.bin).unwrap_or(args.bin.clone()),
        work,
        quick: args.quick,
        flows_per_second: args.flows_per_second,
        rng: Rng::new(seed),
    };
    eprintln!(
        "fault suite: seed {seed}, load {} flows/s, work dir {}{}",
        args.flows_per_second,
        suite.work.display(),
        if args.quick { ", quick" } else { "" }
    );
    let soak = faults::soak::SoakSettings {
        duration: Duration::from_secs_f64(
            args.soak_minutes
                .unwrap_or(if args.quick { 2.0 } else { 30.0 })
                * 60.0,
        ),
        window: if args.quick {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(300)
        },
        flows_per_second: args.soak_flows_per_second,
    };
    let wanted = |name: &str| {
        args.only.is_empty()
            || args.only.iter().any(|only| {
                only == name || only.strip_prefix("kafka-").is_some() && name == "kafka"
            })
    };
    let kafka_half = args
        .only
        .iter()
        .find_map(|only| only.strip_prefix("kafka-"))
        .filter(|_| !args.only.iter().any(|only| only == "kafka"))
        .map(str::to_owned);
    let started = Instant::now();
    let mut rows = Vec::new();
    for name in FAULTS.into_iter().filter(|name| wanted(name)) {
        eprintln!(
            "== {name} ({:.0} s into the run)",
            started.elapsed().as_secs_f64()
        );
        let outcome = match name {
            "sigkill" => faults::sigkill::run(&mut suite).map(|row| vec![row]),
            "failpoints" => faults::failpoints::run(&mut suite).map(|row| vec![row]),
            "kafka" => faults::kafka::run(&mut suite, kafka_half.as_deref()),
            "disk" => faults::disk::run(&mut suite),
            "sigterm" => faults::sigterm::run(&mut suite).map(|row| vec![row]),
            "torn" => faults::torn::run(&mut suite).map(|row| vec![row]),
            _ => faults::soak::run(&mut suite, &soak).map(|row| vec![row]),
        };
        match outcome {
            Ok(new_rows) => rows.extend(new_rows),
            Err(error) => {
                let mut row = table::Row::new(name);
                row.fail(format!("the fault could not run: {error:#}"));
                rows.push(row);
            }
        }
        eprintln!("{}", table::render(&rows));
    }
    let text = table::render(&rows);
    println!(
        "\nfault suite: seed {seed}, {:.0} min\n\n{text}",
        started.elapsed().as_secs_f64() / 60.0
    );
    if let Some(out) = &args.out {
        if let Err(error) = std::fs::write(out, &text) {
            eprintln!("error: cannot write {}: {error}", out.display());
        }
    }
    match rows.iter().all(table::Row::passed) {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// Aborts at the crash points would write core files; the suite needs none.
fn no_core_dumps() {
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; affects this process and its children only.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
    }
}
