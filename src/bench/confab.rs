//! The confab target: simulated users that behave like `confab chat` clients — one gRPC
//! connection each, a real `Register`/`Login`, a live `Subscribe` stream read by a task of its
//! own, and heartbeats that acknowledge what arrived so inboxes stay small.
//!
//! Acknowledging is one task for all users rather than a timer per user, so 10 000 idle users
//! cost the load generator a hundred wakeups a second, not ten thousand; and the server gets a
//! heartbeat only from users that received something (plus the keep-alive the session timeout
//! needs). Each user is visited once per [`ACK_EVERY`], in its own slot of the second: real
//! clients' timers are independent, and a thousand heartbeats fired in the same millisecond would
//! put a once-a-second spike into the latencies being measured.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::AbortOnDropHandle,
};
use tonic::{Code, transport::Channel};

use super::{
    args::PresenceEvents,
    cpu::Processes,
    send_stream::StreamSender,
    stats::Sink,
    target::{Target, User},
};
use crate::{
    client::api::{self, Authed},
    pb::{self, chat_client::ChatClient, event::Kind},
};

/// Every bench account's password (the server runs with `--bench-fast-hash`).
pub(crate) const PASSWORD: &str = "bench-password";
/// How often each user acknowledges what it received.
const ACK_EVERY: Duration = Duration::from_secs(1);
/// The acknowledging task's tick: [`ACK_EVERY`] is split into this many slots.
const ACK_SLOTS: u64 = 100;
/// Registration shares this many connections: it is setup, not what is measured per user.
const REGISTER_CONNECTIONS: usize = 8;

/// A confab server reached at `url`, or the nodes of a cluster.
pub(crate) struct ConfabTarget {
    name: &'static str,
    /// One URL per node; users are placed round-robin in the order they are registered.
    urls: Vec<String>,
    processes: Processes,
    /// Each registered user's node (index into `urls`).
    placement: Mutex<HashMap<String, usize>>,
    presence: PresenceEvents,
    acker: Arc<Acker>,
    /// Stops the acknowledging task with the target.
    _stop: DropGuard,
}

impl ConfabTarget {
    /// A target at `url` whose process is `pid`. Must be called inside the runtime: it starts
    /// the acknowledging task.
    pub(crate) fn new(url: String, pid: Option<u32>) -> ConfabTarget {
        ConfabTarget::nodes("confab", vec![url], Processes::single(pid))
    }

    /// A target named `name` (in the report) made of the nodes at `urls`, served by
    /// `processes`. Must be called inside the runtime, and with at least one URL.
    pub(crate) fn nodes(name: &'static str, urls: Vec<String>, processes: Processes) -> Self {
        assert!(!urls.is_empty(), "a target needs a node");
        let stop = CancellationToken::new();
        let acker = Arc::new(Acker::default());
        tokio::spawn(acker.clone().run(stop.clone()));
        ConfabTarget {
            name,
            urls,
            processes,
            placement: Mutex::default(),
            presence: PresenceEvents::Batched,
            acker,
            _stop: stop.drop_guard(),
        }
    }

    /// Users take presence as `events` say (batched unless told otherwise, as `confab chat`).
    pub(crate) fn presence(mut self, events: PresenceEvents) -> ConfabTarget {
        self.presence = events;
        self
    }

    /// The URL of `user`'s node: the first node for a user never registered here.
    fn url_of(&self, user: &str) -> &str {
        let node = self
            .placement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .copied()
            .unwrap_or(0);
        &self.urls[node]
    }
}

/// Logs `name` in and straight out again over `channel`, as a client that only checks in.
///
/// # Errors
/// Either call failed.
pub(crate) async fn login_logout(channel: &Channel, name: &str) -> anyhow::Result<()> {
    let token = login(channel, name).await?.token;
    api::chat(channel.clone(), &token)?
        .logout(pb::LogoutRequest { ack_seq: 0 })
        .await
        .map_err(|s| anyhow!("logout: {}", api::sentence(&s)))?;
    Ok(())
}

