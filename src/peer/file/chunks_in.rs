//! The receiving side's data phase, on two blocking threads: one reads frames from the socket,
//! opens them and checks each chunk against the offer; the other appends the chunks to the
//! `.part` and hashes them. At the checksum the hash is compared, the `.part` becomes the file,
//! and the ack goes back.
//!
//! A size lie or a wrong checksum discards the `.part`; any other cut-off (the sender closed
//! or stalled, a frame did not decrypt) keeps every chunk that was authenticated before it,
//! for a resume. Frames are opened straight from one large read buffer, so the only copies are
//! the kernel's and the cipher's.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::downloads::Part;
use super::handoff::{Consumer, Producer, handoff};
use super::{MAX_CHUNK, Progress, Saved};
use crate::pb::{FileAck, FilePart, file_part::Part as Piece};
use crate::peer::frame::{self, FrameError};
use crate::peer::noise::Transport;

/// How much one read from the socket may fetch: several frames per system call.
const READ_BUFFER: usize = 256 * 1024;

/// The data phase of one accepted offer.
pub(super) struct DataPhase {
    pub(super) transport: Transport,
    pub(super) part: Part,
    pub(super) size: u64,
    /// Bytes in the `.part` before this attempt.
    pub(super) held: u64,
    /// SHA-256 over those bytes.
    pub(super) hash: Sha256,
    pub(super) progress: Arc<Progress>,
    pub(super) stall: Duration,
    pub(super) transfer_id: String,
}

/// A chunk for the writing thread: `buf[start..end]`.
struct Data {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// How the reading thread's loop ended.
enum End {
    /// The sender's checksum arrived.
    Checksum(Vec<u8>),
    /// Cut off; what was written stays for a resume.
    Cut(String),
    /// Cut off for a lie; what was written must go.
    Lie(String),
    /// The writing thread stopped; its error says why.
    WriterGone,
}

impl DataPhase {
    /// Takes the chunks into the `.part`; the file saved under its final name, or why not.
    pub(super) fn run(mut self, socket: TcpStream) -> Result<Saved, String> {
        let file = self
            .part
            .append()
            .map_err(|e| format!("cannot write to the download directory: {e}"))?;
        let mut frames = Frames::new(socket);
        let hash = std::mem::take(&mut self.hash);
        let progress = self.progress.clone();
        let (producer, consumer) = handoff(frame::MAX_LEN);
        let (end, written) = std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("confab-file-write".into())
                .spawn_scoped(scope, move || {
                    write_and_hash(file, hash, &consumer, &progress)
                })
                .map_err(|e| format!("cannot start the transfer: {e}"))?;
            // Moved in, so the writer sees the end as soon as this returns.
            let end = self.take_chunks(&mut frames, producer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writing thread failed")));
            Ok::<_, String>((end, written))
        })?;
        let ours = match (written, end) {
            (_, End::Lie(why)) => {
                self.part.discard();
                return Err(why);
            }
            (Err(e), _) => return Err(format!("cannot write to the download directory: {e}")),
            (Ok(_), End::WriterGone) => {
                return Err("the transfer stopped writing to the download directory".into());
            }
            (Ok(_), End::Cut(why)) => return Err(why),
            (Ok(ours), End::Checksum(sum)) if self.held == self.size && sum == ours => ours,
            (Ok(_), End::Checksum(_)) if self.held < self.size => {
                self.part.discard();
                return Err(format!(
                    "the sender ended after {} of the {} bytes it offered; cut off and discarded",
                    self.held, self.size
                ));
            }
            (Ok(_), End::Checksum(_)) => {
                self.part.discard();
                return Err(
                    "the checksum does not match what arrived; the file was discarded".into(),
                );
            }
        };
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
            let _ = frame::write_blocking(&mut frames.socket, &sealed);
        }
        Ok(Saved {
            path,
            size: self.size,
            sha256: ours,
        })
    }

    /// The reading thread: frames → plaintext chunks for the writer, until the checksum or a
    /// cut-off. `held` counts what was handed to the writer.
    fn take_chunks(&mut self, frames: &mut Frames, mut out: Producer<Data>) -> End {
        loop {
            let sealed = match frames.next() {
                Ok(Some(sealed)) => sealed,
                Ok(None) | Err(FrameError::Truncated) => {
                    return End::Cut(format!(
                        "the sender closed the connection after {} of {} bytes; sending the \
                         file again resumes it",
                        self.held, self.size
                    ));
                }
                Err(FrameError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return End::Cut(format!(
                        "the sender sent nothing for {} s after {} of {} bytes; cut off",
                        self.stall.as_secs(),
                        self.held,
                        self.size
                    ));
                }
                Err(e) => return End::Cut(format!("the transfer broke off: {e}")),
            };
            let mut buf = out.buffer();
            let Ok(n) = self.transport.open_into(sealed, &mut buf) else {
                return End::Cut("a part of the file did not decrypt; cut off".into());
            };
            let (start, end) = match chunk_of(&buf[..n]) {
                Some(data) => (n - data.len(), n),
                // Anything but a plain chunk (the checksum, or a chunk encoded unusually) goes
                // through prost.
                None => match FilePart::decode(&buf[..n]).map(|p| p.part) {
                    Ok(Some(Piece::Chunk(data))) => {
                        buf[..data.len()].copy_from_slice(&data);
                        (0, data.len())
                    }
                    Ok(Some(Piece::Sha256(sum))) => return End::Checksum(sum),
                    Ok(None) | Err(_) => {
                        return End::Cut("the sender broke the protocol; cut off".into());
                    }
                },
            };
            let len = end - start;
            if len == 0 || len > MAX_CHUNK {
                return End::Cut("the sender sent a chunk of a wrong size; cut off".into());
            }
            if self.held + len as u64 > self.size {
                return End::Lie(format!(
                    "the sender sent more than the {} bytes it offered; cut off and discarded",
                    self.size
                ));
            }
            if !out.send(Data { buf, start, end }) {
                return End::WriterGone;
            }
            self.held += len as u64;
        }
    }
}

