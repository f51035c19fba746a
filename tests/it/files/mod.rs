//! Files over the peer path (SPEC §13) on loopback: a real `PeerListener` receiving into a
//! temporary download directory, real `send_file`s, and a hand-made Noise sender for the offers
//! and transfers a well-behaved client never makes.
//!
//! Every download directory sits alone inside its own temporary directory, so "nothing written
//! outside it" is checked by listing the parent.

mod bench;
mod hostile;
mod terminal;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use confab::pb::{FileAnswer, FileDecision, FileOffer, FilePart, file_part::Part};
use confab::peer::file::{
    Downloads, FileError, FileEvent, FileLimits, FileSent, FileToSend, IncomingFile, Progress,
    Saved, send_file,
};
use confab::peer::{Inbound, PeerKeys, PeerListener};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Long enough for anything that should happen to happen, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A receiving client: listener, download directory, and the channels the client would read.
struct Recipient {
    listener: PeerListener,
    keys: PeerKeys,
    files: Receiver<FileEvent>,
    inbound: Receiver<Inbound>,
    /// Holds the download directory and nothing else.
    root: tempfile::TempDir,
}

impl Recipient {
    async fn start(limits: FileLimits) -> Recipient {
        let keys = PeerKeys::generate();
        let (listener, inbound) = PeerListener::bind("127.0.0.1:0".parse().unwrap(), keys.clone())
            .await
            .expect("bind on loopback");
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("downloads");
        std::fs::create_dir(&dir).unwrap();
        let downloads = Downloads::new(&dir);
        let files = listener.receive_files(downloads, limits);
        Recipient {
            listener,
            keys,
            files,
            inbound,
            root,
        }
    }

    /// Allows a fresh sender key as `user` and returns it.
    fn allow(&self, user: &str) -> PeerKeys {
        let keys = PeerKeys::generate();
        self.listener.allow(user, keys.public().to_vec());
        keys
    }

    /// Allows a fresh key pair made with snow (for a [`RawSender`]) as `user`; returns the
    /// private half.
    fn allow_raw(&self, user: &str) -> Vec<u8> {
        let pair = snow::Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
            .generate_keypair()
            .unwrap();
        self.listener.allow(user, pair.public);
        pair.private
    }

    /// A raw sender, allowed as alice, that has made `offer`.
    async fn raw_offer(&mut self, offer: &FileOffer) -> RawSender {
        let private = self.allow_raw("alice");
        let mut raw = RawSender::connect(self.port(), &private, self.keys.public()).await;
        raw.offer(offer).await;
        raw
    }

    /// A raw sender whose `offer` the user accepted; the answer is checked to start at 0.
    async fn raw_accepted(&mut self, offer: &FileOffer) -> RawSender {
        let mut raw = self.raw_offer(offer).await;
        assert!(self.offered().await.answer(true));
        let answer = raw.answer().await;
        assert_eq!(answer.decision(), FileDecision::Accepted, "{answer:?}");
        assert_eq!(answer.offset, 0);
        raw
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().port()
    }

    /// `file` offered by alice (holding `keys`) to this recipient with a real `send_file`, in a
    /// task of its own so the test can answer; `progress` follows the sender's side.
    fn send_from_alice(
        &self,
        keys: &PeerKeys,
        file: &FileToSend,
        progress: Arc<Progress>,
    ) -> JoinHandle<Result<FileSent, FileError>> {
        let (port, key) = (self.port(), self.keys.public().to_vec());
        let (keys, file) = (keys.clone(), file.clone());
        tokio::spawn(async move {
            send_file(
                "127.0.0.1",
                port,
                &key,
                &keys,
                "alice",
                "bob",
                &file,
                progress,
            )
            .await
        })
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("downloads")
    }

