//! The test harness: a real server on 127.0.0.1:0 with a temporary data dir, and users that log
//! in, subscribe and wait for events with a deadline. The real binaries as child processes are
//! in `process` (`confab serve`), `chat` (`confab chat --json`) and `tmux` (a real terminal).

#![allow(dead_code)] // each test file uses a different part

pub mod chat;
pub mod nats;
pub mod pg;
pub mod process;
pub mod scripted;
pub mod tmux;

use std::{future::Future, time::Duration};

use confab::{
    client::api::{self, Authed},
    pb::{self, admin_client::AdminClient, chat_client::ChatClient, event::Kind},
    server::{self, Config, Handle},
};
use tonic::{Code, Status, Streaming, transport::Channel};

/// How long any awaited event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const PASSWORD: &str = "correct horse battery";

/// Awaits `f`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// A server running in this process.
pub struct TestServer {
    pub handle: Handle,
    pub dir: tempfile::TempDir,
    pub url: String,
    config: Config,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown.cancel();
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// A server with [`Config::for_tests`] changed by `f`.
    pub async fn with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path().to_path_buf());
        if pg::selected() {
            config.store = Some(confab::types::Secret::new(pg::fresh_database()));
        }
        f(&mut config);
        Self::on(dir, config).await
    }

    async fn on(dir: tempfile::TempDir, config: Config) -> Self {
        let handle = server::start(config.clone()).await.expect("server starts");
        let url = format!("http://{}", handle.addr);
        TestServer {
            handle,
            dir,
            url,
            config,
        }
    }

    /// Shuts this server down gracefully and starts a new one on the same data dir (on a new
    /// port).
    pub async fn restart(mut self) -> Self {
        self.handle.shutdown.cancel();
        self.stopped().await.unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = self.config.clone();
        drop(self);
        Self::on(dir, config).await
    }

    /// Waits for the server to stop (by itself, or after its shutdown was cancelled) and
    /// returns how its task ended.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        let task = std::mem::replace(&mut self.handle.task, tokio::spawn(async { Ok(()) }));
        within("the server to stop", task)
            .await
            .expect("the server task")
    }

    /// Every account as stored, read through the store itself (SQLite or PostgreSQL).
    pub async fn stored_users(&self) -> Vec<confab::server::store::UserRow> {
        let url = self.config.store.as_ref().map(|s| s.expose().to_owned());
        let path = self.dir.path().join("confab.db");
        tokio::task::spawn_blocking(move || {
            confab::server::store::open(url.as_deref(), &path)
                .unwrap()
                .users()
                .unwrap()
        })
        .await
        .unwrap()
    }

    pub async fn channel(&self) -> Channel {
        api::connect(&self.url, None).await.expect("connect")
    }

    pub async fn auth(&self) -> pb::auth_client::AuthClient<Channel> {
        api::auth(self.channel().await)
    }

    pub async fn admin(&self) -> AdminClient<Authed> {
        api::admin(self.channel().await, &self.handle.admin_token).unwrap()
    }

    /// The server's counters, as the Admin service reports them.
    pub async fn stats(&self) -> pb::GetStatsResponse {
        self.admin()
            .await
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("stats")
            .into_inner()
    }

    /// Every account, as the Admin service lists them.
    pub async fn users(&self) -> Vec<pb::UserInfo> {
        self.admin()
            .await
            .list_users(pb::ListUsersRequest {})
            .await
            .expect("list users")
            .into_inner()
            .users
    }

    pub async fn register(&self, name: &str) {
        register_at(&self.url, name).await;
    }

    /// Logs `name` in (with a peer listener port and key) and returns the session, not subscribed.
    pub async fn login(&self, name: &str) -> Result<Session, Status> {
        self.login_from(name, PASSWORD, None).await
    }

    /// Logs in from a chosen local address (to test per-address rules).
    pub async fn login_from(
        &self,
        name: &str,
        password: &str,
        local: Option<std::net::IpAddr>,
    ) -> Result<Session, Status> {
        login_at(&self.url, name, password, local).await
    }

    /// Registers, logs in and subscribes `name`, consuming the (empty) backlog.
    pub async fn user(&self, name: &str) -> Session {
        self.register(name).await;
        let mut s = self.login(name).await.unwrap();
        s.subscribe(0).await;
        assert_eq!(s.backlog().await.len(), 0, "a new user has no backlog");
        s
    }
}

