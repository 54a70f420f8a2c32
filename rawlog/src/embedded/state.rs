//! State shared between the append side, the writer thread and the readers.
//!
//! The database is the source of truth; this is a cache of the few numbers the append path
//! needs without touching SQLite (the async runtime must not block): per-partition next and
//! start offsets, the lowest committed offset of all groups, the appends in flight, and health.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The offsets a log holds, loaded at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bookkeeping {
    /// Next offset to write, per partition.
    pub(crate) next_offsets: Vec<u64>,
    /// Lowest offset still stored, per partition.
    pub(crate) log_start_offsets: Vec<u64>,
    /// Committed offsets: group -> partition -> next offset to consume.
    pub(crate) committed: BTreeMap<String, BTreeMap<u32, u64>>,
}

/// Counters of one log instance, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Group commits that succeeded.
    pub batches_committed: u64,
    /// Records in those commits.
    pub records_committed: u64,
    /// Largest number of records in one successful group commit.
    pub largest_batch_records: u64,
    /// Group commits that failed (every waiter got `Unavailable`).
    pub batches_failed: u64,
}

pub(crate) struct SharedState {
    pub(crate) partitions: u32,
    next_offsets: Vec<AtomicU64>,
    log_start_offsets: Vec<AtomicU64>,
    min_committed: Vec<AtomicU64>,
    /// Group -> partition -> committed offset. Held across the DB write of a commit so the cache
    /// and the table change in the same order.
    pub(crate) committed: Mutex<BTreeMap<String, BTreeMap<u32, u64>>>,
    pub(crate) in_flight: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) writer_running: AtomicBool,
    /// `Some(reason)` while the last group commit failed.
    health: Mutex<Option<String>>,
    stats: Mutex<LogStats>,
    notifier: AppendNotifier,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these locks leaves plain data that is still
    // consistent enough to read; refusing all appends forever would be worse.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedState {
    pub(crate) fn new(partitions: u32, bookkeeping: Bookkeeping) -> Self {
        let atomics = |values: &[u64]| values.iter().map(|value| AtomicU64::new(*value)).collect();
        let state = Self {
            partitions,
            next_offsets: atomics(&bookkeeping.next_offsets),
            log_start_offsets: atomics(&bookkeeping.log_start_offsets),
            min_committed: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            committed: Mutex::new(bookkeeping.committed),
            in_flight: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            writer_running: AtomicBool::new(true),
            health: Mutex::new(None),
            stats: Mutex::new(LogStats::default()),
            notifier: AppendNotifier::new(),
        };
        let committed = lock(&state.committed);
        state.refresh_min_committed(&committed);
        drop(committed);
        state
    }

    pub(crate) fn next_offset(&self, partition: u32) -> u64 {
        self.next_offsets[partition as usize].load(Ordering::Acquire)
    }

    pub(crate) fn log_start_offset(&self, partition: u32) -> u64 {
        self.log_start_offsets[partition as usize].load(Ordering::Acquire)
    }

    pub(crate) fn set_next_offsets(&self, next_offsets: &[u64]) {
        for (slot, value) in self.next_offsets.iter().zip(next_offsets) {
            slot.store(*value, Ordering::Release);
        }
    }

    pub(crate) fn set_log_start_offset(&self, partition: u32, offset: u64) {
        self.log_start_offsets[partition as usize].store(offset, Ordering::Release);
    }

    /// Recomputes the lowest committed offset per partition; a group that never committed a
    /// partition counts as offset 0 there, and with no group at all nothing is consumed.
    pub(crate) fn refresh_min_committed(&self, committed: &BTreeMap<String, BTreeMap<u32, u64>>) {
        for partition in 0..self.partitions {
            let lowest = committed
                .values()
                .map(|per_partition| per_partition.get(&partition).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            self.min_committed[partition as usize].store(lowest, Ordering::Release);
        }
    }

    /// Returns the records stored past the lowest committed offsets, summed over partitions.
    pub(crate) fn unconsumed_records(&self) -> u64 {
        (0..self.partitions)
            .map(|partition| {
                let consumed = self.min_committed[partition as usize].load(Ordering::Acquire);
                let start = self.log_start_offset(partition).max(consumed);
                self.next_offset(partition).saturating_sub(start)
            })
            .sum()
    }

    /// Returns the records stored, summed over partitions.
    pub(crate) fn records_held(&self) -> u64 {
        (0..self.partitions)
            .map(|partition| {
                self.next_offset(partition)
                    .saturating_sub(self.log_start_offset(partition))
            })
            .sum()
    }

    pub(crate) fn health(&self) -> Option<String> {
        lock(&self.health).clone()
    }

    pub(crate) fn set_health(&self, failure: Option<String>) {
        *lock(&self.health) = failure;
    }

    pub(crate) fn stats(&self) -> LogStats {
        *lock(&self.stats)
    }

    pub(crate) fn record_batch(&self, records: usize, committed: bool) {
        let records = records as u64;
        let mut stats = lock(&self.stats);
        if committed {
            stats.batches_committed += 1;
            stats.records_committed += records;
            stats.largest_batch_records = stats.largest_batch_records.max(records);
        } else {
            stats.batches_failed += 1;
        }
    }

    pub(crate) fn notifier(&self) -> &AppendNotifier {
        &self.notifier
    }
}

