//! Every limit and setting of the message center, in one value the rest of the server reads.
//!
//! `confab serve` builds it from flags (each with an environment fallback); tests build it with
//! [`Config::for_tests`] and change the one limit they exercise.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// The server's settings. Field docs name the flag that sets each one.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--data-dir`: the SQLite database and the admin token live here.
    pub data_dir: PathBuf,
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
    /// `--max-login-attempts`: consecutive failures before a lockout.
    pub max_login_attempts: u32,
    /// `--block-duration`: how long a lockout lasts.
    pub block_duration: Duration,
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
        let heartbeat_interval = Duration::from_secs(30);
        Config {
            listen,
            data_dir,
            users_file: None,
            registration: true,
            admin_token_file: None,
            tls: None,
            allow_insecure: false,
            max_login_attempts: 3,
            block_duration: Duration::from_secs(60),
            login_rate: 5.0,
            login_burst: 30.0,
            heartbeat_interval,
            session_timeout: heartbeat_interval * 3,
            max_message_bytes: 4096,
            max_inbox: 10_000,
            stream_queue: 1024,
            send_rate: 50.0,
            send_burst: 100.0,
            consent_timeout: Duration::from_secs(60),
            consent_cooldown: Duration::from_secs(300),
            max_pending_requests: 8,
            sync: Default::default(),
            repair: false,
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
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }
}
