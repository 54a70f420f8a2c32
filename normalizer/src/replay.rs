//! Replaying the raw log through the current mapping into a new database: the heart of
//! `callhook replay` (the command diffs and applies with `callhook_sinks::sqlite::replay`).
//!
//! [`rebuild`] reads a [`LogSnapshot`] (the raw log, read-only, beside a running process) up to
//! the offsets given at the start, maps every record on a read-ahead thread with the same
//! [`map_record`] the live loop uses, and commits the results into a fresh database opened for
//! a bulk fill (no journal, no syncs, a large page cache): the same events, dedupe keys,
//! `calls`, `agents` and dead letters the live normalizer would have written, in the same
//! order, because the sink is the same. A rebuild that dies leaves only its `.partial` file;
//! it is started again from scratch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use callhook_rawlog::embedded::{LogSnapshot, ReadRecord};
use callhook_sinks::{SinkBatch, SinkItem, SqliteSink};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::pipeline::records::{dead_letter_of_undecodable, map_record};
use crate::pipeline::PipelineError;
use crate::push::SourceContext;

/// Records per read, and per sink transaction, of a rebuild.
pub const REBUILD_BATCH: usize = 5_000;

/// Which records a replay takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayFilter {
    /// Only records of this source.
    pub source: Option<String>,
    /// Only records received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records received before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only the events of this call id (dead letters, which name no call, are left out).
    pub call_id: Option<String>,
}

impl ReplayFilter {
    /// Returns true when the filter takes every record.
    pub fn is_empty(&self) -> bool {
        *self == ReplayFilter::default()
    }
}

/// What a rebuild read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RebuildStats {
    /// Raw records read.
    pub records_read: u64,
    /// Raw records the filter took.
    pub records_replayed: u64,
    /// Events stored.
    pub events: u64,
    /// Pushes skipped as duplicates of earlier ones.
    pub duplicates: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// The earliest and the latest receive time replayed.
    pub received_from: Option<DateTime<Utc>>,
    /// See `received_from`.
    pub received_to: Option<DateTime<Utc>>,
    /// Wall time.
    pub seconds: f64,
}

/// What the reader thread sends: a chunk in log order, each record as `(partition, offset,
/// its item if the filter takes it)`.
type Chunk = Result<Vec<(u32, u64, Option<SinkItem>)>, PipelineError>;

/// Where a rebuild stops reading, per partition (exclusive).
pub type Stops = Vec<u64>;

