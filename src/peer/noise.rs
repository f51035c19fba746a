//! Noise `IK` for the peer path: static keys, the two handshake messages and the transport
//! ciphers that follow, all in memory.
//!
//! Knows keys, never users, grants or sockets: the listener decides whether an initiator's key is
//! welcome, and the caller moves the bytes (framed by `frame.rs`).

use std::fmt;
use std::sync::LazyLock;

use snow::params::NoiseParams;
use snow::{Builder, HandshakeState, TransportState};

/// The one protocol the peer path speaks (SPEC §7). Empty prologue, no PSK.
const PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

static PARAMS: LazyLock<NoiseParams> = LazyLock::new(|| {
    PROTOCOL
        .parse()
        .expect("PROTOCOL is a valid Noise protocol name")
});

/// Length of an X25519 public or private key.
pub(crate) const KEY_LEN: usize = 32;
/// Length of a ChaChaPoly authentication tag.
const TAG_LEN: usize = 16;
/// `-> e, es, s, ss` with an empty payload: e (32) + encrypted s (32 + 16) + tag of the payload (16).
pub(crate) const HANDSHAKE_1_LEN: usize = KEY_LEN + (KEY_LEN + TAG_LEN) + TAG_LEN;
/// The longest payload the first handshake message may carry: a `PeerHello` (2 bytes today),
/// with room for fields to come.
pub(crate) const MAX_HELLO: usize = 32;
/// `<- e, ee, se` with an empty payload: e (32) + tag of the payload (16).
pub(crate) const HANDSHAKE_2_LEN: usize = KEY_LEN + TAG_LEN;
/// The largest plaintext one transport message (one frame) can carry.
pub(crate) const MAX_PLAINTEXT: usize = super::frame::MAX_LEN - TAG_LEN;

/// An X25519 static key pair for one login (fresh per login).
///
/// `Debug` shows the public half only.
#[derive(Clone)]
pub struct PeerKeys {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl PeerKeys {
    /// A fresh key pair from the operating system's random number generator.
    ///
    /// # Panics
    /// If the operating system cannot provide random bytes; nothing sensible can go on without.
    pub fn generate() -> PeerKeys {
        let pair = Builder::new(PARAMS.clone())
            .generate_keypair()
            .expect("the operating system's random number generator failed");
        let mut keys = PeerKeys {
            private: [0; KEY_LEN],
            public: [0; KEY_LEN],
        };
        keys.private.copy_from_slice(&pair.private);
        keys.public.copy_from_slice(&pair.public);
        keys
    }

