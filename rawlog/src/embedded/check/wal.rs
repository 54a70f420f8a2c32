//! Reading SQLite's write-ahead log without SQLite: which frames SQLite will replay, and what
//! it will silently discard.
//!
//! Format (<https://www.sqlite.org/fileformat2.html#walformat>): a 32-byte header (magic,
//! version, page size, checkpoint sequence, salt-1, salt-2, checksum), then frames of a 24-byte
//! header (page number, database size in pages for a commit frame else 0, salt-1, salt-2,
//! cumulative checksum) and one page. SQLite replays frames while the salts match the header's
//! and the cumulative checksum holds, and keeps what the last commit frame among them covers.
//! Everything after the first frame that fails is ignored, **including later commit frames**:
//! that is what this module finds, before SQLite opens the file (the first write after opening
//! overwrites the ignored frames).
//!
//! To tell a torn tail (the transaction being written when the process died: never
//! acknowledged) from damage to committed data, the frames after the first bad one are checked
//! against their own stored checksums, each seeded with the previous frame's stored checksum.
//! A frame that passes that way and is a commit frame means committed transactions lie behind
//! the damage. The page images of the frames SQLite will drop are parsed for `log_records` rows,
//! so the caller can say which records they held.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;

/// The WAL header size.
pub const HEADER_BYTES: usize = 32;
/// A frame header's size.
pub const FRAME_HEADER_BYTES: usize = 24;
const MAGIC_LITTLE_ENDIAN: u32 = 0x377f_0682;
const MAGIC_BIG_ENDIAN: u32 = 0x377f_0683;
/// Columns of a `log_records` row (see `schema.rs`): how its cells are recognised in a page.
const LOG_RECORD_COLUMNS: usize = 12;
/// Columns of a `log_partitions` row (`partition_id` is the rowid, stored as NULL).
const LOG_PARTITION_COLUMNS: usize = 3;

/// What the scan of a WAL file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalScan {
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Database page size from the header (0 when the header is unusable).
    pub page_size: u32,
    /// Whole frames in the file (a partial last frame not counted).
    pub frames: u64,
    /// Frames SQLite replays: valid and covered by a commit frame.
    pub replayed_frames: u64,
    /// Commit frames among the replayed ones.
    pub replayed_commits: u64,
    /// How the file ends after the replayed frames.
    pub tail: WalTail,
    /// `(partition, offset)` of the `log_records` rows found in the pages of dropped frames
    /// (the caller subtracts the rows the database still holds).
    pub dropped_records: BTreeSet<(u32, u64)>,
    /// Per partition, the highest `next_offset` of the `log_partitions` rows found in the pages
    /// of dropped frames: the log's end had those transactions been kept.
    pub dropped_next_offsets: BTreeMap<u32, u64>,
}

/// The end of a WAL after the frames SQLite replays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WalTail {
    /// No WAL, an empty one, or one that ends cleanly (at the end of the file, or where frames
    /// of an older generation, with other salts, begin).
    #[default]
    Clean,
    /// Frames of a transaction that never committed (the process died while writing it, or a
    /// torn last frame with no commit behind it): nothing acknowledged is in them.
    Unfinished {
        /// Frames SQLite drops (whole valid ones and the damaged one).
        frames: u64,
        /// Bytes of a partial last frame, if the file ends inside one.
        partial_bytes: u64,
    },
    /// Damage at or before a commit frame: committed (so possibly acknowledged) transactions
    /// that SQLite will silently drop.
    CommittedLost {
        /// The first frame (1-based) SQLite will not replay.
        first_bad_frame: u64,
        /// What is wrong with it.
        reason: String,
        /// Commit frames at or after it that SQLite drops.
        commits_dropped: u64,
        /// Frames at or after it.
        frames_dropped: u64,
    },
    /// The header itself is unreadable: SQLite ignores the whole file.
    BadHeader {
        /// What is wrong.
        reason: String,
        /// Bytes of the file SQLite ignores.
        ignored_bytes: u64,
    },
}

impl std::fmt::Display for WalTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalTail::Clean => write!(f, "clean"),
            WalTail::Unfinished {
                frames,
                partial_bytes,
            } => write!(
                f,
                "{frames} frame(s) of a transaction that never committed ({partial_bytes} byte(s) of a torn last frame)"
            ),
            WalTail::CommittedLost {
                reason,
                commits_dropped,
                frames_dropped,
                ..
            } => write!(
                f,
                "{reason}; {frames_dropped} frame(s) from there, {commits_dropped} committed transaction(s) among them"
            ),
            WalTail::BadHeader {
                reason,
                ignored_bytes,
            } => write!(f, "{reason} ({ignored_bytes} bytes)"),
        }
    }
}

