//! Counters for `Admin/GetStats`, bumped where each thing happens.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins.
    pub failed_logins: AtomicU64,
    /// Lockouts started.
    pub lockouts: AtomicU64,
    /// Direct messages stored (not counting duplicates).
    pub messages_relayed: AtomicU64,
    /// Of those, queued on a live stream.
    pub messages_delivered_live: AtomicU64,
    /// Broadcasts sent.
    pub broadcasts: AtomicU64,
    /// Broadcast copies queued.
    pub broadcast_deliveries: AtomicU64,
    /// Address requests made.
    pub address_requests: AtomicU64,
    /// Address requests granted.
    pub address_grants: AtomicU64,
    /// Sessions ended `TOO_SLOW`.
    pub streams_too_slow: AtomicU64,
}

/// Adds one to `counter`.
pub(super) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` to `counter`.
pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Reads `counter`.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
