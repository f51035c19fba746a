//! One login: who to log in as (kept for automatic re-logins), the `Login` call with a fresh
//! peer key pair, and what a login gives the rest of the client ([`Live`]).
//!
//! The listener is rekeyed before the call, so peers allowed under the old keys are forgotten
//! before anybody can be granted the new ones.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::{Status, transport::Channel};

use super::{
    api::{self, Authed},
    call::timed,
    servers::Servers,
    ticket::Tickets,
};
use crate::{
    pb::{self, chat_client::ChatClient},
    peer::{PeerKeys, PeerListener},
    types::Secret,
};

/// Who to log in as, and where.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    /// The username as typed.
    pub(crate) user: String,
    /// Kept for re-logins after a server restart; shared, so a `password` change reaches them.
    pub(crate) password: SharedSecret,
    /// `--advertise-host`: what peers should dial instead of the address the server sees.
    pub(crate) advertise_host: Option<String>,
    /// The servers to log in at (one, or the nodes of a cluster).
    pub(crate) servers: Servers,
    /// This device's tickets for this user at those servers.
    pub(crate) tickets: Tickets,
}

/// A secret several parts of the client hold and one may replace (the password after
/// `password`).
#[derive(Debug, Clone)]
pub(crate) struct SharedSecret(Arc<Mutex<Secret>>);

impl SharedSecret {
    pub(crate) fn new(secret: Secret) -> Self {
        SharedSecret(Arc::new(Mutex::new(secret)))
    }

    /// The secret now.
    pub(crate) fn get(&self) -> Secret {
        self.lock().clone()
    }

    /// Replaces it for every holder.
    pub(crate) fn set(&self, secret: Secret) {
        *self.lock() = secret;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Secret> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One login: what the REPL needs to make calls and peer sends on its behalf.
pub(crate) struct Live {
    /// Calls carrying this login's token.
    pub(crate) chat: ChatClient<Authed>,
    /// This login's peer key pair; the listener uses the same.
    pub(crate) keys: PeerKeys,
    /// Our name as registered (the server's spelling).
    pub(crate) user: String,
    /// The URL of the server this login is at.
    pub(crate) server: String,
    /// Counts logins of this process: grants belong to the login they were made in.
    pub(crate) number: u64,
    /// The server's body limit, checked before a private send (the server checks the rest).
    pub(crate) max_message_bytes: usize,
    /// How often the pump heartbeats.
    pub(crate) heartbeat: Duration,
}

impl std::fmt::Debug for Live {
    // The client carries the session token in its interceptor: name the login, not its calls.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("user", &self.user)
            .field("server", &self.server)
            .field("number", &self.number)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Logs in at server `at` of the list (over `channel`, connected to it) with a fresh key pair
/// (the listener is rekeyed first).
///
/// # Errors
/// The server's status: wrong password, lockout, unreachable…
pub(crate) async fn login(
    channel: &Channel,
    at: usize,
    credentials: &Credentials,
    listener: &PeerListener,
    number: u64,
) -> Result<Live, Status> {
    let keys = PeerKeys::generate();
    listener.rekey(keys.clone());
    let request = pb::LoginRequest {
        username: credentials.user.clone(),
        password: credentials.password.get().expose().to_owned(),
        peer_port: u32::from(listener.local_addr().port()),
        peer_public_key: keys.public().to_vec(),
        peer_host: credentials.advertise_host.clone().unwrap_or_default(),
        device_ticket: credentials.tickets.read(at),
    };
    let response = timed(api::auth(channel.clone()).login(request))
        .await?
        .into_inner();
    credentials.tickets.keep(at, &response.device_ticket);
    let chat = api::chat(channel.clone(), &response.token)
        .map_err(|_| Status::internal("the server sent a session token that is not ASCII"))?;
    Ok(Live {
        chat,
        keys,
        user: response.username,
        server: credentials.servers.url(at).to_owned(),
        number,
        max_message_bytes: response.max_message_bytes as usize,
        // A server that says 0 would make us spin.
        heartbeat: Duration::from_millis(response.heartbeat_interval_ms)
            .max(Duration::from_millis(50)),
    })
}

#[cfg(test)]
impl Live {
    /// A login whose server has gone away: every call fails the way an unreachable server's
    /// does (connection refused on loopback), which is what the tests of the client's failure
    /// paths need. Must be called inside a runtime.
    pub(crate) fn unreachable(user: &str, max_message_bytes: usize) -> Live {
        // A port that was free a moment ago and has nobody listening now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let server = format!("http://127.0.0.1:{port}");
        let channel = tonic::transport::Endpoint::from_shared(server.clone())
            .expect("a valid URL")
            .connect_lazy();
        Live {
            chat: api::chat(channel, "token").expect("an ASCII token"),
            keys: PeerKeys::generate(),
            user: user.into(),
            server,
            number: 1,
            max_message_bytes,
            heartbeat: Duration::from_secs(30),
        }
    }
}
