//! Rate limits: per-connection request buckets, abuse strikes, and failed-redemption locks.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::config::{FailureLimit, RequestRate};
use crate::time::Timestamp;

/// Millitokens per request.
const COST: u64 = 1000;

/// A token bucket in millitokens, refilled from elapsed milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct RequestBucket {
    millitokens: u64,
    last: Timestamp,
}

impl RequestBucket {
    pub(crate) fn full(rate: RequestRate, now: Timestamp) -> Self {
        RequestBucket {
            millitokens: u64::from(rate.burst) * COST,
            last: now,
        }
    }

    /// Takes one request's worth; `false` if the bucket is empty.
    pub(crate) fn take(&mut self, rate: RequestRate, now: Timestamp) -> bool {
        let elapsed = now.as_millis().saturating_sub(self.last.as_millis());
        // per_second tokens per 1000 ms = per_second millitokens per ms.
        let refill = elapsed.saturating_mul(u64::from(rate.per_second));
        let cap = u64::from(rate.burst) * COST;
        self.millitokens = self.millitokens.saturating_add(refill).min(cap);
        if now > self.last {
            self.last = now;
        }
        if self.millitokens >= COST {
            self.millitokens -= COST;
            true
        } else {
            false
        }
    }
}

/// Abuse strikes in a fixed window that starts with the first strike.
#[derive(Debug, Clone, Default)]
pub(crate) struct Strikes {
    count: u32,
    window_start: Timestamp,
}

impl Strikes {
    /// Adds a strike; `true` when the limit is reached.
    pub(crate) fn strike(&mut self, max: u32, window: std::time::Duration, now: Timestamp) -> bool {
        if self.count == 0 || now.saturating_since(self.window_start) >= window {
            self.count = 0;
            self.window_start = now;
        }
        self.count = self.count.saturating_add(1);
        self.count >= max
    }
}

#[derive(Debug, Clone, Default)]
struct FailureLog {
    failures: VecDeque<Timestamp>,
    locked_until: Option<Timestamp>,
}

/// Failed attempts per key, with a lock once the limit is reached.
#[derive(Debug, Clone)]
pub(crate) struct FailureLimiter<K> {
    limit: FailureLimit,
    logs: HashMap<K, FailureLog>,
}

impl<K: Eq + Hash + Clone> FailureLimiter<K> {
    pub(crate) fn new(limit: FailureLimit) -> Self {
        FailureLimiter {
            limit,
            logs: HashMap::new(),
        }
    }

    /// Whether `key` is locked at `now`.
    pub(crate) fn is_locked(&self, key: &K, now: Timestamp) -> bool {
        self.logs
            .get(key)
            .and_then(|log| log.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failure; `true` if it started a lock.
    pub(crate) fn fail(&mut self, key: &K, now: Timestamp) -> bool {
        let limit = self.limit;
        let log = self.logs.entry(key.clone()).or_default();
        while log
            .failures
            .front()
            .is_some_and(|t| now.saturating_since(*t) >= limit.window)
        {
            log.failures.pop_front();
        }
        log.failures.push_back(now);
        let max = usize::try_from(limit.max_failures).unwrap_or(usize::MAX);
        if log.failures.len() >= max {
            log.failures.clear();
            log.locked_until = Some(now.saturating_add(limit.lock));
            return true;
        }
        false
    }

    /// Forgets keys with no failure in the window and no lock in force (bounds memory).
    pub(crate) fn purge(&mut self, now: Timestamp) {
        let limit = self.limit;
        self.logs.retain(|_, log| {
            let locked = log.locked_until.is_some_and(|until| now < until);
            let recent = log
                .failures
                .back()
                .is_some_and(|t| now.saturating_since(*t) < limit.window);
            locked || recent
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.logs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let rate = RequestRate {
            per_second: 10,
            burst: 20,
        };
        let t0 = Timestamp::from_millis(1_000);
        let mut b = RequestBucket::full(rate, t0);
        assert!((0..20).all(|_| b.take(rate, t0)));
        assert!(!b.take(rate, t0));
        assert!(b.take(rate, Timestamp::from_millis(1_100)));
        assert!(!b.take(rate, Timestamp::from_millis(1_100)));
    }

    #[test]
    fn failures_lock_and_unlock() {
        let limit = FailureLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            lock: Duration::from_secs(300),
        };
        let mut l = FailureLimiter::new(limit);
        let t = Timestamp::from_millis(0);
        assert!(!l.fail(&"u", t));
        assert!(!l.fail(&"u", t));
        assert!(l.fail(&"u", t));
        assert!(l.is_locked(&"u", Timestamp::from_millis(299_999)));
        assert!(!l.is_locked(&"u", Timestamp::from_millis(300_000)));
        l.purge(Timestamp::from_millis(300_000));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn old_failures_slide_out() {
        let limit = FailureLimit {
            max_failures: 2,
            window: Duration::from_secs(60),
            lock: Duration::from_secs(300),
        };
        let mut l = FailureLimiter::new(limit);
        assert!(!l.fail(&1, Timestamp::from_millis(0)));
        assert!(!l.fail(&1, Timestamp::from_millis(60_000)));
        assert!(l.fail(&1, Timestamp::from_millis(60_001)));
    }
}
