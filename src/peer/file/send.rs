//! The offering side of a file transfer: connect, Noise IK with the file hello, offer, wait for
//! the answer, then stream the file from the offset the receiver holds, the checksum last, and
//! wait for the ack.
//!
//! Knows nothing of grants or the server. The data phase (`chunks_out.rs`) runs on blocking
//! threads with socket timeouts as deadlines; memory is a few frames.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::{Progress, chunks_out, file_hello, hex};
use crate::pb::{FileAnswer, FileDecision, FileOffer};
use crate::peer::dial::{DialError, dial};
use crate::peer::frame::{self, FrameError};
use crate::peer::noise::PeerKeys;

/// Connect and handshake, as for a private message.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// The receiver's user may take [`super::ANSWER_WAIT`] to answer; a little more for the wire.
const ANSWER_DEADLINE: Duration = Duration::from_secs(super::ANSWER_WAIT.as_secs() + 10);
/// How long a write may block, or the ack may take, before the receiver counts as gone.
const DATA_DEADLINE: Duration = super::STALL;

/// A file to offer, checked and identified.
#[derive(Debug, Clone)]
pub struct FileToSend {
    /// Where it is read from.
    pub path: PathBuf,
    /// The name offered: the path's last component.
    pub name: String,
    pub size: u64,
    /// Stable while the file is unchanged, so sending it again resumes (see `FileOffer`).
    pub transfer_id: String,
    /// Bytes per second it is sent at, at most; `None`: as fast as the path allows.
    pub max_rate: Option<u64>,
}

impl FileToSend {
    /// Checks that `path` is a regular file we can read and derives its transfer id from its
    /// absolute path, size and modification time.
    ///
    /// # Errors
    /// The file is missing, unreadable or not a regular file.
    pub fn open(path: &Path) -> io::Result<FileToSend> {
        let path = std::fs::canonicalize(path)?;
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let mut id = Sha256::new();
        id.update(path.as_os_str().as_encoded_bytes());
        id.update(meta.len().to_be_bytes());
        id.update(modified.as_nanos().to_be_bytes());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "download".into());
        Ok(FileToSend {
            name,
            size: meta.len(),
            transfer_id: hex(&id.finalize()[..16]),
            max_rate: None,
            path,
        })
    }

    /// The same file, sent at most `max_rate` bytes per second (`None`: unpaced).
    #[must_use]
    pub fn paced(self, max_rate: Option<u64>) -> FileToSend {
        FileToSend { max_rate, ..self }
    }
}

/// A file the receiver confirmed.
#[derive(Debug, Clone)]
pub struct FileSent {
    /// Bytes the receiver already held (a resume), not sent again.
    pub offset: u64,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Why a file did not get through; each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the peer's public key is {len} bytes, not 32; ask for its address again")]
    InvalidKey { len: usize },
    #[error("cannot read the file: {0}")]
    Read(io::Error),
    #[error("could not connect to the peer: {0}")]
    Connect(io::Error),
    #[error("the peer did not {0} in time")]
    Timeout(&'static str),
    #[error(
        "the peer closed the connection during the handshake: it no longer accepts your key, \
         or its own key has changed"
    )]
    Refused,
    #[error("the encrypted handshake with the peer failed: {0}")]
    Handshake(String),
    #[error("{reason}")]
    Declined {
        decision: FileDecision,
        reason: String,
    },
    #[error("the peer closed the connection after {held} of {size} bytes; send again to resume")]
    Cut { held: u64, size: u64 },
    #[error("the peer did not confirm the file (it found the checksum or size wrong, or failed)")]
    NoAck,
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
}

