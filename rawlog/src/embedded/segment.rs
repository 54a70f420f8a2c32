//! Compacted segments: runs of consumed records stored together, zstd-compressed, in
//! `log_segments`.
//!
//! # Guarantee
//!
//! A segment holds its records exactly as `log_records` held them: every column, byte for byte
//! (the headers keep their stored JSON text, so a record whose headers did not decode still does
//! not, and the body is the raw bytes). Offsets are kept per record, so a segment never
//! renumbers anything and a gap stays a gap. The zstd frame carries its content checksum, so a
//! damaged blob is found when it is read ([`decode`] fails), never read as other records.
//!
//! The payload (before compression) is a version byte, the record count, then per record: the
//! offset and `received_at_ms` (8 bytes little-endian each) and the text and byte columns as a
//! 4-byte little-endian length and the bytes, optional ones behind a presence byte. A small
//! format of our own rather than JSON: bodies are arbitrary bytes, and nothing is re-encoded.

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension};

use super::reader::{ReadRecord, StoredRow};
use super::schema::{from_sql_int, sql_int};
use super::state::lock;

/// The payload format version this build writes and reads.
const FORMAT_VERSION: u8 = 1;

/// A decoded payload larger than this is treated as damage (a segment is a chunk of records
/// each bounded by the receiver's body limit; this only guards against a damaged length).
const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// A segment's row without its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub(crate) partition: u32,
    pub(crate) first_offset: u64,
    pub(crate) last_offset: u64,
    pub(crate) record_count: u64,
    pub(crate) oldest_received_at_ms: i64,
    pub(crate) newest_received_at_ms: i64,
}

impl SegmentMeta {
    /// The columns [`SegmentMeta::from_row`] reads, in order.
    pub(crate) const COLUMNS: &'static str = "partition_id, first_offset, last_offset, \
         record_count, oldest_received_at_ms, newest_received_at_ms";

    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            partition: row.get(0)?,
            first_offset: from_sql_int(row.get(1)?),
            last_offset: from_sql_int(row.get(2)?),
            record_count: from_sql_int(row.get(3)?),
            oldest_received_at_ms: row.get(4)?,
            newest_received_at_ms: row.get(5)?,
        })
    }
}

/// Encodes rows (in offset order) into a compressed blob; returns it with the payload size.
pub(crate) fn encode(rows: &[StoredRow], level: i32) -> std::io::Result<(Vec<u8>, usize)> {
    let mut payload = Vec::with_capacity(rows.iter().map(StoredRow::approximate_bytes).sum());
    payload.push(FORMAT_VERSION);
    payload.extend_from_slice(&u32::try_from(rows.len()).unwrap_or(u32::MAX).to_le_bytes());
    for row in rows {
        payload.extend_from_slice(&row.offset.to_le_bytes());
        payload.extend_from_slice(&row.received_at_ms.to_le_bytes());
        put_bytes(&mut payload, row.key.as_bytes());
        put_bytes(&mut payload, row.source.as_bytes());
        put_bytes(&mut payload, row.method.as_bytes());
        put_optional(&mut payload, row.content_type.as_deref());
        put_optional(&mut payload, row.query.as_deref());
        put_optional(&mut payload, row.remote_addr.as_deref());
        put_bytes(&mut payload, row.request_id.as_bytes());
        put_bytes(&mut payload, row.headers_json.as_bytes());
        put_bytes(&mut payload, &row.body);
    }
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
    let blob = compressor.compress(&payload)?;
    Ok((blob, payload.len()))
}

/// Decodes a blob written by [`encode`] and checks it against its row: the record count, and
/// offsets increasing within `first_offset..=last_offset`. Returns why not when it is damaged.
pub(crate) fn decode(meta: &SegmentMeta, blob: &[u8]) -> Result<Vec<StoredRow>, String> {
    let payload = decompress(blob)?;
    let mut cursor = Cursor {
        bytes: &payload,
        at: 0,
    };
    let version = cursor.take(1)?[0];
    if version != FORMAT_VERSION {
        return Err(format!("unknown segment format version {version}"));
    }
    let count = u64::from(cursor.u32()?);
    if count != meta.record_count {
        return Err(format!(
            "holds {count} record(s), its row says {}",
            meta.record_count
        ));
    }
    let mut rows = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut previous: Option<u64> = None;
    for _ in 0..count {
        let row = cursor.row()?;
        let in_order = previous.is_none_or(|previous| row.offset > previous);
        if !in_order || row.offset < meta.first_offset || row.offset > meta.last_offset {
            return Err(format!(
                "record offset {} is out of order or outside {}..={}",
                row.offset, meta.first_offset, meta.last_offset
            ));
        }
        previous = Some(row.offset);
        rows.push(row);
    }
    if cursor.at != payload.len() {
        return Err(format!(
            "{} byte(s) after the last record",
            payload.len() - cursor.at
        ));
    }
    if rows.first().map(|row| row.offset) != Some(meta.first_offset)
        || rows.last().map(|row| row.offset) != Some(meta.last_offset)
    {
        return Err("its first or last record is not where its row says".to_owned());
    }
    Ok(rows)
}

