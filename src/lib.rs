//! confab: a small chat system with a gRPC control plane and a Noise-encrypted direct peer path.
//!
//! - [`server`]: the message center (`confab serve`): accounts, sessions, durable inbox, presence,
//!   blocking, the address/consent handshake, the Admin service.
//! - [`client`]: the typed gRPC client library and the `confab chat` program.
//! - [`peer`]: the direct peer path: framing, Noise IK, the listener and the sender.
//! - [`pb`]: the code generated from `proto/chat.proto`.
//! - [`types`]: rules and newtypes both sides share (usernames, secrets).
//! - [`signal`]: SIGINT/SIGTERM, for every subcommand.
//! - `bench`: the load generator (`confab bench`) and the bare relay it compares confab with.
//!
//! `ARCHITECTURE.md` at the repository root is the map.

mod bench;
pub mod cli;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod peer;
pub mod server;
pub mod signal;
pub mod types;

/// Code generated from `proto/chat.proto`: messages and clients.
#[allow(clippy::all, unreachable_pub, missing_docs)] // generated code; its style is not ours to fix
pub mod pb {
    tonic::include_proto!("confab.v1");

    /// The encoded `FileDescriptorSet` of `proto/chat.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("confab_descriptor");
}

/// Current time as Unix milliseconds, the unit of every `_ms` field in the proto.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
