//! One accepted peer connection: the responder's half of the Noise handshake for any exchange,
//! then a private message's delivery and ack, or the hand-over to a file transfer. Each runs in
//! its own task under the listener's deadline, so a slow peer delays nobody else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::file::{self, Exchange, FileReceiving};
use super::frame::{self, FrameError};
use super::keyring::Keyring;
use super::noise::{self, Responder, Transport};
use crate::pb::{PeerAck, PeerMessage};

/// How files are received, once the client asked for them; shared by every connection.
pub(super) type Files = Arc<Mutex<Option<Arc<FileReceiving>>>>;

/// A message that arrived over the peer path, already authenticated.
pub struct Inbound {
    /// The username the initiator's key was allowed for (as given to [`PeerListener::allow`](super::PeerListener::allow));
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

/// The longest `message_id`, as on the server (`SendMessageRequest.message_id`).
const MAX_MESSAGE_ID: usize = 64;

/// What one connection's task needs; each runs on its own so a slow peer delays nobody else.
pub(super) struct Connection {
    pub(super) keyring: Arc<Keyring>,
    pub(super) files: Files,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) stop: CancellationToken,
    pub(super) deadline: Duration,
}

impl Connection {
    pub(super) async fn serve(
        self,
        mut stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
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
}