impl WalTail {
    /// Returns true when committed data would be dropped by SQLite.
    pub fn loses_committed_data(&self) -> bool {
        match self {
            WalTail::CommittedLost { .. } => true,
            // A crash while a fresh WAL's header was written leaves no frame behind it.
            WalTail::BadHeader { ignored_bytes, .. } => *ignored_bytes > HEADER_BYTES as u64,
            WalTail::Clean | WalTail::Unfinished { .. } => false,
        }
    }
}

/// One frame's header fields.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    page_number: u32,
    commit_size: u32,
    salts: [u32; 2],
    checksum: [u32; 2],
}

/// Scans the WAL at `path` (a missing file is a clean, empty WAL).
pub fn scan(path: &Path) -> io::Result<WalScan> {
    let bytes = match std::fs::File::open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            bytes
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    Ok(scan_bytes(&bytes))
}

/// Scans WAL bytes (see [`scan`]).
pub fn scan_bytes(bytes: &[u8]) -> WalScan {
    let mut scan = WalScan {
        file_bytes: bytes.len() as u64,
        ..WalScan::default()
    };
    if bytes.is_empty() {
        return scan;
    }
    let header = match parse_header(bytes) {
        Ok(header) => header,
        Err(reason) => {
            let ignored_bytes = scan.file_bytes;
            scan.tail = WalTail::BadHeader {
                reason,
                ignored_bytes,
            };
            return scan;
        }
    };
    scan.page_size = header.page_size;
    let frame_bytes = FRAME_HEADER_BYTES + header.page_size as usize;
    let body = &bytes[HEADER_BYTES..];
    scan.frames = (body.len() / frame_bytes) as u64;
    let partial_bytes = (body.len() % frame_bytes) as u64;
    let frame = |index: u64| {
        let start = index as usize * frame_bytes;
        &body[start..start + frame_bytes]
    };
    // Walk the valid chain as SQLite does.
    let mut checksum = header.checksum;
    let mut valid = 0u64;
    let mut last_commit = 0u64;
    let mut break_frame = None;
    while valid < scan.frames {
        let bytes = frame(valid);
        let parsed = parse_frame_header(bytes);
        let computed = frame_checksum(checksum, bytes, header.big_endian);
        if parsed.salts != header.salts || computed != parsed.checksum {
            break_frame = Some(parsed);
            break;
        }
        checksum = parsed.checksum;
        valid += 1;
        if parsed.commit_size != 0 {
            last_commit = valid;
        }
    }
    scan.replayed_frames = last_commit;
    scan.replayed_commits = (0..last_commit)
        .filter(|index| parse_frame_header(frame(*index)).commit_size != 0)
        .count() as u64;
    let dropped_from = last_commit;
    // Frames after the break that still hold together (each checked against its own stored
    // checksum, seeded by the previous frame's): committed data behind damage. An older
    // generation's frames (other salts) never hold together with the current salts.
    let mut commits_after_break = 0u64;
    let mut dropped_end = valid;
    if let Some(bad) = break_frame {
        let mut seed = bad.checksum;
        let mut index = valid + 1;
        let mut commits = 0u64;
        while index < scan.frames {
            let parsed = parse_frame_header(frame(index));
            if parsed.salts != header.salts
                || frame_checksum(seed, frame(index), header.big_endian) != parsed.checksum
            {
                break;
            }
            commits += u64::from(parsed.commit_size != 0);
            seed = parsed.checksum;
            index += 1;
        }
        let orphans = index > valid + 1;
        let damaged = bad.salts == header.salts || orphans;
        if damaged {
            dropped_end = index;
            commits_after_break = commits + u64::from(bad.commit_size != 0);
        }
    }
    // A partial last frame right after the valid chain: does its header say "commit"?
    let partial_at = scan.frames as usize * frame_bytes;
    let partial_follows = partial_bytes > 0 && dropped_end == scan.frames;
    if partial_follows && partial_bytes >= FRAME_HEADER_BYTES as u64 {
        let parsed = parse_frame_header(&body[partial_at..partial_at + FRAME_HEADER_BYTES]);
        if parsed.salts == header.salts && parsed.commit_size != 0 {
            commits_after_break += 1;
        }
    }
    for index in dropped_from..dropped_end {
        collect_rows(frame(index), header.page_size, &mut scan);
    }
    if partial_follows {
        collect_partial(&body[partial_at..], header.page_size, &mut scan);
    }
    let frames_dropped = dropped_end - dropped_from + u64::from(partial_follows);
    scan.tail = if commits_after_break > 0 {
        let first_bad_frame = valid + 1;
        let reason = match break_frame {
            Some(bad) if bad.salts != header.salts => {
                format!("frame {first_bad_frame} has damaged salts")
            }
            Some(_) => format!("frame {first_bad_frame} does not match its checksum"),
            None => format!(
                "the file ends inside frame {first_bad_frame} ({partial_bytes} of {frame_bytes} bytes), a commit frame"
            ),
        };
        WalTail::CommittedLost {
            first_bad_frame,
            reason,
            commits_dropped: commits_after_break,
            frames_dropped,
        }
    } else if frames_dropped > 0 {
        WalTail::Unfinished {
            frames: frames_dropped,
            partial_bytes: if partial_follows { partial_bytes } else { 0 },
        }
    } else {
        WalTail::Clean
    };
    scan
}

