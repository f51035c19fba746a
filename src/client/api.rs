//! The typed gRPC client: connecting (plaintext or TLS), and clients that carry a bearer token.
//! The chat CLI, `confab admin`, the load generator and the tests all use it.

use std::{path::Path, time::Duration};

use anyhow::{Context, anyhow, bail};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use super::connect;
use crate::pb::{admin_client::AdminClient, auth_client::AuthClient, chat_client::ChatClient};

/// A channel whose every call carries `authorization: Bearer <token>`.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Adds the bearer token to each request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// An interceptor for `token`.
    ///
    /// # Errors
    /// The token is not printable ASCII.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Bearer(
            format!("Bearer {token}")
                .parse()
                .context("the token is not valid ASCII")?,
        ))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// An endpoint for `server` (`http://host:port` or `https://host:port`, or a bare loopback
/// `host:port`, see [`connect::server_url`]); `ca` is a PEM file of the certificate authority
/// to trust for `https` (the system roots are not used).
///
/// # Errors
/// A malformed URL, an unreadable CA file, or `ca` with an `http` URL.
pub fn endpoint(server: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
    let server = &connect::server_url(server).map_err(|why| anyhow!(why))?;
    let mut endpoint = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("{server:?} is not a server URL like http://127.0.0.1:4119"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    match (server.starts_with("https://"), ca) {
        (true, ca) => {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read the --ca file {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        (false, Some(_)) => bail!("--ca needs an https:// server URL"),
        (false, None) => {}
    }
    Ok(endpoint)
}

/// Connects to `server`.
///
/// # Errors
/// As [`endpoint`], or the server cannot be reached: one sentence saying why
/// ([`connect::explain`]).
pub async fn connect(server: &str, ca: Option<&Path>) -> anyhow::Result<Channel> {
    endpoint(server, ca)?
        .connect()
        .await
        .map_err(|e| anyhow!(connect::explain(server, ca, &e)))
}

/// The `Auth` client.
pub fn auth(channel: Channel) -> AuthClient<Channel> {
    AuthClient::new(channel)
}

/// The `Chat` client for a session token.
///
/// # Errors
/// The token is not ASCII.
pub fn chat(channel: Channel, token: &str) -> anyhow::Result<ChatClient<Authed>> {
    Ok(ChatClient::with_interceptor(channel, Bearer::new(token)?))
}

/// The `Admin` client for the operator token.
///
/// # Errors
/// The token is not ASCII.
pub fn admin(channel: Channel, token: &str) -> anyhow::Result<AdminClient<Authed>> {
    Ok(AdminClient::with_interceptor(channel, Bearer::new(token)?))
}

/// The sentence to show a person for a failed call.
pub fn sentence(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable if status.message().is_empty() => {
            "the server is unavailable".into()
        }
        _ if status.message().is_empty() => format!("the call failed: {:?}", status.code()),
        _ => status.message().to_owned(),
    }
}
