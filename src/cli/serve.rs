//! `confab serve`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;

use crate::{
    server::{
        self, Config,
        config::{TlsFiles, defaults},
        store::sqlite::Sync,
    },
    types::Secret,
};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML file (keys are the flag names: `listen = "0.0.0.0:4119"`).
    /// A flag beats its environment variable, which beats the file, which beats the default.
    #[arg(long, env = "CONFAB_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log lines as readable text or as JSON objects, one per line.
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_enum, default_value_t)]
    pub(crate) log_format: super::logs::LogFormat,
    /// Address to listen on.
    #[arg(long, env = "CONFAB_LISTEN", default_value_t = defaults::LISTEN)]
    listen: SocketAddr,
    /// Directory for the database and the admin token.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// Where durable data lives: a PostgreSQL URL (postgres://user:password@host:port/database),
    /// or by default the SQLite file in --data-dir.
    // Checked when the store opens, not by clap, whose refusal would quote the URL (password
    // and all).
    #[arg(long, env = "CONFAB_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Make this server a node of a cluster: the NATS server that carries events between the
    /// nodes (nats://host:4222; nats://user:password@host:4222 or nats://token@host:4222 when
    /// it asks for credentials; tls://host:4222 for TLS). Needs --store postgres://… shared by
    /// every node.
    #[arg(long, env = "CONFAB_BUS", hide_env_values = true, value_name = "URL")]
    bus: Option<String>,
    /// The CA certificate (PEM) the NATS server's certificate is checked against, when a
    /// private CA signed it; implies TLS on the bus.
    #[arg(long, env = "CONFAB_BUS_CA", value_name = "FILE", requires = "bus")]
    bus_ca: Option<PathBuf>,
    /// This node's name in the cluster (letters, digits, '-', '_'); default: the host name and
    /// the port.
    #[arg(long, env = "CONFAB_NODE_ID", value_name = "NAME")]
    node_id: Option<String>,
    /// Credentials file (`username password` per line); missing users are created at start.
    #[arg(long, env = "CONFAB_USERS")]
    users: Option<PathBuf>,
    /// Refuse self-registration (accounts then come from --users or the Admin service).
    #[arg(long, env = "CONFAB_NO_REGISTRATION")]
    no_registration: bool,
    /// Admin token file (default: DATA_DIR/admin.token, generated at first start).
    #[arg(long, env = "CONFAB_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "CONFAB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CONFAB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow plaintext on a non-loopback address (passwords and tokens cross the network in clear).
    #[arg(long, env = "CONFAB_ALLOW_INSECURE")]
    allow_insecure: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, env = "CONFAB_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Consecutive failed logins before a username is locked.
    #[arg(long, env = "CONFAB_MAX_LOGIN_ATTEMPTS", default_value_t = defaults::MAX_LOGIN_ATTEMPTS)]
    max_login_attempts: u32,
    /// How long a lockout lasts.
    #[arg(long, env = "CONFAB_BLOCK_DURATION", default_value_t = defaults::BLOCK_DURATION.into(), value_parser = duration)]
    block_duration: humantime::Duration,
    /// Device tickets kept per user (one per device logged in from); the oldest is forgotten.
    #[arg(long, env = "CONFAB_DEVICE_TICKETS", default_value_t = defaults::DEVICE_TICKETS, value_parser = clap::value_parser!(u32).range(1..))]
    device_tickets: u32,
    /// Login and register attempts per second allowed from one address.
    #[arg(long, env = "CONFAB_LOGIN_RATE", default_value_t = defaults::LOGIN_RATE)]
    login_rate: f64,
    /// Burst of login attempts allowed from one address.
    #[arg(long, env = "CONFAB_LOGIN_BURST", default_value_t = defaults::LOGIN_BURST)]
    login_burst: f64,
    /// How often clients send heartbeats.
    #[arg(long, env = "CONFAB_HEARTBEAT_INTERVAL", default_value_t = defaults::HEARTBEAT_INTERVAL.into(), value_parser = duration)]
    heartbeat_interval: humantime::Duration,
    /// A session with no call for this long is ended (default: 3 × the heartbeat interval).
    #[arg(long, env = "CONFAB_SESSION_TIMEOUT", value_parser = super::duration)]
    session_timeout: Option<Duration>,
    /// Largest message body in bytes.
    #[arg(long, env = "CONFAB_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Unacknowledged messages kept per user; further messages are refused.
    #[arg(long, env = "CONFAB_MAX_INBOX", default_value_t = defaults::MAX_INBOX)]
    max_inbox: u64,
    /// Events queued for one stream before a client that stopped reading is disconnected.
    #[arg(long, env = "CONFAB_STREAM_QUEUE", default_value_t = defaults::STREAM_QUEUE)]
    stream_queue: usize,
    /// Messages and broadcasts per second per session.
    #[arg(long, env = "CONFAB_SEND_RATE", default_value_t = defaults::SEND_RATE)]
    send_rate: f64,
    /// Burst of messages per session.
    #[arg(long, env = "CONFAB_SEND_BURST", default_value_t = defaults::SEND_BURST)]
    send_burst: f64,
    /// An address request nobody answers is denied after this.
    #[arg(long, env = "CONFAB_CONSENT_TIMEOUT", default_value_t = defaults::CONSENT_TIMEOUT.into(), value_parser = duration)]
    consent_timeout: humantime::Duration,
    /// After a decline, the same requester may not ask the same user again for this long.
    #[arg(long, env = "CONFAB_CONSENT_COOLDOWN", default_value_t = defaults::CONSENT_COOLDOWN.into(), value_parser = duration)]
    consent_cooldown: humantime::Duration,
    /// Address requests that may wait on one user.
    #[arg(long, env = "CONFAB_MAX_PENDING_REQUESTS", default_value_t = defaults::MAX_PENDING_REQUESTS)]
    max_pending_requests: usize,
    /// When a message counts as stored: `normal` (written; survives the server process dying)
    /// or `full` (synced to disk at each group commit; also survives a power cut, at a cost).
    #[arg(long, env = "CONFAB_SYNC", value_enum, default_value = "normal")]
    sync: SyncArg,
    /// If the store fails its checks at start, recover what is readable into a fresh database
    /// (the damaged files are kept in DATA_DIR/damaged-TIME/) and start, instead of refusing.
    #[arg(long, env = "CONFAB_REPAIR")]
    repair: bool,
    /// Open connections allowed in total; one more is closed as soon as it is accepted.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Open connections allowed from one source address (IPv6: one /64).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = defaults::MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// A connection that has not sent an HTTP/2 request this long after connecting is closed.
    #[arg(long, env = "CONFAB_HANDSHAKE_TIMEOUT", default_value_t = defaults::HANDSHAKE_TIMEOUT.into(), value_parser = duration)]
    handshake_timeout: humantime::Duration,
    /// A connection that has not logged in (or made an authenticated call) this long after
    /// connecting is closed.
    #[arg(long, env = "CONFAB_LOGIN_TIMEOUT", default_value_t = defaults::LOGIN_TIMEOUT.into(), value_parser = duration)]
    login_timeout: humantime::Duration,
    /// An HTTP/2 PING is sent after this long without hearing from a client.
    #[arg(long, env = "CONFAB_KEEPALIVE_INTERVAL", default_value_t = defaults::KEEPALIVE_INTERVAL.into(), value_parser = duration)]
    keepalive_interval: humantime::Duration,
    /// A PING unanswered for this long closes the connection.
    #[arg(long, env = "CONFAB_KEEPALIVE_TIMEOUT", default_value_t = defaults::KEEPALIVE_TIMEOUT.into(), value_parser = duration)]
    keepalive_timeout: humantime::Duration,
    /// Concurrent calls (HTTP/2 streams) allowed on one connection.
    #[arg(long, env = "CONFAB_MAX_STREAMS_PER_CONNECTION", default_value_t = defaults::MAX_STREAMS_PER_CONNECTION)]
    max_streams_per_connection: u32,
    /// Load tests only: a cheap password hash cost so thousands of accounts are created in
    /// seconds. Never in production.
    #[arg(long, env = "CONFAB_BENCH_FAST_HASH", hide = true)]
    bench_fast_hash: bool,
}

