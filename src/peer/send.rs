//! The sending side of the peer path: one message over one connection, under one deadline.
//!
//! Knows nothing of grants or of the server: the caller passes the address and key it was
//! granted and, on any error, falls back to `SendMessage` with the same `message_id` (SPEC §7).

use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpStream;

use super::dial::{DialError, dial, peer_closed};
use super::frame::{self, FrameError};
use super::noise::{self, PeerKeys, Transport};
use crate::pb::{PeerAck, PeerMessage};

/// Why a message could not be delivered over the peer path. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the peer's public key is {len} bytes, not 32; ask for its address again")]
    InvalidKey { len: usize },
    #[error("the message is {len} bytes encoded, more than the {max} the peer path carries")]
    TooLarge { len: usize, max: usize },
    #[error("could not connect to the peer: {0}")]
    Connect(std::io::Error),
    #[error("the peer did not finish the exchange within {0:?}")]
    Timeout(Duration),
    #[error(
        "the peer closed the connection during the handshake: it no longer accepts your key, \
         or its own key has changed"
    )]
    Refused,
    #[error("the encrypted handshake with the peer failed: {0}")]
    Handshake(String),
    #[error("the peer closed the connection without acknowledging the message")]
    NoAck,
    #[error("the peer acknowledged message {got:?} instead of {expected:?}")]
    WrongAck { expected: String, got: String },
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
    #[error("the connection to the peer failed: {0}")]
    Io(std::io::Error),
}

/// Sends one message over one TCP connection: connect, Noise IK as initiator, `PeerMessage`,
/// wait for a `PeerAck` with the same `message_id`, close.
///
/// `deadline` bounds the whole exchange, connect included. `Ok` means the peer's client has the
/// message.
///
/// # Errors
/// Any [`PeerError`]; the caller should then send the message through the server.
pub async fn send(
    host: &str,
    port: u16,
    remote_public_key: &[u8],
    keys: &PeerKeys,
    message: &PeerMessage,
    deadline: Duration,
) -> Result<(), PeerError> {
    // Checked before connecting: it cannot get better by trying.
    let plaintext = message.encode_to_vec();
    if plaintext.len() > noise::MAX_PLAINTEXT {
        return Err(PeerError::TooLarge {
            len: plaintext.len(),
            max: noise::MAX_PLAINTEXT,
        });
    }
    let exchange = async {
        let (mut stream, transport) = dial(host, port, remote_public_key, keys, &[]).await?;
        exchange(&mut stream, transport, &plaintext, &message.message_id).await
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .unwrap_or(Err(PeerError::Timeout(deadline)))
}

/// After the handshake: the message out, its ack back.
async fn exchange(
    stream: &mut TcpStream,
    mut transport: Transport,
    plaintext: &[u8],
    message_id: &str,
) -> Result<(), PeerError> {
    let noise_failed = |e: snow::Error| PeerError::Handshake(e.to_string());
    let sealed = transport.seal(plaintext).map_err(noise_failed)?;
    frame::write(stream, &sealed).await.map_err(io_error)?;

    // A responder that rejects the message (wrong `from`, say) closes without an ack.
    let sealed_ack = match frame::read(stream, frame::MAX_LEN).await {
        Ok(Some(ack)) => ack,
        Ok(None) => return Err(PeerError::NoAck),
        Err(e) if peer_closed(&e) => return Err(PeerError::NoAck),
        Err(e) => return Err(protocol_or_io(e, "ack")),
    };
    let ack = transport
        .open(&sealed_ack)
        .map_err(|e| PeerError::Protocol(format!("the ack did not decrypt: {e}")))?;
    let ack = PeerAck::decode(ack.as_slice())
        .map_err(|e| PeerError::Protocol(format!("the ack is not a PeerAck: {e}")))?;
    if ack.message_id != message_id {
        return Err(PeerError::WrongAck {
            expected: message_id.to_owned(),
            got: ack.message_id,
        });
    }
    Ok(())
}

fn protocol_or_io(e: FrameError, what: &str) -> PeerError {
    match e {
        FrameError::Io(io) => PeerError::Io(io),
        other => PeerError::Protocol(format!("bad {what} frame: {other}")),
    }
}

fn io_error(e: FrameError) -> PeerError {
    match e {
        FrameError::Io(io) => PeerError::Io(io),
        // Our own frames are never empty or oversize; say so rather than panic if one were.
        other => PeerError::Protocol(format!("could not frame our own message: {other}")),
    }
}

impl From<DialError> for PeerError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::InvalidKey { len } => PeerError::InvalidKey { len },
            DialError::Connect(e) => PeerError::Connect(e),
            DialError::Refused => PeerError::Refused,
            DialError::Handshake(e) => PeerError::Handshake(e),
            DialError::Protocol(e) => PeerError::Protocol(e),
            DialError::Io(e) => PeerError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::noise::Responder;
    use tokio::net::TcpListener;

    fn message(id: &str) -> PeerMessage {
        PeerMessage {
            message_id: id.into(),
            from: "alice".into(),
            to: "bob".into(),
            body: "hi".into(),
            sent_at_ms: 1,
        }
    }

    /// A responder that completes the handshake and acks with `ack_id`, whatever it was sent.
    async fn fake_responder(keys: PeerKeys, ack_id: &'static str) -> std::net::SocketAddr {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = socket.accept().await.unwrap();
            let first = frame::read(&mut stream, frame::MAX_LEN)
                .await
                .unwrap()
                .unwrap();
            let (reply, mut transport) = Responder::accept(&keys, &first).unwrap().reply().unwrap();
            frame::write(&mut stream, &reply).await.unwrap();
            let sealed = frame::read(&mut stream, frame::MAX_LEN)
                .await
                .unwrap()
                .unwrap();
            transport.open(&sealed).unwrap();
            let ack = PeerAck {
                message_id: ack_id.into(),
            }
            .encode_to_vec();
            frame::write(&mut stream, &transport.seal(&ack).unwrap())
                .await
                .unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn an_ack_for_another_message_is_wrong_ack() {
        let bob = PeerKeys::generate();
        let addr = fake_responder(bob.clone(), "other").await;
        let err = send(
            "127.0.0.1",
            addr.port(),
            bob.public(),
            &PeerKeys::generate(),
            &message("m1"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, PeerError::WrongAck { expected, got } if expected == "m1" && got == "other"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_matching_ack_is_success() {
        let bob = PeerKeys::generate();
        let addr = fake_responder(bob.clone(), "m1").await;
        send(
            "127.0.0.1",
            addr.port(),
            bob.public(),
            &PeerKeys::generate(),
            &message("m1"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_malformed_key_or_oversize_message_fails_before_connecting() {
        // Port 1 on loopback is closed; reaching it would be Connect, not these.
        let keys = PeerKeys::generate();
        let err = send(
            "127.0.0.1",
            1,
            &[0u8; 31],
            &keys,
            &message("m1"),
            Duration::from_secs(1),
        )
        .await;
        assert!(
            matches!(err, Err(PeerError::InvalidKey { len: 31 })),
            "{err:?}"
        );

        let mut big = message("m1");
        big.body = "x".repeat(noise::MAX_PLAINTEXT);
        let err = send(
            "127.0.0.1",
            1,
            keys.public(),
            &keys,
            &big,
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(err, Err(PeerError::TooLarge { .. })), "{err:?}");
    }
}