/// Registers `name` with [`PASSWORD`] on the server at `url`.
pub async fn register_at(url: &str, name: &str) {
    let channel = api::connect(url, None).await.expect("connect");
    api::auth(channel)
        .register(pb::RegisterRequest {
            username: name.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("registering {name}: {s:?}"));
}

/// Logs `name` in at `url` from `local` (any address if `None`), with a peer listener port and
/// key; not subscribed.
pub async fn login_at(
    url: &str,
    name: &str,
    password: &str,
    local: Option<std::net::IpAddr>,
) -> Result<Session, Status> {
    let endpoint = api::endpoint(url, None).unwrap().local_address(local);
    let channel = endpoint.connect().await.expect("connect");
    let peer_public_key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let response = api::auth(channel.clone())
        .login(pb::LoginRequest {
            username: name.into(),
            password: password.into(),
            peer_port: 40_000 + u32::from(rand::random::<u16>() % 20_000),
            peer_public_key: peer_public_key.clone(),
            peer_host: String::new(),
            device_ticket: String::new(),
        })
        .await?
        .into_inner();
    Ok(Session {
        name: response.username.clone(),
        chat: api::chat(channel, &response.token).unwrap(),
        token: response.token.clone(),
        peer_public_key,
        events: None,
        login: response,
    })
}

/// A logged-in user.
pub struct Session {
    pub name: String,
    pub token: String,
    pub chat: ChatClient<Authed>,
    pub peer_public_key: Vec<u8>,
    pub events: Option<Streaming<pb::Event>>,
    pub login: pb::LoginResponse,
}

impl Session {
    pub async fn subscribe(&mut self, resume_after: u64) {
        self.subscribe_with(pb::SubscribeRequest {
            resume_after,
            ..Default::default()
        })
        .await;
    }

    pub async fn subscribe_with(&mut self, request: pb::SubscribeRequest) {
        let stream = self
            .chat
            .subscribe(request)
            .await
            .expect("subscribe")
            .into_inner();
        self.events = Some(stream);
    }

    /// The next event, whatever it is.
    pub async fn next(&mut self, what: &str) -> Kind {
        let events = self.events.as_mut().expect("subscribed");
        let name = self.name.clone();
        match within(&format!("{name}: {what}"), events.message()).await {
            Ok(Some(pb::Event { kind: Some(kind) })) => kind,
            Ok(Some(_)) => panic!("{name}: an empty event while waiting for {what}"),
            Ok(None) => panic!("{name}: the stream ended while waiting for {what}"),
            Err(s) => panic!("{name}: the stream failed ({s:?}) while waiting for {what}"),
        }
    }

    /// Whether the stream ends (after any events) within the deadline.
    pub async fn stream_closed(&mut self) -> bool {
        let events = self.events.as_mut().expect("subscribed");
        within("the stream to close", async {
            loop {
                match events.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return true,
                }
            }
        })
        .await
    }

    /// The direct messages replayed up to BacklogEnd.
    pub async fn backlog(&mut self) -> Vec<pb::DirectMessage> {
        let mut out = Vec::new();
        loop {
            match self.next("the backlog").await {
                Kind::Message(m) => out.push(m),
                Kind::BacklogEnd(_) => return out,
                other => panic!("{}: unexpected {other:?} in the backlog", self.name),
            }
        }
    }

    pub async fn message(&mut self) -> pb::DirectMessage {
        match self.next("a direct message").await {
            Kind::Message(m) => m,
            other => panic!("{}: expected a direct message, got {other:?}", self.name),
        }
    }

    pub async fn presence(&mut self) -> (String, pb::Presence) {
        match self.next("a presence event").await {
            Kind::Presence(p) => (p.user.clone(), p.presence()),
            other => panic!("{}: expected presence, got {other:?}", self.name),
        }
    }

    pub async fn send(&mut self, to: &str, body: &str) -> Result<pb::SendMessageResponse, Status> {
        self.send_id(to, body, &format!("{:x}", rand::random::<u64>()))
            .await
    }

    pub async fn send_id(
        &mut self,
        to: &str,
        body: &str,
        id: &str,
    ) -> Result<pb::SendMessageResponse, Status> {
        self.chat
            .send_message(pb::SendMessageRequest {
                to: to.into(),
                body: body.into(),
                message_id: id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn heartbeat(&mut self, ack_seq: u64) {
        self.chat
            .heartbeat(pb::HeartbeatRequest { ack_seq })
            .await
            .expect("heartbeat");
    }

    pub async fn block(&mut self, user: &str) {
        self.chat
            .block(pb::BlockRequest { user: user.into() })
            .await
            .expect("block");
    }

    pub async fn online(&mut self) -> Vec<String> {
        self.chat
            .list_online(pb::ListOnlineRequest { since_seconds: 0 })
            .await
            .expect("list online")
            .into_inner()
            .users
            .into_iter()
            .map(|u| u.username)
            .collect()
    }

    pub async fn request_address(
        &mut self,
        user: &str,
    ) -> Result<pb::RequestAddressResponse, Status> {
        self.chat
            .request_address(pb::RequestAddressRequest { user: user.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn respond(&mut self, request_id: &str, accept: bool) -> Result<(), Status> {
        self.chat
            .respond_address_request(pb::RespondAddressRequestRequest {
                request_id: request_id.into(),
                accept,
            })
            .await
            .map(|_| ())
    }

    pub async fn broadcast(&mut self, body: &str) -> Result<pb::BroadcastResponse, Status> {
        self.chat
            .broadcast(pb::BroadcastRequest { body: body.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn try_block(&mut self, user: &str) -> Result<(), Status> {
        self.chat
            .block(pb::BlockRequest { user: user.into() })
            .await
            .map(|_| ())
    }

    pub async fn try_unblock(&mut self, user: &str) -> Result<(), Status> {
        self.chat
            .unblock(pb::UnblockRequest { user: user.into() })
            .await
            .map(|_| ())
    }

    /// The users this user has blocked.
    pub async fn blocked(&mut self) -> Vec<String> {
        self.chat
            .list_blocked(pb::ListBlockedRequest {})
            .await
            .expect("list blocked")
            .into_inner()
            .users
    }

    pub async fn logout(&mut self) {
        self.chat
            .logout(pb::LogoutRequest { ack_seq: 0 })
            .await
            .expect("logout");
    }
}

/// Asserts that `result` failed with `code` and a message containing `text`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, text: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} ({text}), got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code; message: {}", s.message());
            assert!(
                s.message().contains(text),
                "message {:?} does not contain {text:?}",
                s.message()
            );
        }
    }
}

/// A private CA and a certificate it signed for `localhost`, written into `dir` as PEM files:
/// (the CA's certificate, the certificate, its key).
pub fn localhost_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
