//! The part of the consume-map-sink loop that does not care where records come from: mapping
//! one raw record into a sink item, the dedupe LRU in front of the sink, and the per-batch
//! bookkeeping. The embedded-log loop ([`super::Normalizer`]) and the Kafka consumer
//! ([`crate::kafka::KafkaNormalizer`]) both build their batches with it, so a push maps,
//! dedupes and dead-letters the same way in both modes.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhook_rawlog::embedded::UndecodableRecord;
use callhook_rawlog::{RawRecord, StoredRecord};
use callhook_sinks::{CommitOutcome, ProjectionSinks, SinkBatch, SinkEvent, SinkItem};

use crate::dedupe::DedupeCache;
use crate::error::MapError;
use crate::limits::MAX_EVENT_DATA_BYTES;
use crate::push::{RawPush, SourceContext};
use crate::supervisor::panic_message;
use crate::telemetry::{BatchProcessed, NormalizerMetrics, RecordOutcome};

/// Longest dead-letter detail stored; mapper errors name fields, never payloads.
const MAX_DETAIL_CHARS: usize = 512;

/// Dead-letter reasons of the loop itself, beside the mapper's ([`MapError::REASONS`]).
pub mod reason {
    /// The record's source is not (or no longer) configured.
    pub const UNKNOWN_SOURCE: &str = "unknown_source";
    /// The raw record's metadata does not decode (a damaged row, a foreign Kafka record).
    pub const UNDECODABLE_RECORD: &str = "undecodable_record";
    /// Mapping the record, or building its rows, panicked; the detail has the message.
    pub const MAPPER_PANIC: &str = "mapper_panic";
    /// The process died twice while the record was in flight alone
    /// ([`super::attempts`]); it was not mapped again.
    pub const CRASHED_NORMALIZER: &str = "crashed_normalizer";
    /// Every reason of the loop.
    pub const ALL: [&str; 4] = [
        UNKNOWN_SOURCE,
        UNDECODABLE_RECORD,
        MAPPER_PANIC,
        CRASHED_NORMALIZER,
    ];
}

/// The detail of a `crashed_normalizer` dead letter.
pub const CRASHED_DETAIL: &str = "the process died twice while this record was in flight alone (an abort, a stack overflow or an OOM kill); it is not mapped again";
/// The detail of a `mapper_panic` dead letter whose rows panicked in a sink.
pub const PANICKED_DETAIL: &str = "building or storing its rows panicked (see the ERROR log)";

/// Every dead-letter reason a record can get: the mapper's and the loop's.
pub fn dead_letter_reasons() -> impl Iterator<Item = &'static str> {
    MapError::REASONS.into_iter().chain(reason::ALL)
}

/// Maps raw records of the configured sources, with the dedupe LRU in front of the sink.
pub struct RecordMapper {
    sources: Arc<HashMap<String, SourceContext>>,
    cache: DedupeCache,
}

impl RecordMapper {
    /// Builds a mapper for `sources` with an LRU of `cache_keys` dedupe keys.
    pub fn new(sources: HashMap<String, SourceContext>, cache_keys: NonZeroUsize) -> Self {
        RecordMapper {
            sources: Arc::new(sources),
            cache: DedupeCache::new(cache_keys),
        }
    }

    /// Returns the configured source names.
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Returns the number of keys in the dedupe LRU.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// Returns the configured sources, to map records on another thread ([`map_record`]).
    pub fn sources(&self) -> Arc<HashMap<String, SourceContext>> {
        Arc::clone(&self.sources)
    }

    /// Maps one record and appends its sink item (a push or a dead letter) to `items`; a push
    /// whose dedupe key is in the LRU adds nothing.
    pub fn process(&mut self, stored: &StoredRecord, items: &mut Vec<SinkItem>) -> RecordOutcome {
        let item = map_record(&self.sources, stored);
        self.admit(item, items)
    }