/// `--sync` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SyncArg {
    /// Survives the process dying.
    Normal,
    /// Survives a power cut.
    Full,
}

impl ServeArgs {
    fn into_config(self) -> Config {
        let mut c = Config::new(self.listen, self.data_dir);
        c.store = self.store.map(Secret::new);
        c.bus = self.bus.map(Secret::new);
        c.bus_ca = self.bus_ca;
        c.node_id = self.node_id;
        c.users_file = self.users;
        c.registration = !self.no_registration;
        c.admin_token_file = self.admin_token_file;
        c.tls = self
            .tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key });
        c.allow_insecure = self.allow_insecure;
        c.metrics_listen = self.metrics_listen;
        c.max_login_attempts = self.max_login_attempts;
        c.block_duration = self.block_duration.into();
        c.device_tickets = self.device_tickets;
        c.login_rate = self.login_rate;
        c.login_burst = self.login_burst;
        c.heartbeat_interval = self.heartbeat_interval.into();
        c.session_timeout = self
            .session_timeout
            .unwrap_or(c.heartbeat_interval * defaults::SESSION_TIMEOUT_HEARTBEATS);
        c.max_message_bytes = self.max_message_bytes;
        c.max_inbox = self.max_inbox;
        c.stream_queue = self.stream_queue;
        c.send_rate = self.send_rate;
        c.send_burst = self.send_burst;
        c.consent_timeout = self.consent_timeout.into();
        c.consent_cooldown = self.consent_cooldown.into();
        c.max_pending_requests = self.max_pending_requests;
        c.sync = match self.sync {
            SyncArg::Normal => Sync::Normal,
            SyncArg::Full => Sync::Full,
        };
        c.repair = self.repair;
        c.max_connections = self.max_connections;
        c.max_connections_per_address = self.max_connections_per_address;
        c.handshake_timeout = self.handshake_timeout.into();
        c.login_timeout = self.login_timeout.into();
        c.keepalive_interval = self.keepalive_interval.into();
        c.keepalive_timeout = self.keepalive_timeout.into();
        c.max_streams_per_connection = self.max_streams_per_connection;
        c.fast_hash = self.bench_fast_hash;
        c
    }
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    no_huge_pages();
    let config = args.into_config();
    if config.fast_hash {
        tracing::warn!("--bench-fast-hash: password hashes are cheap to crack; load tests only");
    }
    // Handlers installed before anything says "listening": a SIGTERM sent the moment the line
    // appears stops the server cleanly instead of killing it.
    let mut signals = crate::signal::Signals::new();
    let handle = server::start(config).await?;
    // Printed for scripts and tests that start the server on port 0; the listening line last,
    // so a reader can stop at it.
    if let Some(at) = handle.metrics_addr {
        println!("confab metrics on http://{at}/metrics");
    }
    println!("confab listening on {}", handle.addr);
    let shutdown = handle.shutdown.clone();
    tokio::spawn(async move {
        signals.recv().await;
        shutdown.cancel();
    });
    handle.task.await.context("the server task failed")?
}

/// Turns transparent huge pages off for the server unless `MIMALLOC_ALLOW_THP=1` asks for them.
/// mimalloc marks its arena for huge pages, and the kernel's khugepaged then fills partly used
/// 2 MiB regions in: measured, a user costs half the memory without them (29 instead of 51 KiB
/// at 1000 users; 395 instead of 650 MiB at 10 000), for ≈ 4 % more CPU per message
/// (BENCHMARKS.md, "The climb at 10 000 users").
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        let asked = std::env::var("MIMALLOC_ALLOW_THP")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "on" | "yes"));
        if !asked && let Err(e) = nix::sys::prctl::set_thp_disable(true) {
            tracing::debug!("could not turn transparent huge pages off: {e}");
        }
    }
}

/// A duration flag whose default `--help` can print (`1m`, `30s`).
fn duration(s: &str) -> Result<humantime::Duration, String> {
    super::duration(s).map(Into::into)
}
