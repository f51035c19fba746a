//! The sending side's data phase, on two blocking threads: one reads the file and hashes it,
//! the other seals each chunk and writes it to the socket, then sends the checksum and waits
//! for the ack. SHA-256 and ChaCha20-Poly1305 cost about the same per byte, so each thread
//! does half the work and a transfer keeps two cores busy instead of one.
//!
//! Memory is the handoff's few chunks and one frame, whatever the file's size; every chunk
//! goes out as a full frame (the last one excepted). `--max-file-rate` paces the sending thread.

use std::fs::File;
use std::io::{self, ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::handoff::{Consumer, Producer, handoff};
use super::send::{FileError, FileSent};
use super::{MAX_CHUNK, Progress};
use crate::pb::{FileAck, FilePart, file_part::Part as Piece};
use crate::peer::frame::{self, FrameError};
use crate::peer::noise::Transport;

/// Room before a chunk for its `FilePart` header: the tag byte and up to 3 bytes of length.
pub(super) const CHUNK_HEADER: usize = 4;

/// What the reading thread hands the sending one.
enum Read {
    /// `buf[CHUNK_HEADER..CHUNK_HEADER + len]` is the file's next `len` bytes.
    Chunk { buf: Vec<u8>, len: usize },
    /// The whole file was read; its SHA-256.
    Done([u8; 32]),
    /// The file could not be read (or got shorter).
    Failed(io::Error),
}

/// Sends the file from `offset` (the receiver holds what comes before), the checksum, and
/// waits for the ack, at most `max_rate` bytes per second if given. `progress` follows the bytes
/// written to the socket.
pub(super) fn stream_file(
    mut socket: std::net::TcpStream,
    mut transport: Transport,
    path: &Path,
    (size, offset): (u64, u64),
    transfer_id: &str,
    max_rate: Option<u64>,
    progress: &Progress,
) -> Result<FileSent, FileError> {
    let file = File::open(path).map_err(FileError::Read)?;
    let (producer, consumer) = handoff(CHUNK_HEADER + MAX_CHUNK);
    let sha256 = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("confab-file-read".into())
            .spawn_scoped(scope, move || read_and_hash(file, size, offset, producer))
            .map_err(FileError::Read)?;
        let pace = max_rate.map(Pace::new);
        let sent = seal_and_send(&mut socket, &mut transport, &consumer, size, pace, progress);
        // Before the scope joins the reader: on a failure this ends its wait.
        drop(consumer);
        sent
    })?;

    let last = FilePart {
        part: Some(Piece::Sha256(sha256.to_vec())),
    };
    let sealed = transport
        .seal(&last.encode_to_vec())
        .map_err(|e| FileError::Protocol(e.to_string()))?;
    frame::write_blocking(&mut socket, &sealed).map_err(|_| FileError::Cut { held: size, size })?;

    let ack = match frame::read_blocking(&mut socket, frame::MAX_LEN) {
        Ok(Some(sealed)) => sealed,
        Ok(None) | Err(FrameError::Truncated) => return Err(FileError::NoAck),
        Err(FrameError::Io(e))
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
        {
            return Err(FileError::Timeout("confirm the file"));
        }
        Err(FrameError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => {
            return Err(FileError::NoAck);
        }
        Err(e) => return Err(FileError::Protocol(e.to_string())),
    };
    let ack = transport
        .open(&ack)
        .map_err(|e| FileError::Protocol(format!("the ack did not decrypt: {e}")))?;
    let ack = FileAck::decode(ack.as_slice())
        .map_err(|e| FileError::Protocol(format!("the ack is not a FileAck: {e}")))?;
    if ack.transfer_id != transfer_id || ack.sha256 != sha256 {
        return Err(FileError::Protocol(
            "the ack is for another transfer or checksum".into(),
        ));
    }
    Ok(FileSent {
        offset,
        size,
        sha256,
    })
}

/// The reading thread: hashes what the receiver already holds (read, not sent: the checksum
/// covers the whole file), then reads and hashes the rest chunk by chunk.
fn read_and_hash(mut file: File, size: u64, offset: u64, mut out: Producer<Read>) {
    let mut hash = Sha256::new();
    let outcome = (|| -> io::Result<()> {
        let shorter = || io::Error::new(ErrorKind::UnexpectedEof, "the file got shorter");
        let mut buf = out.buffer();
        let mut skipped = 0u64;
        while skipped < offset {
            let want = usize::try_from(offset - skipped).map_or(buf.len(), |n| n.min(buf.len()));
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(shorter());
            }
            hash.update(&buf[..n]);
            skipped += n as u64;
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut read = offset;
        while read < size {
            let want = usize::try_from(size - read).map_or(MAX_CHUNK, |n| n.min(MAX_CHUNK));
            let n = read_full(&mut file, &mut buf[CHUNK_HEADER..CHUNK_HEADER + want])?;
            if n == 0 {
                return Err(shorter());
            }
            hash.update(&buf[CHUNK_HEADER..CHUNK_HEADER + n]);
            read += n as u64;
            if !out.send(Read::Chunk { buf, len: n }) {
                // The sending thread stopped; it says why.
                return Ok(());
            }
            buf = out.buffer();
        }
        Ok(())
    })();
    let _ = out.send(match outcome {
        Ok(()) => Read::Done(hash.finalize().into()),
        Err(e) => Read::Failed(e),
    });
}

