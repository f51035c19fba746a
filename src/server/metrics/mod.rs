//! `/metrics`: the server's counters, gauges and latency histograms in the Prometheus text
//! format (SPEC §14), on its own listener (`--metrics-listen`), off by default.
//!
//! This module owns the exposition only. The numbers live where they happen
//! ([`super::core::stats::Stats`], also read by `Admin/GetStats`, the session table, the writer,
//! the store): each scrape reads them into a fresh registry, so nothing here can drift from what
//! the Admin service reports. Per-RPC counts and latency come from [`rpc::RpcMetricsLayer`], a
//! tower layer on the gRPC server.

pub mod http;
pub mod rpc;

use std::sync::{Arc, atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::ConstCounter, family::Family, gauge::ConstGauge},
    registry::Registry,
};

use super::core::{Core, stats};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `status` label of `confab_messages_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageStatus {
    status: &'static str,
}

/// Every metric, as of now, in the Prometheus text format.
///
/// # Errors
/// The store cannot count the inboxes.
pub async fn render(core: &Arc<Core>) -> anyhow::Result<String> {
    let store = core.store.clone();
    // Inbox depth is the store's to know (it survives restarts); reading it is a query.
    let inboxes = tokio::task::spawn_blocking(move || store.inbox_counts()).await??;
    let s = &core.stats;
    let get = stats::get;
    let counter = |c: &AtomicU64| ConstCounter::new(get(c));
    let mut r = Registry::with_prefix("confab");

    r.register(
        "sessions",
        "Live sessions (logged-in users)",
        ConstGauge::new(gauge(core.sessions.len() as u64)),
    );
    r.register(
        "users",
        "Registered accounts",
        ConstGauge::new(gauge(core.accounts.len() as u64)),
    );
    r.register(
        "uptime_seconds",
        "Seconds since the server started",
        ConstGauge::new(gauge(core.started.elapsed().as_secs())),
    );
    r.register("logins", "Successful logins", counter(&s.logins));
    r.register(
        "login_failures",
        "Failed logins (wrong password, unknown user, locked)",
        counter(&s.failed_logins),
    );
    r.register("lockouts", "Lockouts started", counter(&s.lockouts));

    let relayed = get(&s.messages_relayed);
    let live = get(&s.messages_delivered_live);
    let messages = Family::<MessageStatus, prometheus_client::metrics::counter::Counter>::default();
    messages
        .get_or_create(&MessageStatus {
            status: "delivered",
        })
        .inc_by(live);
    messages
        .get_or_create(&MessageStatus { status: "stored" })
        .inc_by(relayed.saturating_sub(live));
    r.register(
        "messages",
        "Direct messages committed, by what their sender was told: delivered (queued on a live \
         stream) or stored (for later)",
        messages,
    );
    r.register("broadcasts", "Broadcasts sent", counter(&s.broadcasts));
    r.register(
        "broadcast_deliveries",
        "Broadcast copies queued on live streams",
        counter(&s.broadcast_deliveries),
    );
    r.register(
        "inbox_depth",
        "Stored, unacknowledged direct messages, all users",
        ConstGauge::new(gauge(inboxes.iter().map(|(_, n)| n).sum())),
    );
    r.register(
        "inbox_depth_max",
        "Stored, unacknowledged direct messages of the fullest inbox",
        ConstGauge::new(gauge(inboxes.iter().map(|(_, n)| *n).max().unwrap_or(0))),
    );
    r.register(
        "commit_batches",
        "Store transactions committed (each a batch of writes)",
        ConstCounter::new(core.writer.commits()),
    );
    r.register(
        "send_to_commit_seconds",
        "From a SendMessage reaching the server to its commit",
        s.send_to_commit.clone(),
    );
    r.register(
        "send_to_delivery_seconds",
        "From a direct message's send to its queueing on the recipient's live stream",
        s.send_to_delivery.clone(),
    );
    r.register(
        "slow_reader_disconnects",
        "Sessions ended because their stream stopped reading (TOO_SLOW)",
        counter(&s.streams_too_slow),
    );
    r.register(
        "address_requests",
        "Address requests made",
        counter(&s.address_requests),
    );
    r.register(
        "address_grants",
        "Address requests granted",
        counter(&s.address_grants),
    );
    r.register(
        "rpc_calls",
        "gRPC calls answered, by method and status code",
        s.rpc_calls.clone(),
    );
    r.register(
        "rpc_seconds",
        "Seconds until a gRPC call's response headers (a stream: its start), by method",
        s.rpc_seconds.clone(),
    );

    let mut text = String::new();
    prometheus_text::encode(&mut text, &r)?;
    Ok(text)
}

/// Gauges are signed; counts this large do not happen.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
