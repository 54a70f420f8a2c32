//! The read side: a consumer's own connection to the log file.
//!
//! WAL mode lets this connection read while the writer thread writes; a read sees only
//! committed records, so a consumer never sees a record that was not acknowledged as durable
//! (it may see one whose acknowledgement is still on its way). Every method blocks on SQLite:
//! consumers call them from a dedicated thread or `spawn_blocking`, never on the async runtime.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row};
use tokio::sync::watch;

use super::error::{EmbeddedLogError, Result};
use super::schema::{self, from_sql_int, sql_int};
use super::segment::{self, SegmentCache, SegmentMeta};
use super::state::{lock, SharedState};
use crate::{Position, RawRecord, StoredRecord};

/// A consumer's handle on the embedded log: reads, high watermarks, committed offsets per
/// consumer group, and wake-ups after appends. `Send`, not `Sync`: one per consumer thread.
pub struct LogReader {
    conn: Connection,
    shared: Arc<SharedState>,
    segments: SegmentCache,
}

/// One row as stored, before decoding (in `log_records`, or inside a compacted segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRow {
    pub(crate) offset: u64,
    pub(crate) key: String,
    pub(crate) source: String,
    pub(crate) received_at_ms: i64,
    pub(crate) method: String,
    pub(crate) content_type: Option<String>,
    pub(crate) query: Option<String>,
    pub(crate) remote_addr: Option<String>,
    pub(crate) request_id: String,
    pub(crate) headers_json: String,
    pub(crate) body: Vec<u8>,
}

impl StoredRow {
    /// The `log_records` columns [`StoredRow::from_row`] reads, in order.
    pub(crate) const COLUMNS: &'static str = "log_offset, record_key, source, received_at_ms, \
         method, content_type, query, remote_addr, request_id, headers_json, body";

    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            offset: from_sql_int(row.get(0)?),
            key: row.get(1)?,
            source: row.get(2)?,
            received_at_ms: row.get(3)?,
            method: row.get(4)?,
            content_type: row.get(5)?,
            query: row.get(6)?,
            remote_addr: row.get(7)?,
            request_id: row.get(8)?,
            headers_json: row.get(9)?,
            body: row.get(10)?,
        })
    }

    /// Returns roughly how many bytes the row takes (for buffer sizing).
    pub(crate) fn approximate_bytes(&self) -> usize {
        64 + self.key.len()
            + self.source.len()
            + self.method.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + self.query.as_ref().map_or(0, String::len)
            + self.remote_addr.as_ref().map_or(0, String::len)
            + self.request_id.len()
            + self.headers_json.len()
            + self.body.len()
    }

    /// Decodes the row, or keeps what can be kept of it when its metadata is broken.
    pub(crate) fn decode_or_keep(self, partition: u32) -> ReadRecord {
        let kept = UndecodableRecord {
            position: Position {
                partition,
                offset: self.offset,
            },
            key: self.key.clone(),
            source: self.source.clone(),
            received_at: DateTime::from_timestamp_millis(self.received_at_ms)
                .unwrap_or(DateTime::UNIX_EPOCH),
            body: Bytes::new(),
            detail: String::new(),
        };
        let body = Bytes::from(self.body.clone());
        match self.decode(partition) {
            Ok(stored) => ReadRecord::Decoded(stored),
            Err(error) => ReadRecord::Undecodable(UndecodableRecord {
                body,
                detail: match error {
                    EmbeddedLogError::BadRecord { detail, .. } => detail,
                    other => other.to_string(),
                },
                ..kept
            }),
        }
    }

    fn decode(self, partition: u32) -> Result<StoredRecord> {
        let position = Position {
            partition,
            offset: self.offset,
        };
        let bad = |detail: String| EmbeddedLogError::BadRecord { position, detail };
        let headers: Vec<(String, String)> = serde_json::from_str(&self.headers_json)
            .map_err(|error| bad(format!("headers: {error}")))?;
        let received_at: DateTime<Utc> = DateTime::from_timestamp_millis(self.received_at_ms)
            .ok_or_else(|| {
                bad(format!(
                    "received_at_ms {} is out of range",
                    self.received_at_ms
                ))
            })?;
        Ok(StoredRecord {
            position,
            key: self.key,
            record: RawRecord {
                source: self.source,
                received_at,
                method: self.method,
                content_type: self.content_type,
                query: self.query,
                remote_addr: self.remote_addr,
                request_id: self.request_id,
                headers,
                body: Bytes::from(self.body),
            },
        })
    }
}

