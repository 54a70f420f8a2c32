//! The Kafka raw log: pushes are produced to the raw topic, with a local durable spool for
//! when Kafka cannot confirm in time.
//!
//! # API (for the binary and the normalizer side)
//!
//! ```text
//! KafkaLogConfig::validate(&self, data_dir: &Path) -> Result<KafkaLogSettings, ConfigError>  // no I/O
//! KafkaLogSettings::client_config(&self) -> rdkafka::ClientConfig   // bootstrap.servers + [client]
//! async KafkaLog::start(settings: KafkaLogSettings) -> Result<KafkaLog, KafkaLogError>
//!     // inside a tokio runtime; opens the spool (on the blocking pool), creates the raw topic
//!     // when `create_topics` (a failure there is logged, not fatal), starts the forwarder thread
//! KafkaLog: LogAppender (share as Arc<KafkaLog> or Arc<dyn LogAppender>); check_writable and
//!     status_detail feed /readyz; spool_in_use(), spool_depth()
//! KafkaLog::close(&self) -> Result<(), KafkaLogError>   // blocking: call from spawn_blocking
//! async admin::ensure_topic(brokers: &str, name: &str, partitions: u32)
//!     -> Result<TopicStatus, AdminError>
//! async admin::ensure_topic_with(&ClientConfig, &TopicSpec, timeout) -> Result<TopicStatus, AdminError>
//! ```
//!
//! The record layout on the raw topic (key, value = exact body, `callhook.*` headers) is
//! [`crate::kafka_codec`]'s; the Kafka record timestamp is the push's `received_at`.
//!
//! # Acknowledgement guarantee
//!
//! [`LogAppender::append`] resolves `Ok(position)` only when the record is durable in one of
//! two places:
//!
//! - **Kafka**: the idempotent producer (`enable.idempotence=true`, acks and retries left to
//!   librdkafka) returned a delivery report within `ack_timeout_ms`; the position is the Kafka
//!   partition and offset.
//! - **the spool**: Kafka did not confirm within `ack_timeout_ms`, reported an error, or is
//!   known to be down, and the spool (an [`EmbeddedLog`], fsync'd group commits) has the
//!   record; the position is the record's place in the spool.
//!
//! Only when neither can take a record does `append` fail ([`AppendError`], `503`). A record
//! Kafka rejects for itself (larger than `message.max.bytes`) is refused with `503` and not
//! spooled: it could never leave the spool. The answer does not depend on the caller: the
//! append runs on its own task, so a client that hangs up does not abandon a half-done append.
//!
//! # At least once, never lost
//!
//! A spooled record is not deleted from the spool until Kafka confirmed it (the forwarder
//! commits the spool's consumer-group offset only after the delivery reports, and spool
//! retention deletes only committed records). A direct send that our bound gave up on may still
//! have been written by the broker (it was in flight), so the same push can reach the raw
//! topic twice: once directly, once from the spool. The normalizer drops the second copy by
//! its dedupe key. What bounds these duplicates: on the first failure the log purges
//! everything still queued in the direct producer, so only the requests already in flight at
//! that moment can be duplicated.
//!
//! # Order per key
//!
//! Records of one key go to one Kafka partition (librdkafka's `murmur2_random`, the Java
//! client's partitioner, on every receiver). Counting the first copy of each record, a key's
//! records reach the raw topic in the order `append` was called. How:
//!
//! - **One route at a time.** The log is either *direct* or *spooling*. Routing decisions and
//!   the hand-over to librdkafka happen under one lock, in call order.
//! - **Direct to spooling.** The first failed direct send switches to spooling and purges the
//!   direct producer (queued and in-flight messages), so every direct send still pending fails
//!   at once instead of expiring one by one (librdkafka's own `message.timeout.ms` is set to
//!   `ack_timeout_ms` + 1 s so our bound, not its per-message expiry, decides). With the
//!   idempotent producer, what the broker wrote of a partition is a prefix of what was sent.
//! - **In order into the spool.** Failed direct sends and new appends enter the spool in call
//!   order: a new append waits behind every earlier direct send until that one is settled
//!   (delivered, or handed to the spool). The wait is bounded by `ack_timeout_ms`.
//! - **Forwarding in order.** The forwarder reads each spool partition in offset order and
//!   sends a batch with many messages in flight through its own idempotent producer (order
//!   kept per Kafka partition); on a failure it purges that producer and resumes after the
//!   last contiguous confirmed record, so again only a confirmed prefix plus possible
//!   duplicates reach Kafka.
//! - **Spooling to direct.** Only when the spool is empty (everything confirmed), no append
//!   is on its way into the spool and no direct send is pending does the forwarder switch the
//!   log back to direct, through a fresh direct producer (the purged one carries idempotence
//!   state a restarted broker may not know); new appends then come after everything spooled.
//!
//! Exception: a message the broker rejects permanently while later messages of its partition
//! are in flight (authorization or corrupt-record errors, not timeouts or outages) may be
//! overtaken by them after librdkafka resets the idempotent sequence.
//!
//! Why the first copies stay in order, and what the real broker in the tests taught us, is in
//! `design.md` beside this file.
//!
//! # Modules
//!
//! [`config`] (`[log.kafka]`), [`admin`] ([`ensure_topic`]), and the private `router` (the
//! direct/spooling state and the ordering buffer), `forwarder` (drains the spool), `producer`
//! (raw records as Kafka records), `telemetry`.