/// The writing thread: appends each chunk to the `.part` and hashes it; the SHA-256 of the
/// whole `.part` once the reader is done.
fn write_and_hash(
    mut file: File,
    mut hash: Sha256,
    chunks: &Consumer<Data>,
    progress: &Progress,
) -> io::Result<[u8; 32]> {
    while let Some(Data { buf, start, end }) = chunks.recv() {
        // Written as they come, so nothing is lost in a buffer at a cut-off.
        file.write_all(&buf[start..end])?;
        hash.update(&buf[start..end]);
        progress.add((end - start) as u64);
        chunks.give_back(buf);
    }
    Ok(hash.finalize().into())
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

/// Frames from the socket, read several at a time into one buffer and handed out in place.
struct Frames {
    socket: TcpStream,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet handed out.
    start: usize,
    end: usize,
}

impl Frames {
    fn new(socket: TcpStream) -> Frames {
        Frames {
            socket,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    /// The next frame's body, as `frame::read_blocking` would return it: `Ok(None)` at a clean
    /// end between frames, [`FrameError::Truncated`] inside one.
    fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if !self.fill(2)? {
            return if self.start == self.end {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        let len = usize::from(u16::from_be_bytes([
            self.buf[self.start],
            self.buf[self.start + 1],
        ]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if !self.fill(2 + len)? {
            return Err(FrameError::Truncated);
        }
        let body = self.start + 2..self.start + 2 + len;
        self.start = body.end;
        Ok(Some(&self.buf[body]))
    }

    /// Makes `n` bytes from `start` available; `false` if the stream ends first.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        if self.buf.len() - self.start < n {
            // Moves the partial frame to the front: at most one frame's bytes.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            match self.socket.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(got) => self.end += got,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
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

    /// A connected pair of loopback sockets.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn frames_split_across_reads_and_buffer_ends_come_out_whole() {
        let (mut tx, rx) = pair();
        let mut frames = Frames::new(rx);
        // Enough full frames to wrap the read buffer several times, then a short one.
        let bodies: Vec<Vec<u8>> = (0..20u8)
            .map(|i| vec![i; frame::MAX_LEN])
            .chain([b"end".to_vec()])
            .collect();
        let sent = bodies.clone();
        let writer = std::thread::spawn(move || {
            for body in &sent {
                frame::write_blocking(&mut tx, body).unwrap();
            }
            // A cut in the middle of the next frame.
            tx.write_all(&[0, 9, 1, 2]).unwrap();
        });
        for body in &bodies {
            assert_eq!(frames.next().unwrap().unwrap(), &body[..]);
        }
        writer.join().unwrap();
        assert!(matches!(frames.next(), Err(FrameError::Truncated)));
    }

    #[test]
    fn a_close_between_frames_is_a_clean_end_and_an_empty_frame_an_error() {
        let (mut tx, rx) = pair();
        frame::write_blocking(&mut tx, b"one").unwrap();
        drop(tx);
        let mut frames = Frames::new(rx);
        assert_eq!(frames.next().unwrap().unwrap(), b"one");
        assert!(frames.next().unwrap().is_none());

        let (mut tx, rx) = pair();
        tx.write_all(&[0, 0]).unwrap();
        assert!(matches!(Frames::new(rx).next(), Err(FrameError::Empty)));
    }
}
