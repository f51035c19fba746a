//! Live sessions: the token table (one session per user), each session's activity clock, rate
//! limiter and its one attached event stream with a bounded queue.
//!
//! Pushing an event never blocks: a full queue means the client stopped reading, and the session
//! is handed to the core's slow-reader channel to be ended `TOO_SLOW` by the core (outside any
//! lock here). Only the core creates and removes sessions (`Sessions::create` and
//! `Sessions::remove` are private to it), so every ending goes through `Core::end_session`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::server::domain::EndReason;
use crate::{
    now_ms,
    server::{accounts::Account, ratelimit::TokenBucket, store::UserId, wire::EncodedEvent},
};

/// Where peers reach this session's client, from `Login`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Host to dial.
    pub host: String,
    /// Peer listener port.
    pub port: u16,
    /// X25519 static public key.
    pub public_key: Vec<u8>,
}

/// One queued event. `seq` is the direct message's inbox seq, 0 for live-only events.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Inbox seq (0: not a stored message).
    pub seq: u64,
    /// The encoded event.
    pub event: EncodedEvent,
    /// The presence feed's position when it was pushed: the stream shows the presence changes
    /// up to here first (see `feed.rs`). Stamped by [`Session::push`].
    pub presence_mark: u64,
}

impl Outbound {
    /// A live-only event.
    pub fn now(event: EncodedEvent) -> Self {
        Outbound::stored(0, event)
    }

    /// A direct message with its inbox seq.
    pub fn stored(seq: u64, event: EncodedEvent) -> Self {
        Outbound {
            seq,
            event,
            presence_mark: 0,
        }
    }
}

/// The result of [`Session::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued on the live stream.
    Queued,
    /// No stream attached.
    NoStream,
    /// The queue was full; the session is being ended `TOO_SLOW`.
    Full,
}

struct Slot {
    generation: u64,
    tx: mpsc::Sender<Outbound>,
}

/// A logged-in session.
pub struct Session {
    /// Unique for the server's lifetime.
    pub id: u64,
    /// Whose session.
    pub user: Arc<Account>,
    token: String,
    /// The gRPC connection's remote address at login.
    pub remote: SocketAddr,
    /// Peer listener, if the client has one (or at least a key: `port` 0).
    pub peer: Option<PeerInfo>,
    /// Login time, Unix ms.
    pub since_ms: i64,
    last_activity_ms: AtomicI64,
    /// Cancelled when the session ends (for waits outside the stream, e.g. `SendStream`).
    pub ended: CancellationToken,
    end_reason: OnceLock<EndReason>,
    stream: Mutex<Option<Slot>>,
    generations: AtomicU64,
    /// Per-session send rate limit.
    pub send_bucket: Mutex<TokenBucket>,
    slow: mpsc::UnboundedSender<Arc<Session>>,
    /// The presence feed's position, stamped on every push.
    presence: Arc<AtomicU64>,
    this: std::sync::Weak<Session>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.user.name)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whose id.
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    /// The user's name as registered.
    pub fn name(&self) -> &str {
        &self.user.name
    }

    /// Records activity (any call) now.
    pub fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Last activity, Unix ms.
    pub fn last_activity(&self) -> i64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.end_reason.get().copied()
    }

    /// Whether a stream is attached.
    pub fn subscribed(&self) -> bool {
        self.stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Attaches a new stream, replacing any previous one, and returns its generation and queue.
    ///
    /// A stream learns that it is over when its queue closes (after what was queued): its
    /// sender is dropped when a newer stream replaces it or when the session ends, and
    /// [`Session::end_reason`] then tells the two apart. No per-event cancellation check is
    /// needed on the hot path.
    pub fn attach(&self, capacity: usize) -> (u64, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slot = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        // Ended already (checked under the lock `finish` takes): the queue starts closed.
        if self.end_reason.get().is_none() {
            *slot = Some(Slot { generation, tx });
        }
        (generation, rx)
    }

    /// Whether a stream newer than `generation` has been attached.
    pub fn replaced(&self, generation: u64) -> bool {
        self.generations.load(Ordering::Relaxed) > generation
    }

    /// Detaches the stream of `generation` if it is still the attached one.
    pub fn detach(&self, generation: u64) {
        let mut slot = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|s| s.generation == generation) {
            *slot = None;
        }
    }

    /// Queues `item` on the live stream without waiting.
    pub fn push(&self, mut item: Outbound) -> Pushed {
        item.presence_mark = self.presence.load(Ordering::Acquire);
        let result = {
            let slot = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                None => return Pushed::NoStream,
                Some(s) => s.tx.try_send(item),
            }
        };
        match result {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::NoStream,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(me) = self.this.upgrade() {
                    // Ended by the core's slow-reader task, never under this call's locks.
                    let _ = self.slow.send(me);
                }
                Pushed::Full
            }
        }
    }

    /// Marks the session ended for `reason`; false if it had ended already.
    fn finish(&self, reason: EndReason) -> bool {
        if self.end_reason.set(reason).is_err() {
            return false;
        }
        // Closing the queue ends the stream after what is queued, with SessionEnded.
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.ended.cancel();
        true
    }
}

