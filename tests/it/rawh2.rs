//! A hand-driven HTTP/2 client for what a well-behaved one never does: stop halfway through
//! the preface, ignore `MAX_CONCURRENT_STREAMS`, leave PINGs unanswered, send bytes that are not
//! valid protobuf. Frames are written by hand (RFC 9113 §4); header blocks use HPACK literals
//! without indexing (RFC 7541 §6.2.2), so no table state is needed. Responses are read as frames
//! only: their header blocks are not decoded.

use std::net::{IpAddr, SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::common::within;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RST_STREAM codes.
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;

/// Opens a TCP connection to `server` from the loopback address `from`.
pub async fn connect_from(server: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    within("a TCP connection", socket.connect(server))
        .await
        .unwrap_or_else(|e| panic!("connecting from {from}: {e}"))
}

/// Reads and discards until the server closes the connection (EOF or reset); fails the test if
/// that takes longer than the harness deadline.
pub async fn closed(stream: &mut TcpStream, what: &str) {
    within(what, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
}

/// One frame as read from the server.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// An HTTP/2 connection driven frame by frame.
pub struct Raw {
    pub tcp: TcpStream,
}

impl Raw {
    /// Connects from `from` and sends the preface and an empty SETTINGS frame.
    pub async fn open(server: SocketAddr, from: IpAddr) -> Self {
        let mut raw = Raw {
            tcp: connect_from(server, from).await,
        };
        raw.tcp.write_all(PREFACE).await.unwrap();
        raw.send(SETTINGS, 0, 0, &[]).await;
        raw
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes()[1..]);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        // The server may already have closed; the test then sees it on the next read.
        let _ = self.tcp.write_all(&frame).await;
    }

    /// Opens stream `id` with a gRPC POST to `path`; `end` closes our side at once.
    pub async fn headers(&mut self, id: u32, path: &str, authorization: Option<&str>, end: bool) {
        let mut block = Vec::new();
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        let bearer = authorization.map(|t| format!("Bearer {t}"));
        if let Some(b) = &bearer {
            fields.push(("authorization", b));
        }
        for (name, value) in fields {
            block.push(0x00); // literal without indexing, new name
            literal(&mut block, name.as_bytes());
            literal(&mut block, value.as_bytes());
        }
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.send(HEADERS, flags, id, &block).await;
    }

    /// Sends one gRPC message (already protobuf-encoded, or not) on stream `id`.
    pub async fn message(&mut self, id: u32, protobuf: &[u8], end: bool) {
        let mut data = vec![0u8];
        data.extend_from_slice(&(protobuf.len() as u32).to_be_bytes());
        data.extend_from_slice(protobuf);
        self.send(DATA, if end { END_STREAM } else { 0 }, id, &data)
            .await;
    }

    /// A whole unary call: headers, one message, end of stream.
    pub async fn unary(&mut self, id: u32, path: &str, token: Option<&str>, protobuf: &[u8]) {
        self.headers(id, path, token, false).await;
        self.message(id, protobuf, true).await;
    }

    pub async fn reset(&mut self, id: u32, code: u32) {
        self.send(RST_STREAM, 0, id, &code.to_be_bytes()).await;
    }

    /// The next frame, or `None` once the server has closed the connection. Acknowledges the
    /// server's SETTINGS, as a client must; answers nothing else.
    pub async fn frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            self.send(SETTINGS, ACK, 0, &[]).await;
        }
        Some(frame)
    }

    /// The next frame that `pick` accepts, skipping the others; fails the test on EOF or after
    /// the deadline.
    pub async fn until(&mut self, what: &str, mut pick: impl FnMut(&Frame) -> bool) -> Frame {
        within(what, async {
            loop {
                match self.frame().await {
                    Some(f) if pick(&f) => return f,
                    Some(_) => continue,
                    None => panic!("the server closed the connection while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Reads until the server closes the connection, returning the frames it sent first.
    pub async fn until_closed(&mut self, what: &str) -> Vec<Frame> {
        within(what, async {
            let mut seen = Vec::new();
            while let Some(f) = self.frame().await {
                seen.push(f);
            }
            seen
        })
        .await
    }

    /// The value of the `SETTINGS_MAX_CONCURRENT_STREAMS` (0x3) the server announced, read from
    /// its first SETTINGS frame.
    pub async fn max_concurrent_streams(&mut self) -> Option<u32> {
        let settings = self
            .until("the server's SETTINGS", |f| {
                f.kind == SETTINGS && f.flags & ACK == 0
            })
            .await;
        settings
            .payload
            .chunks_exact(6)
            .find(|s| u16::from_be_bytes([s[0], s[1]]) == 0x3)
            .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
    }
}

/// An HPACK string literal, not Huffman-coded (every value here is under 127 bytes).
fn literal(block: &mut Vec<u8>, bytes: &[u8]) {
    assert!(
        bytes.len() < 127,
        "long header values need a multi-byte length"
    );
    block.push(bytes.len() as u8);
    block.extend_from_slice(bytes);
}