/// One record as read by [`LogReader::read_each`].
#[derive(Debug, Clone)]
pub enum ReadRecord {
    /// A record that decodes.
    Decoded(StoredRecord),
    /// A damaged one.
    Undecodable(UndecodableRecord),
}

impl ReadRecord {
    /// Returns where the record sits.
    pub fn position(&self) -> Position {
        match self {
            ReadRecord::Decoded(stored) => stored.position,
            ReadRecord::Undecodable(kept) => kept.position,
        }
    }
}

/// A stored record whose metadata does not decode (a damaged row): what is left of it.
#[derive(Debug, Clone)]
pub struct UndecodableRecord {
    /// Where it sits.
    pub position: Position,
    /// Its partition key.
    pub key: String,
    /// The source it was received on.
    pub source: String,
    /// When it was received (the epoch when that too is damaged).
    pub received_at: DateTime<Utc>,
    /// The body bytes as stored.
    pub body: Bytes,
    /// What does not decode.
    pub detail: String,
}

impl From<UndecodableRecord> for EmbeddedLogError {
    fn from(record: UndecodableRecord) -> Self {
        EmbeddedLogError::BadRecord {
            position: record.position,
            detail: record.detail,
        }
    }
}

/// Reads up to `max_records` records of `partition` from `from_offset` on, in offset order, on
/// any connection to the log file: first from the compacted segments (when `segments` is
/// given: the file has them), then from `log_records`, in one read transaction so that a
/// compaction committing in between can neither hide records nor show them twice. A damaged
/// segment reads as one [`UndecodableRecord`] per offset it covers.
pub(crate) fn read_records(
    conn: &Connection,
    segments: Option<&SegmentCache>,
    partition: u32,
    from_offset: u64,
    max_records: usize,
) -> Result<Vec<ReadRecord>> {
    let snapshot = conn.unchecked_transaction()?;
    let mut records = Vec::new();
    let mut next = from_offset;
    if let Some(cache) = segments {
        for meta in segment::segments_from(&snapshot, partition, from_offset) {
            if records.len() >= max_records {
                return Ok(records);
            }
            let meta = meta?;
            let wanted = max_records - records.len();
            match cache.take(&snapshot, &meta, next, wanted)? {
                Ok(taken) => records.extend(taken),
                Err(reason) => records.extend(
                    (next.max(meta.first_offset)..=meta.last_offset)
                        .take(wanted)
                        .map(|offset| damaged_segment_record(&meta, offset, &reason)),
                ),
            }
            next = meta.last_offset + 1;
        }
    }
    if records.len() >= max_records {
        return Ok(records);
    }
    let mut statement = snapshot.prepare_cached(&format!(
        "SELECT {} FROM log_records WHERE partition_id = ?1 AND log_offset >= ?2 \
         ORDER BY log_offset LIMIT ?3",
        StoredRow::COLUMNS
    ))?;
    let rows = statement.query_map(
        (
            i64::from(partition),
            sql_int(next),
            sql_int((max_records - records.len()) as u64),
        ),
        StoredRow::from_row,
    )?;
    for row in rows {
        records.push(row?.decode_or_keep(partition));
    }
    Ok(records)
}

/// What a reader gets for an offset of a segment that does not decode: an undecodable record,
/// which a consumer dead-letters like any other.
fn damaged_segment_record(meta: &SegmentMeta, offset: u64, reason: &str) -> ReadRecord {
    ReadRecord::Undecodable(UndecodableRecord {
        position: Position {
            partition: meta.partition,
            offset,
        },
        key: String::new(),
        source: String::new(),
        received_at: DateTime::from_timestamp_millis(meta.oldest_received_at_ms)
            .unwrap_or(DateTime::UNIX_EPOCH),
        body: Bytes::new(),
        detail: format!(
            "compacted segment {}:{}..{} does not decode: {reason}",
            meta.partition, meta.first_offset, meta.last_offset
        ),
    })
}

impl LogReader {
    pub(crate) fn open(
        path: &Path,
        busy_timeout: Duration,
        shared: Arc<SharedState>,
    ) -> Result<Self> {
        let conn = schema::open_connection(path, busy_timeout)?;
        Ok(Self {
            conn,
            shared,
            segments: SegmentCache::default(),
        })
    }

    /// Returns the partition count.
    pub fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    fn check_partition(&self, partition: u32) -> Result<()> {
        if partition >= self.shared.partitions {
            return Err(EmbeddedLogError::UnknownPartition {
                partition,
                partitions: self.shared.partitions,
            });
        }
        Ok(())
    }

