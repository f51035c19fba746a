//! The receiving side of a file transfer, run by the listener for a connection whose hello asked
//! for one: read the offer, answer it (automatically, or with the user's answer through
//! [`FileEvent::Offered`]), then take the chunks into the `.part` file on a blocking thread.
//!
//! Cuts the sender off, leaving nothing under the final name, on a size or checksum lie, a
//! malformed frame or a stall; what was received and authenticated before a cut-off that was not
//! a lie stays in the `.part` for a resume. Never logs names or content, only sizes and why.

use std::io::{BufReader, ErrorKind, Write as _};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::downloads::{Downloads, Part};
use super::{
    FileEvent, FileLimits, IncomingFile, MAX_CHUNK, MAX_OFFERED_NAME, MAX_TRANSFER_ID, Progress,
    Saved,
};
use crate::pb::{FileAck, FileAnswer, FileDecision, FileOffer, FilePart, file_part::Part as Piece};
use crate::peer::frame::{self, FrameError};
use crate::peer::noise::Transport;

/// What the listener needs to receive files; set once by `PeerListener::receive_files`.
#[derive(Debug)]
pub(crate) struct FileReceiving {
    pub(crate) downloads: Arc<Downloads>,
    pub(crate) events: mpsc::Sender<FileEvent>,
    pub(crate) limits: FileLimits,
    /// One permit per transfer in progress (or waiting for its answer).
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) next_id: AtomicU64,
}

/// Receives one file over a connection whose handshake is done. `Ok` says what happened in a
/// few words for the `debug!` line; the user learns the outcome through [`FileEvent`]s.
pub(crate) async fn receive(
    mut stream: TcpStream,
    mut transport: Transport,
    from: String,
    from_key: Vec<u8>,
    ctx: Arc<FileReceiving>,
    stop: CancellationToken,
) -> Result<&'static str, String> {
    let limits = &ctx.limits;
    let sealed = tokio::time::timeout(limits.stall, frame::read(&mut stream, frame::MAX_LEN))
        .await
        .map_err(|_| "no offer in time".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("closed before the offer")?;
    let plain = transport.open(&sealed).map_err(|e| e.to_string())?;
    let offer = FileOffer::decode(plain.as_slice()).map_err(|e| e.to_string())?;

    let refuse = |decision: FileDecision, reason: String| FileAnswer {
        decision: decision as i32,
        offset: 0,
        reason,
    };
    if let Err(why) = check(&from, &offer) {
        let answer = refuse(FileDecision::Invalid, why.into());
        send_answer(&mut stream, &mut transport, &answer).await?;
        return Ok("invalid offer refused");
    }
    if offer.size > limits.max_bytes {
        let reason = format!(
            "the file is {} bytes; {} takes at most {} bytes",
            offer.size, offer.to, limits.max_bytes
        );
        send_answer(
            &mut stream,
            &mut transport,
            &refuse(FileDecision::TooLarge, reason),
        )
        .await?;
        return Ok("too large");
    }
    let busy = || {
        refuse(
            FileDecision::Busy,
            "the receiver is taking as many files as it will at once; try again later".into(),
        )
    };
    let Ok(_slot) = ctx.slots.clone().try_acquire_owned() else {
        send_answer(&mut stream, &mut transport, &busy()).await?;
        return Ok("busy");
    };
    let Some(part) = ctx.downloads.claim(&from, &offer.transfer_id, &offer.name) else {
        send_answer(&mut stream, &mut transport, &busy()).await?;
        return Ok("already receiving this transfer");
    };
    let size = offer.size;
    let (part, resumed) = tokio::task::spawn_blocking(move || {
        let resumed = part.resume(size);
        (part, resumed)
    })
    .await
    .map_err(|e| e.to_string())?;
    let (offset, hash) = match resumed {
        Ok(resumed) => resumed,
        Err(e) => {
            let reason = format!("the receiver cannot write to its download directory: {e}");
            send_answer(
                &mut stream,
                &mut transport,
                &refuse(FileDecision::Denied, reason),
            )
            .await?;
            return Ok("download directory unusable");
        }
    };

    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let progress = Progress::new();
    let (answer, answered) = oneshot::channel();
    let incoming = IncomingFile {
        id,
        from,
        from_key,
        name: part.plain.clone(),
        size,
        offset,
        progress: progress.clone(),
        answer,
    };
    if ctx.events.try_send(FileEvent::Offered(incoming)).is_err() {
        send_answer(&mut stream, &mut transport, &busy()).await?;
        return Ok("client not taking offers");
    }
    let accepted = tokio::select! {
        _ = stop.cancelled() => return Err("listener shutting down".into()),
        answered = tokio::time::timeout(limits.answer_wait, answered) => answered,
    };
    match accepted {
        Ok(Ok(true)) => {}
        Ok(_) => {
            let reason = format!("{} declined the file", offer.to);
            send_answer(
                &mut stream,
                &mut transport,
                &refuse(FileDecision::Denied, reason),
            )
            .await?;
            return Ok("declined");
        }
        Err(_) => {
            let reason = format!(
                "{} did not answer within {} s",
                offer.to,
                limits.answer_wait.as_secs()
            );
            send_answer(
                &mut stream,
                &mut transport,
                &refuse(FileDecision::Denied, reason),
            )
            .await?;
            return Ok("not answered");
        }
    }
    let accept = FileAnswer {
        decision: FileDecision::Accepted as i32,
        offset,
        reason: String::new(),
    };
    send_answer(&mut stream, &mut transport, &accept).await?;
    progress.start_at(offset);

    let socket = stream.into_std().map_err(|e| e.to_string())?;
    let setup = || -> std::io::Result<std::net::TcpStream> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(limits.stall))?;
        socket.set_write_timeout(Some(limits.stall))?;
        socket.try_clone()
    };
    let closer = setup().map_err(|e| e.to_string())?;
    // The blocking thread cannot watch the token; shutting the socket down wakes its read.
    let _watch = AbortOnDropHandle::new(tokio::spawn(async move {
        stop.cancelled().await;
        let _ = closer.shutdown(Shutdown::Both);
    }));
    let data = DataPhase {
        transport,
        part,
        size,
        held: offset,
        hash,
        progress,
        stall: limits.stall,
        transfer_id: offer.transfer_id,
    };
    let outcome = tokio::task::spawn_blocking(move || data.run(socket))
        .await
        .unwrap_or_else(|e| Err(format!("the transfer failed: {e}")));
    let summary = if outcome.is_ok() {
        "file received"
    } else {
        "transfer cut off"
    };
    // The client may be gone (logging out); the outcome then has nobody to tell.
    let _ = ctx.events.send(FileEvent::Finished { id, outcome }).await;
    Ok(summary)
}