/// `Login` with the bench password and no peer listener.
async fn login(channel: &Channel, name: &str) -> anyhow::Result<pb::LoginResponse> {
    api::auth(channel.clone())
        .login(pb::LoginRequest {
            username: name.to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("login as {name}: {}", api::sentence(&s)))
}

impl Target for ConfabTarget {
    type User = ConfabUser;

    fn name(&self) -> &'static str {
        self.name
    }

    fn pid(&self) -> Option<u32> {
        // Memory is one process's: a cluster's is not summed.
        match self.processes.nodes[..] {
            [pid] => Some(pid),
            _ => None,
        }
    }

    fn nodes(&self) -> usize {
        self.urls.len()
    }

    fn processes(&self) -> Processes {
        self.processes.clone()
    }

    async fn register(&self, names: &[String], concurrency: usize) -> anyhow::Result<()> {
        {
            let mut placement = self
                .placement
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (i, name) in names.iter().enumerate() {
                placement.insert(name.clone(), i % self.urls.len());
            }
        }
        // Accounts are cluster-wide: any node registers them.
        let mut channels = Vec::new();
        for i in 0..REGISTER_CONNECTIONS.min(names.len()).max(1) {
            channels.push(api::connect(&self.urls[i % self.urls.len()], None).await?);
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, name) in names.iter().enumerate() {
            let mut auth = api::auth(channels[i % channels.len()].clone());
            let (name, slots) = (name.clone(), slots.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await?;
                let result = auth
                    .register(pb::RegisterRequest {
                        username: name.clone(),
                        password: PASSWORD.to_owned(),
                    })
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    // Left from an earlier run against the same server: same password.
                    Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                    Err(s) => Err(anyhow!("registering {name}: {}", api::sentence(&s))),
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    async fn connect(&self, name: &str) -> anyhow::Result<ConfabUser> {
        // Its own `Channel`, so its own TCP connection and HTTP/2 session, as a real client.
        let channel = api::connect(self.url_of(name), None).await?;
        let login = login(&channel, name).await?;
        let shared = Arc::new(Shared {
            chat: api::chat(channel, &login.token)?,
            received_seq: AtomicU64::new(0),
            acked_seq: AtomicU64::new(0),
            keepalive_ticks: (login.heartbeat_interval_ms / ACK_EVERY.as_millis() as u64).max(1),
        });
        self.acker.add(&shared);
        Ok(ConfabUser {
            name: name.to_owned(),
            presence: self.presence,
            shared,
            reader: Mutex::new(None),
        })
    }

    fn confab_url(&self) -> Option<&str> {
        Some(&self.urls[0])
    }
}

/// What the user's reader and the acknowledging task share.
struct Shared {
    chat: ChatClient<Authed>,
    /// Highest direct-message seq read from the stream.
    received_seq: AtomicU64,
    /// Highest seq acknowledged with a heartbeat.
    acked_seq: AtomicU64,
    /// Rounds of [`ACK_EVERY`] between keep-alive heartbeats: the server's heartbeat interval,
    /// a third of its session timeout.
    keepalive_ticks: u64,
}

/// One simulated confab user.
pub(crate) struct ConfabUser {
    name: String,
    presence: PresenceEvents,
    shared: Arc<Shared>,
    reader: Mutex<Option<AbortOnDropHandle<()>>>,
}

impl ConfabUser {
    fn chat(&self) -> ChatClient<Authed> {
        // A clone shares the connection; `ChatClient` calls take `&mut self`.
        self.shared.chat.clone()
    }
}

/// Opens `name`'s event stream (with presence as `presence` says) and reads the replay, handing
/// each event to `on_event` (false: the session ended), until the stream is live.
pub(crate) async fn subscribe_until_live(
    mut chat: ChatClient<Authed>,
    name: &str,
    presence: PresenceEvents,
    mut on_event: impl FnMut(pb::Event) -> bool,
) -> anyhow::Result<tonic::Streaming<pb::Event>> {
    let mut stream = chat
        .subscribe(pb::SubscribeRequest {
            no_presence: presence == PresenceEvents::None,
            presence_batches: presence == PresenceEvents::Batched,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("subscribe as {name}: {}", api::sentence(&s)))?
        .into_inner();
    loop {
        let event = stream
            .message()
            .await
            .with_context(|| format!("{name}'s stream"))?
            .with_context(|| format!("{name}'s stream ended during the replay"))?;
        let backlog_end = matches!(event.kind, Some(Kind::BacklogEnd(_)));
        if !on_event(event) {
            bail!("{name}'s session ended during the replay");
        }
        if backlog_end {
            return Ok(stream);
        }
    }
}

/// Handles one event; false when the stream is over.
fn on_event(shared: &Shared, sink: &Sink, event: pb::Event) -> bool {
    match event.kind {
        Some(Kind::Message(m)) => {
            shared.received_seq.fetch_max(m.seq, Ordering::Relaxed);
            sink.deliver(&m.body);
        }
        Some(Kind::Broadcast(b)) => sink.deliver(&b.body),
        Some(Kind::Presence(_)) => sink.presence_changed(1),
        Some(Kind::PresenceBatch(b)) => sink.presence_changed(b.changes.len()),
        Some(Kind::SessionEnded(_)) => {
            sink.session_ended();
            return false;
        }
        // The rest: read and dropped, as by a client that shows nothing.
        _ => {}
    }
    true
}

impl User for ConfabUser {
    fn name(&self) -> &str {
        &self.name
    }

    async fn subscribe(&self, sink: Arc<Sink>) -> anyhow::Result<()> {
        // Live once the replay is over; what an earlier run left in the inbox is acknowledged.
        let mut stream = subscribe_until_live(self.chat(), &self.name, self.presence, |e| {
            on_event(&self.shared, &sink, e)
        })
        .await?;
        let (shared, name) = (self.shared.clone(), self.name.clone());
        let reader = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        if !on_event(&shared, &sink, event) {
                            break;
                        }
                    }
                    Ok(None) => {
                        sink.stream_lost(format!("{name}'s stream closed without a reason"));
                        break;
                    }
                    Err(s) => {
                        sink.stream_lost(format!("{name}'s stream: {}", api::sentence(&s)));
                        break;
                    }
                }
            }
        });
        // Replacing (or dropping the user) aborts the previous reader.
        self.reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(AbortOnDropHandle::new(reader));
        Ok(())
    }

    async fn send(&self, to: &str, message_id: String, body: String) -> anyhow::Result<()> {
        self.chat()
            .send_message(pb::SendMessageRequest {
                to: to.to_owned(),
                body,
                message_id,
            })
            .await
            .map(|_| ())
            .map_err(|s| anyhow!("{}", api::sentence(&s)))
    }

    async fn broadcast(&self, body: String) -> anyhow::Result<()> {
        self.chat()
            .broadcast(pb::BroadcastRequest { body })
            .await
            .map(|_| ())
            .map_err(|s| anyhow!("{}", api::sentence(&s)))
    }

    async fn open_stream(&self) -> anyhow::Result<Option<StreamSender>> {
        // Room for every request a sender keeps in flight, so queueing one never waits here.
        let (tx, rx) = mpsc::channel(1024);
        let responses = self
            .chat()
            .send_stream(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow!("SendStream as {}: {}", self.name, api::sentence(&s)))?
            .into_inner();
        Ok(Some(StreamSender::new(tx, responses)))
    }
}