fn decompress(blob: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(blob).map_err(|error| error.to_string())?;
    let mut payload = Vec::new();
    decoder
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(|error| format!("zstd: {error}"))?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!("decodes to more than {MAX_PAYLOAD_BYTES} bytes"));
    }
    Ok(payload)
}

fn put_bytes(payload: &mut Vec<u8>, bytes: &[u8]) {
    payload.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    payload.extend_from_slice(bytes);
}

fn put_optional(payload: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            payload.push(1);
            put_bytes(payload, text.as_bytes());
        }
        None => payload.push(0),
    }
}

/// Reads a payload front to back; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn text(&mut self) -> Result<String, String> {
        let at = self.at;
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| format!("bad text at byte {at}"))
    }

    fn optional(&mut self) -> Result<Option<String>, String> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => self.text().map(Some),
            other => Err(format!("bad presence byte {other} at byte {}", self.at - 1)),
        }
    }

    fn row(&mut self) -> Result<StoredRow, String> {
        let offset = self.u64()?;
        let received_at_ms = i64::from_le_bytes(self.u64()?.to_le_bytes());
        Ok(StoredRow {
            offset,
            received_at_ms,
            key: self.text()?,
            source: self.text()?,
            method: self.text()?,
            content_type: self.optional()?,
            query: self.optional()?,
            remote_addr: self.optional()?,
            request_id: self.text()?,
            headers_json: self.text()?,
            body: self.bytes()?.to_vec(),
        })
    }
}

/// Returns whether the file has the segments table (a file of schema version 1, read without
/// being migrated, has none).
pub(crate) fn table_exists(conn: &Connection) -> rusqlite::Result<bool> {
    let found: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'log_segments'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// Returns the segment of `partition` holding `from_offset`, or else the first one after it.
/// Two index lookups on the primary key, however many segments the partition has.
pub(crate) fn segment_at(
    conn: &Connection,
    partition: u32,
    from_offset: u64,
) -> rusqlite::Result<Option<SegmentMeta>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {} FROM log_segments WHERE partition_id = ?1 AND first_offset >= \
         (SELECT COALESCE(MAX(first_offset), 0) FROM log_segments \
          WHERE partition_id = ?1 AND first_offset <= ?2) \
         ORDER BY first_offset LIMIT 2",
        SegmentMeta::COLUMNS
    ))?;
    let candidates = statement
        .query_map((partition, sql_int(from_offset)), SegmentMeta::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(candidates
        .into_iter()
        .find(|segment| segment.last_offset >= from_offset))
}

/// Returns the segments of `partition` from the one holding `from_offset` on, in offset
/// order, one lookup at a time (callers stop when they have what they need).
pub(crate) fn segments_from(
    conn: &Connection,
    partition: u32,
    from_offset: u64,
) -> impl Iterator<Item = rusqlite::Result<SegmentMeta>> + '_ {
    let mut next = Some(from_offset);
    std::iter::from_fn(move || {
        let from = next?;
        match segment_at(conn, partition, from) {
            Ok(Some(meta)) => {
                next = meta.last_offset.checked_add(1);
                Some(Ok(meta))
            }
            Ok(None) => {
                next = None;
                None
            }
            Err(error) => {
                next = None;
                Some(Err(error))
            }
        }
    })
}

/// A segment as the check sees it: its row, and its offsets or the reason it is damaged.
pub(crate) type ScannedSegment = (SegmentMeta, Result<Vec<u64>, String>);

