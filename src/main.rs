//! `callhook`: parse arguments, load config, initialise logging and metrics, run a command.

mod config;
mod console;
mod dead_letters;
mod log_check;
mod logging;
mod reconcile;
mod replay;
mod replay_kafka;
mod stages;
mod tap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: allocation was a fifth of the mapping's CPU, and the
/// normalizer frees on one thread what it allocated on another (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Webhook ingestion and event-sourcing for call-center telephony.
#[derive(Parser)]
#[command(name = "callhook", version, about)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for machines.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver, the embedded raw log, the normalizer and the SQLite sink in one process
    /// (in Kafka mode: the receiver and the normalizer, through the Kafka topics).
    Serve(ServeArgs),
    /// Kafka mode: run the receiver; pushes go to the raw topic (or the local spool).
    Ingest(ServeArgs),
    /// Kafka mode: run a normalizer of the consumer group (raw topic to SQLite and Kafka sinks).
    Normalize(NormalizeArgs),
    /// Check a config file and print the effective sources.
    CheckConfig {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Send simulated vendor call flows to a receiver, or verify a database against a ledger.
    Simulate(callhook_simulator::SimulateArgs),
    /// Replay the raw log through the current mapping: into a new database (--into), as a
    /// diff against the live one (--dry-run), or applied to it (--in-place); in Kafka mode,
    /// re-produce the events to a topic (--to-topic, default the events topic).
    Replay(replay::ReplayArgs),
    /// List the dead letters, show one with its raw push, or redrive them through the current
    /// mapping.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Print, live, the canonical events (or with --raw the raw pushes) flowing through a
    /// running callhook, read from its admin listener's `/tap`.
    Tap(tap::client::TapArgs),
    /// Benchmark: render times of the console's pages against a large database.
    #[command(hide = true)]
    BenchConsole(console::bench::BenchArgs),
    /// The raw log's tools.
    #[command(subcommand)]
    Log(LogCommand),
    /// Run one reconciliation pass of a 7moor source against the 7moor v7 CDR query API:
    /// print the CDRs checked, missing and backfilled (`--dry-run`: append nothing).
    Reconcile(reconcile::ReconcileArgs),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check the raw log (the spool in Kafka mode): its WAL, `PRAGMA integrity_check`, its
    /// offsets; say exactly what was lost or repaired. Exits 0 when clean, 1 otherwise.
    Check(LogCheckArgs),
}

/// Flags of `callhook log check`.
#[derive(clap::Args)]
struct LogCheckArgs {
    /// Config file (TOML). Without one, every default applies.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of the raw log and the database (default ./callhook-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Repair what can be repaired: cut a damaged WAL where SQLite stops replaying (keeping a
    /// copy of it), raise the next offsets past consumed records the log lost. Stop callhook
    /// first.
    #[arg(long)]
    repair: bool,
}

/// Flags of `callhook serve`; each overrides the config file.
#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (TOML). Without one, every default applies.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of the public receiver (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the admin listener (default 127.0.0.1:9464).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Directory of the raw log and the database (default ./callhook-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Flags of `callhook normalize`; each overrides the config file.
#[derive(clap::Args)]
struct NormalizeArgs {
    /// Config file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of the admin listener (default 127.0.0.1:9464).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Directory of the database (default ./callhook-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // Crash points for the fault tests; a no-op unless built with the `failpoints` feature.
    let _failpoints = callhook_normalizer::failpoints::setup();
    let result = match cli.command {
        Command::Serve(args) => run_stages(args, stages::Command::Serve),
        Command::Ingest(args) => run_stages(args, stages::Command::Ingest),
        Command::Normalize(args) => run_stages(
            ServeArgs {
                config: args.config,
                listen: None,
                admin_listen: args.admin_listen,
                data_dir: args.data_dir,
            },
            stages::Command::Normalize,
        ),
        Command::CheckConfig { config } => check_config(&config),
        Command::Simulate(args) => callhook_simulator::run(args).map_err(Into::into),
        Command::Replay(args) => load_settings(args.config.as_deref(), args.data_dir.clone())
            .and_then(|settings| replay::run(args, settings)),
        Command::DeadLetters(args) => load_settings(args.config.as_deref(), args.data_dir.clone())
            .and_then(|settings| dead_letters::run(args, settings)),
        Command::Reconcile(args) => load_settings(args.config.as_deref(), args.data_dir.clone())
            .and_then(|settings| reconcile::run(args, settings)),
        Command::Tap(args) => tap::client::run(args),
        Command::BenchConsole(args) => console::bench::run(args),
        Command::Log(LogCommand::Check(args)) => match log_check(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "callhook stopped");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn log_check(args: LogCheckArgs) -> anyhow::Result<bool> {
    let settings = load_settings(args.config.as_deref(), args.data_dir)?;
    log_check::run(&settings, args.repair)
}

fn run_stages(args: ServeArgs, command: stages::Command) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin_listen) = args.admin_listen {
        config.admin_listen = admin_listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    let settings = config.validate()?;
    if command != stages::Command::Normalize {
        // Every connection is a file descriptor: the receiver's own limits (1024 connections
        // by default) must be reached before the process's.
        match callhook_ingest::raise_fd_limit() {
            Ok(open_files) => {
                let needed = settings.ingest.max_connections().get() as u64 + 256;
                if open_files < needed {
                    tracing::warn!(
                        open_files,
                        needed,
                        "the open-file limit is below [ingest] max_connections plus the files \
                         of the log and the sink; raise the hard limit (ulimit -Hn)"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stages::run(settings, command))
}

/// The config file's contents, or every default without one.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<config::Config> {
    match path {
        Some(path) => config::Config::load(path),
        None => Ok(config::Config::default()),
    }
}

/// The validated settings of a tool command (`--config`, `--data-dir`).
fn load_settings(
    path: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<config::Settings> {
    let mut config = load_config(path)?;
    if let Some(data_dir) = data_dir {
        config.data_dir = data_dir;
    }
    config.validate()
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::Config::load(path)?;
    let settings = config.validate()?;
    for (name, source) in config.effective_sources() {
        println!(
            "source `{name}`: dialect {}, utc_offset {}",
            source.dialect, source.utc_offset
        );
    }
    for (name, reconcile) in &settings.reconcile {
        println!(
            "source `{name}`: reconciled with {} every {} s over {} s{}",
            reconcile.base_url,
            reconcile.interval.as_secs(),
            reconcile.window.num_seconds(),
            if reconcile.enabled {
                ""
            } else {
                " (periodic pass disabled)"
            }
        );
    }
    println!(
        "data in {}; listening on {} (admin {})",
        settings.data_dir.display(),
        settings.listen,
        settings.admin_listen
    );
    Ok(())
}
