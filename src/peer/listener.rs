//! The receiving side of the peer path: accepts connections, runs the responder's half of each
//! exchange in its own task, hands authenticated messages to the client and acknowledges them.
//!
//! Owns the current static keys and the allowlist of initiator keys. It never prompts, never
//! blocks on a peer: every connection gets a slot from a fixed number of them (excess are closed
//! at once) and one deadline for the whole exchange, and anything unexpected closes that
//! connection with a `debug!` line. Message bodies and private keys are never logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::file::{self, Downloads, Exchange, FileEvent, FileLimits, FileReceiving};
use super::frame::{self, FrameError};
use super::noise::{self, KEY_LEN, PeerKeys, Responder, Transport};
use crate::pb::{PeerAck, PeerMessage};

/// How long one connection may take, from accept to ack, before the listener closes it.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(5);
/// How many connections the listener serves at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How many received messages may wait for the client to take them. A sender whose message
/// finds the queue full waits (within the deadline) and gets no ack if it stays full.
pub const INBOUND_QUEUE: usize = 64;
/// The longest `message_id`, as on the server (`SendMessageRequest.message_id`).
const MAX_MESSAGE_ID: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A message that arrived over the peer path, already authenticated.
pub struct Inbound {
    /// The username the initiator's key was allowed for (as given to [`PeerListener::allow`]);
    /// `message.from` matched it, ignoring ASCII case.
    pub from: String,
    /// The decrypted message, already acknowledged to its sender.
    pub message: PeerMessage,
}

impl std::fmt::Debug for Inbound {
    // The body is the users' business, not the logs'.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("from", &self.from)
            .field("message_id", &self.message.message_id)
            .field("to", &self.message.to)
            .field("body_len", &self.message.body.len())
            .field("sent_at_ms", &self.message.sent_at_ms)
            .finish()
    }
}

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

/// How files are received, once the client asked for them; shared by every connection.
type Files = Arc<Mutex<Option<Arc<FileReceiving>>>>;

/// Our current static keys and the initiators allowed to use them.
///
/// A std `Mutex`: every critical section is a map operation, never held across an `.await`.
#[derive(Debug)]
struct Keyring(Mutex<KeyringState>);

#[derive(Debug)]
struct KeyringState {
    keys: PeerKeys,
    /// Bumped by every rekey, so a handshake begun under old keys cannot be approved by an
    /// allowlist built for the new ones.
    generation: u64,
    /// Initiator static key → the username it was allowed for.
    allowed: HashMap<[u8; KEY_LEN], String>,
}