/// Rebuilds `into` (which must not exist) from `snapshot` through the current mapping, reading
/// each partition from its start to `stops[partition]`. Offsets are stored for
/// `consumer_group` only when the filter takes every record, so that the file can replace the
/// live database and go on from there. `progress(done, total)` is called after every commit.
pub fn rebuild(
    snapshot: LogSnapshot,
    stops: Stops,
    into: &Path,
    sources: HashMap<String, SourceContext>,
    consumer_group: &str,
    filter: &ReplayFilter,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebuildStats, PipelineError> {
    let started = Instant::now();
    let partial = partial_path(into);
    let _ = std::fs::remove_file(&partial);
    let mut sink = SqliteSink::open_bulk(&partial)?;
    let mut total = 0;
    let mut starts = Vec::new();
    for (partition, stop) in stops.iter().enumerate() {
        let (start, _) = snapshot.bounds(partition as u32)?;
        starts.push(start);
        total += stop.saturating_sub(start);
    }
    let (sender, receiver) = mpsc::sync_channel::<Chunk>(2);
    // Committed batches go back to the reader to be freed there: freeing a batch's events is
    // a tenth of the writer's work, and the writer is the thread the rebuild waits on.
    let (recycle, recycled) = mpsc::channel::<SinkBatch>();
    let reader_stops = stops.clone();
    let reader_filter = filter.clone();
    let reader = std::thread::Builder::new()
        .name("replay-map".into())
        .spawn(move || {
            read_and_map(
                &snapshot,
                &starts,
                &reader_stops,
                &sources,
                &reader_filter,
                &sender,
                &recycled,
            )
        })
        .map_err(|error| PipelineError::Thread(error.to_string()))?;
    let mut stats = RebuildStats::default();
    let mut done = 0;
    for chunk in receiver {
        let chunk = chunk?;
        let mut batch = SinkBatch {
            consumer: consumer_group.to_owned(),
            ..SinkBatch::default()
        };
        let mut next_offsets: HashMap<u32, u64> = HashMap::new();
        let records = chunk.len() as u64;
        for (partition, offset, item) in chunk {
            next_offsets.insert(partition, offset + 1);
            stats.records_read += 1;
            if let Some(item) = item {
                stats.records_replayed += 1;
                let received = received_at(&item);
                stats.received_from =
                    Some(stats.received_from.map_or(received, |at| at.min(received)));
                stats.received_to = Some(stats.received_to.map_or(received, |at| at.max(received)));
                batch.items.push(item);
            }
        }
        if filter.is_empty() {
            batch.offsets = next_offsets.into_iter().collect();
            batch.offsets.sort_unstable();
        }
        let outcome = sink.commit_batch(&batch)?;
        stats.events += outcome.events_inserted;
        stats.duplicates += outcome.duplicates_skipped;
        stats.dead_letters += outcome.dead_letters_written;
        done += records;
        progress(done, total);
        // Once the reader is done the batch comes back here and is freed on this thread.
        let _ = recycle.send(batch);
    }
    reader
        .join()
        .map_err(|_| PipelineError::Thread("the replay reader panicked".into()))?;
    sink.finish_bulk()?;
    std::fs::rename(&partial, into).map_err(|source| PipelineError::Journal {
        dir: into.display().to_string(),
        source,
    })?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Where a rebuild into `into` writes until it is complete.
pub fn partial_path(into: &Path) -> PathBuf {
    let mut name = into.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Reads every partition from `starts` to `stops` in chunks and maps the records the filter
/// takes, on the reader thread (mapping is pure: it runs beside the commits).
fn read_and_map(
    snapshot: &LogSnapshot,
    starts: &[u64],
    stops: &[u64],
    sources: &HashMap<String, SourceContext>,
    filter: &ReplayFilter,
    out: &mpsc::SyncSender<Chunk>,
    recycled: &mpsc::Receiver<SinkBatch>,
) {
    for (partition, (start, stop)) in starts.iter().zip(stops).enumerate() {
        let mut next = *start;
        while next < *stop {
            while let Ok(batch) = recycled.try_recv() {
                drop(batch);
            }
            let wanted = usize::try_from(stop - next)
                .unwrap_or(usize::MAX)
                .min(REBUILD_BATCH);
            let records = match snapshot.read_each(partition as u32, next, wanted) {
                Ok(records) => records,
                Err(error) => {
                    let _ = out.send(Err(error.into()));
                    return;
                }
            };
            let Some(last) = records.last().map(|record| record.position().offset) else {
                break;
            };
            next = last + 1;
            let chunk = records
                .iter()
                .filter(|record| record.position().offset < *stop)
                .map(|record| {
                    let item = replayed_item(record, sources, filter);
                    (partition as u32, record.position().offset, item)
                })
                .collect();
            if out.send(Ok(chunk)).is_err() {
                return;
            }
        }
    }
}

/// Maps a record the filter takes; `None` for one it leaves out.
pub(crate) fn replayed_item(
    record: &ReadRecord,
    sources: &HashMap<String, SourceContext>,
    filter: &ReplayFilter,
) -> Option<SinkItem> {
    let (source, received_at) = match record {
        ReadRecord::Decoded(stored) => (&stored.record.source, stored.record.received_at),
        ReadRecord::Undecodable(kept) => (&kept.source, kept.received_at),
    };
    if filter
        .source
        .as_ref()
        .is_some_and(|wanted| wanted != source)
        || filter.since.is_some_and(|since| received_at < since)
        || filter.until.is_some_and(|until| received_at >= until)
    {
        return None;
    }
    let item = match record {
        ReadRecord::Decoded(stored) => map_record(sources, stored),
        ReadRecord::Undecodable(kept) => dead_letter_of_undecodable(kept),
    };
    match (&filter.call_id, item) {
        (None, item) => Some(item),
        (
            Some(call_id),
            SinkItem::Push {
                raw_ref,
                source,
                dedupe_key,
                received_at,
                events,
            },
        ) => {
            // Only the call's own events of the push.
            let events: Vec<_> = events
                .into_iter()
                .filter(|event| event.event.data.call_id.as_deref() == Some(call_id.as_str()))
                .collect();
            (!events.is_empty()).then_some(SinkItem::Push {
                raw_ref,
                source,
                dedupe_key,
                received_at,
                events,
            })
        }
        (Some(_), SinkItem::DeadLetter { .. }) => None,
    }
}

fn received_at(item: &SinkItem) -> DateTime<Utc> {
    match item {
        SinkItem::Push { received_at, .. } | SinkItem::DeadLetter { received_at, .. } => {
            *received_at
        }
    }
}
