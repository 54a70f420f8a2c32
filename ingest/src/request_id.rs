//! Request ids: 16 lowercase hex characters, unique within a process.
//!
//! Each id is the splitmix64 finaliser of `seed + counter * odd_constant`. Both steps are
//! bijections on `u64`, so two requests of one process never share an id; the seed (OS
//! randomness through `RandomState`, mixed with the start time) makes restarts differ. This
//! avoids a uuid dependency for a value that only needs to correlate logs and records.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static SEED: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Returns a new request id.
pub(crate) fn next_request_id() -> String {
    let seed = *SEED.get_or_init(|| {
        let random = RandomState::new().hash_one(0x6361_6c6c_686f_6f6b_u64);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        random ^ nanos
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        splitmix64(seed.wrapping_add(count.wrapping_mul(GOLDEN_GAMMA)))
    )
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn splitmix64(input: u64) -> u64 {
    let mut z = input;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