pub mod admin;
pub mod config;
mod error;
mod forwarder;
mod producer;
mod router;
mod telemetry;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rdkafka::producer::{FutureProducer, Producer};

pub use admin::{ensure_topic, ensure_topic_with, AdminError, TopicSpec, TopicStatus};
pub use config::{ConfigError, KafkaLogConfig, KafkaLogSettings};
pub use error::{KafkaLogError, Result};

use crate::embedded::EmbeddedLog;
use crate::{AppendError, BoxFuture, LogAppender, Position, RawRecord};
use forwarder::{forwarder_message_timeout, Forwarder, StopSignal};
use router::{Router, RouterOptions};

/// The consumer group under which the forwarder commits what it delivered from the spool.
pub const FORWARDER_GROUP: &str = "callhook-forwarder";

/// The Kafka raw log. Share it as `Arc<KafkaLog>` (or `Arc<dyn LogAppender>`); closing it or
/// dropping the last handle stops the forwarder and closes the spool (both block, so do it
/// from a blocking context at shutdown).
pub struct KafkaLog {
    settings: KafkaLogSettings,
    router: Arc<Router>,
    spool: Arc<EmbeddedLog>,
    stop: Arc<StopSignal>,
    forwarder: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.settings.brokers)
            .field("raw_topic", &self.settings.raw_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Opens the spool, creates the producers (and the raw topic when `create_topics`; a
    /// failure there is logged, not fatal: the forwarder creates it once Kafka answers), and
    /// starts the forwarder thread. Must run inside a tokio runtime: appends run on it.
    pub async fn start(settings: KafkaLogSettings) -> Result<KafkaLog> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| KafkaLogError::NoRuntime)?;
        let spool_settings = settings.spool.clone();
        // Opening checks the SQLite file (blocking I/O).
        let (spool, reader) = tokio::task::spawn_blocking(move || {
            let spool = EmbeddedLog::open(spool_settings)?;
            let reader = spool.reader()?;
            Ok::<_, crate::embedded::EmbeddedLogError>((spool, reader))
        })
        .await
        .map_err(|_| KafkaLogError::NoRuntime)??;
        let spool = Arc::new(spool);
        let direct = create_producer(&settings, "direct", settings.direct_message_timeout())?;
        let forwarding =
            create_producer(&settings, "forwarder", forwarder_message_timeout(&settings))?;
        if settings.create_topics {
            create_raw_topic(&settings).await;
        }
        let options = RouterOptions {
            topic: settings.raw_topic.clone(),
            ack_timeout: settings.ack_timeout,
            message_max_bytes: settings.message_max_bytes(),
            runtime,
        };
        let router = Arc::new(Router::new(direct, Arc::clone(&spool), options));
        telemetry::set_spool_state(router.is_spooling(), spool.unconsumed_records());
        let stop = Arc::new(StopSignal::default());
        let forwarder = Forwarder::new(
            settings.clone(),
            Arc::clone(&router),
            Arc::clone(&spool),
            reader,
            forwarding,
            Arc::clone(&stop),
        )
        .map_err(KafkaLogError::SpawnForwarder)?;
        // A std thread: the forwarder blocks on SQLite and on metadata requests.
        let handle = std::thread::Builder::new()
            .name("callhook-spool-forwarder".to_owned())
            .spawn(move || forwarder.run())
            .map_err(KafkaLogError::SpawnForwarder)?;
        Ok(KafkaLog {
            settings,
            router,
            spool,
            stop,
            forwarder: Mutex::new(Some(handle)),
        })
    }

    /// Returns the settings the log was started with.
    pub fn settings(&self) -> &KafkaLogSettings {
        &self.settings
    }

    /// Returns the spool's file path.
    pub fn spool_path(&self) -> &Path {
        &self.settings.spool.path
    }

    /// Returns whether appends currently go to the spool.
    pub fn spool_in_use(&self) -> bool {
        self.router.is_spooling()
    }

    /// Returns the records in the spool that Kafka has not confirmed yet.
    pub fn spool_depth(&self) -> u64 {
        self.spool.unconsumed_records()
    }

    /// Stops the forwarder, flushes the direct producer (for at most `ack_timeout_ms`) and
    /// closes the spool. Stop the receivers first: appends after `close` are refused. Blocks:
    /// call it from a blocking context. Closing twice is a no-op.
    pub fn close(&self) -> Result<()> {
        self.stop.stop();
        let handle = self
            .forwarder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else {
            return Ok(());
        };
        let joined = handle.join();
        // Pending direct sends resolve now (delivered, or failed and then spooled).
        let _ = self
            .router
            .direct_producer()
            .flush(self.settings.ack_timeout);
        self.spool.close()?;
        joined.map_err(|_| KafkaLogError::ForwarderPanicked)
    }
}

