//! Starting the normalizer under its supervisor, in either mode: a factory that builds a
//! fresh loop (reopening the sink and the raw-log reader or the Kafka consumer) for every
//! (re)start.

use std::path::PathBuf;

use anyhow::Context;
use callhook_normalizer::supervisor::{LoopFactory, SupervisedLoop, Supervisor};
use callhook_normalizer::{KafkaNormalizer, Normalizer, PipelineError};
use callhook_sinks::{KafkaSink, ProjectionSinks};

use super::log::RawLog;
use crate::config::{KafkaModeSettings, Settings};

/// Starts the supervised normalizer. `beside_receiver`: the receiver shares the process, so
/// the loop's thread gets a lower CPU priority.
pub async fn start(
    settings: &Settings,
    log: Option<&RawLog>,
    beside_receiver: bool,
) -> anyhow::Result<Supervisor> {
    let mut factory = match (&settings.kafka, log.and_then(RawLog::embedded)) {
        (Some(kafka), _) => kafka_factory(settings, kafka.clone()),
        (None, Some(log)) => embedded_factory(settings, log.clone()),
        (None, None) => anyhow::bail!("the embedded normalizer needs the embedded raw log"),
    };
    // The first loop is built here, so that a start that cannot work (a database newer than
    // this build, an unreadable journal) fails the command at once. Opening SQLite files is
    // blocking I/O: off the runtime's workers.
    let (factory, first) = tokio::task::spawn_blocking(move || {
        let first = factory();
        (factory, first)
    })
    .await?;
    let first = first.context("cannot start the normalizer")?;
    let on_start: fn() = match beside_receiver {
        true => lower_thread_priority,
        false => || {},
    };
    // The loop blocks (SQLite commits, rdkafka polls): it gets its own OS thread.
    Supervisor::spawn("normalizer", first, factory, on_start).context("cannot start the normalizer")
}

/// Where the attempt journal lives: beside the SQLite sink.
fn attempts_dir(settings: &Settings) -> PathBuf {
    settings.data_dir.join("attempts")
}

fn embedded_factory(
    settings: &Settings,
    log: std::sync::Arc<callhook_rawlog::embedded::EmbeddedLog>,
) -> LoopFactory {
    let projections = settings.projections.clone();
    let sources = settings.map_sources.clone();
    let normalizer = settings.normalizer.clone();
    let attempts = attempts_dir(settings);
    Box::new(move || {
        let sink = ProjectionSinks::open(&projections)?;
        let normalizer = Normalizer::new(
            log.clone(),
            sink,
            sources.clone(),
            normalizer.clone(),
            &attempts,
        )?;
        Ok(Box::new(normalizer) as Box<dyn SupervisedLoop>)
    })
}

fn kafka_factory(settings: &Settings, kafka: KafkaModeSettings) -> LoopFactory {
    let projections = settings.projections.clone();
    let sources = settings.map_sources.clone();
    let normalizer = settings.normalizer.clone();
    let attempts = attempts_dir(settings);
    Box::new(move || {
        let kafka_sink = kafka
            .sink
            .clone()
            .map(KafkaSink::new)
            .transpose()
            .map_err(|error| {
                PipelineError::Kafka(callhook_normalizer::kafka::KafkaPipelineError::Sink(error))
            })?;
        let normalizer = KafkaNormalizer::new(
            &kafka.consumer,
            &projections,
            kafka_sink,
            sources.clone(),
            normalizer.clone(),
            &attempts,
        )?;
        Ok(Box::new(normalizer) as Box<dyn SupervisedLoop>)
    })
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