/// Fills `buf` from `file` unless the file ends first: full chunks make full frames.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The sending thread: seals each chunk into a frame and writes it; returns the reader's
/// checksum once every chunk is out.
fn seal_and_send(
    socket: &mut std::net::TcpStream,
    transport: &mut Transport,
    chunks: &Consumer<Read>,
    size: u64,
    mut pace: Option<Pace>,
    progress: &Progress,
) -> Result<[u8; 32], FileError> {
    // The frame: the 2-byte prefix, then the sealed message; sealed in place, one per transfer.
    let mut wire = vec![0u8; 2 + frame::MAX_LEN];
    loop {
        let (mut buf, n) = match chunks.recv() {
            Some(Read::Chunk { buf, len }) => (buf, len),
            Some(Read::Done(sha256)) => return Ok(sha256),
            Some(Read::Failed(e)) => return Err(FileError::Read(e)),
            None => {
                return Err(FileError::Read(io::Error::other(
                    "the reading thread stopped",
                )));
            }
        };
        let start = chunk_header(n, &mut buf[..CHUNK_HEADER]);
        let len = transport
            .seal_into(&buf[start..CHUNK_HEADER + n], &mut wire[2..])
            .map_err(|e| FileError::Protocol(e.to_string()))?;
        chunks.give_back(buf);
        // `len` <= 65535: the plaintext is at most MAX_PLAINTEXT, sealing adds the 16-byte tag.
        wire[..2].copy_from_slice(&(len as u16).to_be_bytes());
        socket
            .write_all(&wire[..2 + len])
            .map_err(|_| FileError::Cut {
                held: progress.done(),
                size,
            })?;
        progress.add(n as u64);
        if let Some(pace) = &mut pace {
            pace.sent(n as u64);
        }
    }
}

/// `--max-file-rate`: after each chunk, the sending thread sleeps until the bytes sent so far
/// are due at the rate. A chunk (64 KiB) leaves whole, so at the lowest rate the CLI allows
/// (8 KiB/s) a chunk is 8 s apart, well inside the receiver's stall deadline.
struct Pace {
    bytes_per_second: u64,
    since: Instant,
    sent: u64,
}

impl Pace {
    fn new(bytes_per_second: u64) -> Pace {
        Pace {
            bytes_per_second: bytes_per_second.max(1),
            since: Instant::now(),
            sent: 0,
        }
    }

    fn sent(&mut self, n: u64) {
        self.sent += n;
        let due = Duration::from_secs_f64(self.sent as f64 / self.bytes_per_second as f64);
        if let Some(early) = due.checked_sub(self.since.elapsed()) {
            std::thread::sleep(early);
        }
    }
}

/// Writes the protobuf header of a `FilePart` whose `chunk` is `len` bytes (field 1, wire type
/// 2: tag byte 0x0a, then the varint length) at the end of `room`; returns where it starts. By
/// hand: the hot path, and prost would want the bytes in a `Vec` of their own first.
fn chunk_header(len: usize, room: &mut [u8]) -> usize {
    let mut header = [0u8; CHUNK_HEADER];
    header[0] = 0x0a;
    let mut n = 1;
    let mut rest = len;
    while rest >= 0x80 {
        header[n] = (rest as u8 & 0x7f) | 0x80;
        rest >>= 7;
        n += 1;
    }
    header[n] = rest as u8;
    n += 1;
    let start = room.len() - n;
    room[start..].copy_from_slice(&header[..n]);
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole encoded chunk, as the hot path lays it out in place.
    fn encode_chunk(data: &[u8]) -> Vec<u8> {
        let mut room = [0u8; CHUNK_HEADER];
        let start = chunk_header(data.len(), &mut room);
        let mut out = room[start..].to_vec();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn hand_encoded_chunks_are_what_prost_reads() {
        for len in [1, 127, 128, 300, 16_383, 16_384, MAX_CHUNK] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let decoded = FilePart::decode(encode_chunk(&data).as_slice()).unwrap();
            assert_eq!(decoded.part, Some(Piece::Chunk(data)), "length {len}");
        }
    }

    #[test]
    fn a_paced_sender_is_never_ahead_of_its_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(1_000_000);
        for _ in 0..4 {
            pace.sent(50_000);
        }
        // 200 000 bytes at 1 MB/s: not before 200 ms (a lower bound; a busy machine only adds).
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