    /// Appends an item [`map_record`] made to `items`, unless it is a push whose dedupe key is
    /// in the LRU.
    pub fn admit(&mut self, item: SinkItem, items: &mut Vec<SinkItem>) -> RecordOutcome {
        match &item {
            SinkItem::Push {
                source, dedupe_key, ..
            } if self.cache.contains(source, dedupe_key) => RecordOutcome::DuplicateInCache {
                source: source.clone(),
            },
            SinkItem::Push { .. } => {
                items.push(item);
                RecordOutcome::Mapped
            }
            SinkItem::DeadLetter { .. } => {
                items.push(item);
                RecordOutcome::DeadLetter
            }
        }
    }

    /// Puts the dedupe keys of a batch's pushes into the LRU; call only once every sink
    /// committed the batch (a key in the LRU means "stored").
    pub fn remember(&mut self, items: &[SinkItem]) {
        for item in items {
            if let SinkItem::Push {
                source, dedupe_key, ..
            } = item
            {
                self.cache.remember(source, dedupe_key);
            }
        }
    }
}

/// Maps one raw record of the configured `sources` into a sink item: its push (dedupe key and
/// events, each event's data serialized once) or its dead letter. Pure, and safe to call on any
/// thread; a panic while mapping is caught and makes the record a `mapper_panic` dead letter.
pub fn map_record(sources: &HashMap<String, SourceContext>, stored: &StoredRecord) -> SinkItem {
    let record = &stored.record;
    let Some(ctx) = sources.get(&record.source) else {
        return dead_letter(
            stored,
            reason::UNKNOWN_SOURCE,
            format!("source `{}` is not configured", record.source),
        );
    };
    let push = RawPush {
        method: &record.method,
        content_type: record.content_type.as_deref(),
        query: record.query.as_deref(),
        headers: &record.headers,
        body: &record.body,
        received_at: record.received_at,
    };
    crate::failpoints::crash_if_record_matches(record);
    // Mapping is pure and written not to panic; if it does anyway, that record is a dead
    // letter and the loop goes on.
    match catch_unwind(AssertUnwindSafe(|| map_for_sinks(&push, ctx))) {
        Ok(Ok((dedupe_key, events))) => SinkItem::Push {
            raw_ref: stored.position.to_string(),
            source: record.source.clone(),
            dedupe_key,
            received_at: record.received_at,
            events,
        },
        Ok(Err(error)) => {
            tracing::debug!(reason = error.reason(), raw_ref = %stored.position, source = %record.source, "push dead-lettered");
            dead_letter(stored, error.reason(), error.to_string())
        }
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(raw_ref = %stored.position, source = %record.source, panic = %message, "mapping a push panicked; dead-lettered");
            dead_letter(
                stored,
                reason::MAPPER_PANIC,
                format!("mapping panicked: {message}"),
            )
        }
    }
}

/// Maps a push and serializes each event's `data` once, for every sink; an event too large for
/// a sink to take ([`MAX_EVENT_DATA_BYTES`]) makes the push a `too_large` dead letter.
fn map_for_sinks(
    push: &RawPush<'_>,
    ctx: &SourceContext,
) -> Result<(String, Vec<SinkEvent>), MapError> {
    let mapped = crate::map_push(push, ctx)?;
    let events = SinkEvent::encode_all(mapped.events).map_err(|error| {
        MapError::UnrecognizedShape(format!("an event's data cannot be encoded: {error}"))
    })?;
    if let Some(large) = events
        .iter()
        .find(|event| event.data_json.len() > MAX_EVENT_DATA_BYTES)
    {
        return Err(MapError::TooLarge(format!(
            "event `{}` has {} bytes of data (at most {MAX_EVENT_DATA_BYTES})",
            large.event.event_type.as_str(),
            large.data_json.len()
        )));
    }
    Ok((mapped.dedupe_key, events))
}

/// A batch being built: the sink batch and what happened to each record.
pub struct PendingBatch {
    /// What the sinks commit.
    pub batch: SinkBatch,
    /// One outcome per consumed record, in order.
    pub outcomes: Vec<RecordOutcome>,
    /// When the first record was read.
    pub started: Instant,
}