/// Acknowledges what every user received, once per [`ACK_EVERY`].
#[derive(Default)]
struct Acker {
    users: Mutex<Vec<Weak<Shared>>>,
}

impl Acker {
    fn add(&self, user: &Arc<Shared>) {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(user));
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(ACK_EVERY / ACK_SLOTS as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (slot, round) = (n % ACK_SLOTS, n / ACK_SLOTS);
            let users: Vec<(u64, Arc<Shared>)> = {
                let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
                if slot == 0 {
                    users.retain(|u| u.strong_count() > 0);
                }
                users
                    .iter()
                    .enumerate()
                    .skip(slot as usize)
                    .step_by(ACK_SLOTS as usize)
                    .filter_map(|(i, u)| Some((i as u64, u.upgrade()?)))
                    .collect()
            };
            for (i, user) in users {
                let received = user.received_seq.load(Ordering::Relaxed);
                let acked = user.acked_seq.swap(received, Ordering::Relaxed);
                // Keep-alives too are spread, over the rounds, by user index.
                let keepalive = (round + i / ACK_SLOTS).is_multiple_of(user.keepalive_ticks);
                if received > acked || keepalive {
                    let mut chat = user.chat.clone();
                    tokio::spawn(async move {
                        // A failed heartbeat is retried by the next keep-alive; the session
                        // timeout is three intervals.
                        let _ = chat
                            .heartbeat(pb::HeartbeatRequest { ack_seq: received })
                            .await;
                    });
                }
            }
        }
    }
}
