//! Counters for `Admin/GetStats` and `/metrics`, bumped where each thing happens, and the
//! latency histograms `/metrics` adds. This is the one source of both: the metrics endpoint
//! reads these at scrape time rather than keeping counters of its own.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
};

/// One node's counters as `Admin/GetStats` shows them; a cluster node also leaves them with its
/// lease (JSON) for the other nodes' `GetStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub uptime_seconds: u64,
    pub sessions: u64,
    pub logins: u64,
    pub failed_logins: u64,
    pub lockouts: u64,
    pub messages_relayed: u64,
    pub messages_delivered_live: u64,
    pub broadcasts: u64,
    pub broadcast_deliveries: u64,
    pub address_requests: u64,
    pub address_grants: u64,
    pub streams_too_slow: u64,
    pub storage_commits: u64,
}

impl super::Core {
    /// This node's counters now.
    pub fn counters(&self) -> Counters {
        let s = &self.stats;
        Counters {
            uptime_seconds: self.started.elapsed().as_secs(),
            sessions: self.sessions.len() as u64,
            logins: get(&s.logins),
            failed_logins: get(&s.failed_logins),
            lockouts: get(&s.lockouts),
            messages_relayed: get(&s.messages_relayed),
            messages_delivered_live: get(&s.messages_delivered_live),
            broadcasts: get(&s.broadcasts),
            broadcast_deliveries: get(&s.broadcast_deliveries),
            address_requests: get(&s.address_requests),
            address_grants: get(&s.address_grants),
            streams_too_slow: get(&s.streams_too_slow),
            storage_commits: self.writer.commits(),
        }
    }
}

/// Counters since the server started.
#[derive(Debug)]
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
    /// Seconds from a `SendMessage` reaching the server to its commit being confirmed.
    pub send_to_commit: Histogram,
    /// Seconds from a direct message's send time to its queueing on the recipient's live
    /// stream (only messages that went out live).
    pub send_to_delivery: Histogram,
    /// gRPC calls answered, by method and status code.
    pub rpc_calls: Family<RpcCall, Counter>,
    /// Seconds until each gRPC call's response headers, by method (for a stream, its start).
    pub rpc_seconds: Family<RpcMethod, Histogram>,
}

/// Labels of one method and outcome of `rpc_calls`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCall {
    /// `confab.v1.Chat/SendMessage`, or `unknown` for a path the server does not serve.
    pub method: String,
    /// The gRPC status code's name (`OK`, `NOT_FOUND`, …).
    pub code: String,
}

/// The label of one method in `rpc_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcMethod {
    /// As in [`RpcCall::method`].
    pub method: String,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            logins: AtomicU64::default(),
            failed_logins: AtomicU64::default(),
            lockouts: AtomicU64::default(),
            messages_relayed: AtomicU64::default(),
            messages_delivered_live: AtomicU64::default(),
            broadcasts: AtomicU64::default(),
            broadcast_deliveries: AtomicU64::default(),
            address_requests: AtomicU64::default(),
            address_grants: AtomicU64::default(),
            streams_too_slow: AtomicU64::default(),
            send_to_commit: latency_histogram(),
            send_to_delivery: latency_histogram(),
            rpc_calls: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// Buckets from 100 µs to about 13 s, doubling: a commit takes a fraction of a millisecond on
/// an idle disk and seconds on a saturated one.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// Records `elapsed` in `histogram`, in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
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