impl PendingBatch {
    /// Starts an empty batch for `consumer`'s offsets.
    pub fn new(consumer: &str) -> Self {
        PendingBatch {
            batch: SinkBatch {
                consumer: consumer.to_owned(),
                ..SinkBatch::default()
            },
            outcomes: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Returns the number of records consumed into the batch.
    pub fn records(&self) -> usize {
        self.outcomes.len()
    }

    /// Maps `stored` into the batch; returns the index of the item it added, if any.
    pub fn add(&mut self, mapper: &mut RecordMapper, stored: &StoredRecord) -> Option<usize> {
        let before = self.batch.items.len();
        self.outcomes
            .push(mapper.process(stored, &mut self.batch.items));
        (self.batch.items.len() > before).then_some(before)
    }

    /// Adds an item mapped elsewhere ([`map_record`]), through the LRU.
    pub fn admit(&mut self, mapper: &mut RecordMapper, item: SinkItem) {
        self.outcomes
            .push(mapper.admit(item, &mut self.batch.items));
    }

    /// Adds the dead letter of a raw-log row whose metadata does not decode.
    pub fn add_undecodable(&mut self, record: &UndecodableRecord) -> usize {
        self.batch.items.push(dead_letter_of_undecodable(record));
        self.outcomes.push(RecordOutcome::DeadLetter);
        self.batch.items.len() - 1
    }

    /// Adds a dead letter for a record that never reached the mapper (e.g. undecodable);
    /// returns its item index.
    pub fn add_dead_letter(
        &mut self,
        stored: &StoredRecord,
        reason: &str,
        detail: String,
    ) -> usize {
        self.batch.items.push(dead_letter(stored, reason, detail));
        self.outcomes.push(RecordOutcome::DeadLetter);
        self.batch.items.len() - 1
    }

    /// Records a committed batch: its keys enter the LRU and the metrics are updated.
    pub fn committed(
        &self,
        mapper: &mut RecordMapper,
        outcome: &CommitOutcome,
        metrics: &NormalizerMetrics,
    ) {
        mapper.remember(&self.batch.items);
        crate::tap::committed(&self.batch.items);
        BatchProcessed {
            records: self.records(),
            outcomes: &self.outcomes,
            items: &self.batch.items,
            commit: outcome,
            elapsed: self.started.elapsed(),
        }
        .emit(metrics);
    }
}

/// Builds the dead letter of a raw-log row whose metadata does not decode.
pub fn dead_letter_of_undecodable(record: &UndecodableRecord) -> SinkItem {
    let stored = StoredRecord {
        position: record.position,
        key: record.key.clone(),
        record: RawRecord {
            source: record.source.clone(),
            received_at: record.received_at,
            method: String::new(),
            content_type: None,
            query: None,
            remote_addr: None,
            request_id: String::new(),
            headers: Vec::new(),
            body: record.body.clone(),
        },
    };
    dead_letter(
        &stored,
        reason::UNDECODABLE_RECORD,
        format!("the raw record does not decode: {}", record.detail),
    )
}

/// Builds the dead letter of a record (`raw_ref` = its position, detail truncated).
pub fn dead_letter(stored: &StoredRecord, reason: &str, detail: String) -> SinkItem {
    SinkItem::DeadLetter {
        raw_ref: stored.position.to_string(),
        source: stored.record.source.clone(),
        reason: reason.to_owned(),
        detail: detail.chars().take(MAX_DETAIL_CHARS).collect(),
        received_at: stored.record.received_at,
    }
}

/// How often the dead letters held are counted for the metrics.
pub const DEAD_LETTERS_HELD_INTERVAL: Duration = Duration::from_secs(15);

/// The loop's periodic chore on the sink: counting the dead letters held for the metrics.
#[derive(Default)]
pub struct Housekeeping {
    held_refreshed: Option<Instant>,
}

impl Housekeeping {
    /// Counts the dead letters held if [`DEAD_LETTERS_HELD_INTERVAL`] has passed (the first
    /// call counts); a failure is logged and tried again next time.
    pub fn maybe_run(&mut self, sink: &mut ProjectionSinks) {
        if self
            .held_refreshed
            .is_some_and(|at| at.elapsed() < DEAD_LETTERS_HELD_INTERVAL)
        {
            return;
        }
        self.held_refreshed = Some(Instant::now());
        if let Err(error) = sink.refresh_dead_letters_held() {
            tracing::warn!(error = %error, "counting the dead letters held failed");
        }
    }
}
