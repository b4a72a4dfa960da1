//! Token buckets per source: a burst, then one trigger per refill period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::time::Instant;

/// Buckets kept at most before full ones (idle sources) are forgotten.
const MAX_BUCKETS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One token bucket per key, all with the same burst and refill period.
#[derive(Debug)]
pub(super) struct RateLimiter {
    burst: f64,
    refill_every: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `burst` tokens at most (at least 1), one more every `refill_every` (zero: unlimited).
    pub(super) fn new(burst: u32, refill_every: Duration) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            refill_every,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`; when there is none, how long until the next one.
    pub(super) fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.refill_every.is_zero() {
            return Ok(());
        }
        let period = self.refill_every.as_secs_f64();
        // A poisoned lock only means another request panicked mid-update; the map is intact.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (burst, refill_every) = (self.burst, self.refill_every);
            buckets.retain(|_, b| refill(b, now, burst, refill_every) < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.burst, self.refill_every);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            bucket.at = now;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) * period))
        }
    }
}

/// The tokens `bucket` holds at `now`.
fn refill(bucket: &Bucket, now: Instant, burst: f64, refill_every: Duration) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed / refill_every.as_secs_f64()).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_period_per_key() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        for _ in 0..3 {
            assert_eq!(limiter.take_at("a", t0), Ok(()));
        }
        assert_eq!(limiter.take_at("a", t0), Err(Duration::from_secs(10)));
        assert_eq!(limiter.take_at("b", t0), Ok(()), "keys are independent");
        let wait = limiter.take_at("a", at(4)).unwrap_err();
        assert!((wait.as_secs_f64() - 6.0).abs() < 0.01, "{wait:?}");
        assert_eq!(limiter.take_at("a", at(10)), Ok(()));
        assert!(limiter.take_at("a", at(10)).is_err());
        for _ in 0..3 {
            assert_eq!(limiter.take_at("a", at(3600)), Ok(()), "refills up to the burst only");
        }
        assert!(limiter.take_at("a", at(3600)).is_err());
    }

    #[test]
    fn a_zero_period_never_limits() {
        let limiter = RateLimiter::new(1, Duration::ZERO);
        for _ in 0..100 {
            assert_eq!(limiter.take("a"), Ok(()));
        }
    }

    #[test]
    fn idle_buckets_are_forgotten_past_the_bound() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS {
            assert_eq!(limiter.take_at(&format!("s{i}"), t0), Ok(()));
        }
        // All refilled a second later: one more key clears them, and budgets start full.
        assert_eq!(limiter.take_at("new", t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
