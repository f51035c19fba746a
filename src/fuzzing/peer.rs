//! The peer listener as a socket on the network meets it: a real [`PeerListener`] on loopback,
//! and for each input one TCP connection that sends what the input says.
//!
//! An input's first byte picks who connects. Even: an anonymous socket, and the rest of the input
//! is written as it is (what anyone who can reach the port can do). Odd: a peer that completes a
//! real Noise handshake — with a key the listener allowed (bit 1 clear) or a stranger's — whose
//! hello and transport messages come from the input, so the fuzzer reaches the parsing of
//! `PeerMessage`s, `FileOffer`s and `FilePart`s behind the encryption. The listener's process
//! state (its allowlist, its download directory) is shared by every input of a run, as in a
//! client that stays up.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::peer::file::{Downloads, FileEvent, FileLimits};
use crate::peer::frame;
use crate::peer::noise::{Initiator, MAX_HELLO, MAX_PLAINTEXT};
use crate::peer::{ListenerLimits, PeerKeys, PeerListener};

/// The listener's deadline for a whole exchange, shortened so that inputs stay fast.
const DEADLINE: Duration = Duration::from_secs(2);
/// How long an input may take before the listener counts as having kept a connection it had
/// promised to close: well past every deadline it runs under.
const PATIENCE: Duration = Duration::from_secs(20);
/// Inputs between two cleanings of the download directory.
const CLEAN_EVERY: u64 = 256;

struct Fixture {
    runtime: Runtime,
    addr: SocketAddr,
    /// Its public key is what every initiator addresses.
    listener_keys: PeerKeys,
    allowed: PeerKeys,
    stranger: PeerKeys,
    downloads: tempfile::TempDir,
    /// Keeps the listener up for the whole run.
    _listener: PeerListener,
    inputs: AtomicU64,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listener_keys = PeerKeys::generate();
    let (allowed, stranger) = (PeerKeys::generate(), PeerKeys::generate());
    let downloads = tempfile::tempdir().expect("a temporary download directory");
    let limits = ListenerLimits {
        deadline: DEADLINE,
        ..ListenerLimits::default()
    };
    let listener = runtime.block_on(async {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (listener, mut inbound) =
            PeerListener::bind_with(loopback, listener_keys.clone(), limits)
                .await
                .expect("binding the peer listener on loopback");
        listener.allow("alice", allowed.public().to_vec());
        let mut files = listener.receive_files(
            Downloads::new(downloads.path()),
            FileLimits {
                stall: DEADLINE,
                answer_wait: DEADLINE,
                ..FileLimits::default()
            },
        );
        tokio::spawn(async move { while inbound.recv().await.is_some() {} });
        tokio::spawn(async move {
            while let Some(event) = files.recv().await {
                if let FileEvent::Offered(offer) = event {
                    // Accept every other offer, so both answers are exercised.
                    let accept = offer.id % 2 == 0;
                    offer.answer(accept);
                }
            }
        });
        listener
    });
    Fixture {
        addr: listener.local_addr(),
        runtime,
        listener_keys,
        allowed,
        stranger,
        downloads,
        _listener: listener,
        inputs: AtomicU64::new(0),
    }
});

/// Connects to the listener and plays `data` (see the module documentation). Invariants: no
/// panic in the listener, and the listener closes every connection within its deadlines.
pub fn peer_listener(data: &[u8]) {
    let fx = &*FIXTURE;
    fx.runtime.block_on(async {
        tokio::time::timeout(PATIENCE, connect(fx, data))
            .await
            .expect("the listener kept a connection open past its deadlines");
    });
    if fx.inputs.fetch_add(1, Ordering::Relaxed) % CLEAN_EVERY == CLEAN_EVERY - 1 {
        clean(fx.downloads.path());
    }
}

async fn connect(fx: &Fixture, data: &[u8]) {
    let mut stream = TcpStream::connect(fx.addr)
        .await
        .expect("connecting to the listener on loopback");
    match data.split_first() {
        Some((&who, rest)) if who & 1 == 1 => {
            let keys = if who & 2 == 0 {
                &fx.allowed
            } else {
                &fx.stranger
            };
            handshaken(fx, keys, &mut stream, rest).await;
        }
        Some((_, rest)) => {
            // The listener may close before taking everything: that is its right.
            let _ = stream.write_all(rest).await;
        }
        None => {}
    }
    let _ = stream.shutdown().await;
    // Whatever it answers, the listener must close the connection.
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}

/// A handshake as `keys`, whose hello is the input's first bytes (the first byte says how
/// many), then the rest as transport messages: each a 2-byte length and that many plaintext bytes.
async fn handshaken(fx: &Fixture, keys: &PeerKeys, stream: &mut TcpStream, data: &[u8]) {
    let Some((&hello_len, data)) = data.split_first() else {
        return;
    };
    let hello_len = (usize::from(hello_len) % (MAX_HELLO + 1)).min(data.len());
    let (hello, mut data) = data.split_at(hello_len);
    let (initiator, first) = Initiator::start_with(keys, fx.listener_keys.public(), hello)
        .expect("a hello of at most MAX_HELLO bytes");
    if frame::write(stream, &first).await.is_err() {
        return;
    }
    let Ok(Some(reply)) = frame::read(stream, frame::MAX_LEN).await else {
        return; // refused: a stranger's key, or a hello it does not serve
    };
    let mut transport = initiator
        .finish(&reply)
        .expect("the listener's reply completes a handshake it answered");
    while !data.is_empty() {
        let (len, rest) = match data {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            [_] => break,
            [] => unreachable!(),
        };
        let len = len.min(rest.len()).min(MAX_PLAINTEXT);
        let (plain, rest) = rest.split_at(len);
        data = rest;
        let sealed = transport.seal(plain).expect("at most MAX_PLAINTEXT bytes");
        if frame::write(stream, &sealed).await.is_err() {
            return;
        }
    }
}

/// Empties the download directory (kept `.part` files and received files pile up otherwise).
fn clean(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
}
