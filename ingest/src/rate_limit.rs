//! Per-source rate limits: `[sources.<name>] rate_limit = { per_second = 50, burst = 100 }`.
//!
//! Guarantee: a push over its source's limit is answered `429` with `Retry-After` (whole
//! seconds, at least 1) and nothing of it is stored, so a vendor that retries on non-200 (7moor
//! does) is slowed down and loses nothing. The check runs after authentication, so a client
//! without the source's credentials cannot spend the vendor's budget, and before the append.
//!
//! Each source has one token bucket: it holds up to `burst` tokens, refills at `per_second`,
//! and every accepted push takes one. The bucket is a mutex around two numbers, held for a few
//! nanoseconds per push.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{ConfigError, Result};

/// The `rate_limit` table of a source. Off when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Pushes per second accepted over time (the refill rate of the bucket). At least 1.
    pub per_second: u32,
    /// Pushes accepted at once after a quiet period (the bucket's size). Default: `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    /// Checks the fields and returns the limit.
    pub fn validate(&self) -> Result<RateLimit> {
        let out_of_range = |field, value: u32| ConfigError::OutOfRange {
            field,
            expected: "at least 1",
            value: u64::from(value),
        };
        let per_second = NonZeroU32::new(self.per_second)
            .ok_or_else(|| out_of_range("rate_limit.per_second", self.per_second))?;
        let burst = match self.burst {
            None => per_second,
            Some(burst) => {
                NonZeroU32::new(burst).ok_or_else(|| out_of_range("rate_limit.burst", burst))?
            }
        };
        Ok(RateLimit { per_second, burst })
    }
}

/// A validated rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

/// The token bucket of one source.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// Returns a full bucket for `limit`.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.get());
        TokenBucket {
            per_second: f64::from(limit.per_second.get()),
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                refilled_at: now,
            }),
        }
    }

    /// Takes one token at `now`, or returns how long until one is available.
    pub(crate) fn try_take(&self, now: Instant) -> std::result::Result<(), Duration> {
        // A poisoned lock only means another push panicked mid-update of two floats.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(state.refilled_at);
        state.tokens = (state.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        state.refilled_at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - state.tokens) / self.per_second,
        ))
    }
}

/// Returns the `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: u32, burst: Option<u32>, now: Instant) -> TokenBucket {
        let limit = RateLimitConfig { per_second, burst }.validate().unwrap();
        TokenBucket::new(limit, now)
    }

    #[test]
    fn test_burst_then_refill() {
        let start = Instant::now();
        let bucket = bucket(10, Some(3), start);
        for _ in 0..3 {
            assert!(bucket.try_take(start).is_ok());
        }
        let wait = bucket.try_take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(bucket.try_take(start + Duration::from_millis(50)).is_err());
        assert!(bucket.try_take(start + Duration::from_millis(101)).is_ok());
        // Never more than the burst after a long pause.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.try_take(later).is_ok());
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn test_burst_defaults_to_rate() {
        let start = Instant::now();
        let bucket = bucket(2, None, start);
        assert!(bucket.try_take(start).is_ok());
        assert!(bucket.try_take(start).is_ok());
        assert!(bucket.try_take(start).is_err());
    }

    #[test]
    fn test_retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn test_config_validation() {
        let config: RateLimitConfig = toml::from_str("per_second = 5\nburst = 20").unwrap();
        assert_eq!(
            config.validate().unwrap(),
            RateLimit {
                per_second: NonZeroU32::new(5).unwrap(),
                burst: NonZeroU32::new(20).unwrap()
            }
        );
        assert!(toml::from_str::<RateLimitConfig>("per_second = 5\nbursts = 1").is_err());
        let zero = RateLimitConfig {
            per_second: 0,
            burst: None,
        };
        assert!(zero.validate().is_err());
        let zero_burst = RateLimitConfig {
            per_second: 1,
            burst: Some(0),
        };
        assert!(zero_burst.validate().is_err());
    }
}
