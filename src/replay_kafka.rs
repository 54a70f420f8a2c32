//! `callhook replay` in Kafka mode: the raw topic, from its start, through the current
//! mapping, re-produced as canonical events to `--to-topic` (default: the `[sink.kafka]`
//! events topic, whose consumers dedupe on `ce_id`). The live consumer group and its offsets
//! are not touched (see `callhook_normalizer::kafka::replay`).
//!
//! `--dry-run` reads and maps the same records and prints what would be produced. `--into`
//! and `--in-place` rebuild a SQLite database from the embedded raw log only.

use std::time::Duration;

use anyhow::{bail, Context};
use callhook_normalizer::kafka::replay::{replay_to_topic, KafkaReplayStats, ReplayTarget};
use callhook_normalizer::replay::ReplayFilter;
use callhook_normalizer::MAPPING_VERSION;
use callhook_rawlog::kafka::{ensure_topic_with, TopicSpec, TopicStatus};
use callhook_sinks::{KafkaSinkConfig, KafkaSinkSettings, ProjectionSinks};
use serde_json::json;

use crate::config::{KafkaModeSettings, Settings};
use crate::replay::{progress_bar, ReplayArgs};

/// How long creating the target topic may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `callhook replay` against the raw topic.
pub fn run(
    args: &ReplayArgs,
    settings: &Settings,
    kafka: &KafkaModeSettings,
    filter: &ReplayFilter,
) -> anyhow::Result<()> {
    if args.into.is_some() || args.in_place {
        bail!("in Kafka mode `callhook replay` re-produces events to a topic (`--to-topic TOPIC`, by default the `[sink.kafka]` events topic) or counts them (`--dry-run`); `--into` and `--in-place` rebuild from the embedded raw log");
    }
    let target = match args.dry_run {
        true => ReplayTarget::DryRun,
        false => ReplayTarget::Topic(Box::new(target_sink(args, kafka)?)),
    };
    if let ReplayTarget::Topic(sink) = &target {
        ensure_target_topic(kafka, sink)?;
    }
    let mut sequences = projection_for_sequences(settings);
    let progress = progress_bar(args.json);
    let mut report = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let stats = replay_to_topic(
        &kafka.consumer,
        target,
        &settings.map_sources,
        filter,
        settings.normalizer.dedupe_cache_keys,
        sequences.as_mut(),
        &mut report,
    )
    .context("the replay failed")?;
    progress.finish_and_clear();
    print_summary(args, &kafka.consumer.topic, &stats);
    Ok(())
}

/// The projection the live events' `sequence`s are read from (so `ce_sequence` is the live
/// one): the configured sinks, minus a SQLite file that does not exist here (opening it would
/// create it). `None`, with a warning, when there is none: events go without `ce_sequence`.
fn projection_for_sequences(settings: &Settings) -> Option<ProjectionSinks> {
    let mut projections = settings.projections.clone();
    if projections
        .sqlite
        .as_ref()
        .is_some_and(|sqlite| !sqlite.path.exists())
    {
        projections.sqlite = None;
    }
    if projections.sqlite.is_none() && projections.postgres.is_none() {
        tracing::warn!("no projection sink database here: events are replayed without ce_sequence");
        return None;
    }
    match ProjectionSinks::open(&projections) {
        Ok(sinks) => Some(sinks),
        Err(error) => {
            tracing::warn!(error = %error, "cannot open the projection sinks: events are replayed without ce_sequence");
            None
        }
    }
}

/// The producer settings: `[sink.kafka]`'s (or its defaults when it is off) with the events
/// topic set to `--to-topic`.
fn target_sink(args: &ReplayArgs, kafka: &KafkaModeSettings) -> anyhow::Result<KafkaSinkSettings> {
    let mut sink = match (&kafka.sink, &args.to_topic) {
        (Some(sink), _) => sink.clone(),
        (None, Some(_)) => KafkaSinkConfig::default()
            .validate(kafka.log.client_config())
            .context("the default `[sink.kafka]` settings")?,
        (None, None) => bail!(
            "`[sink.kafka]` is off, so there is no events topic to replay into: name one with `--to-topic TOPIC`"
        ),
    };
    if let Some(topic) = &args.to_topic {
        sink.events_topic = topic.clone();
    }
    if sink.events_topic == kafka.log.raw_topic || sink.events_topic == sink.dead_letters_topic {
        bail!(
            "`{}` is the raw or the dead-letter topic; replay events into another one",
            sink.events_topic
        );
    }
    Ok(sink)
}

/// Creates the target topic when missing and `[sink.kafka] create_topics` is on.
fn ensure_target_topic(kafka: &KafkaModeSettings, sink: &KafkaSinkSettings) -> anyhow::Result<()> {
    if !sink.create_topics {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spec = TopicSpec {
        name: &sink.events_topic,
        partitions: sink.topic_partitions.get(),
        replication_factor: sink.topic_replication_factor,
        configs: &[],
    };
    let status = runtime
        .block_on(ensure_topic_with(
            &kafka.log.client_config(),
            &spec,
            ADMIN_TIMEOUT,
        ))
        .with_context(|| format!("cannot create topic `{}`", sink.events_topic))?;
    if status == TopicStatus::Created {
        tracing::info!(topic = %sink.events_topic, "created topic");
    }
    Ok(())
}

fn print_summary(args: &ReplayArgs, raw_topic: &str, stats: &KafkaReplayStats) {
    if args.json {
        let summary = json!({
            "mapping_version": MAPPING_VERSION,
            "raw_topic": raw_topic,
            "dry_run": args.dry_run,
            "kafka": stats,
        });
        println!("{summary}");
        return;
    }
    let verb = match &stats.topic {
        Some(topic) => format!("produced to `{topic}`"),
        None => "would be produced (dry run)".to_owned(),
    };
    println!(
        "replayed {} of {} records of `{raw_topic}` through mapping version {} in {:.1} s: {} events {verb}, {} duplicates, {} dead letters (not produced)",
        stats.records_replayed,
        stats.records_read,
        callhook_normalizer::mapping_version(),
        stats.seconds,
        stats.events,
        stats.duplicates,
        stats.dead_letters
    );
    for (event_type, count) in &stats.events_by_type {
        println!("  {event_type:<24} {count}");
    }
}
