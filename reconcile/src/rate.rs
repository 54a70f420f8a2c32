//! The account's request budget: a token bucket per `appkey`, shared by every source of the
//! process that uses the account.
//!
//! Guarantee: at most `requests_per_minute` requests start in any 60-second span. The bucket
//! holds at most [`BURST`] tokens and refills at `(requests_per_minute - BURST) / 60` per second
//! (at least one request per minute), so the most a minute can see is the full bucket plus a
//! minute of refill. 7moor answers over-limit requests with code 50010/50020 (or HTTP 429):
//! [`TokenBucket::drain`] empties the bucket so the next request waits for a refill.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// The most tokens the bucket holds: a short burst for paging.
pub const BURST: u32 = 4;

/// A token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<State>,
    capacity: f64,
    refill_per_second: f64,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// Returns a full bucket that allows `per_minute` requests in any minute.
    pub fn per_minute(per_minute: u32) -> TokenBucket {
        let capacity = BURST.min(per_minute.saturating_sub(1)).max(1);
        let refill = f64::from(per_minute.saturating_sub(capacity).max(1)) / 60.0;
        TokenBucket {
            state: Mutex::new(State {
                tokens: f64::from(capacity),
                updated: Instant::now(),
            }),
            capacity: f64::from(capacity),
            refill_per_second: refill,
        }
    }

    /// Takes a token, waiting for the refill when there is none.
    pub async fn acquire(&self) {
        loop {
            let wait = self.try_take(Instant::now());
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes a token at `now`, or returns how long until one is there.
    fn try_take(&self, now: Instant) -> Option<Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.refill_per_second).min(self.capacity);
        state.updated = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return None;
        }
        let missing = 1.0 - state.tokens;
        Some(Duration::from_secs_f64(missing / self.refill_per_second))
    }

    /// Empties the bucket (the server said the account is over its limit).
    pub fn drain(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.tokens = 0.0;
        state.updated = Instant::now();
    }
}

/// Returns the process's bucket of `appkey`, created with `per_minute` on first use (the
/// lowest rate configured for the account wins, as later callers may only lower it).
pub fn bucket_for(appkey: &str, per_minute: u32) -> Arc<TokenBucket> {
    /// Per account: the rate the bucket was made with, and the bucket.
    type Buckets = HashMap<String, (u32, Arc<TokenBucket>)>;
    static BUCKETS: OnceLock<Mutex<Buckets>> = OnceLock::new();
    let mut buckets = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let entry = buckets
        .entry(appkey.to_owned())
        .or_insert_with(|| (per_minute, Arc::new(TokenBucket::per_minute(per_minute))));
    if per_minute < entry.0 {
        *entry = (per_minute, Arc::new(TokenBucket::per_minute(per_minute)));
    }
    entry.1.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the requests a greedy caller gets through in `span`, stepping a fake clock.
    fn granted_in(bucket: &TokenBucket, start: Instant, span: Duration) -> u32 {
        let mut now = start;
        let mut granted = 0;
        while now < start + span {
            match bucket.try_take(now) {
                None => granted += 1,
                Some(wait) => now += wait.max(Duration::from_millis(1)),
            }
        }
        granted
    }

    #[test]
    fn test_at_most_the_limit_in_any_minute() {
        for per_minute in [1, 2, 5, 20] {
            let bucket = TokenBucket::per_minute(per_minute);
            let start = Instant::now();
            let first = granted_in(&bucket, start, Duration::from_secs(60));
            assert!(
                first <= per_minute,
                "{per_minute}/min: {first} in the first minute"
            );
            assert!(
                first >= (per_minute * 3 / 4).max(1),
                "{per_minute}/min: only {first}"
            );
            // Later minutes: refill only.
            let later = granted_in(
                &bucket,
                start + Duration::from_secs(60),
                Duration::from_secs(60),
            );
            assert!(later <= per_minute, "{per_minute}/min: {later} later");
        }
    }

    #[test]
    fn test_drain_makes_the_next_request_wait() {
        let bucket = TokenBucket::per_minute(20);
        let now = Instant::now();
        assert!(bucket.try_take(now).is_none());
        bucket.drain();
        let wait = bucket.try_take(Instant::now()).expect("must wait");
        assert!(wait >= Duration::from_secs(3), "{wait:?}");
    }

    #[test]
    fn test_one_bucket_per_account() {
        let a = bucket_for("acct-test-a", 20);
        let b = bucket_for("acct-test-a", 20);
        assert!(Arc::ptr_eq(&a, &b));
        let lower = bucket_for("acct-test-a", 10);
        assert!(!Arc::ptr_eq(&a, &lower));
        assert!(Arc::ptr_eq(&lower, &bucket_for("acct-test-a", 20)));
    }
}
