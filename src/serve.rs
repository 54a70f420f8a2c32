//! `callhook serve`: receiver + embedded raw log + normalizer + SQLite sink in one process.
//!
//! Shutdown (SIGTERM or ctrl-c): the receivers stop accepting and finish in-flight requests
//! (each already durable or refused), the normalizer commits its current batch and stops, the
//! raw log drains its queue and closes; the process exits 0. Records the normalizer did not
//! reach stay in the raw log and are consumed at the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use callhook_ingest::{AdminState, Receiver};
use callhook_normalizer::Normalizer;
use callhook_rawlog::embedded::EmbeddedLog;
use callhook_rawlog::LogAppender;
use callhook_sinks::SqliteSink;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;

/// Runs every stage until a shutdown signal, then stops them in order. In Kafka mode
/// (`[log] kind = "kafka"`) both halves run through Kafka instead
/// ([`crate::ingest_cmd::serve_kafka`]).
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    if settings.kafka.is_some() {
        return crate::ingest_cmd::serve_kafka(settings).await;
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory `{}`",
            settings.data_dir.display()
        )
    })?;
    let log = Arc::new(EmbeddedLog::open(settings.log.clone()).context("cannot open the raw log")?);
    let sink = SqliteSink::open(&settings.sqlite).context("cannot open the SQLite sink")?;
    let reader = log.reader().context("cannot open a raw-log reader")?;
    let normalizer = Normalizer::new(
        reader,
        sink,
        settings.map_sources.clone(),
        settings.normalizer.clone(),
    )
    .context("cannot start the normalizer")?;

    let stop_normalizer = Arc::new(AtomicBool::new(false));
    let normalizer_thread = {
        let stop = Arc::clone(&stop_normalizer);
        // SQLite blocks; the loop gets its own OS thread, never a runtime worker.
        std::thread::Builder::new()
            .name("normalizer".into())
            .spawn(move || {
                lower_thread_priority();
                normalizer.run(stop)
            })?
    };

    let appender: Arc<dyn LogAppender> = log.clone();
    let receiver = Arc::new(Receiver::new(
        settings.ingest.clone(),
        settings.ingest_sources.clone(),
        Arc::clone(&appender),
    )?);
    let admin = Arc::new(AdminState::new(appender));
    let public = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let admin_listener = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", settings.admin_listen))?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    tracing::info!(%public_addr, %admin_addr, data_dir = %settings.data_dir.display(), sources = ?receiver.source_names(), "callhook serving");
    // A machine-readable line for scripts and tests that bind port 0.
    println!("callhook listening public={public_addr} admin={admin_addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let public_task = tokio::spawn(callhook_ingest::run(
        public,
        receiver,
        stopped(stop_rx.clone()),
    ));
    let admin_task = tokio::spawn(callhook_ingest::run_admin(
        admin_listener,
        admin,
        stopped(stop_rx),
    ));

    shutdown_signal().await;
    tracing::info!("shutdown requested: draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = public_task.await;
    let _ = admin_task.await;
    stop_normalizer.store(true, Ordering::Release);
    let normalizer_result = tokio::task::spawn_blocking(move || normalizer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the normalizer thread panicked"))?;
    let close_result = log.close();
    normalizer_result.context("the normalizer stopped with an error")?;
    close_result.context("the raw log did not close cleanly")?;
    tracing::info!("callhook stopped cleanly");
    Ok(())
}

/// Nice value of the normalizer thread (the lowest).
const NORMALIZER_NICE: i32 = 19;

/// Lowers the calling thread's CPU priority to [`NORMALIZER_NICE`].
///
/// Vendors wait for the acks; the normalizer works behind the durable raw log. When pushes
/// arrive faster than this machine can both acknowledge and normalize them, an equal CPU share
/// for the normalizer cut the receiver's throughput (bench: 0.26 -> 0.35 of the bare-hyper
/// ceiling at nice 19); at nice 19 it takes what the receiver leaves and catches up after the
/// burst, its lag in `callhook_normalizer_lag_records` and bounded by
/// `log.embedded.max_unconsumed_records`. Unlike `SCHED_IDLE`, nice 19 still gets a small
/// share, so the lag cannot grow forever under a sustained overload. Linux keeps nice values
/// per thread, so only this thread changes. Best effort: a failure is logged, not fatal.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread, with integer arguments only.
        let result = unsafe {
            let thread = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, NORMALIZER_NICE)
        };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "cannot lower the normalizer thread's CPU priority");
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Resolves on SIGTERM or ctrl-c.
pub(crate) async fn shutdown_signal() {
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