fn create_producer(
    settings: &KafkaLogSettings,
    role: &'static str,
    message_timeout: std::time::Duration,
) -> Result<FutureProducer> {
    settings
        .producer_config(message_timeout)
        .create()
        .map_err(|source| KafkaLogError::Producer { role, source })
}

async fn create_raw_topic(settings: &KafkaLogSettings) {
    let spec = TopicSpec {
        name: &settings.raw_topic,
        partitions: settings.raw_topic_partitions.get(),
        replication_factor: settings.raw_topic_replication_factor,
        configs: &[],
    };
    match ensure_topic_with(&settings.client_config(), &spec, settings.ack_timeout).await {
        Ok(TopicStatus::Created) => {
            tracing::info!(
                topic = spec.name,
                partitions = spec.partitions,
                "created the raw topic"
            );
        }
        Ok(TopicStatus::Existed) => {}
        Err(error) => {
            tracing::warn!(%error, "cannot ensure the raw topic now; the forwarder retries once kafka answers");
        }
    }
}

impl LogAppender for KafkaLog {
    fn append(
        &self,
        key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, std::result::Result<Position, AppendError>> {
        self.router.append(key, record)
    }

    fn check_writable(&self) -> std::result::Result<(), String> {
        let Some((_, failure)) = self.router.spooling() else {
            return Ok(());
        };
        self.spool.check_writable().map_err(|spool| {
            format!("kafka is unavailable ({failure}) and the spool cannot take writes: {spool}")
        })
    }

    fn status_detail(&self) -> Option<String> {
        let (spooling_for, failure) = self.router.spooling()?;
        Some(format!(
            "spool in use for {} s: {} records wait for kafka (last kafka failure: {failure})",
            spooling_for.as_secs(),
            self.spool.unconsumed_records()
        ))
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "kafka raw log did not close cleanly");
        }
    }
}