struct Header {
    page_size: u32,
    salts: [u32; 2],
    checksum: [u32; 2],
    big_endian: bool,
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "the header is cut short ({} of {HEADER_BYTES} bytes)",
            bytes.len()
        ));
    }
    let magic = be32(bytes, 0);
    let big_endian = match magic {
        MAGIC_BIG_ENDIAN => true,
        MAGIC_LITTLE_ENDIAN => false,
        other => return Err(format!("bad magic number {other:#010x}")),
    };
    let page_size = match be32(bytes, 8) {
        // SQLite stores 65536 as 1.
        1 => 65_536,
        size if (512..=32_768).contains(&size) && size.is_power_of_two() => size,
        size => return Err(format!("bad page size {size}")),
    };
    let computed = checksum_words([0, 0], &bytes[..24], big_endian);
    let stored = [be32(bytes, 24), be32(bytes, 28)];
    if computed != stored {
        return Err("the header does not match its checksum".to_owned());
    }
    Ok(Header {
        page_size,
        salts: [be32(bytes, 16), be32(bytes, 20)],
        checksum: stored,
        big_endian,
    })
}

fn parse_frame_header(bytes: &[u8]) -> FrameHeader {
    FrameHeader {
        page_number: be32(bytes, 0),
        commit_size: be32(bytes, 4),
        salts: [be32(bytes, 8), be32(bytes, 12)],
        checksum: [be32(bytes, 16), be32(bytes, 20)],
    }
}

/// The cumulative checksum over a frame: its header's first 8 bytes, then the page.
fn frame_checksum(seed: [u32; 2], frame: &[u8], big_endian: bool) -> [u32; 2] {
    let seed = checksum_words(seed, &frame[..8], big_endian);
    checksum_words(seed, &frame[FRAME_HEADER_BYTES..], big_endian)
}

/// SQLite's WAL checksum over 32-bit words in pairs (`bytes.len()` is a multiple of 8).
fn checksum_words(seed: [u32; 2], bytes: &[u8], big_endian: bool) -> [u32; 2] {
    let [mut s0, mut s1] = seed;
    for pair in bytes.chunks_exact(8) {
        let word = |at: usize| {
            let raw = [pair[at], pair[at + 1], pair[at + 2], pair[at + 3]];
            match big_endian {
                true => u32::from_be_bytes(raw),
                false => u32::from_le_bytes(raw),
            }
        };
        s0 = s0.wrapping_add(word(0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(4)).wrapping_add(s0);
    }
    [s0, s1]
}

/// Adds the raw log rows found in a whole frame's page.
fn collect_rows(frame: &[u8], page_size: u32, into: &mut WalScan) {
    let header = parse_frame_header(frame);
    let page = &frame[FRAME_HEADER_BYTES..];
    debug_assert_eq!(page.len(), page_size as usize);
    rows_in_page(page, header.page_number == 1, into);
}

/// Like [`collect_rows`] for a frame the file ends inside: reads what is there.
fn collect_partial(partial: &[u8], page_size: u32, into: &mut WalScan) {
    if partial.len() <= FRAME_HEADER_BYTES {
        return;
    }
    let header = parse_frame_header(partial);
    let mut page = partial[FRAME_HEADER_BYTES..].to_vec();
    page.resize(page_size as usize, 0);
    rows_in_page(&page, header.page_number == 1, into);
}

/// A raw log row recognised in a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// A `log_records` row: partition, offset.
    Record(u32, u64),
    /// A `log_partitions` row: partition, next offset.
    Partition(u32, u64),
}

