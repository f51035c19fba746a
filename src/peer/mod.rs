//! The direct peer path (SPEC §7): `private` messages from one client straight to another,
//! encrypted and authenticated with Noise `IK`, never through the server.
//!
//! Owns the wire protocol documented at the bottom of `proto/chat.proto`: the 2-byte length
//! framing (`frame.rs`), the handshake and ciphers (`noise.rs`), the receiving side
//! ([`PeerListener`]) and the sending side ([`send()`]). One message is one TCP connection.
//!
//! Deliberately doesn't know about the server, sessions or grants: the client tells the listener
//! which initiator keys to [`allow`](PeerListener::allow) and [`revoke`](PeerListener::revoke),
//! and falls back to the server when [`send()`] fails. Imports neither `server` nor `client`.
//!
//! Files (SPEC §13) use the same transport and allowlist; [`file`](mod@file) owns that exchange and the
//! download directory. The first handshake message's payload tells a file connection from a
//! message connection.
//!
//! Invariant: a peer can cost the listener at most one connection slot for at most one
//! exchange deadline, and a [`PeerAck`](crate::pb::PeerAck) is only sent once the message is in
//! the client's inbound channel.

mod dial;
pub mod file;
pub(crate) mod frame;
mod keyring;
mod listener;
pub(crate) mod noise;
mod responder;
mod send;

pub use listener::{
    EXCHANGE_DEADLINE, INBOUND_QUEUE, ListenerLimits, MAX_CONNECTIONS, PeerListener,
};
pub use noise::PeerKeys;
pub use responder::Inbound;
pub use send::{PeerError, send};
