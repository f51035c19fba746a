//! Generates Rust from the protos with a vendored protoc, so `cargo build` needs nothing
//! installed.
//!
//! Three passes:
//! 1. `proto/chat.proto`: messages and clients into `OUT_DIR/confab.v1.rs` (`crate::pb`), plus
//!    the descriptor set that server reflection serves;
//! 2. the same file's server traits into `OUT_DIR/server/confab.v1.rs`, with every message taken
//!    from `crate::pb` except `Event`, which the server sends as pre-encoded bytes
//!    (`crate::server::wire::EncodedEvent`) so that a broadcast is encoded once, not once per
//!    recipient, and `SendStreamRequest`, which arrives undecoded
//!    (`crate::server::decode::SendStreamItem`; both are `server::raw::Raw`) so that one bad item is answered on its stream
//!    instead of ending it; with `wire::ServerCodec`, whose small encode buffer keeps an idle
//!    stream cheap and whose decoder answers undecodable requests `INVALID_ARGUMENT`;
//! 3. `benches/relay.proto`, the bare relay `confab bench --baseline` measures against: client
//!    and server into `OUT_DIR/confab.bench.relay.v1.rs`.

use std::{
    env,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let chat = "proto/chat.proto";

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .file_descriptor_set_path(out.join("confab_descriptor.bin"))
        .compile_with_config(with_protoc(&protoc), &[chat], &["proto"])?;

    let server_out = out.join("server");
    std::fs::create_dir_all(&server_out)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .out_dir(&server_out)
        .extern_path(".confab.v1", "crate::pb")
        .extern_path(".confab.v1.Event", "crate::server::wire::EncodedEvent")
        .extern_path(
            ".confab.v1.SendStreamRequest",
            "crate::server::decode::SendStreamItem",
        )
        .codec_path("crate::server::wire::ServerCodec")
        .compile_with_config(with_protoc(&protoc), &[chat], &["proto"])?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(with_protoc(&protoc), &["benches/relay.proto"], &["benches"])?;
    Ok(())
}

/// A prost configuration that runs the vendored protoc.
fn with_protoc(protoc: &Path) -> tonic_prost_build::Config {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config
}