/// Wakes consumers after each commit: a generation number bumped under a mutex (for blocking
/// waiters, through a `Condvar`) and mirrored into a `watch` channel (for async waiters).
pub(crate) struct AppendNotifier {
    generation: Mutex<u64>,
    condvar: Condvar,
    sender: watch::Sender<u64>,
}

impl AppendNotifier {
    fn new() -> Self {
        let (sender, _receiver) = watch::channel(0);
        Self {
            generation: Mutex::new(0),
            condvar: Condvar::new(),
            sender,
        }
    }

    pub(crate) fn bump(&self) {
        let mut generation = lock(&self.generation);
        *generation += 1;
        self.sender.send_replace(*generation);
        self.condvar.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    /// Blocks until the generation differs from `seen` or `timeout` passes; returns the
    /// generation then.
    pub(crate) fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut generation = lock(&self.generation);
        while *generation == seen {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            generation = self
                .condvar
                .wait_timeout(generation, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(next: &[u64], start: &[u64], committed: &[(&str, u32, u64)]) -> SharedState {
        let mut groups: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
        for (group, partition, offset) in committed {
            groups
                .entry((*group).to_owned())
                .or_default()
                .insert(*partition, *offset);
        }
        let bookkeeping = Bookkeeping {
            next_offsets: next.to_vec(),
            log_start_offsets: start.to_vec(),
            committed: groups,
        };
        SharedState::new(u32::try_from(next.len()).unwrap(), bookkeeping)
    }

    #[test]
    fn test_unconsumed_counts_from_lowest_group_and_missing_partition_as_zero() {
        let no_groups = state_with(&[10, 5], &[0, 0], &[]);
        assert_eq!(no_groups.unconsumed_records(), 15);
        assert_eq!(no_groups.records_held(), 15);
        let two_groups = state_with(&[10, 5], &[2, 0], &[("a", 0, 8), ("b", 0, 4), ("a", 1, 5)]);
        // Partition 0: lowest is b's 4 -> 6 unconsumed; partition 1: b never committed -> 5.
        assert_eq!(two_groups.unconsumed_records(), 11);
        assert_eq!(two_groups.records_held(), 13);
    }

    #[test]
    fn test_wait_for_change_returns_on_bump_and_on_timeout() {
        let notifier = std::sync::Arc::new(AppendNotifier::new());
        assert_eq!(notifier.wait_for_change(0, Duration::from_millis(5)), 0);
        let bumper = std::sync::Arc::clone(&notifier);
        let thread = std::thread::spawn(move || bumper.bump());
        let seen = notifier.wait_for_change(0, Duration::from_secs(10));
        thread.join().unwrap();
        assert_eq!(seen, 1);
        assert_eq!(*notifier.subscribe().borrow(), 1);
    }
}
