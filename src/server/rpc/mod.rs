//! The gRPC services: thin adapters from generated traits to [`super::core::Core`].
//!
//! Each handler checks the caller, converts the request, calls one core operation and converts
//! the result; errors become statuses through `From<Error> for Status` alone.

pub mod admin;
pub mod auth;
pub mod chat;

/// Server traits generated from `proto/chat.proto` (see `build.rs`).
#[allow(clippy::all, unreachable_pub, missing_docs)] // generated code
pub mod services {
    include!(concat!(env!("OUT_DIR"), "/server/confab.v1.rs"));
}

use std::{net::SocketAddr, sync::Arc};

use tonic::metadata::MetadataMap;

use super::listen::{self, ConnState};

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller's address, as the server's TCP connection sees it.
pub(crate) fn remote<T>(request: &tonic::Request<T>) -> SocketAddr {
    listen::conn_info(request.extensions())
        .map(|c| c.remote)
        .or_else(|| request.remote_addr())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The connection a request came on, to be admitted once the call proves who is calling
/// (which lifts the listener's login deadline).
pub(crate) fn connection<T>(request: &tonic::Request<T>) -> Option<Arc<ConnState>> {
    listen::conn_info(request.extensions()).map(|c| c.state.clone())
}

/// Admits the connection of an authenticated request.
pub(crate) fn admit<T>(request: &tonic::Request<T>) {
    if let Some(info) = listen::conn_info(request.extensions()) {
        info.state.admit();
    }
}
