//! The receiving side of the peer path: accepts connections, runs the responder's half of each
//! exchange in its own task, hands authenticated messages to the client and acknowledges them.
//!
//! Owns the current static keys and the allowlist of initiator keys. It never prompts, never
//! blocks on a peer: every connection gets a slot from a fixed number of them (excess are closed
//! at once) and one deadline for the whole exchange, and anything unexpected closes that
//! connection with a `debug!` line. Message bodies and private keys are never logged.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::file::{Downloads, FileEvent, FileLimits, FileReceiving};
use super::keyring::Keyring;
use super::noise::PeerKeys;
use super::responder::{Connection, Files, Inbound};

/// How long one connection may take, from accept to ack, before the listener closes it.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(5);
/// How many connections the listener serves at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How many received messages may wait for the client to take them. A sender whose message
/// finds the queue full waits (within the deadline) and gets no ack if it stays full.
pub const INBOUND_QUEUE: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The listener's bounds. [`Default`] is what the client uses; tests shorten the deadline.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Whole-exchange deadline per connection (default [`EXCHANGE_DEADLINE`]).
    pub deadline: Duration,
    /// Concurrent connections (default [`MAX_CONNECTIONS`]; at least 1).
    pub max_connections: usize,
    /// Capacity of the inbound channel (default [`INBOUND_QUEUE`]; at least 1).
    pub inbound_queue: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            deadline: EXCHANGE_DEADLINE,
            max_connections: MAX_CONNECTIONS,
            inbound_queue: INBOUND_QUEUE,
        }
    }
}

/// The listener: bound once at client start, keeps its port across logins.
///
/// A cheap handle; clones share one listener. It stops when [`shutdown`](Self::shutdown) is
/// called, when the last handle is dropped, or when the inbound receiver is dropped.
#[derive(Clone, Debug)]
pub struct PeerListener {
    keyring: Arc<Keyring>,
    /// Set by [`receive_files`](Self::receive_files); until then file offers are closed.
    files: Files,
    local_addr: SocketAddr,
    stop: CancellationToken,
    /// Cancels `stop` when the last handle goes; the accept task holds no handle, so this works.
    _stop_on_drop: Arc<DropGuard>,
}

impl PeerListener {
    /// Binds and starts accepting in a background tokio task; inbound messages go to the
    /// returned receiver. Uses [`ListenerLimits::default`].
    pub async fn bind(
        addr: SocketAddr,
        keys: PeerKeys,
    ) -> std::io::Result<(PeerListener, mpsc::Receiver<Inbound>)> {
        Self::bind_with(addr, keys, ListenerLimits::default()).await
    }

    /// [`bind`](Self::bind) with explicit limits.
    pub async fn bind_with(
        addr: SocketAddr,
        keys: PeerKeys,
        limits: ListenerLimits,
    ) -> std::io::Result<(PeerListener, mpsc::Receiver<Inbound>)> {
        let socket = TcpListener::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        let keyring = Arc::new(Keyring::new(keys));
        let files = Files::default();
        let stop = CancellationToken::new();
        // Clamped: tokio panics on a zero or absurdly large count.
        let (inbound, receiver) =
            mpsc::channel(limits.inbound_queue.clamp(1, Semaphore::MAX_PERMITS));
        let accept = AcceptLoop {
            socket,
            keyring: keyring.clone(),
            files: files.clone(),
            inbound,
            slots: Arc::new(Semaphore::new(
                limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            deadline: limits.deadline,
            stop: stop.clone(),
        };
        tokio::spawn(accept.run());
        debug!(%local_addr, "peer listener bound");
        let listener = PeerListener {
            keyring,
            files,
            local_addr,
            _stop_on_drop: Arc::new(stop.clone().drop_guard()),
            stop,
        };
        Ok((listener, receiver))
    }

    /// The address actually bound (the port is chosen by the system for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// New login: use these keys from now on and forget every allowed initiator.
    ///
    /// A connection whose handshake started under the old keys is refused.
    pub fn rekey(&self, keys: PeerKeys) {
        self.keyring.rekey(keys);
    }

    /// Allows initiator `key` (from an `AddressRequested` we accepted) as user `user`.
    ///
    /// A key that is not 32 bytes can never complete a handshake and is ignored.
    pub fn allow(&self, user: &str, key: Vec<u8>) {
        self.keyring.allow(user, &key);
    }

    /// Forgets the key(s) allowed for `user` (`AddressRevoked`), matching the name
    /// ASCII-case-insensitively. Connections past the handshake are not interrupted.
    pub fn revoke(&self, user: &str) {
        self.keyring.revoke(user);
    }

    /// Starts taking file offers from allowed peers (SPEC §13): they arrive on the returned
    /// receiver, to be answered, and are saved into `downloads` only. Calling it again replaces
    /// the earlier settings for offers to come.
    pub fn receive_files(
        &self,
        downloads: Arc<Downloads>,
        limits: FileLimits,
    ) -> mpsc::Receiver<FileEvent> {
        let (events, receiver) = mpsc::channel(INBOUND_QUEUE);
        let slots = Arc::new(Semaphore::new(
            limits.max_transfers.clamp(1, Semaphore::MAX_PERMITS),
        ));
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(FileReceiving {
                downloads,
                events,
                limits,
                slots,
                next_id: Default::default(),
            }));
        receiver
    }

    /// Stops accepting and closes the connections in progress, without acks.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// The accept task's state; it ends when `stop` is cancelled or nobody takes inbound messages.
struct AcceptLoop {
    socket: TcpListener,
    keyring: Arc<Keyring>,
    files: Files,
    inbound: mpsc::Sender<Inbound>,
    /// One permit per connection being served (mini-redis `Listener`).
    slots: Arc<Semaphore>,
    deadline: Duration,
    stop: CancellationToken,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.inbound.closed() => break,
                accepted = self.socket.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(error = %e, "peer listener: accept failed");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                debug!(%peer, "peer connection refused: too many at once");
                continue; // dropping `stream` closes it
            };
            let connection = Connection {
                keyring: self.keyring.clone(),
                files: self.files.clone(),
                inbound: self.inbound.clone(),
                stop: self.stop.clone(),
                deadline: self.deadline,
            };
            tokio::spawn(connection.serve(stream, peer, slot));
        }
        debug!("peer listener stopped");
    }
}
