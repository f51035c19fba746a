//! The typed gRPC client: connecting (plaintext, or TLS with the trust of `client/tls.rs`), and
//! clients that carry a bearer token.
//! The chat CLI, `confab admin`, the load generator and the tests all use it.

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, anyhow, bail};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint, Uri},
};

use super::{connect, tls};
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

/// How long reaching a server (TCP, and TLS's handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach one server: tonic's endpoint, and for `https://` the connector that does TLS
/// with confab's trust in the server's certificate (`client/tls.rs`).
#[derive(Clone)]
pub struct Target {
    endpoint: Endpoint,
    /// `None` for plain `http://`.
    tls: Option<tls::Connector>,
}

impl Target {
    /// Connects from `local` (any address if `None`).
    #[must_use]
    pub fn local_address(mut self, local: Option<IpAddr>) -> Self {
        self.endpoint = self.endpoint.local_address(local);
        if let Some(tls) = &mut self.tls {
            tls.set_local_address(local);
        }
        self
    }

    /// Connects now.
    ///
    /// # Errors
    /// The server cannot be reached, or its certificate is not trusted.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => self.endpoint.connect().await,
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
        }
    }

    /// A channel that connects when first used (and again after the connection is lost).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            None => self.endpoint.connect_lazy(),
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.clone()),
        }
    }
}

/// How to reach `server` (`http://host:port` or `https://host:port`, or a bare loopback
/// `host:port`, see [`connect::server_url`]). For `https`, `ca` is a PEM file of the
/// certificates to trust: the server's own certificate (pinned: trusted as it is, like SSH's
/// `known_hosts`), or the certificate authority that signed it. The system's roots are not used.
///
/// # Errors
/// A malformed URL, an unreadable CA file or one without a certificate, or `ca` with an `http`
/// URL.
pub fn endpoint(server: &str, ca: Option<&Path>) -> anyhow::Result<Target> {
    let server = &connect::server_url(server).map_err(|why| anyhow!(why))?;
    let malformed = || format!("{server:?} is not a server URL like http://127.0.0.1:4119");
    let uri: Uri = server.parse().with_context(malformed)?;
    let https = uri.scheme_str() == Some("https");
    // tonic's own TLS cannot take confab's verifier, so tonic is told plain http (what it
    // dials) and the connector does the TLS; requests still say https (the origin).
    let dialled = match (https, ca) {
        (true, _) => server.replacen("https://", "http://", 1),
        (false, Some(_)) => bail!("--ca needs an https:// server URL"),
        (false, None) => server.clone(),
    };
    let mut endpoint = Endpoint::from_shared(dialled)
        .with_context(malformed)?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let mut tls = None;
    if https {
        let host = uri.host().ok_or_else(|| anyhow!(malformed()))?;
        tls = Some(tls::Connector::new(host, ca, CONNECT_TIMEOUT)?);
        endpoint = endpoint.origin(uri);
    }
    Ok(Target { endpoint, tls })
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
