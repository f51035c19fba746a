//! The chat session as the server sees it after login: the `Subscribe` stream, heartbeats with
//! acknowledgements, and getting all of that back by itself when the stream or the server drops.
//!
//! A background task (the pump) owns the stream. It hands the REPL plain [`Notice`]s in arrival
//! order and never prints. It resumes after the highest `seq` the REPL has shown (`shown`), so
//! what was displayed is acknowledged and what was not is replayed; the REPL drops replayed
//! duplicates (`seen.rs`). A re-login (server restart, session timed out) goes through
//! [`login`], which rekeys the peer listener first, and is announced with
//! [`Notice::LoggedIn`] so the REPL can forget the grants of the old login.
//!
//! With a `--server` list (the nodes of a cluster), a connection that is gone — the stream
//! failed at the transport, or ended without `SessionEnded`, or the node said it is shutting
//! down — is not waited for: the pump moves to the next server of the list (wrapping around,
//! the pause between attempts growing as for one server), logs in there and resumes after
//! the same `seq`, which works because the nodes share one store. A single server is waited
//! for, as before. Each time a stream goes live the pump says so on the [`link`] (`link.rs`),
//! so a command whose call lost its connection goes again through the new login. The rules —
//! what follows what, the backoff — are `reconnect.rs`.
//!
//! It deliberately does not reconnect when the session was taken away on purpose
//! (`LOGGED_IN_ELSEWHERE`, `KICKED`, `LOGGED_OUT`) or when the password stops working: those
//! end with [`Notice::Ended`] / [`Notice::Failed`] instead of a retry loop.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};

use super::{
    api,
    call::{is_connection_failure, timed},
    link::{Link, LinkSender, link},
    login::{Credentials, Live, login},
    reconnect::{
        Next, SHORT_LIVED, StreamEnd, after_end, after_failure, backoff, login_refused_for_good,
        reason_words, words,
    },
};
use crate::{
    pb::{self, SessionEndReason, event::Kind},
    peer::PeerListener,
};

/// How often the pump checks whether something shown needs acknowledging; bounds the delay
/// between showing a direct message and acknowledging it.
const ACK_CHECK: Duration = Duration::from_millis(250);

/// What the pump tells the REPL, in the order it happened.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A server event (never `BacklogEnd` or `SessionEnded`: those become the notices below).
    /// `replayed` marks stored messages replayed before the live part of the stream.
    Event { kind: Kind, replayed: bool },
    /// The stream is live: the replay of `replayed` stored messages is over. `resumed` when this
    /// follows a loss of the connection.
    Connected { replayed: u64, resumed: bool },
    /// Logged in again with new keys: grants and allowed peers of the previous login are void.
    LoggedIn(Arc<Live>),
    /// The stream broke or the session ended for a reason we recover from; reconnecting, at
    /// server `next` of a list when it is not the same one.
    Lost { why: String, next: Option<String> },
    /// A reconnection attempt failed; the next one is in `retry_in` (at `next`, as above).
    Retrying {
        attempt: u32,
        why: String,
        retry_in: Duration,
        next: Option<String>,
    },
    /// The session was ended on purpose (elsewhere, kicked, logged out); the pump has stopped.
    Ended(SessionEndReason),
    /// Logging in again was refused for good (e.g. the password no longer works); stopped.
    Failed { why: String },
}

/// The running session: notices to read, the acknowledgement mark to advance, a stop switch.
pub(crate) struct Events {
    /// Notices in arrival order.
    pub(crate) notices: mpsc::Receiver<Notice>,
    /// Highest direct-message `seq` the REPL has shown (or dropped as a duplicate); the pump
    /// acknowledges up to it and resumes after it.
    pub(crate) shown: Arc<AtomicU64>,
    /// Says when a stream is live again, and with which login.
    pub(crate) link: Link,
    stop: CancellationToken,
    task: JoinHandle<Arc<Live>>,
}

impl Events {
    /// Stops the pump and returns the login it ended with (for `Logout`).
    pub(crate) async fn stop(self) -> Option<Arc<Live>> {
        self.stop.cancel();
        self.task.await.ok()
    }
}

/// Where the pump reaches the server: the channel, and which server of the list it goes to.
pub(crate) struct Route {
    pub(crate) channel: Channel,
    /// Place of the server in `Credentials::servers`.
    pub(crate) at: usize,
    /// `--ca`, for connecting to the other servers of the list.
    pub(crate) ca: Option<PathBuf>,
}