/// A chunk's bytes: in the plaintext buffer (the usual case) or decoded by prost.
enum Chunk<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Chunk<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Borrowed(data) => data,
            Chunk::Owned(data) => data,
        }
    }
}

/// The data of a `FilePart` that is exactly one `chunk` field (tag byte 0x0a, a varint length
/// of at most 3 bytes, the bytes), without copying; `None` for anything else.
fn chunk_of(plain: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = plain.split_first()?;
    if tag != 0x0a {
        return None;
    }
    let mut len = 0usize;
    for (i, &b) in rest.iter().take(3).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let data = &rest[i + 1..];
            return (data.len() == len).then_some(data);
        }
    }
    None
}

/// The rules an offer must meet (see `proto/chat.proto`).
fn check(user: &str, offer: &FileOffer) -> Result<(), &'static str> {
    if !offer.from.eq_ignore_ascii_case(user) {
        return Err("`from` is not the user whose key did the handshake");
    }
    if offer.to.is_empty() {
        return Err("`to` is empty");
    }
    if offer.transfer_id.is_empty() || offer.transfer_id.len() > MAX_TRANSFER_ID {
        return Err("`transfer_id` is not 1-64 bytes");
    }
    if offer.name.is_empty() || offer.name.len() > MAX_OFFERED_NAME {
        return Err("`name` is not 1-1024 bytes");
    }
    Ok(())
}

async fn send_answer(
    stream: &mut TcpStream,
    transport: &mut Transport,
    answer: &FileAnswer,
) -> Result<(), String> {
    let sealed = transport
        .seal(&answer.encode_to_vec())
        .map_err(|e| e.to_string())?;
    frame::write(stream, &sealed)
        .await
        .map_err(|e| e.to_string())
}

/// The chunks, on a blocking thread: socket → decrypt → `.part` and SHA-256.
struct DataPhase {
    transport: Transport,
    part: Part,
    size: u64,
    /// Bytes in the `.part` so far.
    held: u64,
    /// SHA-256 over those bytes.
    hash: Sha256,
    progress: Arc<Progress>,
    stall: Duration,
    transfer_id: String,
}

