//! One user of the soak: its own connection, a real login, a `Subscribe` stream read by a task
//! of its own that also sends the heartbeats (keep-alive and acknowledgement), and logging out
//! and in again on request — cleanly, or as a killed client that just drops its connection.
//!
//! Every direct message body the stream delivers is recorded in the [`Ledger`], which is how the
//! soak knows whether a message the server acknowledged ever reached its recipient.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::anyhow;
use tokio_util::task::AbortOnDropHandle;
use tonic::Streaming;

use crate::{
    bench::{
        args::PresenceEvents,
        confab::{PASSWORD, subscribe_until_live},
    },
    client::api::{self, Authed},
    pb::{self, chat_client::ChatClient, event::Kind},
};

/// How often the reader considers a heartbeat: acknowledgements go out within this.
const ACK_EVERY: Duration = Duration::from_secs(2);

/// Message ids the server acknowledged, and those that arrived.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    acked: Mutex<HashSet<u64>>,
    received: Mutex<HashSet<u64>>,
}

impl Ledger {
    /// The body of soak message `id`.
    pub(super) fn body(id: u64) -> String {
        format!("soak {id}")
    }

    pub(super) fn acked(&self, id: u64) {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
    }

    fn received(&self, body: &str) {
        if let Some(id) = body.strip_prefix("soak ").and_then(|s| s.parse().ok()) {
            self.received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
        }
    }

    /// (acknowledged, acknowledged but not received).
    pub(super) fn missing(&self) -> (usize, usize) {
        let acked = self.acked.lock().unwrap_or_else(PoisonError::into_inner);
        let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        (acked.len(), acked.difference(&received).count())
    }
}

/// A logged-in session: its client and the task reading its stream.
struct Session {
    chat: ChatClient<Authed>,
    reader: AbortOnDropHandle<()>,
}

/// One simulated user.
pub(super) struct SoakUser {
    pub(super) name: String,
    url: String,
    ledger: Arc<Ledger>,
    /// `None` while logged out.
    session: Mutex<Option<Session>>,
    /// Highest direct-message seq read; seqs are per recipient and survive sessions.
    received_seq: Arc<AtomicU64>,
}

impl SoakUser {
    pub(super) fn new(name: String, url: String, ledger: Arc<Ledger>) -> SoakUser {
        SoakUser {
            name,
            url,
            ledger,
            session: Mutex::new(None),
            received_seq: Arc::new(AtomicU64::new(0)),
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client to send with, while logged in and reading.
    pub(super) fn chat(&self) -> Option<ChatClient<Authed>> {
        self.session()
            .as_ref()
            .filter(|s| !s.reader.is_finished())
            .map(|s| s.chat.clone())
    }

    /// Whether the session is up and its stream still read.
    pub(super) fn online(&self) -> bool {
        self.chat().is_some()
    }

    /// Connects, logs in, subscribes, and returns once the stored messages are replayed.
    pub(super) async fn login(&self) -> anyhow::Result<()> {
        let channel = api::connect(&self.url, None).await?;
        let login = api::auth(channel.clone())
            .login(pb::LoginRequest {
                username: self.name.clone(),
                password: PASSWORD.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("login as {}: {}", self.name, api::sentence(&s)))?
            .into_inner();
        let chat = api::chat(channel, &login.token)?;
        let stream = subscribe_until_live(chat.clone(), &self.name, PresenceEvents::Batched, |e| {
            on_event(&self.ledger, &self.received_seq, e)
        })
        .await?;
        let keepalive = Duration::from_millis(login.heartbeat_interval_ms.max(1000));
        let reader = Reader {
            chat: chat.clone(),
            ledger: self.ledger.clone(),
            received_seq: self.received_seq.clone(),
            keepalive,
        };
        let reader = AbortOnDropHandle::new(tokio::spawn(reader.run(stream)));
        // A session this replaces (a killed client's) is ended by the server.
        self.session().replace(Session { chat, reader });
        Ok(())
    }

    /// Logs out, acknowledging what arrived; or with `killed`, drops the connection as a client
    /// that died would, leaving the session for the next login to end.
    pub(super) async fn logout(&self, killed: bool) -> anyhow::Result<()> {
        let Some(session) = self.session().take() else {
            return Ok(());
        };
        if killed {
            return Ok(());
        }
        let ack_seq = self.received_seq.load(Ordering::Relaxed);
        session
            .chat
            .clone()
            .logout(pb::LogoutRequest { ack_seq })
            .await
            .map_err(|s| anyhow!("logout as {}: {}", self.name, api::sentence(&s)))?;
        Ok(())
    }
}

/// What the task reading one session's stream needs.
struct Reader {
    chat: ChatClient<Authed>,
    ledger: Arc<Ledger>,
    received_seq: Arc<AtomicU64>,
    keepalive: Duration,
}

impl Reader {
    /// Reads until the session ends, acknowledging within [`ACK_EVERY`] and keeping it alive.
    async fn run(mut self, mut stream: Streaming<pb::Event>) {
        // Spread over the interval, so ten thousand users' heartbeats do not come in lockstep.
        let offset = Duration::from_millis(rand::random::<u64>() % ACK_EVERY.as_millis() as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, ACK_EVERY);
        let (mut acked, mut last_beat) = (0, tokio::time::Instant::now());
        loop {
            tokio::select! {
                event = stream.message() => {
                    let Ok(Some(event)) = event else { return };
                    if !on_event(&self.ledger, &self.received_seq, event) {
                        return;
                    }
                }
                _ = tick.tick() => {
                    let received = self.received_seq.load(Ordering::Relaxed);
                    if received > acked || last_beat.elapsed() >= self.keepalive {
                        let beat = self.chat.heartbeat(pb::HeartbeatRequest { ack_seq: received });
                        if beat.await.is_err() {
                            return; // the session is over; the next login starts another
                        }
                        (acked, last_beat) = (received, tokio::time::Instant::now());
                    }
                }
            }
        }
    }
}

/// Records one event; false when the session is over.
fn on_event(ledger: &Ledger, received_seq: &AtomicU64, event: pb::Event) -> bool {
    match event.kind {
        Some(Kind::Message(m)) => {
            ledger.received(&m.body);
            received_seq.fetch_max(m.seq, Ordering::Relaxed);
            true
        }
        Some(Kind::SessionEnded(_)) => false,
        _ => true,
    }
}