    async fn next(&mut self, awaited: &str) -> FileEvent {
        timeout(PATIENCE, self.files.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {awaited}"))
            .unwrap_or_else(|| panic!("listener stopped while waiting for {awaited}"))
    }

    async fn offered(&mut self) -> IncomingFile {
        match self.next("an offer").await {
            FileEvent::Offered(offer) => offer,
            other => panic!("expected an offer, got {other:?}"),
        }
    }

    async fn finished(&mut self) -> Result<Saved, String> {
        match self.next("the end of a transfer").await {
            FileEvent::Finished { outcome, .. } => outcome,
            other => panic!("expected the end of a transfer, got {other:?}"),
        }
    }

    /// Every path under the temporary root, relative to it, sorted: what was written where.
    fn written(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(base).unwrap().display().to_string());
                if path.is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out.sort();
        out
    }
}

/// Short limits for tests that wait on a stall or an answer.
fn quick_limits() -> FileLimits {
    FileLimits {
        stall: Duration::from_millis(500),
        answer_wait: Duration::from_secs(5),
        ..FileLimits::default()
    }
}

/// A file of `len` bytes with varied content, in its own temporary directory.
fn source(dir: &tempfile::TempDir, name: &str, len: usize) -> PathBuf {
    let path = dir.path().join(name);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&path, data).unwrap();
    path
}

/// A new, idle progress counter for `send_file`.
fn progress() -> Arc<Progress> {
    Progress::new()
}

/// A sender written from `proto/chat.proto` with snow: it can offer anything and then send
/// whatever a test wants, frame by frame.
struct RawSender {
    stream: TcpStream,
    transport: snow::TransportState,
}

impl RawSender {
    async fn connect(port: u16, keys_private: &[u8], remote: &[u8]) -> RawSender {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut hs = snow::Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
            .local_private_key(keys_private)
            .unwrap()
            .remote_public_key(remote)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut buf = vec![0u8; 65535];
        // -> e, es, s, ss with PeerHello{exchange: PEER_EXCHANGE_FILE}
        let n = hs.write_message(&[8, 1], &mut buf).unwrap();
        write_frame(&mut stream, &buf[..n]).await;
        let reply = read_frame(&mut stream).await.expect("handshake reply");
        hs.read_message(&reply, &mut buf).unwrap();
        RawSender {
            stream,
            transport: hs.into_transport_mode().unwrap(),
        }
    }

    async fn send(&mut self, plaintext: &[u8]) {
        let mut buf = vec![0u8; 65535];
        let n = self.transport.write_message(plaintext, &mut buf).unwrap();
        write_frame(&mut self.stream, &buf[..n]).await;
    }

    /// Sends the raw bytes of one frame body without encrypting (a garbage frame).
    async fn send_garbage(&mut self, body: &[u8]) {
        write_frame(&mut self.stream, body).await;
    }

    async fn offer(&mut self, offer: &FileOffer) {
        self.send(&offer.encode_to_vec()).await;
    }

    async fn answer(&mut self) -> FileAnswer {
        let sealed = read_frame(&mut self.stream).await.expect("an answer");
        let mut buf = vec![0u8; 65535];
        let n = self.transport.read_message(&sealed, &mut buf).unwrap();
        FileAnswer::decode(&buf[..n]).unwrap()
    }

    /// Waits until the receiver closes; `true` if it sent nothing more (no ack) first.
    async fn closed_without_reply(&mut self) -> bool {
        timeout(PATIENCE, read_frame(&mut self.stream))
            .await
            .expect("the receiver should close")
            .is_none()
    }
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    // The receiver may have closed already; the test then checks what it did.
    let _ = stream.write_all(&out).await;
}

/// One frame, or `None` at a close (clean or reset).
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn offer(name: &str, size: u64, id: &str) -> FileOffer {
    FileOffer {
        transfer_id: id.into(),
        from: "alice".into(),
        to: "bob".into(),
        name: name.into(),
        size,
        sent_at_ms: 1,
    }
}

/// A `FilePart` carrying `data`.
fn chunk(data: &[u8]) -> Vec<u8> {
    FilePart {
        part: Some(Part::Chunk(data.to_vec())),
    }
    .encode_to_vec()
}

/// A `FilePart` carrying a checksum.
fn checksum(sum: &[u8]) -> Vec<u8> {
    FilePart {
        part: Some(Part::Sha256(sum.to_vec())),
    }
    .encode_to_vec()
}