/// Starts the pump for an established login.
pub(crate) fn start(
    route: Route,
    credentials: Credentials,
    listener: PeerListener,
    live: Arc<Live>,
) -> Events {
    let (tx, notices) = mpsc::channel(1024);
    let shown = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (link_tx, link) = link(live.clone());
    let pump = Pump {
        route,
        link: link_tx,
        credentials,
        listener,
        live,
        notices: tx,
        shown: shown.clone(),
        acked: 0,
        stop: stop.clone(),
    };
    Events {
        notices,
        shown,
        link,
        stop,
        task: tokio::spawn(pump.run()),
    }
}

/// A heartbeat in flight; resolves to the seq it acknowledged.
type Beat = std::pin::Pin<Box<dyn Future<Output = Result<u64, Status>> + Send>>;

struct Pump {
    route: Route,
    /// Tells calls made outside the pump that a stream is live again.
    link: LinkSender,
    credentials: Credentials,
    listener: PeerListener,
    live: Arc<Live>,
    notices: mpsc::Sender<Notice>,
    shown: Arc<AtomicU64>,
    /// Highest seq the server has been told about (Heartbeat or Subscribe).
    acked: u64,
    stop: CancellationToken,
}

impl Pump {
    /// Runs until stopped or until the session cannot be recovered; returns the last login.
    async fn run(mut self) -> Arc<Live> {
        let several = self.credentials.servers.several();
        let mut next = Next::Subscribe;
        // Failed attempts since the stream was last live; 0 means the next attempt is immediate.
        let mut attempt = 0u32;
        let mut resumed = false;
        // The pause announced by the last failed attempt, taken before the next one.
        let mut pause: Option<Duration> = None;
        loop {
            if let Some(pause) = pause.take() {
                tokio::select! {
                    () = self.stop.cancelled() => return self.live,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            if next == Next::Move {
                if let Err(why) = self.move_on() {
                    attempt += 1;
                    pause = Some(self.retrying(attempt, why, next).await);
                    continue;
                }
                next = Next::Login;
            }
            let just_logged_in = next == Next::Login;
            if just_logged_in {
                match self.relogin().await {
                    Ok(()) => next = Next::Subscribe,
                    Err(status) if login_refused_for_good(&status) => {
                        let why = api::sentence(&status);
                        self.tell(Notice::Failed { why }).await;
                        return self.live;
                    }
                    Err(status) => {
                        attempt += 1;
                        next = after_failure(next, &status, several);
                        pause = Some(self.retrying(attempt, words(&status), next).await);
                        continue;
                    }
                }
            }
            let resume_after = self.shown.load(Ordering::Acquire);
            let mut chat = self.live.chat.clone();
            let subscribed = tokio::select! {
                () = self.stop.cancelled() => return self.live,
                r = timed(chat.subscribe(pb::SubscribeRequest {
                    resume_after,
                    presence_batches: true,
                    ..Default::default()
                })) => r,
            };
            let stream = match subscribed {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == Code::Unauthenticated => {
                    // The session is gone (server restarted, or it timed out): log in again,
                    // at once unless a fresh login was just refused like this (no busy loop).
                    next = Next::Login;
                    if just_logged_in {
                        attempt += 1;
                        pause = Some(self.retrying(attempt, words(&status), next).await);
                    }
                    continue;
                }
                Err(status) => {
                    attempt += 1;
                    next = after_failure(next, &status, several);
                    pause = Some(self.retrying(attempt, words(&status), next).await);
                    continue;
                }
            };
            self.acked = self.acked.max(resume_after);
            let opened = Instant::now();
            let end = self.read(stream, resumed).await;
            // A stream that ends as soon as it opens must not turn into a busy loop of
            // immediate retries: it counts as a failed attempt, and only a stream that lived
            // a while resets the backoff.
            if opened.elapsed() >= SHORT_LIVED {
                attempt = 0;
            } else if !matches!(end, StreamEnd::Stopped) {
                attempt += 1;
                pause = Some(backoff(attempt));
            }
            let Some(after) = after_end(&end, several) else {
                if let StreamEnd::Ended(reason) = end {
                    self.tell(Notice::Ended(reason)).await;
                }
                return self.live;
            };
            next = after;
            let mut why = match end {
                StreamEnd::Ended(reason) => {
                    format!("the server ended the session ({})", reason_words(reason))
                }
                StreamEnd::Broken { why, .. } => why,
                StreamEnd::Stopped => unreachable!("the pump stops above"),
            };
            if several {
                why = format!("{why} (at {})", self.live.server);
            }
            let next_server = self.next_server(next);
            self.tell(Notice::Lost {
                why,
                next: next_server,
            })
            .await;
            resumed = true;
        }
    }

    /// The server `next` goes to, when it is another one.
    fn next_server(&self, next: Next) -> Option<String> {
        let servers = &self.credentials.servers;
        (next == Next::Move).then(|| servers.url(servers.after(self.route.at)).to_owned())
    }

    /// Points the channel at the next server of the list (connecting when first used).
    fn move_on(&mut self) -> Result<(), String> {
        let servers = &self.credentials.servers;
        let at = servers.after(self.route.at);
        let endpoint = api::endpoint(servers.url(at), self.route.ca.as_deref())
            .map_err(|e| format!("{e:#}"))?;
        self.route.channel = endpoint.connect_lazy();
        self.route.at = at;
        Ok(())
    }

    async fn tell(&self, notice: Notice) {
        // The REPL only goes away when it is stopping us.
        let _ = self.notices.send(notice).await;
    }

    /// Tells the REPL that attempt `attempt` failed (`why`) and what comes next; the pause
    /// before it.
    async fn retrying(&self, attempt: u32, why: String, next: Next) -> Duration {
        let retry_in = backoff(attempt);
        self.tell(Notice::Retrying {
            attempt,
            why,
            retry_in,
            next: self.next_server(next),
        })
        .await;
        retry_in
    }

    async fn relogin(&mut self) -> Result<(), Status> {
        let number = self.live.number + 1;
        let live = tokio::select! {
            () = self.stop.cancelled() => return Err(Status::cancelled("stopping")),
            r = login(&self.route.channel, self.route.at, &self.credentials, &self.listener, number) => r?,
        };
        self.live = Arc::new(live);
        // A new session starts with a fresh inbox position: nothing of it is acknowledged yet,
        // but what we showed under the old session was acknowledged or will be replayed (and
        // then dropped as a duplicate), so resuming after `shown` stays right.
        self.acked = 0;
        self.tell(Notice::LoggedIn(self.live.clone())).await;
        Ok(())
    }

    /// Reads one stream until it ends, heartbeating and acknowledging meanwhile.
    async fn read(&mut self, mut stream: tonic::Streaming<pb::Event>, resumed: bool) -> StreamEnd {
        let mut replaying = true;
        let mut replayed = 0u64;
        // Also often enough for a server with a heartbeat interval shorter than ACK_CHECK.
        let mut tick = tokio::time::interval(ACK_CHECK.min(self.live.heartbeat));
        let mut last_beat = Instant::now();
        let mut beat: Option<Beat> = None;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return StreamEnd::Stopped,
                item = stream.message() => match item {
                    Ok(Some(event)) => match event.kind {
                        Some(Kind::SessionEnded(e)) => {
                            return StreamEnd::Ended(
                                SessionEndReason::try_from(e.reason)
                                    .unwrap_or(SessionEndReason::Unspecified),
                            );
                        }
                        Some(Kind::BacklogEnd(_)) => {
                            replaying = false;
                            self.link.live(self.live.clone());
                            self.tell(Notice::Connected { replayed, resumed }).await;
                        }
                        Some(kind) => {
                            if matches!(kind, Kind::Message(_)) && replaying {
                                replayed += 1;
                            }
                            self.tell(Notice::Event { kind, replayed: replaying }).await;
                        }
                        // A kind this client does not know (a newer server): skip it.
                        None => {}
                    },
                    Ok(None) => return StreamEnd::Broken {
                        why: "the server closed the event stream".into(),
                        gone: true,
                    },
                    Err(status) => {
                        let gone = is_connection_failure(&status);
                        let why = if gone {
                            "lost the connection to the server".to_owned()
                        } else {
                            format!("the event stream failed: {}", api::sentence(&status))
                        };
                        return StreamEnd::Broken { why, gone };
                    }
                },
                _ = tick.tick(), if beat.is_none() => {
                    let shown = self.shown.load(Ordering::Acquire);
                    if shown > self.acked || last_beat.elapsed() >= self.live.heartbeat {
                        last_beat = Instant::now();
                        let mut chat = self.live.chat.clone();
                        beat = Some(Box::pin(async move {
                            timed(chat.heartbeat(pb::HeartbeatRequest { ack_seq: shown })).await?;
                            Ok(shown)
                        }));
                    }
                }
                done = async { beat.as_mut().expect("guarded by is_some").await }, if beat.is_some() => {
                    beat = None;
                    // A failed heartbeat is retried at the next tick; a dead session shows up
                    // on the stream as SessionEnded or an error.
                    if let Ok(acked) = done {
                        self.acked = self.acked.max(acked);
                    }
                }
            }
        }
    }
}
