//! The PostgreSQL store's plumbing: a tokio runtime of its own, connections that come back by
//! themselves, and the line between "PostgreSQL is unreachable" and every other failure.
//!
//! The [`Store`](super::Store) trait is synchronous and is called from the writer thread, from
//! `spawn_blocking` and once from async start-up code. A blocking PostgreSQL client must not be
//! driven from a tokio worker thread (the sync `postgres` crate starts a runtime per call and
//! panics inside another one), so the store runs tokio-postgres on a current-thread runtime on
//! a thread of its own, and callers wait for the answer on a plain channel. That also lets a
//! batch pipeline its statements: they are all sent before the first reply is read.

use std::{collections::HashMap, future::Future, sync::mpsc, thread, time::Duration};

use anyhow::{Context, anyhow};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls, Statement, error::SqlState};

use super::Unavailable;

/// How long connecting may take before PostgreSQL counts as unreachable.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call (a whole batch, or one read) may take before PostgreSQL counts as
/// unreachable: a server that accepts connections but never answers must not hang senders.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The thread and runtime the store's connections live on. Dropping it stops both.
pub(super) struct Runtime {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the runtime thread's `block_on`.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Runtime {
    pub(super) fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        thread::Builder::new()
            .name("confab-postgres".into())
            .spawn(move || {
                // Connections are tasks on this runtime; they end when it is dropped here.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Runtime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `f` on the store's runtime and blocks the calling thread until it is done. Safe to
    /// call from any thread, including a tokio worker (it never enters a runtime itself).
    pub(super) fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // A backstop: connecting and each call have their own, shorter limits.
            let limit = CONNECT_TIMEOUT + CALL_TIMEOUT * 2;
            let result = match tokio::time::timeout(limit, f).await {
                Ok(result) => result,
                Err(_) => {
                    Err(Unavailable(format!("PostgreSQL did not answer within {limit:?}")).into())
                }
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| anyhow!("the PostgreSQL runtime has stopped"))?
    }
}

/// One connection, opened on first use and again after it breaks.
pub(super) struct Conn {
    config: tokio_postgres::Config,
    client: Mutex<Option<Session>>,
}

/// An open connection and the statements prepared on it.
pub(super) struct Session {
    pub(super) client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl Session {
    /// `sql` prepared on this connection (once; later calls reuse it), so running it is one
    /// message to the server and statements can be pipelined.
    pub(super) async fn prepare(&mut self, sql: &'static str) -> anyhow::Result<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }
}

impl Conn {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        Conn {
            config,
            client: Mutex::new(None),
        }
    }

    /// The open client, connecting first if there is none or it has closed. Must run on the
    /// store's runtime (the connection becomes a task there).
    async fn get(&self) -> anyhow::Result<MutexGuard<'_, Option<Session>>> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|s| s.client.is_closed()) {
            *slot = None;
            let connecting = self.config.connect(NoTls);
            let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await
            {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(classify(e).context(describe(&self.config))),
                Err(_) => {
                    return Err(anyhow::Error::new(Unavailable(format!(
                        "connecting took longer than {CONNECT_TIMEOUT:?}"
                    )))
                    .context(describe(&self.config)));
                }
            };
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("PostgreSQL connection lost: {e}");
                }
            });
            *slot = Some(Session {
                client,
                prepared: HashMap::new(),
            });
        }
        Ok(slot)
    }
}

/// Where the store connects, for messages: hosts and database, never the password.
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(h) => format!("{h}:{port}"),
            #[cfg(unix)]
            Host::Unix(p) => format!("{}", p.display()),
        })
        .collect();
    format!(
        "PostgreSQL at {} (database {})",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

/// Parses a `postgres://` URL (or key=value string) into a client configuration.
pub(super) fn parse(url: &str) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        // The parser's message may quote the URL, password included; say what is wrong without it.
        .map_err(|_| anyhow!("--store is not a valid PostgreSQL URL (postgres://user:password@host:port/database)"))?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("confab");
    if config.get_hosts().is_empty() {
        anyhow::bail!("--store needs a host: postgres://user:password@host:port/database");
    }
    Ok(config)
}

/// Turns a client error into [`Unavailable`] when it means PostgreSQL cannot be reached (closed
/// or refused connections, a server shutting down or starting), and into a plain error
/// otherwise.
pub(super) fn classify(e: tokio_postgres::Error) -> anyhow::Error {
    if is_unavailable(&e) {
        anyhow::Error::new(Unavailable(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down, crashed or
        // is starting up; 53300: it has no connection slot left.
        return code.starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .iter()
            .any(|s| s.code() == code);
    }
    // Not an answer from the server: an I/O failure on the socket is the server being gone;
    // anything else (a value that does not convert) is a bug, not an outage.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether retrying the whole transaction may succeed: another node's transaction won a lock
/// cycle (deadlock) or a serialization conflict.
pub(super) fn is_conflict(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Runs `f` with the connection's session. Client errors come back [`classify`]d, and one that
/// means the connection is gone drops it, so the next call reconnects.
pub(super) async fn with_session<T>(
    conn: &Conn,
    f: impl AsyncFnOnce(&mut Session) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut slot = conn.get().await?;
    let session = slot.as_mut().context("no PostgreSQL connection")?;
    let result = match tokio::time::timeout(CALL_TIMEOUT, f(session)).await {
        Ok(result) => result.map_err(|e| match e.downcast::<tokio_postgres::Error>() {
            Ok(pg) => classify(pg),
            Err(other) => other,
        }),
        // A server that keeps the connection open but stops answering: start afresh next time.
        Err(_) => {
            Err(Unavailable(format!("PostgreSQL did not answer within {CALL_TIMEOUT:?}")).into())
        }
    };
    if let Err(e) = &result
        && (e.downcast_ref::<Unavailable>().is_some() || session.client.is_closed())
    {
        *slot = None;
    }
    result
}
