//! The in-memory front of the dedupe store.
//!
//! Guarantee: a push is dropped as a duplicate only if its `(source, dedupe key)` was committed
//! before. The authoritative check is the persistent store: the SQLite sink's `events` table,
//! where a push's first event has an id derived from its source and dedupe key, checked inside
//! the same transaction that writes the events and the offsets. This
//! LRU only short-cuts vendor retries that arrive while their key is still hot: a key enters
//! the cache only after the batch that carried it has committed ([`DedupeCache::remember`]), so
//! a crash between mapping and commit can never make the cache claim a push it did not store.
//!
//! Memory: the cache holds a 128-bit hash of each key, not the key, so its size is bounded by
//! `capacity` entries of fixed size (a collision needs ~2^64 keys).

use std::num::NonZeroUsize;

use lru::LruCache;
use sha2::{Digest, Sha256};

/// A bounded LRU of recently committed dedupe keys.
pub struct DedupeCache {
    seen: LruCache<u128, ()>,
}

impl DedupeCache {
    /// Returns an empty cache that holds at most `capacity` keys.
    pub fn new(capacity: NonZeroUsize) -> Self {
        DedupeCache {
            seen: LruCache::new(capacity),
        }
    }

    /// Returns true if this `(source, key)` was committed recently (and refreshes it).
    pub fn contains(&mut self, source: &str, key: &str) -> bool {
        self.seen.get(&fingerprint(source, key)).is_some()
    }

    /// Records keys whose pushes have just been committed.
    pub fn remember(&mut self, source: &str, key: &str) {
        self.seen.put(fingerprint(source, key), ());
    }

    /// Returns the number of keys held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Returns true when no key is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn fingerprint(source: &str, key: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_remembers_per_source_and_evicts_oldest() {
        let mut cache = DedupeCache::new(NonZeroUsize::new(2).unwrap());
        cache.remember("a", "k1");
        assert!(cache.contains("a", "k1"));
        assert!(!cache.contains("b", "k1"));
        cache.remember("a", "k2");
        cache.remember("a", "k3");
        assert!(!cache.contains("a", "k1"), "oldest key evicted");
        assert!(cache.contains("a", "k3"));
        assert_eq!(cache.len(), 2);
    }
}