/// Offers `file` to the peer at `host:port` (static key `remote_public_key`) as `from` → `to`
/// and, once accepted, sends it; `progress` follows the bytes the receiver holds.
///
/// # Errors
/// Any [`FileError`]; [`FileError::Cut`] and [`FileError::Timeout`] are worth a retry, which
/// resumes.
#[allow(clippy::too_many_arguments)]
pub async fn send_file(
    host: &str,
    port: u16,
    remote_public_key: &[u8],
    keys: &PeerKeys,
    from: &str,
    to: &str,
    file: &FileToSend,
    progress: Arc<Progress>,
) -> Result<FileSent, FileError> {
    let hello = file_hello();
    let connect = dial(host, port, remote_public_key, keys, &hello);
    let (mut stream, mut transport) = tokio::time::timeout(CONNECT_DEADLINE, connect)
        .await
        .map_err(|_| FileError::Timeout("finish the handshake"))??;

    let offer = FileOffer {
        transfer_id: file.transfer_id.clone(),
        from: from.to_owned(),
        to: to.to_owned(),
        name: file.name.clone(),
        size: file.size,
        sent_at_ms: crate::now_ms(),
    };
    let sealed = transport
        .seal(&offer.encode_to_vec())
        .map_err(|e| FileError::Protocol(e.to_string()))?;
    frame::write(&mut stream, &sealed)
        .await
        .map_err(|e| FileError::Connect(to_io(e)))?;
    let answer = tokio::time::timeout(ANSWER_DEADLINE, frame::read(&mut stream, frame::MAX_LEN))
        .await
        .map_err(|_| FileError::Timeout("answer the offer"))?;
    let answer = match answer {
        Ok(Some(sealed)) => sealed,
        Ok(None) | Err(FrameError::Truncated) => {
            return Err(FileError::Protocol(
                "closed without answering the offer".into(),
            ));
        }
        Err(e) => return Err(FileError::Protocol(e.to_string())),
    };
    let answer = transport
        .open(&answer)
        .map_err(|e| FileError::Protocol(format!("the answer did not decrypt: {e}")))?;
    let answer = FileAnswer::decode(answer.as_slice())
        .map_err(|e| FileError::Protocol(format!("the answer is not a FileAnswer: {e}")))?;
    let decision = FileDecision::try_from(answer.decision).unwrap_or(FileDecision::Unspecified);
    if decision != FileDecision::Accepted {
        let reason = if answer.reason.is_empty() {
            format!("{to} did not take the file")
        } else {
            answer.reason
        };
        return Err(FileError::Declined { decision, reason });
    }
    if answer.offset > file.size {
        return Err(FileError::Protocol(format!(
            "asked to start at byte {} of {}",
            answer.offset, file.size
        )));
    }
    progress.start_at(answer.offset);

    let socket = stream.into_std().map_err(FileError::Connect)?;
    socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(DATA_DEADLINE)))
        .and_then(|()| socket.set_write_timeout(Some(DATA_DEADLINE)))
        .map_err(FileError::Connect)?;
    let path = file.path.clone();
    let (size, offset) = (file.size, answer.offset);
    let (transfer_id, max_rate) = (file.transfer_id.clone(), file.max_rate);
    tokio::task::spawn_blocking(move || {
        chunks_out::stream_file(
            socket,
            transport,
            &path,
            (size, offset),
            &transfer_id,
            max_rate,
            &progress,
        )
    })
    .await
    .map_err(|e| FileError::Protocol(format!("the sending thread failed: {e}")))?
}

impl From<DialError> for FileError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::InvalidKey { len } => FileError::InvalidKey { len },
            DialError::Connect(e) | DialError::Io(e) => FileError::Connect(e),
            DialError::Refused => FileError::Refused,
            DialError::Handshake(e) => FileError::Handshake(e),
            DialError::Protocol(e) => FileError::Protocol(e),
        }
    }
}

fn to_io(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(io) => io,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids_are_stable_and_change_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let a = FileToSend::open(&path).unwrap();
        assert_eq!(a.transfer_id, FileToSend::open(&path).unwrap().transfer_id);
        assert_eq!((a.name.as_str(), a.size, a.transfer_id.len()), ("f", 3, 32));
        std::fs::write(&path, b"four").unwrap();
        assert_ne!(a.transfer_id, FileToSend::open(&path).unwrap().transfer_id);
        assert!(FileToSend::open(dir.path()).is_err(), "a directory");
    }
}
