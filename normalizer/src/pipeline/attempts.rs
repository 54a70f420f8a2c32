//! Crash isolation: a record that kills the process cannot become a crash loop.
//!
//! # The problem
//!
//! A panic while mapping or storing a record is caught for that record
//! ([`super::records`]). What cannot be caught (an abort, a stack overflow, an OOM kill) ends
//! the process before the batch commits; the record stays in the raw log, so without this
//! module every restart would read it again and die again, while vendors keep getting their
//! `200`s.
//!
//! # How it is kept
//!
//! Before a batch is mapped, the loop records, per partition, the range of offsets it is about
//! to attempt and how many times that range has been attempted: an [`Attempt`] in a small file
//! of this [`AttemptJournal`] (one per consumer and partition, so processes that share a data
//! directory never write each other's). The write is a plain `pwrite`, without fsync: it only
//! has to survive the death of the process, which the operating system's page cache ensures.
//! A batch that commits moves the sink's stored offset past the range, which makes the entry
//! stale; nothing else is written.
//!
//! At start (or when a partition is assigned), [`recovery`] compares the journal with the
//! sink's stored offset `committed`. An entry whose range reaches past `committed` was in
//! flight when the process died:
//!
//! 1. a range of several records: each of them from `committed` on is attempted alone, each
//!    committed by itself, each recorded as its own one-record range ([`Recovery::Isolate`]);
//! 2. one record, attempted once: it is attempted alone once more, recorded as the second
//!    attempt (a one-record batch is common at low load, and most deaths, a SIGKILL, an OOM
//!    kill caused by something else, have nothing to do with the record);
//! 3. one record, attempted twice: that record killed the process alone, twice. It is
//!    dead-lettered with reason `crashed_normalizer` without being mapped again
//!    ([`Recovery::DeadLetter`]), and the loop goes on.
//!
//! So a record that kills the process costs at most three deaths and is then dead-lettered;
//! every other record of its batch is committed exactly once, because each commit carries its
//! offsets (the sink's guarantee). A record is dead-lettered this way only if the process died
//! twice in a row while it was in flight alone. The price of an unrelated death (a SIGKILL) is
//! that the batch it interrupted is committed again record by record.
//!
//! In Kafka mode the journal is per host: a partition that moves to another host after a
//! crash starts there with no entry, and its poison record is isolated on whichever host it
//! kills three times.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How many times one record may be in flight alone at a death before it is dead-lettered.
pub const MAX_ATTEMPTS_ALONE: u32 = 2;

/// One range of offsets of a partition being attempted: `from..through`, attempt `attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The first offset of the range.
    pub from: u64,
    /// The offset after the last one.
    pub through: u64,
    /// How many times this range has been started (1 for a first attempt).
    pub attempts: u32,
}

/// What the loop does with a partition's records from the stored offset on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No attempt was interrupted: consume as usual.
    Normal,
    /// Attempt each record of `from..through` alone, the first one as attempt
    /// `first_attempts`, the others as attempt 1.
    Isolate {
        /// The first offset.
        from: u64,
        /// The offset after the last one.
        through: u64,
        /// The attempt number recorded for the record at `from`.
        first_attempts: u32,
    },
    /// Dead-letter the record at `offset` without mapping it.
    DeadLetter {
        /// Its offset.
        offset: u64,
    },
}

/// Decides what to do given the sink's stored offset and the journal's entry.
pub fn recovery(committed: u64, found: Option<Attempt>) -> Recovery {
    let Some(attempt) = found else {
        return Recovery::Normal;
    };
    if attempt.through <= committed || attempt.from > committed {
        // Committed since (stale), or about another stretch of the log (a rewound consumer).
        return Recovery::Normal;
    }
    let alone = attempt.through - attempt.from == 1;
    if alone && attempt.attempts >= MAX_ATTEMPTS_ALONE {
        return Recovery::DeadLetter { offset: committed };
    }
    Recovery::Isolate {
        from: committed,
        through: attempt.through,
        first_attempts: if alone { attempt.attempts + 1 } else { 1 },
    }
}

/// Size of one stored entry: magic, from, through, attempts, checksum.
const ENTRY_BYTES: usize = 4 + 8 + 8 + 4 + 8;
const MAGIC: &[u8; 4] = b"CHA1";

/// The attempt journal of one consumer: a file per partition in one directory.
#[derive(Debug)]
pub struct AttemptJournal {
    dir: PathBuf,
    consumer: String,
    files: HashMap<u32, File>,
}

impl AttemptJournal {
    /// Opens (creating) the journal of `consumer` in `dir`.
    pub fn open(dir: &Path, consumer: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(AttemptJournal {
            dir: dir.to_owned(),
            consumer: consumer.to_owned(),
            files: HashMap::new(),
        })
    }

