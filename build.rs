//! Generates Rust from `proto/chat.proto` with a vendored protoc, so `cargo build` needs nothing
//! installed.
//!
//! Two passes over the same file:
//! 1. messages and clients into `OUT_DIR/confab.v1.rs` (`crate::pb`), plus the descriptor set that
//!    server reflection serves;
//! 2. the server traits into `OUT_DIR/server/confab.v1.rs`, with every message taken from
//!    `crate::pb` except `Event`, which the server sends as pre-encoded bytes
//!    (`crate::server::wire::EncodedEvent`) so that a broadcast is encoded once, not once per
//!    recipient.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let proto = "proto/chat.proto";

    let mut messages = tonic_prost_build::Config::new();
    messages.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .file_descriptor_set_path(out.join("confab_descriptor.bin"))
        .compile_with_config(messages, &[proto], &["proto"])?;

    let server_out = out.join("server");
    std::fs::create_dir_all(&server_out)?;
    let mut server = tonic_prost_build::Config::new();
    server.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .out_dir(&server_out)
        .extern_path(".confab.v1", "crate::pb")
        .extern_path(".confab.v1.Event", "crate::server::wire::EncodedEvent")
        .compile_with_config(server, &[proto], &["proto"])?;
    Ok(())
}
