//! `confab.v1.Auth`: registration and login.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{connection, remote, services::auth_server::Auth};
use crate::{
    pb,
    server::{
        core::{Core, PeerInfo},
        error::Error,
    },
    types::Secret,
};

/// Longest `peer_host`.
const MAX_HOST_BYTES: usize = 253;

/// The `Auth` service.
pub struct AuthService(pub Arc<Core>);

#[tonic::async_trait]
impl Auth for AuthService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let core = &self.0;
        core.throttle(remote(&request))?;
        if !core.config().registration {
            return Err(Error::RegistrationClosed.into());
        }
        let conn = connection(&request);
        let req = request.into_inner();
        let account = core
            .create_user(&req.username, Secret::new(req.password))
            .await?;
        conn.inspect(|c| c.admit());
        Ok(Response::new(pb::RegisterResponse {
            username: account.name.to_string(),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let core = &self.0;
        let remote = remote(&request);
        let conn = connection(&request);
        let req = request.into_inner();
        let peer = peer_info(&req, remote)?;
        let (session, token, device_ticket) = core
            .login(
                &req.username,
                Secret::new(req.password),
                &req.device_ticket,
                remote,
                peer,
            )
            .await?;
        conn.inspect(|c| c.admit());
        Ok(Response::new(pb::LoginResponse {
            token,
            username: session.name().to_owned(),
            heartbeat_interval_ms: core.config().heartbeat_interval.as_millis() as u64,
            session_timeout_ms: core.config().session_timeout.as_millis() as u64,
            max_message_bytes: core.config().max_message_bytes as u32,
            device_ticket,
        }))
    }
}

/// Validates the peer fields of a login.
fn peer_info(
    req: &pb::LoginRequest,
    remote: std::net::SocketAddr,
) -> Result<Option<PeerInfo>, Error> {
    if req.peer_port > u32::from(u16::MAX) {
        return Err(Error::invalid("peer_port", "peer_port must be 0 to 65535"));
    }
    if req.peer_public_key.is_empty() {
        if req.peer_port != 0 {
            return Err(Error::invalid(
                "peer_public_key",
                "a peer listener needs a peer_public_key (32 bytes)",
            ));
        }
        return Ok(None);
    }
    if req.peer_public_key.len() != 32 {
        return Err(Error::invalid(
            "peer_public_key",
            "peer_public_key must be an X25519 public key of 32 bytes",
        ));
    }
    let host = req.peer_host.trim();
    if host.len() > MAX_HOST_BYTES || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "peer_host",
            format!(
                "peer_host must be a host name or IP address of at most {MAX_HOST_BYTES} bytes"
            ),
        ));
    }
    let host = if host.is_empty() {
        remote.ip().to_string()
    } else {
        host.to_owned()
    };
    Ok(Some(PeerInfo {
        host,
        port: req.peer_port as u16,
        public_key: req.peer_public_key.clone(),
    }))
}
