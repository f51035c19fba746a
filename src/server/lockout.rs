//! Login lockout and per-address login throttling (SPEC §2). Pure state; the caller passes the
//! time and holds the lock.
//!
//! The lockout is kept per username key, whatever address the attempts come from, so spreading
//! attempts over many hosts does not help. The per-address bucket stops one host from trying
//! many usernames.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::ratelimit::TokenBucket;

#[derive(Debug, Default)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Consecutive failures, this one included.
    pub failures: u32,
    /// Set when this failure locked the username.
    pub locked_until: Option<Instant>,
}

/// Lockout and throttling state.
#[derive(Debug)]
pub struct Lockout {
    max_attempts: u32,
    duration: Duration,
    users: HashMap<String, Entry>,
    rate: f64,
    burst: f64,
    addresses: HashMap<IpAddr, TokenBucket>,
}

impl Lockout {
    /// `max_attempts` failures lock a username for `duration`; each address may try `rate` times
    /// a second with bursts of `burst`.
    pub fn new(max_attempts: u32, duration: Duration, rate: f64, burst: f64) -> Self {
        Lockout {
            max_attempts: max_attempts.max(1),
            duration,
            users: HashMap::new(),
            rate,
            burst,
            addresses: HashMap::new(),
        }
    }

    /// Counts one attempt from `ip`; `Err` says when the next is allowed.
    pub fn throttle(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.addresses.len() > 100_000 {
            self.addresses.retain(|_, b| !b.is_full(now));
        }
        let (rate, burst) = (self.rate, self.burst);
        self.addresses
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
            .take(now)
    }

    /// `Some(time left)` while `key` is locked.
    pub fn locked(&mut self, key: &str, now: Instant) -> Option<Duration> {
        let entry = self.users.get_mut(key)?;
        match entry.locked_until {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                // The lock has run out: a fresh start.
                self.users.remove(key);
                None
            }
            None => None,
        }
    }

    /// Records a failed attempt for `key`.
    pub fn fail(&mut self, key: &str, now: Instant) -> Failure {
        if self.users.len() > 100_000 {
            self.users
                .retain(|_, e| e.locked_until.is_some_and(|u| u > now));
        }
        let entry = self.users.entry(key.to_owned()).or_default();
        entry.failures += 1;
        if entry.failures >= self.max_attempts {
            entry.locked_until = Some(now + self.duration);
        }
        Failure {
            failures: entry.failures,
            locked_until: entry.locked_until,
        }
    }

    /// Failures still allowed after `failure` before the lock.
    pub fn attempts_left(&self, failure: Failure) -> u32 {
        self.max_attempts.saturating_sub(failure.failures)
    }

    /// A success (or an operator) clears `key`'s record.
    pub fn clear(&mut self, key: &str) {
        self.users.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_lock_for_the_duration() {
        let t0 = Instant::now();
        let mut l = Lockout::new(3, Duration::from_secs(60), 1.0, 10.0);
        assert_eq!(l.fail("bob", t0).locked_until, None);
        assert_eq!(l.fail("bob", t0).locked_until, None);
        let third = l.fail("bob", t0);
        assert_eq!(third.locked_until, Some(t0 + Duration::from_secs(60)));
        assert_eq!(
            l.locked("bob", t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(l.locked("bob", t0 + Duration::from_secs(60)), None);
        // After the lock, the count starts again.
        assert_eq!(l.fail("bob", t0 + Duration::from_secs(61)).failures, 1);
    }

    #[test]
    fn success_resets_and_addresses_are_throttled() {
        let t0 = Instant::now();
        let mut l = Lockout::new(3, Duration::from_secs(60), 1.0, 2.0);
        l.fail("bob", t0);
        l.fail("bob", t0);
        l.clear("bob");
        assert_eq!(l.fail("bob", t0).failures, 1);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!(l.throttle(ip, t0).is_ok());
        assert!(l.throttle(ip, t0).is_ok());
        assert!(l.throttle(ip, t0).is_err());
        assert!(l.throttle([10, 0, 0, 2].into(), t0).is_ok());
    }
}
