//! Every limit and setting of the message center, in one value the rest of the server reads.
//!
//! `confab serve` builds it from flags (each with an environment fallback); tests build it with
//! [`Config::for_tests`] and change the one limit they exercise.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use crate::types::Secret;

/// The production defaults: [`Config::new`] and the flags of `confab serve` (their `--help`)
/// both read these, so a default is written once.
pub mod defaults {
    use super::*;

    /// SPEC §1: the port confab listens on by default.
    pub const PORT: u16 = crate::types::DEFAULT_PORT;
    /// `--listen`: loopback only until told otherwise.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, PORT));
    /// `--data-dir`.
    pub const DATA_DIR: &str = "./confab-data";
    /// The admin token's file inside the data directory.
    pub const ADMIN_TOKEN_FILE: &str = "admin.token";
    /// `--max-login-attempts` (SPEC §2).
    pub const MAX_LOGIN_ATTEMPTS: u32 = 3;
    /// `--block-duration` (SPEC §2).
    pub const BLOCK_DURATION: Duration = Duration::from_secs(60);
    /// `--device-tickets`: device tickets kept per user (SPEC §2), one per device a person
    /// logs in from; the oldest is forgotten beyond it.
    pub const DEVICE_TICKETS: u32 = 16;
    /// `--login-rate`.
    pub const LOGIN_RATE: f64 = 5.0;
    /// `--login-burst`.
    pub const LOGIN_BURST: f64 = 30.0;
    /// `--heartbeat-interval` (SPEC §3).
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
    /// `--session-timeout` is this many heartbeat intervals unless given (SPEC §3).
    pub const SESSION_TIMEOUT_HEARTBEATS: u32 = 3;
    /// `--max-message-bytes` (SPEC §4).
    pub const MAX_MESSAGE_BYTES: usize = 4096;
    /// `--max-inbox` (SPEC §4).
    pub const MAX_INBOX: u64 = 10_000;
    /// `--stream-queue`.
    pub const STREAM_QUEUE: usize = 1024;
    /// `--send-rate`.
    pub const SEND_RATE: f64 = 50.0;
    /// `--send-burst`.
    pub const SEND_BURST: f64 = 100.0;
    /// `--consent-timeout` (SPEC §6).
    pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(60);
    /// `--consent-cooldown` (SPEC §6).
    pub const CONSENT_COOLDOWN: Duration = Duration::from_secs(300);
    /// `--max-pending-requests`.
    pub const MAX_PENDING_REQUESTS: usize = 8;
    /// `--max-connections`: above the 10 000 users SPEC §10 loads, below what a default hard
    /// open-file limit allows.
    pub const MAX_CONNECTIONS: usize = 16_384;
    /// `--max-connections-per-address`: room for an office behind one NAT address, not for one
    /// host to take every slot.
    pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
    /// `--handshake-timeout`: a client sends its first request right after connecting.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// `--login-timeout`: time to type a password on a connection opened before asking.
    pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
    /// `--keepalive-interval`: as the heartbeat, so an idle connection is pinged as often as a
    /// live client speaks.
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
    /// `--keepalive-timeout`: hyper's default.
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
    /// `--max-streams-per-connection`: a chat client uses a handful; gRPC servers commonly
    /// allow 100.
    pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

    /// `--node-id`: the host's name and the port, unique for every node a machine runs
    /// (two nodes with one name would take each other's sessions for their own).
    pub fn node_id(listen: SocketAddr) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| {
                h.trim()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        format!("{host}-{}", listen.port())
    }
}

