//! Kafka mode: the topics a normalizer uses are created when missing (the raw topic when
//! `[log.kafka] create_topics`, the events, dead-letter and compacted calls topics when
//! `[sink.kafka] create_topics`); a broker that does not answer yet is retried in the background while the
//! loop waits for it.

use std::time::Duration;

use callhook_rawlog::kafka::{ensure_topic_with, TopicSpec, TopicStatus};
use callhook_sinks::kafka::config::CALLS_TOPIC_CONFIGS;

use crate::config::KafkaModeSettings;

/// How long one topic-creation request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two rounds of topic creation while the broker does not answer.
const ADMIN_RETRY: Duration = Duration::from_secs(5);

/// Creates the topics this process uses when missing, retrying until the broker answers.
/// `raw`: the raw topic too (the receiver's `KafkaLog` creates it on its own).
pub async fn ensure_topics(kafka: KafkaModeSettings, raw: bool) {
    let mut wanted = Vec::new();
    if raw && kafka.log.create_topics {
        wanted.push((
            kafka.log.raw_topic.clone(),
            kafka.log.raw_topic_partitions.get(),
            kafka.log.raw_topic_replication_factor,
            &[][..],
        ));
    }
    if let Some(sink) = kafka.sink.as_ref().filter(|sink| sink.create_topics) {
        for (topic, configs) in [
            (&sink.events_topic, &[][..]),
            (&sink.dead_letters_topic, &[][..]),
            (&sink.calls_topic, CALLS_TOPIC_CONFIGS),
        ] {
            wanted.push((
                topic.clone(),
                sink.topic_partitions.get(),
                sink.topic_replication_factor,
                configs,
            ));
        }
    }
    let client = kafka.log.client_config();
    while !wanted.is_empty() {
        let mut missing = Vec::new();
        for (name, partitions, replication_factor, configs) in wanted {
            let spec = TopicSpec {
                name: &name,
                partitions,
                replication_factor,
                configs,
            };
            match ensure_topic_with(&client, &spec, ADMIN_TIMEOUT).await {
                Ok(TopicStatus::Created) => {
                    tracing::info!(topic = %name, partitions, "created topic")
                }
                Ok(TopicStatus::Existed) => {}
                Err(error) => {
                    tracing::warn!(%error, topic = %name, "cannot ensure the topic yet; retrying");
                    missing.push((name, partitions, replication_factor, configs));
                }
            }
        }
        wanted = missing;
        if !wanted.is_empty() {
            tokio::time::sleep(ADMIN_RETRY).await;
        }
    }
}
