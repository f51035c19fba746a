//! The peer path's framing: every Noise message goes on the wire as a 2-byte big-endian length N
//! followed by N bytes, 1 <= N <= 65535.
//!
//! Knows bytes only, never Noise or protobuf. The caller passes the largest length it is willing
//! to accept at this point of the exchange, so an oversize prefix is refused before anything is
//! allocated or read; deadlines are the caller's too (the whole exchange runs under one).

use std::io::{Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame body the 2-byte prefix can describe; also Noise's own message limit.
pub(crate) const MAX_LEN: usize = u16::MAX as usize;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    #[error("a frame had length zero")]
    Empty,
    #[error("a frame of {len} bytes is longer than the {max} allowed here")]
    TooLong { len: usize, max: usize },
}

/// Reads one frame of at most `max` bytes (`max` <= [`MAX_LEN`]).
///
/// A clean end of stream before the first byte of a frame is `Ok(None)`: the peer closed between
/// frames. An end of stream anywhere inside a frame is [`FrameError::Truncated`].
pub(crate) async fn read<R>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 2];
    // Read the prefix byte by byte rather than with read_exact so that EOF before the first byte
    // (a clean close) can be told apart from EOF after it (a cut frame).
    if reader.read(&mut prefix[..1]).await? == 0 {
        return Ok(None);
    }
    if reader.read(&mut prefix[1..]).await? == 0 {
        return Err(FrameError::Truncated);
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    let mut body = vec![0u8; len];
    match reader.read_exact(&mut body).await {
        Ok(_) => Ok(Some(body)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// Writes `body` as one frame, prefix and body in a single write so that, with TCP_NODELAY, a
/// frame leaves in one segment instead of a 2-byte one followed by the rest.
pub(crate) async fn write<W>(writer: &mut W, body: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(2 + body.len());
    buf.extend_from_slice(&prefix(body.len())?);
    buf.extend_from_slice(body);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// [`read()`] on a blocking reader: a file transfer's data phase runs on a blocking thread, with
/// the socket's read timeout standing in for the deadline.
pub(crate) fn read_blocking<R: Read>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut body = vec![0u8; max];
    Ok(read_blocking_into(reader, &mut body)?.map(|len| {
        body.truncate(len);
        body
    }))
}

/// [`read_blocking()`] into `buf`, whose length is the largest frame accepted; returns the
/// frame's length. Lets a transfer reuse one buffer for every frame.
pub(crate) fn read_blocking_into<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; 2];
    if reader.read(&mut prefix[..1])? == 0 {
        return Ok(None);
    }
    if reader.read(&mut prefix[1..])? == 0 {
        return Err(FrameError::Truncated);
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let max = buf.len();
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    match reader.read_exact(&mut buf[..len]) {
        Ok(()) => Ok(Some(len)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// [`write()`] on a blocking writer, without the flush: the caller's writer is unbuffered or
/// flushed by the caller.
pub(crate) fn write_blocking<W: Write>(writer: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(2 + body.len());
    buf.extend_from_slice(&prefix(body.len())?);
    buf.extend_from_slice(body);
    writer.write_all(&buf)?;
    Ok(())
}

/// The 2-byte prefix for a body of `len` bytes, or why no frame can carry it.
fn prefix(len: usize) -> Result<[u8; 2], FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let len16 = u16::try_from(len).map_err(|_| FrameError::TooLong { len, max: MAX_LEN })?;
    Ok(len16.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn encode(body: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        write(&mut out, body).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let mut wire = encode(b"hello").await.unwrap();
        wire.extend(encode(&[7u8; MAX_LEN]).await.unwrap());
        assert_eq!(&wire[..7], b"\x00\x05hello");

        let mut reader = wire.as_slice();
        assert_eq!(read(&mut reader, MAX_LEN).await.unwrap().unwrap(), b"hello");
        assert_eq!(
            read(&mut reader, MAX_LEN).await.unwrap().unwrap(),
            vec![7u8; MAX_LEN]
        );
        assert!(
            read(&mut reader, MAX_LEN).await.unwrap().is_none(),
            "clean end after a frame"
        );
    }

    #[tokio::test]
    async fn zero_length_is_refused_both_ways() {
        assert!(matches!(encode(b"").await, Err(FrameError::Empty)));
        let mut reader: &[u8] = b"\x00\x00rest";
        assert!(matches!(
            read(&mut reader, MAX_LEN).await,
            Err(FrameError::Empty)
        ));
    }

    #[tokio::test]
    async fn body_longer_than_the_prefix_can_say_is_refused() {
        let too_big = vec![0u8; MAX_LEN + 1];
        assert!(matches!(
            encode(&too_big).await,
            Err(FrameError::TooLong { .. })
        ));
    }

    #[tokio::test]
    async fn length_over_the_callers_limit_is_refused_before_reading_the_body() {
        // Only the prefix is present: refusing must not wait for (or need) the body.
        let mut reader: &[u8] = b"\xff\xff";
        match read(&mut reader, 96).await {
            Err(FrameError::TooLong { len, max }) => assert_eq!((len, max), (65535, 96)),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_input_is_an_error_not_a_clean_end() {
        for wire in [&b"\x00"[..], b"\x00\x05", b"\x00\x05hel"] {
            let mut reader = wire;
            assert!(
                matches!(read(&mut reader, MAX_LEN).await, Err(FrameError::Truncated)),
                "input {wire:?}"
            );
        }
    }

    #[test]
    fn blocking_frames_match_the_async_ones() {
        let mut wire = Vec::new();
        write_blocking(&mut wire, b"hello").unwrap();
        assert_eq!(wire, b"\x00\x05hello");
        let mut reader = wire.as_slice();
        assert_eq!(read_blocking(&mut reader, 5).unwrap().unwrap(), b"hello");
        assert!(read_blocking(&mut reader, 5).unwrap().is_none());
        let mut cut: &[u8] = b"\x00\x05hel";
        assert!(matches!(
            read_blocking(&mut cut, 5),
            Err(FrameError::Truncated)
        ));
        let mut long: &[u8] = b"\x00\x06";
        assert!(matches!(
            read_blocking(&mut long, 5),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[tokio::test]
    async fn empty_input_is_a_clean_end() {
        let mut reader: &[u8] = b"";
        assert!(read(&mut reader, MAX_LEN).await.unwrap().is_none());
    }
}