/// Decodes every segment of `partition` (for the check).
pub(crate) fn scan_partition(
    conn: &Connection,
    partition: u32,
) -> rusqlite::Result<Vec<ScannedSegment>> {
    let mut scanned = Vec::new();
    for meta in segments_from(conn, partition, 0) {
        let meta = meta?;
        let offsets = decode(&meta, &blob(conn, &meta)?)
            .map(|rows| rows.iter().map(|row| row.offset).collect());
        scanned.push((meta, offsets));
    }
    Ok(scanned)
}

/// Returns a segment's blob.
pub(crate) fn blob(conn: &Connection, meta: &SegmentMeta) -> rusqlite::Result<Vec<u8>> {
    conn.query_row(
        "SELECT data FROM log_segments WHERE partition_id = ?1 AND first_offset = ?2",
        (meta.partition, sql_int(meta.first_offset)),
        |row| row.get(0),
    )
}

/// The records of the segment a reader decoded last, kept when a read stopped inside it, so a
/// sequential reader that asks for fewer records than a segment holds decompresses each
/// segment once. A read that takes a segment to its end moves its records out instead (no
/// copy, nothing kept).
#[derive(Default)]
pub(crate) struct SegmentCache {
    last: Mutex<Option<(SegmentMeta, Arc<[ReadRecord]>)>>,
}

impl SegmentCache {
    /// Returns up to `wanted` records of the segment from offset `from` on, decoding it unless
    /// it is the one kept; `Err` with the reason when it is damaged.
    pub(crate) fn take(
        &self,
        conn: &Connection,
        meta: &SegmentMeta,
        from: u64,
        wanted: usize,
    ) -> rusqlite::Result<Result<Vec<ReadRecord>, String>> {
        let wanted_from = |records: &[ReadRecord]| {
            let start = records.partition_point(|record| record.position().offset < from);
            (start, (start + wanted).min(records.len()))
        };
        if let Some((cached, records)) = lock(&self.last).as_ref() {
            if cached == meta {
                let (start, end) = wanted_from(records);
                return Ok(Ok(records[start..end].to_vec()));
            }
        }
        let blob = blob(conn, meta)?;
        let rows = match decode(meta, &blob) {
            Ok(rows) => rows,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut records: Vec<ReadRecord> = rows
            .into_iter()
            .map(|row| row.decode_or_keep(meta.partition))
            .collect();
        let (start, end) = wanted_from(&records);
        if end == records.len() {
            records.truncate(end);
            records.drain(..start);
            return Ok(Ok(records));
        }
        let kept: Arc<[ReadRecord]> = records.into();
        let taken = kept[start..end].to_vec();
        *lock(&self.last) = Some((*meta, kept));
        Ok(Ok(taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: u64, body: &[u8]) -> StoredRow {
        StoredRow {
            offset,
            key: "call-1".to_owned(),
            source: "7moor".to_owned(),
            received_at_ms: -5 + offset as i64,
            method: "POST".to_owned(),
            content_type: None,
            query: Some(String::new()),
            remote_addr: Some("203.0.113.9:1".to_owned()),
            request_id: format!("req-{offset}"),
            headers_json: "not json [".to_owned(),
            body: body.to_vec(),
        }
    }

    fn meta(first_offset: u64, last_offset: u64, record_count: u64) -> SegmentMeta {
        SegmentMeta {
            partition: 0,
            first_offset,
            last_offset,
            record_count,
            oldest_received_at_ms: 0,
            newest_received_at_ms: 0,
        }
    }

    #[test]
    fn test_round_trip_keeps_every_column_and_gaps() {
        let rows = vec![
            row(3, b"\xff\x00{}"),
            row(4, b""),
            row(9, "呼叫".as_bytes()),
        ];
        let (blob, payload_bytes) = encode(&rows, 3).unwrap();
        assert!(payload_bytes > blob.len() / 2);
        let decoded = decode(&meta(3, 9, 3), &blob).unwrap();
        assert_eq!(decoded, rows);
    }

    #[test]
    fn test_damage_and_mismatches_are_reported_not_trusted() {
        let rows = vec![row(0, b"a"), row(1, b"b")];
        let (mut blob, _) = encode(&rows, 3).unwrap();
        assert!(decode(&meta(0, 1, 3), &blob)
            .unwrap_err()
            .contains("its row says 3"));
        assert!(decode(&meta(0, 0, 2), &blob).is_err());
        let middle = blob.len() / 2;
        blob[middle] ^= 0x55;
        assert!(decode(&meta(0, 1, 2), &blob).is_err());
        assert!(decode(&meta(0, 1, 2), b"not zstd").is_err());
    }
}