/// The server's settings. Field docs name the flag that sets each one.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--data-dir`: the SQLite database and the admin token live here.
    pub data_dir: PathBuf,
    /// `--store`: a `postgres://` URL for the durable data; `None` keeps it in SQLite in
    /// `data_dir`. A secret, since the URL may carry the database password.
    pub store: Option<Secret>,
    /// `--bus`: a `nats://` URL making this server a node of a cluster (needs `store`);
    /// `None`: a lone server. A secret, since the URL may carry credentials.
    pub bus: Option<Secret>,
    /// `--bus-ca`: the CA certificate(s) the NATS server's certificate must chain to, for a
    /// bus on TLS with a private CA; `None`: the system's roots, TLS only if the URL asks.
    pub bus_ca: Option<PathBuf>,
    /// `--node-id`: this node's name in the cluster; default [`defaults::node_id`].
    pub node_id: Option<String>,
    /// How long a cluster node gathers its logins and logouts before publishing them to the
    /// others in one batch. Not a flag: the presence window (`core::feed::WINDOW`); tests
    /// lengthen it to show that delivery never waits for it.
    pub cluster_presence_window: Duration,
    /// `--users`: the assignment's credentials file, imported at start.
    pub users_file: Option<PathBuf>,
    /// `--no-registration` clears it.
    pub registration: bool,
    /// `--admin-token-file`; default `DATA_DIR/admin.token`.
    pub admin_token_file: Option<PathBuf>,
    /// `--tls-cert` / `--tls-key` (PEM).
    pub tls: Option<TlsFiles>,
    /// `--allow-insecure`: plaintext on a non-loopback address.
    pub allow_insecure: bool,
    /// `--metrics-listen`: where `/metrics` is served (SPEC §14); off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--max-login-attempts`: consecutive failures before a lockout.
    pub max_login_attempts: u32,
    /// `--block-duration`: how long a lockout lasts.
    pub block_duration: Duration,
    /// `--device-tickets`: device tickets kept per user; the oldest are forgotten.
    pub device_tickets: u32,
    /// `--login-rate` / `--login-burst`: login and register attempts per second per source
    /// address, and the burst allowed.
    pub login_rate: f64,
    /// See `login_rate`.
    pub login_burst: f64,
    /// `--heartbeat-interval`, told to clients at login.
    pub heartbeat_interval: Duration,
    /// `--session-timeout`: no call for this long ends a session.
    pub session_timeout: Duration,
    /// `--max-message-bytes`.
    pub max_message_bytes: usize,
    /// `--max-inbox`: stored, unacknowledged messages per user.
    pub max_inbox: u64,
    /// `--stream-queue`: events waiting for a slow reader before it is disconnected.
    pub stream_queue: usize,
    /// `--send-rate` / `--send-burst`: messages and broadcasts per second per session.
    pub send_rate: f64,
    /// See `send_rate`.
    pub send_burst: f64,
    /// `--consent-timeout`: an address request nobody answers is denied after this.
    pub consent_timeout: Duration,
    /// `--consent-cooldown`: after a decline, the same requester waits this long.
    pub consent_cooldown: Duration,
    /// `--max-pending-requests`: address requests waiting on one user.
    pub max_pending_requests: usize,
    /// `--sync`: whether each group commit is synced to disk (survives a power cut) or only
    /// written (survives the process dying).
    pub sync: crate::server::store::sqlite::Sync,
    /// `--repair`: if the store fails its checks at start, recover what is readable into a fresh
    /// one (the damaged files are kept aside) instead of refusing to start.
    pub repair: bool,
    /// `--max-connections`: open gRPC connections, all addresses together; one more is closed
    /// as soon as it is accepted.
    pub max_connections: usize,
    /// `--max-connections-per-address`: open gRPC connections from one source address (IPv6:
    /// one /64), so one host cannot take every slot.
    pub max_connections_per_address: usize,
    /// `--handshake-timeout`: a connection that has sent no complete HTTP/2 request this long
    /// after it was accepted is closed.
    pub handshake_timeout: Duration,
    /// `--login-timeout`: a connection with no successful `Login`/`Register` and no
    /// authenticated call this long after it was accepted is closed.
    pub login_timeout: Duration,
    /// `--keepalive-interval`: an HTTP/2 PING after this long without hearing from the client.
    pub keepalive_interval: Duration,
    /// `--keepalive-timeout`: a PING unanswered this long closes the connection (a dead peer).
    pub keepalive_timeout: Duration,
    /// `--max-streams-per-connection`: HTTP/2 `MAX_CONCURRENT_STREAMS`; calls beyond it wait in
    /// the client (or are refused, if it ignores the setting).
    pub max_streams_per_connection: u32,
    /// `--bench-fast-hash`: a cheap argon2id cost so a load test can create 10 000 accounts in
    /// seconds. Never for production: it makes stolen hashes cheap to crack.
    pub fast_hash: bool,
}

/// Paths of the server's TLS certificate chain and private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Config {
    /// The production defaults of SPEC §2–6 for a server on `listen` keeping data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        use defaults as d;
        Config {
            listen,
            data_dir,
            store: None,
            bus: None,
            bus_ca: None,
            node_id: None,
            cluster_presence_window: crate::server::core::feed::WINDOW,
            users_file: None,
            registration: true,
            admin_token_file: None,
            tls: None,
            allow_insecure: false,
            metrics_listen: None,
            max_login_attempts: d::MAX_LOGIN_ATTEMPTS,
            block_duration: d::BLOCK_DURATION,
            device_tickets: d::DEVICE_TICKETS,
            login_rate: d::LOGIN_RATE,
            login_burst: d::LOGIN_BURST,
            heartbeat_interval: d::HEARTBEAT_INTERVAL,
            session_timeout: d::HEARTBEAT_INTERVAL * d::SESSION_TIMEOUT_HEARTBEATS,
            max_message_bytes: d::MAX_MESSAGE_BYTES,
            max_inbox: d::MAX_INBOX,
            stream_queue: d::STREAM_QUEUE,
            send_rate: d::SEND_RATE,
            send_burst: d::SEND_BURST,
            consent_timeout: d::CONSENT_TIMEOUT,
            consent_cooldown: d::CONSENT_COOLDOWN,
            max_pending_requests: d::MAX_PENDING_REQUESTS,
            sync: Default::default(),
            repair: false,
            max_connections: d::MAX_CONNECTIONS,
            max_connections_per_address: d::MAX_CONNECTIONS_PER_ADDRESS,
            handshake_timeout: d::HANDSHAKE_TIMEOUT,
            login_timeout: d::LOGIN_TIMEOUT,
            keepalive_interval: d::KEEPALIVE_INTERVAL,
            keepalive_timeout: d::KEEPALIVE_TIMEOUT,
            max_streams_per_connection: d::MAX_STREAMS_PER_CONNECTION,
            fast_hash: false,
        }
    }

    /// Defaults for integration tests: loopback, cheap hashing, and limits loose enough that only
    /// the test that exercises a limit meets it.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Config {
            fast_hash: true,
            login_rate: 1000.0,
            login_burst: 1000.0,
            send_rate: 10_000.0,
            send_burst: 10_000.0,
            ..Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir)
        }
    }

    /// Where the admin token is read from or written to.
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(defaults::ADMIN_TOKEN_FILE))
    }
}