/// The token table.
pub struct Sessions {
    inner: RwLock<Table>,
    next_id: AtomicU64,
    slow: mpsc::UnboundedSender<Arc<Session>>,
    presence: Arc<AtomicU64>,
}

#[derive(Default)]
struct Table {
    by_token: HashMap<String, Arc<Session>>,
    by_user: HashMap<UserId, Arc<Session>>,
}

/// What a new session needs.
pub struct NewSession {
    /// Its id: on a cluster node the epoch the session directory gave it (unique in the
    /// cluster); `None` takes the table's next number.
    pub id: Option<u64>,
    /// Whose.
    pub user: Arc<Account>,
    /// Remote address of the gRPC connection.
    pub remote: SocketAddr,
    /// Peer listener details.
    pub peer: Option<PeerInfo>,
    /// Send rate per second.
    pub send_rate: f64,
    /// Send burst.
    pub send_burst: f64,
}

impl Sessions {
    /// An empty table; sessions whose queue overflows are sent to `slow`; pushes are stamped
    /// with the presence feed's `presence` position.
    pub fn new(slow: mpsc::UnboundedSender<Arc<Session>>, presence: Arc<AtomicU64>) -> Self {
        Sessions {
            inner: RwLock::default(),
            next_id: AtomicU64::new(1),
            slow,
            presence,
        }
    }

