//! Files over the peer path (SPEC §13): one file per connection, over the same Noise IK
//! transport and allowlist as private messages, told apart by the first handshake message's
//! payload (a `PeerHello`; see the "Files over the peer path" section of `proto/chat.proto`).
//!
//! `send` is the offering side ([`send_file`]); `receive` runs in the listener for a connection
//! whose hello says `PEER_EXCHANGE_FILE`, asks the client through [`FileEvent::Offered`] and
//! writes into [`Downloads`] only. Neither knows about grants or the server; the client decides
//! who may send (the listener's allowlist) and what the user is asked.
//!
//! The data phase (`chunks_out` sending, `chunks_in` receiving) runs on two blocking threads
//! per transfer, the cipher and the socket on one, SHA-256 and the disk on the other, handing
//! chunks over through `handoff`; the socket's own timeouts are the deadlines. So a 1 GiB
//! transfer never holds an async worker, the prompt, the event stream and private messages go
//! on meanwhile, and memory per transfer is a few frames, whatever the file's size.

mod chunks_in;
mod chunks_out;
mod downloads;
mod handoff;
mod receive;
mod send;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::oneshot;

use crate::pb::{PeerExchange, PeerHello};

pub use downloads::Downloads;
pub(crate) use receive::{FileReceiving, receive};
pub use send::{FileError, FileSent, FileToSend, send_file};

/// The most content one `FilePart` carries: 65519 bytes of plaintext per Noise message, less
/// the field's tag (1 byte) and length (3 bytes).
pub const MAX_CHUNK: usize = super::noise::MAX_PLAINTEXT - 4;
/// The longest `transfer_id`, as documented in `proto/chat.proto`.
const MAX_TRANSFER_ID: usize = 64;
/// The longest offered name, as documented in `proto/chat.proto`.
const MAX_OFFERED_NAME: usize = 1024;

/// The bounds of a receiving listener. [`Default`] is what `confab chat` uses.
#[derive(Debug, Clone)]
pub struct FileLimits {
    /// The largest file accepted (`--max-file-bytes`).
    pub max_bytes: u64,
    /// How long the sender may send nothing before the transfer is cut off.
    pub stall: Duration,
    /// How long the user has to answer an offer before it counts as denied.
    pub answer_wait: Duration,
    /// Transfers received at once; offers beyond are answered busy.
    pub max_transfers: usize,
}

/// Default `--max-file-bytes`: 4 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;
/// How long a sender may stall before the receiver gives up (documented in the proto).
pub const STALL: Duration = Duration::from_secs(30);
/// How long a receiver's user has to answer (documented in the proto).
pub const ANSWER_WAIT: Duration = Duration::from_secs(120);
/// Transfers a listener receives at once (documented in the proto).
pub const MAX_TRANSFERS: usize = 4;

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_bytes: DEFAULT_MAX_FILE_BYTES,
            stall: STALL,
            answer_wait: ANSWER_WAIT,
            max_transfers: MAX_TRANSFERS,
        }
    }
}

/// How far a transfer has come, shared between the thread moving the bytes and whoever shows
/// progress; read it as often as you like.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the file the receiver holds (the resume offset included).
    done: AtomicU64,
    /// Where this attempt started: the bytes held before it.
    offset: AtomicU64,
    /// The offer was accepted and the data phase began.
    started: AtomicBool,
}

impl Progress {
    /// A fresh counter, shareable.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// Bytes of the file the receiver holds so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The byte this attempt started from (0 unless it resumed).
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Whether the offer was accepted and bytes may move (before that, nothing to show).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    fn start_at(&self, offset: u64) {
        self.offset.store(offset, Ordering::Relaxed);
        self.done.store(offset, Ordering::Relaxed);
        self.started.store(true, Ordering::Relaxed);
    }

    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the listener tells the client about files (the receiving side).
#[derive(Debug)]
pub enum FileEvent {
    /// An allowed peer offers a file; answer with [`IncomingFile::answer`].
    Offered(IncomingFile),
    /// A transfer the user accepted ended.
    Finished {
        /// [`IncomingFile::id`] of the offer.
        id: u64,
        /// Where the file was saved and its SHA-256, or why it was cut off.
        outcome: Result<Saved, String>,
    },
}

/// A received file, under its final name.
#[derive(Debug, Clone)]
pub struct Saved {
    pub path: std::path::PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// An offer waiting for the user's answer.
#[derive(Debug)]
pub struct IncomingFile {
    /// Unique per listener; [`FileEvent::Finished`] names it.
    pub id: u64,
    /// The user whose key did the handshake (as given to `PeerListener::allow`).
    pub from: String,
    /// That key, for the fingerprint the user is shown.
    pub from_key: Vec<u8>,
    /// The plain name it will be saved under (before any ` (n)` suffix).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Bytes an earlier attempt left (0 for a new transfer).
    pub offset: u64,
    /// Filled in as the transfer goes, once accepted.
    pub progress: Arc<Progress>,
    answer: oneshot::Sender<bool>,
}

impl IncomingFile {
    /// Accepts (`true`) or denies the offer. `false` if the offer is no longer waiting (it
    /// expired, or the sender gave up).
    pub fn answer(self, accept: bool) -> bool {
        self.answer.send(accept).is_ok()
    }

    /// The offer is no longer waiting: it expired, or the sender gave up.
    pub fn is_closed(&self) -> bool {
        self.answer.is_closed()
    }
}

/// What a connection's hello asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exchange {
    Message,
    File,
}

/// The first handshake message's payload for a file transfer.
pub(crate) fn file_hello() -> Vec<u8> {
    PeerHello {
        exchange: PeerExchange::File as i32,
    }
    .encode_to_vec()
}

/// Reads a hello; `None` for anything this listener does not serve.
pub(crate) fn exchange_of(hello: &[u8]) -> Option<Exchange> {
    let hello = PeerHello::decode(hello).ok()?;
    match PeerExchange::try_from(hello.exchange).ok()? {
        PeerExchange::Unspecified => Some(Exchange::Message),
        PeerExchange::File => Some(Exchange::File),
    }
}

/// Lower-case hex, for checksums shown to people and in JSON.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{FilePart, file_part::Part};

    #[test]
    fn hellos_tell_messages_from_files_and_refuse_the_unknown() {
        assert_eq!(exchange_of(&[]), Some(Exchange::Message));
        assert_eq!(file_hello(), [8, 1], "as documented in chat.proto");
        assert_eq!(exchange_of(&file_hello()), Some(Exchange::File));
        assert_eq!(exchange_of(&[8, 9]), None, "an exchange we do not know");
        assert_eq!(exchange_of(&[0xff]), None, "not protobuf");
    }

    #[test]
    fn a_full_chunk_fits_one_noise_message() {
        let part = FilePart {
            part: Some(Part::Chunk(vec![0; MAX_CHUNK])),
        };
        assert_eq!(part.encoded_len(), super::super::noise::MAX_PLAINTEXT);
    }
}