impl Keyring {
    fn new(keys: PeerKeys) -> Keyring {
        Keyring(Mutex::new(KeyringState {
            keys,
            generation: 0,
            allowed: HashMap::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyringState> {
        // The state stays consistent even if a holder panicked: every section is one map call.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rekey(&self, keys: PeerKeys) {
        let mut state = self.lock();
        state.keys = keys;
        state.generation += 1;
        state.allowed.clear();
    }

    fn allow(&self, user: &str, key: &[u8]) {
        let Ok(key) = <[u8; KEY_LEN]>::try_from(key) else {
            debug!(
                user,
                len = key.len(),
                "ignoring a peer key that is not 32 bytes"
            );
            return;
        };
        self.lock().allowed.insert(key, user.to_owned());
    }

    fn revoke(&self, user: &str) {
        self.lock()
            .allowed
            .retain(|_, allowed| !allowed.eq_ignore_ascii_case(user));
    }

    /// The keys to answer a new handshake with, and their generation.
    fn current(&self) -> (PeerKeys, u64) {
        let state = self.lock();
        (state.keys.clone(), state.generation)
    }

    /// The user `key` is allowed for, if it is and our keys are still those of `generation`.
    fn user_for(&self, generation: u64, key: &[u8]) -> Option<String> {
        let state = self.lock();
        if state.generation != generation {
            return None;
        }
        let key = <[u8; KEY_LEN]>::try_from(key).ok()?;
        state.allowed.get(&key).cloned()
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

/// What one connection's task needs; each runs on its own so a slow peer delays nobody else.
struct Connection {
    keyring: Arc<Keyring>,
    files: Files,
    inbound: mpsc::Sender<Inbound>,
    stop: CancellationToken,
    deadline: Duration,
}

impl Connection {
    async fn serve(self, mut stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        let until = tokio::time::Instant::now() + self.deadline;
        let handshake = tokio::select! {
            _ = self.stop.cancelled() => Err(Refusal::Shutdown),
            r = tokio::time::timeout_at(until, handshake(&mut stream, &self.keyring)) =>
                r.unwrap_or(Err(Refusal::Deadline(self.deadline))),
        };
        let outcome = match handshake {
            Ok(done) if done.exchange == Exchange::File => {
                // A transfer lasts long: it leaves the message slots to private messages and
                // counts against the file slots instead (in `file::receive`).
                drop(slot);
                return self.serve_file(stream, peer, done).await;
            }
            Ok(done) => {
                let exchange = deliver(&mut stream, done, &self.inbound);
                tokio::select! {
                    _ = self.stop.cancelled() => Err(Refusal::Shutdown),
                    r = tokio::time::timeout_at(until, exchange) =>
                        r.unwrap_or(Err(Refusal::Deadline(self.deadline))),
                }
            }
            Err(why) => Err(why),
        };
        // Free the slot before the peer can see the close, so a peer that reconnects as soon
        // as it sees EOF finds the slot free.
        drop(slot);
        match outcome {
            Ok(message_id) => debug!(%peer, message_id, "peer message delivered"),
            Err(why) => debug!(%peer, "peer connection closed: {why}"),
        }
        drop(stream);
    }
}

impl Connection {
    async fn serve_file(self, stream: TcpStream, peer: SocketAddr, done: Handshake) {
        let files = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(files) = files else {
            debug!(%peer, "peer file offer closed: this client takes no files");
            return;
        };
        let received = file::receive(
            stream,
            done.transport,
            done.user,
            done.key,
            files,
            self.stop.clone(),
        )
        .await;
        match received {
            Ok(what) => debug!(%peer, "peer file connection: {what}"),
            Err(why) => debug!(%peer, "peer file connection closed: {why}"),
        }
    }
}

/// A finished handshake with an allowed initiator.
struct Handshake {
    user: String,
    key: Vec<u8>,
    exchange: Exchange,
    transport: Transport,
}

/// Why the listener closed a connection without an ack (for the `debug!` line only).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the peer closed before {0}")]
    Closed(&'static str),
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("initiator key not allowed")]
    UnknownKey,
    #[error("the handshake asked for an exchange this listener does not know")]
    UnknownExchange,
    #[error("PeerMessage did not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("PeerMessage rejected: {0}")]
    Invalid(&'static str),
    #[error("the client no longer takes messages")]
    ClientGone,
    #[error("exchange not finished within {0:?}")]
    Deadline(Duration),
    #[error("listener shutting down")]
    Shutdown,
}

/// The responder's half of the handshake, for any exchange.
async fn handshake(stream: &mut TcpStream, keyring: &Keyring) -> Result<Handshake, Refusal> {
    // Latency: the ack must not wait for a delayed-ACK timer on the other side.
    stream.set_nodelay(true).map_err(FrameError::Io)?;

    // IK's first message has a fixed size plus a short hello; anything longer is refused
    // before it is read.
    let first = frame::read(stream, noise::HANDSHAKE_1_LEN + noise::MAX_HELLO)
        .await?
        .ok_or(Refusal::Closed("the handshake"))?;
    let (keys, generation) = keyring.current();
    let responder = Responder::accept(&keys, &first)?;
    let user = keyring
        .user_for(generation, responder.initiator_key())
        .ok_or(Refusal::UnknownKey)?;
    let exchange = file::exchange_of(responder.hello()).ok_or(Refusal::UnknownExchange)?;
    let key = responder.initiator_key().to_vec();

    let (reply, transport) = responder.reply()?;
    frame::write(stream, &reply).await?;
    Ok(Handshake {
        user,
        key,
        exchange,
        transport,
    })
}

/// The rest of a private message's exchange; returns the delivered message's id.
async fn deliver(
    stream: &mut TcpStream,
    done: Handshake,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<String, Refusal> {
    let Handshake {
        user,
        mut transport,
        ..
    } = done;

    let sealed = frame::read(stream, frame::MAX_LEN)
        .await?
        .ok_or(Refusal::Closed("the message"))?;
    let message = PeerMessage::decode(transport.open(&sealed)?.as_slice())?;
    check(&user, &message)?;

    // Hand over before acking: an ack promises the client has the message. If the ack is lost
    // the sender resends through the server with the same id, and the client drops the copy.
    let ack = PeerAck {
        message_id: message.message_id.clone(),
    };
    inbound
        .send(Inbound {
            from: user,
            message,
        })
        .await
        .map_err(|_| Refusal::ClientGone)?;
    frame::write(stream, &transport.seal(&ack.encode_to_vec())?).await?;
    // The caller closes the stream, after freeing its slot.
    Ok(ack.message_id)
}

/// The rules a `PeerMessage` must meet beyond decrypting (see `proto/chat.proto`).
fn check(user: &str, message: &PeerMessage) -> Result<(), Refusal> {
    if !message.from.eq_ignore_ascii_case(user) {
        return Err(Refusal::Invalid(
            "`from` is not the user the key was allowed for",
        ));
    }
    if message.to.is_empty() {
        return Err(Refusal::Invalid("`to` is empty"));
    }
    if message.message_id.is_empty() || message.message_id.len() > MAX_MESSAGE_ID {
        return Err(Refusal::Invalid("`message_id` is not 1-64 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, to: &str, id: &str) -> PeerMessage {
        PeerMessage {
            message_id: id.into(),
            from: from.into(),
            to: to.into(),
            body: "hi".into(),
            sent_at_ms: 0,
        }
    }

    #[test]
    fn check_accepts_from_in_any_ascii_case() {
        assert!(check("alice", &message("ALICE", "bob", "m1")).is_ok());
        assert!(check("Alice", &message("alice", "bob", "m1")).is_ok());
    }

    #[test]
    fn check_rejects_another_sender_an_empty_to_and_bad_ids() {
        assert!(check("alice", &message("mallory", "bob", "m1")).is_err());
        assert!(check("alice", &message("", "bob", "m1")).is_err());
        assert!(check("alice", &message("alice", "", "m1")).is_err());
        assert!(check("alice", &message("alice", "bob", "")).is_err());
        assert!(check("alice", &message("alice", "bob", &"x".repeat(65))).is_err());
        assert!(check("alice", &message("alice", "bob", &"x".repeat(64))).is_ok());
    }

    #[test]
    fn keyring_revokes_case_insensitively_and_rekey_forgets_everyone() {
        let ring = Keyring::new(PeerKeys::generate());
        let (a, b) = ([1u8; KEY_LEN], [2u8; KEY_LEN]);
        ring.allow("Alice", &a);
        ring.allow("bob", &b);
        ring.allow("carol", &[3u8; 31]); // ignored
        let (_, generation) = ring.current();
        assert_eq!(ring.user_for(generation, &a).as_deref(), Some("Alice"));

        ring.revoke("ALICE");
        assert_eq!(ring.user_for(generation, &a), None);
        assert_eq!(ring.user_for(generation, &b).as_deref(), Some("bob"));

        ring.rekey(PeerKeys::generate());
        assert_eq!(ring.user_for(generation, &b), None, "old generation");
        let (_, generation) = ring.current();
        assert_eq!(ring.user_for(generation, &b), None, "allowlist cleared");
    }
}
