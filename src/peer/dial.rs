//! The initiator's opening, shared by messages and files: connect, Noise `IK` with the
//! exchange's hello, and the responder's reply — telling a refusal (a responder that does not
//! know our key, or has new keys of its own, closes without a word) from a broken reply.

use tokio::net::TcpStream;

use super::frame::{self, FrameError};
use super::noise::{self, Initiator, KEY_LEN, PeerKeys, Transport};

/// Why the opening failed.
#[derive(Debug)]
pub(crate) enum DialError {
    /// The granted key is not a Curve25519 public key; checked before connecting.
    InvalidKey { len: usize },
    /// The TCP connection could not be made.
    Connect(std::io::Error),
    /// The responder closed during the handshake.
    Refused,
    /// Noise itself failed (a key the responder does not hold, say).
    Handshake(String),
    /// The responder answered with something that is not a handshake reply.
    Protocol(String),
    /// The connection failed after it was made.
    Io(std::io::Error),
}

/// Connects to `host:port` and completes the handshake with `hello` as the first message's
/// payload. No deadline of its own: each caller bounds its whole exchange.
pub(crate) async fn dial(
    host: &str,
    port: u16,
    remote_public_key: &[u8],
    keys: &PeerKeys,
    hello: &[u8],
) -> Result<(TcpStream, Transport), DialError> {
    if remote_public_key.len() != KEY_LEN {
        return Err(DialError::InvalidKey {
            len: remote_public_key.len(),
        });
    }
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(DialError::Connect)?;
    // Small writes in lockstep: Nagle would hold each one back for the peer's ACK.
    stream.set_nodelay(true).map_err(DialError::Connect)?;
    let failed = |e: snow::Error| DialError::Handshake(e.to_string());
    let (initiator, first) =
        Initiator::start_with(keys, remote_public_key, hello).map_err(failed)?;
    frame::write(&mut stream, &first).await.map_err(own_frame)?;
    let reply = match frame::read(&mut stream, noise::HANDSHAKE_2_LEN).await {
        Ok(Some(reply)) => reply,
        Ok(None) => return Err(DialError::Refused),
        Err(e) if peer_closed(&e) => return Err(DialError::Refused),
        Err(FrameError::Io(e)) => return Err(DialError::Io(e)),
        Err(e) => return Err(DialError::Protocol(format!("bad handshake reply: {e}"))),
    };
    let transport = initiator.finish(&reply).map_err(failed)?;
    Ok((stream, transport))
}

/// True when the error means the peer hung up (cleanly or not) rather than sent nonsense.
pub(crate) fn peer_closed(e: &FrameError) -> bool {
    use std::io::ErrorKind;
    match e {
        FrameError::Truncated => true,
        FrameError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof
        ),
        FrameError::Empty | FrameError::TooLong { .. } => false,
    }
}

fn own_frame(e: FrameError) -> DialError {
    match e {
        FrameError::Io(io) => DialError::Io(io),
        // Our own frames are never empty or oversize; say so rather than panic if one were.
        other => DialError::Protocol(format!("could not frame our own message: {other}")),
    }
}