/// Parses a table b-tree leaf page and adds the `log_records` and `log_partitions` rows it
/// recognises. Anything malformed is skipped, never trusted.
fn rows_in_page(page: &[u8], first_page: bool, into: &mut WalScan) {
    let base = if first_page { 100 } else { 0 };
    // 0x0d: a table b-tree leaf page.
    if page.len() < base + 8 || page[base] != 0x0d {
        return;
    }
    let cells = usize::from(u16::from_be_bytes([page[base + 3], page[base + 4]]));
    for cell in 0..cells {
        let pointer_at = base + 8 + cell * 2;
        let Some(pointer) = page.get(pointer_at..pointer_at + 2) else {
            return;
        };
        let start = usize::from(u16::from_be_bytes([pointer[0], pointer[1]]));
        match page.get(start..).and_then(parse_cell) {
            Some(Row::Record(partition, offset)) => {
                into.dropped_records.insert((partition, offset));
            }
            Some(Row::Partition(partition, next)) => {
                let known = into.dropped_next_offsets.entry(partition).or_insert(next);
                *known = (*known).max(next);
            }
            None => {}
        }
    }
}

/// A leaf cell: payload size, rowid, then the record (header of serial types, then values).
fn parse_cell(cell: &[u8]) -> Option<Row> {
    let (_payload, used) = varint(cell)?;
    let (rowid, used_rowid) = varint(cell.get(used..)?)?;
    let record = cell.get(used + used_rowid..)?;
    let (header_len, mut at) = varint(record)?;
    let header_len = usize::try_from(header_len).ok()?;
    let mut types = Vec::new();
    while at < header_len {
        let (serial, used) = varint(record.get(at..)?)?;
        types.push(serial);
        at += used;
    }
    let values = record.get(header_len..)?;
    match types.len() {
        LOG_RECORD_COLUMNS => {
            let (partition, used) = integer(types[0], values)?;
            let (offset, _) = integer(types[1], values.get(used..)?)?;
            Some(Row::Record(
                u32::try_from(partition).ok()?,
                u64::try_from(offset).ok()?,
            ))
        }
        LOG_PARTITION_COLUMNS if types[0] == 0 => {
            let (next, _) = integer(types[1], values)?;
            Some(Row::Partition(
                u32::try_from(rowid).ok()?,
                u64::try_from(next).ok()?,
            ))
        }
        _ => None,
    }
}

/// Reads an integer value of serial type `serial`; returns it and its size.
fn integer(serial: u64, bytes: &[u8]) -> Option<(i64, usize)> {
    let size = match serial {
        8 => return Some((0, 0)),
        9 => return Some((1, 0)),
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        5 => 6,
        6 => 8,
        _ => return None,
    };
    let raw = bytes.get(..size)?;
    let mut value: i64 = if raw[0] & 0x80 != 0 { -1 } else { 0 };
    for byte in raw {
        value = (value << 8) | i64::from(*byte);
    }
    Some((value, size))
}

/// SQLite's big-endian varint (1 to 9 bytes).
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(9) {
        if index == 8 {
            return Some(((value << 8) | u64::from(*byte), 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_varint_and_integers() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0x81]), None);
        assert_eq!(integer(1, &[0xff]), Some((-1, 1)));
        assert_eq!(integer(2, &[0x01, 0x00]), Some((256, 2)));
        assert_eq!(integer(9, &[]), Some((1, 0)));
        assert_eq!(integer(13, &[]), None);
    }

    #[test]
    fn test_checksum_matches_sqlite_header_rule() {
        // A header whose checksum was computed by the same rule validates; one flipped bit
        // does not.
        let mut header = [0u8; 32];
        header[..4].copy_from_slice(&MAGIC_LITTLE_ENDIAN.to_be_bytes());
        header[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
        header[8..12].copy_from_slice(&4096u32.to_be_bytes());
        let sum = checksum_words([0, 0], &header[..24], false);
        header[24..28].copy_from_slice(&sum[0].to_be_bytes());
        header[28..32].copy_from_slice(&sum[1].to_be_bytes());
        assert!(parse_header(&header).is_ok());
        header[13] ^= 1;
        assert!(parse_header(&header).is_err());
    }

    #[test]
    fn test_garbage_is_a_bad_header_not_a_panic() {
        let scan = scan_bytes(&[7u8; 100]);
        assert!(matches!(scan.tail, WalTail::BadHeader { .. }));
        let scan = scan_bytes(&[7u8; 10]);
        assert!(matches!(scan.tail, WalTail::BadHeader { .. }));
        let mut page = vec![0u8; 4096];
        page[0] = 0x0d;
        page[3] = 0xff;
        page[4] = 0xff;
        let mut found = WalScan::default();
        rows_in_page(&page, false, &mut found);
        assert!(found.dropped_records.is_empty());
    }
}
