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
//! It deliberately does not reconnect when the session was taken away on purpose
//! (`LOGGED_IN_ELSEWHERE`, `KICKED`, `LOGGED_OUT`) or when the password stops working: those
//! end with [`Notice::Ended`] / [`Notice::Failed`] instead of a retry loop.

use std::{
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
    login::{Credentials, Live, login},
};
use crate::{
    pb::{self, SessionEndReason, event::Kind},
    peer::PeerListener,
};

/// How often the pump checks whether something shown needs acknowledging; bounds the delay
/// between showing a direct message and acknowledging it.
const ACK_CHECK: Duration = Duration::from_millis(250);
/// First pause before a reconnection attempt; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest pause between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream that ends sooner than this after opening counts as a failed attempt.
const SHORT_LIVED: Duration = Duration::from_secs(2);

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
    /// The stream broke or the session ended for a reason we recover from; reconnecting.
    Lost { why: String },
    /// A reconnection attempt failed; the next one is in `retry_in`.
    Retrying {
        attempt: u32,
        why: String,
        retry_in: Duration,
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

/// Starts the pump for an established login.
pub(crate) fn start(
    channel: Channel,
    credentials: Credentials,
    listener: PeerListener,
    live: Arc<Live>,
) -> Events {
    let (tx, notices) = mpsc::channel(1024);
    let shown = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let pump = Pump {
        channel,
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
        stop,
        task: tokio::spawn(pump.run()),
    }
}

/// A heartbeat in flight; resolves to the seq it acknowledged.
type Beat = std::pin::Pin<Box<dyn Future<Output = Result<u64, Status>> + Send>>;

/// How a stream ended.
enum StreamEnd {
    /// We were told to stop.
    Stopped,
    /// The server ended the session.
    Ended(SessionEndReason),
    /// The connection broke (or the server closed the stream without a word).
    Broken(String),
}

/// What to do after a failed step.
enum Next {
    /// Log in again (the session is gone).
    Login,
    /// Subscribe again with the same token.
    Subscribe,
}

struct Pump {
    channel: Channel,
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
            let just_logged_in = matches!(next, Next::Login);
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
                        pause = Some(self.retrying(attempt, &status).await);
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
                        pause = Some(self.retrying(attempt, &status).await);
                    }
                    continue;
                }
                Err(status) => {
                    attempt += 1;
                    pause = Some(self.retrying(attempt, &status).await);
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
            match end {
                StreamEnd::Stopped => return self.live,
                StreamEnd::Ended(reason) if recoverable(reason) => {
                    let why = format!("the server ended the session ({})", reason_words(reason));
                    self.tell(Notice::Lost { why }).await;
                    next = Next::Login;
                }
                StreamEnd::Ended(reason) => {
                    self.tell(Notice::Ended(reason)).await;
                    return self.live;
                }
                StreamEnd::Broken(why) => {
                    self.tell(Notice::Lost { why }).await;
                    next = Next::Subscribe;
                }
            }
            resumed = true;
        }
    }

    async fn tell(&self, notice: Notice) {
        // The REPL only goes away when it is stopping us.
        let _ = self.notices.send(notice).await;
    }

    /// Tells the REPL that attempt `attempt` failed; the pause before the next one.
    async fn retrying(&self, attempt: u32, status: &Status) -> Duration {
        let why = if is_connection_failure(status) {
            "the server cannot be reached".to_owned()
        } else {
            api::sentence(status)
        };
        let retry_in = backoff(attempt);
        self.tell(Notice::Retrying {
            attempt,
            why,
            retry_in,
        })
        .await;
        retry_in
    }

    async fn relogin(&mut self) -> Result<(), Status> {
        let number = self.live.number + 1;
        let live = tokio::select! {
            () = self.stop.cancelled() => return Err(Status::cancelled("stopping")),
            r = login(&self.channel, &self.credentials, &self.listener, number) => r?,
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
                    Ok(None) => return StreamEnd::Broken("the server closed the event stream".into()),
                    Err(status) => {
                        let why = if is_connection_failure(&status) {
                            "lost the connection to the server".to_owned()
                        } else {
                            format!("the event stream failed: {}", api::sentence(&status))
                        };
                        return StreamEnd::Broken(why);
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

/// Session ends the pump recovers from by logging in again.
fn recoverable(reason: SessionEndReason) -> bool {
    match reason {
        SessionEndReason::TimedOut
        | SessionEndReason::TooSlow
        | SessionEndReason::ServerShutdown
        | SessionEndReason::Unspecified => true,
        SessionEndReason::LoggedOut
        | SessionEndReason::LoggedInElsewhere
        | SessionEndReason::Kicked => false,
    }
}

/// A login failure that retrying cannot fix: the credentials or our request are wrong.
/// (A lockout or a rate limit passes, an unreachable server comes back.)
fn login_refused_for_good(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::InvalidArgument | Code::NotFound
    )
}

/// Why a session ended, in words.
pub(crate) fn reason_words(reason: SessionEndReason) -> &'static str {
    match reason {
        SessionEndReason::LoggedOut => "you logged out",
        SessionEndReason::LoggedInElsewhere => "you logged in somewhere else",
        SessionEndReason::TimedOut => "no heartbeat reached the server in time",
        SessionEndReason::Kicked => "an operator ended your session",
        SessionEndReason::TooSlow => "this client fell behind reading events",
        SessionEndReason::ServerShutdown => "the server is shutting down",
        SessionEndReason::Unspecified => "no reason given",
    }
}

/// The pause before attempt `n` (1-based): 250 ms doubling to 5 s, ±20 % so a restarted server
/// is not hit by every client in the same instant.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.4 + 0.8;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        assert!(backoff(1) <= Duration::from_millis(300));
        assert!(backoff(1) >= Duration::from_millis(200));
        assert!(backoff(3) >= Duration::from_millis(800));
        for n in [6, 10, 40, u32::MAX] {
            assert!(backoff(n) <= BACKOFF_MAX.mul_f64(1.2));
            assert!(backoff(n) >= BACKOFF_MAX.mul_f64(0.8));
        }
    }

    #[test]
    fn only_deliberate_ends_stop_the_client() {
        assert!(!recoverable(SessionEndReason::Kicked));
        assert!(!recoverable(SessionEndReason::LoggedInElsewhere));
        assert!(!recoverable(SessionEndReason::LoggedOut));
        assert!(recoverable(SessionEndReason::ServerShutdown));
        assert!(recoverable(SessionEndReason::TimedOut));
        assert!(recoverable(SessionEndReason::TooSlow));
    }

    #[test]
    fn a_wrong_password_is_not_retried_but_a_lockout_is() {
        assert!(login_refused_for_good(&Status::unauthenticated("wrong")));
        assert!(!login_refused_for_good(&Status::permission_denied(
            "locked"
        )));
        assert!(!login_refused_for_good(&Status::unavailable("down")));
        assert!(!login_refused_for_good(&Status::resource_exhausted(
            "slow down"
        )));
    }
}