    /// Returns the directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the entry of `partition`, if there is a readable one.
    pub fn load(&mut self, partition: u32) -> io::Result<Option<Attempt>> {
        let file = self.file(partition)?;
        let mut entry = [0u8; ENTRY_BYTES];
        match file.read_exact_at(&mut entry, 0) {
            Ok(()) => Ok(decode(&entry)),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Records that `attempt` is starting (no fsync: it must outlive the process only).
    pub fn store(&mut self, partition: u32, attempt: Attempt) -> io::Result<()> {
        let entry = encode(attempt);
        self.file(partition)?.write_all_at(&entry, 0)
    }

    fn file(&mut self, partition: u32) -> io::Result<&File> {
        if !self.files.contains_key(&partition) {
            let path = self.dir.join(file_name(&self.consumer, partition));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            self.files.insert(partition, file);
        }
        Ok(&self.files[&partition])
    }
}

/// `<consumer, percent-encoded>.p<partition>`.
fn file_name(consumer: &str, partition: u32) -> String {
    let mut name = String::with_capacity(consumer.len() + 8);
    for byte in consumer.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_') {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{name}.p{partition}")
}

fn encode(attempt: Attempt) -> [u8; ENTRY_BYTES] {
    let mut entry = [0u8; ENTRY_BYTES];
    entry[..4].copy_from_slice(MAGIC);
    entry[4..12].copy_from_slice(&attempt.from.to_le_bytes());
    entry[12..20].copy_from_slice(&attempt.through.to_le_bytes());
    entry[20..24].copy_from_slice(&attempt.attempts.to_le_bytes());
    let checksum = fnv1a(&entry[..24]);
    entry[24..].copy_from_slice(&checksum.to_le_bytes());
    entry
}

/// Decodes an entry; a torn or foreign one (bad magic or checksum) reads as none.
fn decode(entry: &[u8; ENTRY_BYTES]) -> Option<Attempt> {
    if &entry[..4] != MAGIC || entry[24..] != fnv1a(&entry[..24]).to_le_bytes() {
        return None;
    }
    let word = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&entry[range]);
        u64::from_le_bytes(bytes)
    };
    let mut attempts = [0u8; 4];
    attempts.copy_from_slice(&entry[20..24]);
    Some(Attempt {
        from: word(4..12),
        through: word(12..20),
        attempts: u32::from_le_bytes(attempts),
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(from: u64, through: u64, attempts: u32) -> Option<Attempt> {
        Some(Attempt {
            from,
            through,
            attempts,
        })
    }

    #[test]
    fn test_recovery_steps() {
        let isolate = |from, through, first_attempts| Recovery::Isolate {
            from,
            through,
            first_attempts,
        };
        assert_eq!(recovery(10, None), Recovery::Normal);
        assert_eq!(recovery(10, attempt(5, 10, 1)), Recovery::Normal);
        assert_eq!(recovery(10, attempt(12, 15, 1)), Recovery::Normal);
        assert_eq!(recovery(10, attempt(10, 20, 1)), isolate(10, 20, 1));
        // Part of the range was committed (a pipelined batch before it).
        assert_eq!(recovery(14, attempt(10, 20, 1)), isolate(14, 20, 1));
        // A one-record batch that died once is attempted alone again, then dead-lettered.
        assert_eq!(recovery(10, attempt(10, 11, 1)), isolate(10, 11, 2));
        assert_eq!(
            recovery(10, attempt(10, 11, 2)),
            Recovery::DeadLetter { offset: 10 }
        );
    }

    #[test]
    fn test_journal_round_trip_and_separate_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = AttemptJournal::open(dir.path(), "group@callhook.raw").unwrap();
        assert_eq!(journal.load(0).unwrap(), None);
        journal.store(0, attempt(1, 5, 1).unwrap()).unwrap();
        journal.store(3, attempt(7, 9, 2).unwrap()).unwrap();
        let mut reopened = AttemptJournal::open(dir.path(), "group@callhook.raw").unwrap();
        assert_eq!(reopened.load(0).unwrap(), attempt(1, 5, 1));
        assert_eq!(reopened.load(3).unwrap(), attempt(7, 9, 2));
        let mut other = AttemptJournal::open(dir.path(), "other").unwrap();
        assert_eq!(other.load(0).unwrap(), None);
        assert!(dir.path().join("group%40callhook%2Eraw.p3").exists());
    }

    #[test]
    fn test_a_torn_entry_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = AttemptJournal::open(dir.path(), "normalizer").unwrap();
        journal.store(0, attempt(1, 5, 1).unwrap()).unwrap();
        let path = dir.path().join("normalizer.p0");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let mut reopened = AttemptJournal::open(dir.path(), "normalizer").unwrap();
        assert_eq!(reopened.load(0).unwrap(), None);
    }
}