    /// Creates a session with a fresh token and installs it as the user's only session.
    /// Returns it, its token, and the session it replaced (already marked ended
    /// `LOGGED_IN_ELSEWHERE`; the caller does the rest of the ending).
    pub(super) fn create(&self, new: NewSession) -> (Arc<Session>, String, Option<Arc<Session>>) {
        let token = new_token();
        let now = now_ms();
        let session = Arc::new_cyclic(|this| Session {
            id: new
                .id
                .unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed)),
            user: new.user,
            token: token.clone(),
            remote: new.remote,
            peer: new.peer,
            since_ms: now,
            last_activity_ms: AtomicI64::new(now),
            ended: CancellationToken::new(),
            end_reason: OnceLock::new(),
            stream: Mutex::new(None),
            generations: AtomicU64::new(0),
            send_bucket: Mutex::new(TokenBucket::new(
                new.send_rate,
                new.send_burst,
                std::time::Instant::now(),
            )),
            slow: self.slow.clone(),
            presence: self.presence.clone(),
            this: this.clone(),
        });
        let old = {
            let mut t = self.inner.write().unwrap_or_else(|p| p.into_inner());
            t.by_token.insert(token.clone(), session.clone());
            let old = t.by_user.insert(session.user_id(), session.clone());
            if let Some(old) = &old {
                t.by_token.remove(&old.token);
            }
            old
        };
        let old = old.filter(|o| o.finish(EndReason::LoggedInElsewhere));
        (session, token, old)
    }

    /// Removes `session` from the table and marks it ended; false if it had ended already.
    pub(super) fn remove(&self, session: &Session, reason: EndReason) -> bool {
        {
            let mut t = self.inner.write().unwrap_or_else(|p| p.into_inner());
            if t.by_token
                .get(&session.token)
                .is_some_and(|s| s.id == session.id)
            {
                t.by_token.remove(&session.token);
            }
            if t.by_user
                .get(&session.user_id())
                .is_some_and(|s| s.id == session.id)
            {
                t.by_user.remove(&session.user_id());
            }
        }
        session.finish(reason)
    }

    /// The live session holding `token`.
    pub fn by_token(&self, token: &str) -> Option<Arc<Session>> {
        let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
        t.by_token.get(token).cloned()
    }

    /// `user`'s live session.
    pub fn by_user(&self, user: UserId) -> Option<Arc<Session>> {
        let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
        t.by_user.get(&user).cloned()
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
        t.by_user.values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_user
            .len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 256 random bits from the OS generator, hex-encoded.
fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{accounts::Directory, store::UserRow, wire};

    fn account(id: UserId, name: &str) -> Arc<Account> {
        Directory::default().insert(UserRow {
            id,
            name: name.into(),
            password_hash: String::new(),
            created_ms: 0,
            last_login_ms: 0,
            disabled: false,
        })
    }

    fn table() -> (Sessions, mpsc::UnboundedReceiver<Arc<Session>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Sessions::new(tx, Arc::default()), rx)
    }

    fn login(
        sessions: &Sessions,
        user: &Arc<Account>,
    ) -> (Arc<Session>, String, Option<Arc<Session>>) {
        sessions.create(NewSession {
            id: None,
            user: user.clone(),
            remote: SocketAddr::from(([127, 0, 0, 1], 5000)),
            peer: None,
            send_rate: 10.0,
            send_burst: 10.0,
        })
    }

    fn event() -> Outbound {
        Outbound::now(wire::presence("carol", true))
    }

    #[test]
    fn a_second_login_replaces_the_first_and_kills_its_token() {
        let (sessions, _slow) = table();
        let alice = account(1, "alice");
        let (first, first_token, replaced) = login(&sessions, &alice);
        assert!(replaced.is_none());
        let (second, second_token, replaced) = login(&sessions, &alice);
        let replaced = replaced.expect("the first session is replaced");
        assert_eq!(replaced.id, first.id);
        assert_eq!(first.end_reason(), Some(EndReason::LoggedInElsewhere));
        assert!(first.ended.is_cancelled());
        assert!(sessions.by_token(&first_token).is_none());
        assert_eq!(sessions.by_token(&second_token).unwrap().id, second.id);
        assert_eq!(sessions.by_user(alice.id).unwrap().id, second.id);
        assert_eq!(sessions.len(), 1);
        // Ending the replaced session again changes nothing for the new one.
        assert!(!sessions.remove(&first, EndReason::LoggedOut));
        assert_eq!(sessions.by_user(alice.id).unwrap().id, second.id);
    }

    #[test]
    fn a_session_ends_once() {
        let (sessions, _slow) = table();
        let (session, token, _) = login(&sessions, &account(1, "alice"));
        assert!(sessions.remove(&session, EndReason::Kicked));
        assert!(!sessions.remove(&session, EndReason::TimedOut));
        assert_eq!(session.end_reason(), Some(EndReason::Kicked));
        assert!(sessions.by_token(&token).is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn pushes_reach_the_attached_stream_and_a_full_queue_reports_a_slow_reader() {
        let (sessions, mut slow) = table();
        let (session, _, _) = login(&sessions, &account(1, "alice"));
        assert_eq!(session.push(event()), Pushed::NoStream);
        let (_generation, mut rx) = session.attach(2);
        assert!(session.subscribed());
        assert_eq!(session.push(event()), Pushed::Queued);
        assert_eq!(session.push(event()), Pushed::Queued);
        assert!(slow.try_recv().is_err());
        assert_eq!(session.push(event()), Pushed::Full);
        assert_eq!(slow.try_recv().unwrap().id, session.id);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn a_replaced_streams_late_detach_leaves_the_new_one_attached() {
        let (sessions, _slow) = table();
        let (session, _, _) = login(&sessions, &account(1, "alice"));
        let (old, mut old_rx) = session.attach(4);
        let (new, mut new_rx) = session.attach(4);
        assert!(session.replaced(old));
        assert!(!session.replaced(new));
        // The old queue closed when the new stream took the slot.
        assert!(matches!(
            old_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        session.detach(old);
        assert_eq!(session.push(event()), Pushed::Queued);
        assert!(new_rx.try_recv().is_ok());
        session.detach(new);
        assert_eq!(session.push(event()), Pushed::NoStream);
    }

    #[test]
    fn ending_a_session_closes_its_queue_after_what_was_queued() {
        let (sessions, _slow) = table();
        let (session, _, _) = login(&sessions, &account(1, "alice"));
        let (_, mut rx) = session.attach(4);
        assert_eq!(session.push(event()), Pushed::Queued);
        assert!(sessions.remove(&session, EndReason::TooSlow));
        assert!(rx.try_recv().is_ok());
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // A stream attached after the end starts closed.
        let (_, mut late) = session.attach(4);
        assert!(matches!(
            late.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