    /// Returns up to `max_records` committed records of `partition` with offsets from
    /// `from_offset` on, in offset order. If retention deleted records below `from_offset`'s
    /// neighbourhood, the first record returned has a higher offset than asked for (compare with
    /// [`LogReader::log_start_offset`]). Blocks on SQLite.
    pub fn read(
        &self,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_each(partition, from_offset, max_records)?
            .into_iter()
            .map(|record| match record {
                ReadRecord::Decoded(stored) => Ok(stored),
                ReadRecord::Undecodable(kept) => Err(EmbeddedLogError::from(kept)),
            })
            .collect()
    }

    /// Like [`LogReader::read`], but a record whose stored metadata does not decode is returned
    /// as an [`UndecodableRecord`] in its place instead of failing the whole read, so that a
    /// consumer can dead-letter it and go on. Blocks on SQLite.
    pub fn read_each(
        &self,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<ReadRecord>> {
        self.check_partition(partition)?;
        // The writer migrated the file before any reader opened: it has the segments table.
        read_records(
            &self.conn,
            Some(&self.segments),
            partition,
            from_offset,
            max_records,
        )
    }

    /// Returns the next offset to be written in `partition` (Kafka's high watermark).
    pub fn high_watermark(&self, partition: u32) -> Result<u64> {
        self.partition_offsets(partition)
            .map(|(next_offset, _)| next_offset)
    }

    /// Returns the lowest offset still stored in `partition` (equal to the high watermark when
    /// the partition is empty).
    pub fn log_start_offset(&self, partition: u32) -> Result<u64> {
        self.partition_offsets(partition)
            .map(|(_, log_start_offset)| log_start_offset)
    }

    fn partition_offsets(&self, partition: u32) -> Result<(u64, u64)> {
        self.check_partition(partition)?;
        let (next_offset, log_start_offset): (i64, i64) = self.conn.query_row(
            "SELECT next_offset, log_start_offset FROM log_partitions WHERE partition_id = ?1",
            [i64::from(partition)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((from_sql_int(next_offset), from_sql_int(log_start_offset)))
    }

    /// Durably stores that `group` consumed `partition` up to (excluding) `next_offset`.
    /// Offsets may move backwards (a replay); they may not pass the high watermark.
    pub fn commit(&self, group: &str, partition: u32, next_offset: u64) -> Result<()> {
        if group.is_empty() {
            return Err(EmbeddedLogError::EmptyGroup);
        }
        let high_watermark = self.high_watermark(partition)?;
        if next_offset > high_watermark {
            return Err(EmbeddedLogError::OffsetBeyondHighWatermark {
                partition,
                offset: next_offset,
                high_watermark,
            });
        }
        // Held across the write so the cache and the table change in the same order.
        let mut committed = lock(&self.shared.committed);
        self.conn.execute(
            "INSERT INTO consumer_offsets (group_id, partition_id, next_offset, committed_at_ms) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (group_id, partition_id) DO UPDATE \
             SET next_offset = excluded.next_offset, committed_at_ms = excluded.committed_at_ms",
            (
                group,
                i64::from(partition),
                sql_int(next_offset),
                Utc::now().timestamp_millis(),
            ),
        )?;
        committed
            .entry(group.to_owned())
            .or_default()
            .insert(partition, next_offset);
        self.shared.refresh_min_committed(&committed);
        Ok(())
    }

    /// Returns the offset `group` committed for `partition`, if it ever did.
    pub fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>> {
        self.check_partition(partition)?;
        let offset: Option<i64> = self
            .conn
            .query_row(
                "SELECT next_offset FROM consumer_offsets WHERE group_id = ?1 AND partition_id = ?2",
                (group, i64::from(partition)),
                |row| row.get(0),
            )
            .optional()?;
        Ok(offset.map(from_sql_int))
    }

    /// Returns the append generation, bumped after every group commit. Read it before
    /// [`LogReader::read`] and pass it to [`LogReader::wait_for_append`] so no wake-up is lost.
    pub fn append_generation(&self) -> u64 {
        self.shared.notifier().generation()
    }

    /// Blocks until a commit after generation `seen_generation` or until `timeout`; returns the
    /// generation then (equal to `seen_generation` on timeout).
    pub fn wait_for_append(&self, seen_generation: u64, timeout: Duration) -> u64 {
        self.shared
            .notifier()
            .wait_for_change(seen_generation, timeout)
    }

    /// Returns a receiver of the append generation, for async waiters.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.notifier().subscribe()
    }
}