impl DataPhase {
    fn run(mut self, socket: std::net::TcpStream) -> Result<Saved, String> {
        let mut writer = socket.try_clone().map_err(|e| e.to_string())?;
        // Fewer system calls: one read fetches several frames.
        let mut reader = BufReader::with_capacity(256 * 1024, socket);
        let file = self
            .part
            .append()
            .map_err(|e| format!("cannot write to the download directory: {e}"))?;
        // Chunks are written as they come (64 KiB each), so nothing is lost in a buffer at a
        // cut-off.
        let mut out = file;
        // One buffer for the sealed frame and one for its plaintext, reused for every chunk.
        let mut sealed = vec![0u8; frame::MAX_LEN];
        let mut plain = vec![0u8; frame::MAX_LEN];
        loop {
            let len = match frame::read_blocking_into(&mut reader, &mut sealed) {
                Ok(Some(len)) => len,
                Ok(None) | Err(FrameError::Truncated) => {
                    return Err(format!(
                        "the sender closed the connection after {} of {} bytes; sending the \
                         file again resumes it",
                        self.held, self.size
                    ));
                }
                Err(FrameError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(format!(
                        "the sender sent nothing for {} s after {} of {} bytes; cut off",
                        self.stall.as_secs(),
                        self.held,
                        self.size
                    ));
                }
                Err(e) => return Err(format!("the transfer broke off: {e}")),
            };
            let n = self
                .transport
                .open_into(&sealed[..len], &mut plain)
                .map_err(|_| "a part of the file did not decrypt; cut off".to_owned())?;
            let piece = match chunk_of(&plain[..n]) {
                Some(data) => Some(Chunk::Borrowed(data)),
                // Anything but a plain chunk (the checksum, or a chunk encoded unusually) goes
                // through prost.
                None => match FilePart::decode(&plain[..n])
                    .map_err(|_| "the sender broke the protocol; cut off".to_owned())?
                    .part
                {
                    Some(Piece::Chunk(data)) => Some(Chunk::Owned(data)),
                    Some(Piece::Sha256(sum)) => return self.finish(out, &sum, &mut writer),
                    None => None,
                },
            };
            match piece {
                Some(data) => {
                    let data = data.as_slice();
                    if data.is_empty() || data.len() > MAX_CHUNK {
                        return Err("the sender sent a chunk of a wrong size; cut off".into());
                    }
                    let len = data.len() as u64;
                    if self.held + len > self.size {
                        drop(out);
                        self.part.discard();
                        return Err(format!(
                            "the sender sent more than the {} bytes it offered; cut off and \
                             discarded",
                            self.size
                        ));
                    }
                    out.write_all(data)
                        .map_err(|e| format!("cannot write to the download directory: {e}"))?;
                    self.hash.update(data);
                    self.held += len;
                    self.progress.add(len);
                }
                None => return Err("the sender broke the protocol; cut off".into()),
            }
        }
    }

    fn finish(
        mut self,
        mut out: std::fs::File,
        sum: &[u8],
        writer: &mut std::net::TcpStream,
    ) -> Result<Saved, String> {
        if self.held < self.size {
            drop(out);
            self.part.discard();
            return Err(format!(
                "the sender ended after {} of the {} bytes it offered; cut off and discarded",
                self.held, self.size
            ));
        }
        out.flush()
            .map_err(|e| format!("cannot write to the download directory: {e}"))?;
        drop(out);
        let ours: [u8; 32] = self.hash.clone().finalize().into();
        if sum != ours {
            self.part.discard();
            return Err("the checksum does not match what arrived; the file was discarded".into());
        }
        let path = self
            .part
            .finish()
            .map_err(|e| format!("cannot save the file: {e}"))?;
        let ack = FileAck {
            transfer_id: std::mem::take(&mut self.transfer_id),
            sha256: ours.to_vec(),
        };
        // The file is saved whether or not the ack gets through.
        if let Ok(sealed) = self.transport.seal(&ack.encode_to_vec()) {
            let _ = frame::write_blocking(writer, &sealed);
        }
        Ok(Saved {
            path,
            size: self.size,
            sha256: ours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_chunks_are_read_in_place_and_anything_else_is_left_to_prost() {
        for len in [1usize, 127, 128, 16_384, MAX_CHUNK] {
            let data = vec![7u8; len];
            let encoded = FilePart {
                part: Some(Piece::Chunk(data.clone())),
            }
            .encode_to_vec();
            assert_eq!(chunk_of(&encoded), Some(&data[..]), "length {len}");
        }
        let sum = FilePart {
            part: Some(Piece::Sha256(vec![1; 32])),
        }
        .encode_to_vec();
        assert_eq!(chunk_of(&sum), None);
        assert_eq!(chunk_of(&[0x0a, 5, 1, 2]), None, "shorter than it says");
        assert_eq!(
            chunk_of(&[0x0a, 1, 1, 2]),
            None,
            "something after the chunk"
        );
        assert_eq!(
            chunk_of(&[0x0a, 0x80, 0x80, 0x80, 0x01]),
            None,
            "a 4-byte length"
        );
        assert_eq!(chunk_of(&[]), None);
    }
}
