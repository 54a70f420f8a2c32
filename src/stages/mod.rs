//! The one wiring path of the binary: `serve`, `ingest` and `normalize` start their stages
//! through the same helpers, so a guarantee added to one mode is in all of them.
//!
//! | command | raw log | receiver | normalizer |
//! |---|---|---|---|
//! | `serve` (embedded) | the SQLite log in the data directory | yes | the embedded loop |
//! | `serve` (Kafka mode) | the raw topic (spool when Kafka cannot confirm) | yes | a consumer-group member |
//! | `ingest` (Kafka mode) | the raw topic | yes | no |
//! | `normalize` (Kafka mode) | no | no | a consumer-group member |
//!
//! Where the process receives (`serve`, `ingest`), reconciliation with the 7moor CDR query API
//! runs beside the receiver for every source with `[sources.<name>.reconcile]` ([`reconcile`]),
//! and so does the stale-call sweep ([`stale`]): both append to the raw log.
//!
//! Every normalizer runs under a [`callhook_normalizer::supervisor::Supervisor`]: when it
//! stops by itself, `/readyz` turns `503` with the reason, an ERROR line says what happened,
//! `callhook_normalizer_state` shows it, and it is restarted with backoff.
//!
//! Shutdown (SIGTERM or ctrl-c): the listeners stop accepting and finish in-flight requests
//! (each already durable or refused), the normalizer commits or abandons its batch and stops,
//! the raw log drains and closes; the process exits 0. Records the normalizer did not reach
//! stay in the raw log for the next start.

mod listeners;
pub(crate) mod log;
mod normalizer;
mod readiness;
mod reconcile;
mod stale;
mod topics;

use std::sync::Arc;

use anyhow::Context;
use callhook_ingest::{AdminState, Receiver, TapHub};

use crate::config::Settings;
use listeners::Listeners;
use log::RawLog;
use readiness::ProcessReadiness;

/// Which stages a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The receiver and the normalizer (embedded, or both halves through Kafka).
    Serve,
    /// Kafka mode: the receiver only.
    Ingest,
    /// Kafka mode: the normalizer only.
    Normalize,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Serve => "serve",
            Command::Ingest => "ingest",
            Command::Normalize => "normalize",
        }
    }

    fn receives(self) -> bool {
        matches!(self, Command::Serve | Command::Ingest)
    }

    fn normalizes(self) -> bool {
        matches!(self, Command::Serve | Command::Normalize)
    }
}

/// Runs `command`'s stages until a shutdown signal, then stops them in order.
pub async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    if command != Command::Serve && settings.kafka.is_none() {
        anyhow::bail!(
            "`callhook {}` needs `[log] kind = \"kafka\"` and `[log.kafka] brokers`",
            command.name()
        );
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory `{}`",
            settings.data_dir.display()
        )
    })?;
    if let Some(kafka) = settings.kafka.as_ref().filter(|_| command.normalizes()) {
        // The receiver's raw log creates the raw topic itself.
        let raw = !command.receives();
        tokio::spawn(topics::ensure_topics(kafka.clone(), raw));
    }
    let log = match command.receives() || settings.kafka.is_none() {
        true => Some(RawLog::open(&settings).await?),
        false => None,
    };
    let normalizer = match command.normalizes() {
        true => Some(normalizer::start(&settings, log.as_ref(), command.receives()).await?),
        false => None,
    };
    let readiness = ProcessReadiness {
        log: log
            .as_ref()
            .filter(|_| command.receives())
            .map(RawLog::appender),
        normalizer: normalizer.as_ref().map(|supervisor| supervisor.health()),
    };
    // The live fan-out of `/tap` and the console: raw pushes from the receiver, committed
    // events from the normalizer, whichever of them this process runs.
    let tap = Arc::new(TapHub::default());
    if command.normalizes() {
        crate::tap::install_feed(&tap);
    }
    let public = match (command.receives(), &log) {
        (true, Some(log)) => {
            let receiver = Receiver::new(
                settings.ingest.clone(),
                settings.ingest_sources.clone(),
                log.appender(),
            )?
            .with_tap(Arc::clone(&tap));
            Some((settings.listen, Arc::new(receiver)))
        }
        _ => None,
    };
    let mut admin = AdminState::new(Arc::new(readiness));
    if let Some(access) = settings.tap_access.clone() {
        admin = admin.with_tap(Arc::clone(&tap), access);
    }
    // Before the listeners: their series exist (at 0) by the time `/metrics` answers.
    let reconcilers = match (command.receives(), &log) {
        (true, Some(log)) => Some(reconcile::Reconcilers::start(&settings, log.appender())?),
        _ => None,
    };
    let sweeper = match (command.receives(), &log) {
        (true, Some(log)) => Some(stale::StaleSweeper::start(&settings, log.appender())),
        _ => None,
    };
    let console = match &settings.console {
        Some(console) => Some((
            console.listen,
            Arc::new(crate::console::Console::new(
                &settings,
                console,
                Arc::clone(&tap),
            )?),
        )),
        None => None,
    };
    let listeners =
        Listeners::start(public, settings.admin_listen, Arc::new(admin), console).await?;
    tracing::info!(command = command.name(), data_dir = %settings.data_dir.display(), kafka = settings.kafka.is_some(), "callhook running");

    shutdown_signal().await;
    tracing::info!("shutdown requested: draining in-flight requests");
    if let Some(reconcilers) = reconcilers {
        reconcilers.stop().await;
    }
    if let Some(sweeper) = sweeper {
        sweeper.stop().await;
    }
    // Tap and console streams never end by themselves: end them so the listeners can drain.
    tap.close();
    listeners.stop().await;
    if let Some(supervisor) = normalizer {
        // Joining the loop's thread blocks until its batch is committed.
        tokio::task::spawn_blocking(move || supervisor.stop()).await?;
    }
    if let Some(log) = log {
        log.close().await?;
    }
    tracing::info!(command = command.name(), "callhook stopped cleanly");
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
