//! The consumer-group rebalance callback: where each assigned partition starts, and which of
//! its records the Kafka topics already hold.
//!
//! librdkafka runs this callback inside `BaseConsumer::poll`, on the loop's own thread, and
//! only between batches: a batch is committed (or abandoned) before the loop polls again, so
//! no sink work is ever in flight while it runs. What it does:
//!
//! - **Assign**: reads the partitions' next offsets from the projection sinks (through
//!   connections of its own; the smaller of SQLite's and PostgreSQL's when both run) and assigns each partition *at* that offset, or at the partition's start when
//!   the sink has none, so no record is read from another position first. It also reads the
//!   group's committed offsets from Kafka: every record below one of them is already in the
//!   Kafka topics (see `design.md`), and the loop will not produce it again.
//! - **Revoke**: forgets the partitions. Whatever the loop had read since its last commit is
//!   abandoned (it bumps the [`Assignment::generation`] the loop compares), never committed:
//!   the new owner reads it again from the SQLite offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use callhook_sinks::ProjectionSinks;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::metrics::KafkaLoopMetrics;

/// Attempts at reading offsets (SQLite or Kafka) before giving up on an assignment.
const READ_ATTEMPTS: u32 = 3;
/// Pause between two attempts.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a read of the group's committed offsets may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// One assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStart {
    /// The SQLite sink's next offset, where the partition was assigned; `None`: its start.
    pub stored: Option<i64>,
    /// The group's committed offset in Kafka: the Kafka topics hold every record below it.
    /// `-1` when the group has none.
    pub in_topics_below: i64,
}

/// The current assignment, shared by the callback and the loop.
#[derive(Debug, Default)]
pub struct Assignment {
    /// Bumped by every assignment and revocation: a batch read under another generation is
    /// abandoned.
    pub generation: u64,
    /// The assigned partitions.
    pub partitions: BTreeMap<i32, PartitionStart>,
    /// Why the last assignment could not be taken; the loop stops on it.
    pub failure: Option<String>,
}

/// The consumer's context: the rebalance callback and what it needs.
pub struct RebalanceContext {
    topic: String,
    sqlite_consumer: String,
    offsets: Mutex<ProjectionSinks>,
    assignment: Mutex<Assignment>,
    /// Per partition, `(start, end)` as of the latest statistics (the end is the last stable
    /// offset under `read_committed`): what the lag is measured with, without a request.
    ends: Mutex<BTreeMap<i32, (i64, i64)>>,
    metrics: KafkaLoopMetrics,
}