    /// The public half, 32 bytes: what `LoginRequest.peer_public_key` carries.
    pub fn public(&self) -> &[u8] {
        &self.public
    }
}

impl fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public: String = self.public.iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("PeerKeys")
            .field("public", &public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// The sender's side of the handshake, between its first message and the responder's reply.
pub(crate) struct Initiator(HandshakeState);

impl Initiator {
    /// [`start_with`](Self::start_with) an empty hello (a private message's exchange).
    #[cfg(test)]
    pub(crate) fn start(
        keys: &PeerKeys,
        remote: &[u8],
    ) -> Result<(Initiator, Vec<u8>), snow::Error> {
        Self::start_with(keys, remote, &[])
    }

    /// Starts a handshake towards the responder whose static public key is `remote`, with
    /// `hello` (at most [`MAX_HELLO`] bytes) as the first message's payload, encrypted and
    /// authenticated like the rest: it tells the responder which exchange follows.
    ///
    /// Returns the initiator and the first handshake message (`HANDSHAKE_1_LEN` bytes + hello).
    pub(crate) fn start_with(
        keys: &PeerKeys,
        remote: &[u8],
        hello: &[u8],
    ) -> Result<(Initiator, Vec<u8>), snow::Error> {
        if hello.len() > MAX_HELLO {
            return Err(snow::Error::Input);
        }
        // snow copies the remote key into a fixed buffer and would panic on a longer one.
        if remote.len() != KEY_LEN {
            return Err(snow::Error::Input);
        }
        let mut state = Builder::new(PARAMS.clone())
            .local_private_key(&keys.private)?
            .remote_public_key(remote)?
            .build_initiator()?;
        // -> e, es, s, ss  (payload: the hello, usually empty)
        let mut first = vec![0u8; HANDSHAKE_1_LEN + hello.len()];
        let len = state.write_message(hello, &mut first)?;
        first.truncate(len);
        Ok((Initiator(state), first))
    }

    /// Reads the responder's reply and switches to transport mode.
    pub(crate) fn finish(mut self, reply: &[u8]) -> Result<Transport, snow::Error> {
        // <- e, ee, se  (empty payload); a non-empty payload is not ours to interpret.
        let mut payload = vec![0u8; reply.len()];
        if self.0.read_message(reply, &mut payload)? != 0 {
            return Err(snow::Error::Input);
        }
        Ok(Transport(self.0.into_transport_mode()?))
    }
}

/// The listener's side of the handshake, after the first message and before its reply.
pub(crate) struct Responder {
    state: HandshakeState,
    /// The first message's payload: empty, or a `PeerHello`.
    hello: Vec<u8>,
}

impl Responder {
    /// Reads the initiator's first message. Fails unless it was made for `keys`.
    pub(crate) fn accept(keys: &PeerKeys, first: &[u8]) -> Result<Responder, snow::Error> {
        let mut state = Builder::new(PARAMS.clone())
            .local_private_key(&keys.private)?
            .build_responder()?;
        // -> e, es, s, ss  (payload: empty, or a PeerHello)
        let mut payload = vec![0u8; first.len()];
        let len = state.read_message(first, &mut payload)?;
        if len > MAX_HELLO {
            return Err(snow::Error::Input);
        }
        payload.truncate(len);
        Ok(Responder {
            state,
            hello: payload,
        })
    }

    /// The initiator's static public key, authenticated by the first message (`s`, `ss`).
    pub(crate) fn initiator_key(&self) -> &[u8] {
        // IK's first message always carries `s`, and `accept` only returns after reading it.
        self.state.get_remote_static().unwrap_or_default()
    }

    /// The first message's payload, authenticated with the initiator's key: empty for a
    /// private message, a `PeerHello` otherwise.
    pub(crate) fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// Writes the reply (`HANDSHAKE_2_LEN` bytes) and switches to transport mode.
    pub(crate) fn reply(mut self) -> Result<(Vec<u8>, Transport), snow::Error> {
        // <- e, ee, se  (empty payload)
        let mut reply = vec![0u8; HANDSHAKE_2_LEN];
        let len = self.state.write_message(&[], &mut reply)?;
        reply.truncate(len);
        Ok((reply, Transport(self.state.into_transport_mode()?)))
    }
}

/// The transport ciphers after a completed handshake.
pub(crate) struct Transport(TransportState);

impl Transport {
    /// Encrypts one message; `plaintext` must be at most `MAX_PLAINTEXT` bytes.
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, snow::Error> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(snow::Error::Input);
        }
        let mut sealed = vec![0u8; plaintext.len() + TAG_LEN];
        let len = self.0.write_message(plaintext, &mut sealed)?;
        sealed.truncate(len);
        Ok(sealed)
    }

