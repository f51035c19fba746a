//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpora on
//! stable Rust: one function per target, each taking arbitrary bytes and panicking only when
//! confab broke a promise (a panic inside confab, or an invariant stated on the function).
//!
//! Hidden from the documentation and not part of the API: it exists so the fuzzers reach what an
//! attacker reaches (the peer listener, request decoding, the chat client's parser, the store's
//! start-up checks) without those internals becoming public. `docs/fuzzing.md` says how to run
//! the fuzzers.

mod commands;
mod peer;
mod requests;
mod store;

pub use commands::chat_command;
pub use peer::peer_listener;
pub use requests::request;
pub use store::{store_open, store_seed};

/// A fuzz target's entry point: any bytes in, a panic only for a broken promise.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their directory under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("peer_listener", peer_listener),
    ("request", request),
    ("chat_command", chat_command),
    ("store_open", store_open),
];
