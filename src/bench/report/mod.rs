//! What a run found: one record per phase and target, the machine it ran on, printed as a table
//! (confab beside the relay beside issue 6's targets) or as JSON for scripts and tests.
//!
//! Units are in the field names (`_us`, `_ms`, `_kib`, `_per_s`); JSON keeps them as plain
//! numbers so nothing has to parse "1.2 ms".

use serde::Serialize;

use super::{args::Settings, cpu::PerMessage, stats::Latency};

mod table;

/// Phase 1: connecting and logging in every user.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Connect {
    pub(crate) users: usize,
    pub(crate) register_per_s: f64,
    /// Connect + `Login`, each user its own connection.
    pub(crate) login_per_s: f64,
    /// `Subscribe` until live.
    pub(crate) subscribe_per_s: f64,
    pub(crate) rss_before_kib: Option<u64>,
    /// Every user connected and logged in, no stream open yet.
    pub(crate) rss_logged_in_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    /// (after − before) / users.
    pub(crate) memory_per_user_kib: Option<f64>,
}

/// Phase 2 (and each window of phase 5): direct messages at a fixed offered rate.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Offered {
    /// `unary` (SendMessage) or `stream` (SendStream).
    pub(crate) path: &'static str,
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    /// Sends the schedule issued.
    pub(crate) sent: u64,
    /// Of those, read from the recipient's stream.
    pub(crate) delivered: u64,
    /// Sends the server refused or that failed.
    pub(crate) errors: u64,
    pub(crate) delivered_fraction: f64,
    /// Scheduled send time → arrival on the recipient's stream.
    pub(crate) latency: Latency,
    /// How late the load generator issued sends (already inside `latency`).
    pub(crate) pacer_lag: Latency,
    /// Server CPU from the first send until the last arrival, per delivered message.
    pub(crate) server_cpu: Option<PerMessage>,
    pub(crate) first_error: Option<String>,
}

/// Phase 3: one row per send path.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Saturation {
    /// `unary` (SendMessage) or `stream` (SendStream).
    pub(crate) path: &'static str,
    pub(crate) senders: usize,
    /// Sends outstanding per sender.
    pub(crate) window: usize,
    pub(crate) seconds: f64,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) errors: u64,
    pub(crate) msgs_per_s: f64,
    /// Send start → arrival.
    pub(crate) latency: Latency,
    /// Server CPU (user + system) from the start of the phase until every delivery.
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cpu_per_msg_us: Option<f64>,
    /// The same by part (a cluster's nodes, PostgreSQL, NATS).
    pub(crate) server_cpu: Option<PerMessage>,
    /// The load generator's own CPU per message over the same span (it shares the machine).
    pub(crate) bench_cpu_per_msg_us: Option<f64>,
    pub(crate) first_error: Option<String>,
}

/// Phase 4: one user broadcasts to everybody else.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Broadcast {
    pub(crate) recipients: usize,
    /// Broadcast send → last of the recipients' deliveries, each round.
    pub(crate) last_delivery_ms: Vec<f64>,
    pub(crate) last_delivery_median_ms: f64,
    /// Every round reached every recipient.
    pub(crate) complete: bool,
}

/// Phase 5: the offered load of phase 2, quiet and then during a login storm.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Storm {
    pub(crate) quiet: Offered,
    pub(crate) storm: Offered,
    pub(crate) storm_users: usize,
    /// Login + logout cycles completed during the storm window.
    pub(crate) storm_logins: u64,
    pub(crate) storm_logins_per_s: f64,
    pub(crate) storm_errors: u64,
    pub(crate) storm_first_error: Option<String>,
    /// storm p99 / quiet p99.
    pub(crate) p99_ratio: f64,
}

/// Phase 6: private messages over the peer path.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Peer {
    pub(crate) messages: u64,
    pub(crate) errors: u64,
    /// connect + Noise IK + message + ack, as `peer::send` returns.
    pub(crate) latency: Latency,
    pub(crate) first_error: Option<String>,
}

/// Phase 7: one file between two `confab chat`s, and scp as the anchor.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileTransfer {
    pub(crate) bytes: u64,
    /// From the `sendfile` line to the sender's `file_sent`.
    pub(crate) seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub(crate) mb_per_s: f64,
    /// Resident memory before the transfer and its peak during it.
    pub(crate) sender_rss_kib: (u64, u64),
    pub(crate) receiver_rss_kib: (u64, u64),
    /// The same file through scp to localhost, in the same run.
    pub(crate) scp_mb_per_s: Option<f64>,
    /// Why there is no scp figure.
    pub(crate) scp_missing: Option<String>,
}

/// Phase 8: users joining while the others are online.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Join {
    pub(crate) users: usize,
    /// From the first connect to the last stream live.
    pub(crate) seconds: f64,
    pub(crate) joins_per_s: f64,
    /// The server's CPU seconds over the phase, when its pid is known.
    pub(crate) server_cpu_s: Option<f64>,
    /// Presence events the streams had read when the last user was live.
    pub(crate) presence_events: u64,
}

/// Everything measured on one target.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetReport {
    pub(crate) target: &'static str,
    pub(crate) connect: Option<Connect>,
    pub(crate) offered: Option<Offered>,
    /// Phase 2 again over `SendStream` (confab only).
    pub(crate) offered_stream: Option<Offered>,
    pub(crate) saturation: Vec<Saturation>,
    pub(crate) broadcast: Option<Broadcast>,
    pub(crate) storm: Option<Storm>,
    pub(crate) peer: Option<Peer>,
    pub(crate) file: Option<FileTransfer>,
    pub(crate) join: Option<Join>,
    /// Simulated users' sessions the server ended (should be 0: e.g. `TOO_SLOW`).
    pub(crate) sessions_ended_by_server: u64,
    /// Arrivals outside any measurement (late messages of an earlier phase, old inbox).
    pub(crate) stray_messages: u64,
    /// Simulated users' streams that ended without `SessionEnded` (should be 0), and the first
    /// one's reason.
    pub(crate) streams_lost: u64,
    pub(crate) first_stream_loss: Option<String>,
}

impl TargetReport {
    /// An empty report for `target`.
    pub(crate) fn new(target: &'static str) -> TargetReport {
        TargetReport {
            target,
            connect: None,
            offered: None,
            offered_stream: None,
            saturation: Vec::new(),
            broadcast: None,
            storm: None,
            peer: None,
            file: None,
            join: None,
            sessions_ended_by_server: 0,
            stray_messages: 0,
            streams_lost: 0,
            first_stream_loss: None,
        }
    }

    fn saturation(&self, path: &str) -> Option<&Saturation> {
        self.saturation.iter().find(|s| s.path == path)
    }
}

/// The machine, for BENCHMARKS.md and for reading old JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    /// Ticks per second of /proc CPU times.
    pub(crate) clk_tck: u64,
}

impl Machine {
    /// This machine.
    pub(crate) fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |k| k.trim().to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel,
            clk_tck: super::proc::clk_tck(),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
    pub(crate) targets: Vec<TargetReport>,
    /// Against `--spawn-cluster`: the cluster and the PostgreSQL node beside the SQLite node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<crate::bench::cluster::Ratios>,
}

impl Report {
    /// The JSON form.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}