    /// [`seal`](Self::seal) into `out` (at least `plaintext.len() + 16` bytes); returns the
    /// sealed length. The file transfer's hot path, which reuses one buffer per transfer.
    pub(crate) fn seal_into(
        &mut self,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(snow::Error::Input);
        }
        self.0.write_message(plaintext, out)
    }

    /// [`open`](Self::open) into `out` (at least as long as `sealed`); returns the plaintext's
    /// length.
    pub(crate) fn open_into(
        &mut self,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        self.0.read_message(sealed, out)
    }

    /// Decrypts and authenticates one message.
    pub(crate) fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, snow::Error> {
        let mut plain = vec![0u8; sealed.len()];
        let len = self.0.read_message(sealed, &mut plain)?;
        plain.truncate(len);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_reveals_the_initiators_key_and_both_directions_decrypt() {
        let (alice, bob) = (PeerKeys::generate(), PeerKeys::generate());
        let (initiator, first) = Initiator::start(&alice, bob.public()).unwrap();
        assert_eq!(first.len(), HANDSHAKE_1_LEN);

        let responder = Responder::accept(&bob, &first).unwrap();
        assert_eq!(responder.initiator_key(), alice.public());
        let (reply, mut bob_t) = responder.reply().unwrap();
        assert_eq!(reply.len(), HANDSHAKE_2_LEN);
        let mut alice_t = initiator.finish(&reply).unwrap();

        let sealed = alice_t.seal(b"hi bob").unwrap();
        assert_eq!(bob_t.open(&sealed).unwrap(), b"hi bob");
        let sealed = bob_t.seal(b"ack").unwrap();
        assert_eq!(alice_t.open(&sealed).unwrap(), b"ack");
    }

    #[test]
    fn the_hello_reaches_the_responder_and_an_oversize_one_is_refused() {
        let (alice, bob) = (PeerKeys::generate(), PeerKeys::generate());
        let (_, first) = Initiator::start_with(&alice, bob.public(), &[8, 1]).unwrap();
        assert_eq!(first.len(), HANDSHAKE_1_LEN + 2);
        assert_eq!(Responder::accept(&bob, &first).unwrap().hello(), &[8, 1]);
        let (_, plain) = Initiator::start(&alice, bob.public()).unwrap();
        assert!(Responder::accept(&bob, &plain).unwrap().hello().is_empty());
        assert!(Initiator::start_with(&alice, bob.public(), &[0; MAX_HELLO + 1]).is_err());
    }

    #[test]
    fn first_message_for_another_responder_key_is_refused() {
        let (alice, bob, carol) = (
            PeerKeys::generate(),
            PeerKeys::generate(),
            PeerKeys::generate(),
        );
        let (_, first) = Initiator::start(&alice, carol.public()).unwrap();
        assert!(Responder::accept(&bob, &first).is_err());
    }

    #[test]
    fn garbage_and_short_input_are_errors_not_panics() {
        let bob = PeerKeys::generate();
        assert!(Responder::accept(&bob, &[0u8; HANDSHAKE_1_LEN]).is_err());
        assert!(Responder::accept(&bob, b"short").is_err());
        assert!(
            Initiator::start(&bob, &[1u8; 64]).is_err(),
            "64-byte remote key"
        );
        assert!(Initiator::start(&bob, &[]).is_err(), "empty remote key");
    }

    #[test]
    fn random_bytes_never_panic_either_side() {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let (alice, bob) = (PeerKeys::generate(), PeerKeys::generate());
        for _ in 0..32 {
            let mut junk = vec![0u8; rng.gen_range(0..200)];
            rng.fill(&mut junk[..]);
            assert!(Responder::accept(&bob, &junk).is_err());
            let (initiator, _) = Initiator::start(&alice, bob.public()).unwrap();
            assert!(initiator.finish(&junk).is_err());
        }
    }

    #[test]
    fn tampered_transport_message_does_not_decrypt() {
        let (alice, bob) = (PeerKeys::generate(), PeerKeys::generate());
        let (initiator, first) = Initiator::start(&alice, bob.public()).unwrap();
        let (reply, mut bob_t) = Responder::accept(&bob, &first).unwrap().reply().unwrap();
        let mut alice_t = initiator.finish(&reply).unwrap();
        let mut sealed = alice_t.seal(b"hi").unwrap();
        sealed[0] ^= 1;
        assert!(bob_t.open(&sealed).is_err());
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let keys = PeerKeys::generate();
        let shown = format!("{keys:?}");
        let private: String = keys.private.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&private));
        assert!(shown.contains("redacted"));
    }
}