impl RebalanceContext {
    /// Builds the context; `offsets` is a connection of its own to the SQLite sink's file,
    /// used only to read `sqlite_consumer`'s stored offsets.
    pub fn new(
        topic: String,
        sqlite_consumer: String,
        offsets: ProjectionSinks,
        metrics: KafkaLoopMetrics,
    ) -> Self {
        RebalanceContext {
            topic,
            sqlite_consumer,
            offsets: Mutex::new(offsets),
            assignment: Mutex::new(Assignment::default()),
            ends: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// Locks the shared assignment.
    pub fn assignment(&self) -> MutexGuard<'_, Assignment> {
        self.assignment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the partitions' `(start, end)` offsets as of the latest statistics.
    pub fn partition_ends(&self) -> BTreeMap<i32, (i64, i64)> {
        self.ends.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        self.metrics.assigns.inc();
        let stored = match self.stored_offsets() {
            Ok(stored) => stored,
            Err(reason) => {
                // Without the stored offsets the partitions cannot be read safely: take
                // none, and let the loop stop (the group then gives them to another member).
                tracing::error!(reason = %reason, "cannot read the stored offsets; refusing the assignment");
                self.assignment().failure = Some(reason);
                let _ = apply(consumer, &TopicPartitionList::new(), true);
                return;
            }
        };
        let committed = self.committed_offsets(consumer, tpl);
        let mut starts = BTreeMap::new();
        for element in tpl.elements_for_topic(&self.topic) {
            let partition = element.partition();
            let start = PartitionStart {
                stored: stored.get(&partition).copied(),
                in_topics_below: committed.get(&partition).copied().unwrap_or(-1),
            };
            starts.insert(partition, start);
        }
        for (partition, start) in &starts {
            let offset = start.stored.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = tpl.set_partition_offset(&self.topic, *partition, offset) {
                tracing::warn!(error = %error, partition, "cannot set the start offset");
            }
        }
        tracing::info!(partitions = ?starts, "partitions assigned");
        {
            let mut assignment = self.assignment();
            assignment.generation += 1;
            assignment.partitions.extend(starts);
            self.metrics
                .assigned_partitions
                .set(assignment.partitions.len() as i64);
        }
        if let Err(error) = apply(consumer, tpl, true) {
            tracing::error!(error = %error, "assigning partitions failed");
            self.assignment().failure = Some(format!("assign failed: {error}"));
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        self.metrics.revokes.inc();
        let lost = consumer.assignment_lost();
        {
            let mut assignment = self.assignment();
            assignment.generation += 1;
            for element in tpl.elements_for_topic(&self.topic) {
                assignment.partitions.remove(&element.partition());
            }
            self.metrics
                .assigned_partitions
                .set(assignment.partitions.len() as i64);
        }
        tracing::info!(
            partitions = tpl.count(),
            lost,
            "partitions revoked; uncommitted work abandoned"
        );
        if let Err(error) = apply(consumer, tpl, false) {
            tracing::warn!(error = %error, "unassigning partitions failed");
        }
    }

    fn stored_offsets(&self) -> Result<HashMap<i32, i64>, String> {
        let mut sink = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempt = 1;
        loop {
            match sink.stored_offsets(&self.sqlite_consumer) {
                Ok(rows) => {
                    return Ok(rows
                        .into_iter()
                        .filter_map(|(partition, next)| {
                            Some((i32::try_from(partition).ok()?, i64::try_from(next).ok()?))
                        })
                        .collect());
                }
                Err(error) if attempt < READ_ATTEMPTS && error.is_retryable() => {
                    tracing::warn!(error = %error, attempt, "reading the stored offsets failed; retrying");
                    std::thread::sleep(READ_RETRY_PAUSE);
                    attempt += 1;
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    /// Returns the group's committed offsets for the partitions of `tpl`; on failure, none
    /// (the loop then produces every record it reads: at least once for that window).
    fn committed_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> HashMap<i32, i64> {
        let mut query = TopicPartitionList::new();
        for element in tpl.elements_for_topic(&self.topic) {
            query.add_partition(&self.topic, element.partition());
        }
        for attempt in 1..=READ_ATTEMPTS {
            match consumer.committed_offsets(query.clone(), COMMITTED_TIMEOUT) {
                Ok(committed) => {
                    return committed
                        .elements_for_topic(&self.topic)
                        .iter()
                        .filter_map(|element| match element.offset() {
                            Offset::Offset(offset) => Some((element.partition(), offset)),
                            _ => None,
                        })
                        .collect();
                }
                Err(error) => {
                    tracing::warn!(error = %error, attempt, "reading the group's committed offsets failed");
                    std::thread::sleep(READ_RETRY_PAUSE);
                }
            }
        }
        tracing::warn!("the group's committed offsets are unknown: records already in the kafka topics may be produced again");
        HashMap::new()
    }
}

/// Assigns (or unassigns) `tpl` with the group's rebalance protocol (the config allows only
/// eager strategies; the incremental calls are there so that a cooperative group is at least
/// handled by the calls librdkafka requires for it).
fn apply(
    consumer: &BaseConsumer<RebalanceContext>,
    tpl: &TopicPartitionList,
    assign: bool,
) -> rdkafka::error::KafkaResult<()> {
    match (consumer.rebalance_protocol(), assign) {
        (RebalanceProtocol::Cooperative, true) => consumer.incremental_assign(tpl),
        (RebalanceProtocol::Cooperative, false) => consumer.incremental_unassign(tpl),
        (_, true) => consumer.assign(tpl),
        (_, false) => consumer.unassign(),
    }
}

impl ClientContext for RebalanceContext {
    /// Keeps the partitions' ends from librdkafka's periodic statistics (a query per partition
    /// would wait behind the consumer's long-polling fetch on the same connection).
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, stats) in &topic.partitions {
            let end = if stats.ls_offset >= 0 {
                stats.ls_offset
            } else {
                stats.hi_offset
            };
            if *partition >= 0 && end >= 0 {
                ends.insert(*partition, (stats.lo_offset.max(0), end));
            }
        }
    }

    /// Cluster errors (a broker unreachable) are retried by librdkafka and show in `/readyz`
    /// once batches stop committing; they are warnings, not data loss.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for RebalanceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                self.metrics.rebalance_errors.inc();
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                let all = tpl.clone();
                self.revoke(consumer, &all);
            }
        }
    }
}
