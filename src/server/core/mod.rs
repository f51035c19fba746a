//! The message center's state and every rule of SPEC §2–6, one file per section:
//!
//! - [`login`]: §2 accounts, login, lockout;
//! - [`manage`]: §14 disabling, enabling and deleting accounts, setting passwords;
//! - [`presence`]: §3 ending sessions, presence, the reaper, acknowledgements, who is online;
//! - [`messages`]: §4 direct messages and broadcast;
//! - [`blocks`]: §5 blocking;
//! - [`handshake`]: §6 the address/consent handshake;
//! - [`session`]: the session table and each session's stream queue;
//! - [`delivery`]: what happens to a direct message after its commit;
//! - [`backlog`]: which users may have messages waiting in the store;
//! - [`feed`]: the presence feed every stream reads, coalesced per window;
//! - [`publish`] and [`remote`]: a cluster node's side of the bus (SPEC §12);
//! - [`stats`]: the counters of `Admin/GetStats`.
//!
//! Nothing here knows protobuf requests or tonic: operations take and return domain values
//! (`rpc/` converts), and events are built by [`super::wire`]. Every session end goes through
//! [`Core::end_session`]: the table's `create`/`remove` are private to this module.

pub mod backlog;
pub mod blocks;
pub mod delivery;
pub mod feed;
pub mod handshake;
pub mod login;
pub mod manage;
pub mod messages;
pub mod presence;
pub mod publish;
pub mod remote;
pub mod session;
pub mod stats;
pub mod tickets;

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

pub use self::{
    feed::Shape,
    messages::{Delivery, Sent},
    presence::OnlineUser,
    session::{EndReason, Outbound, PeerInfo, Pushed, Session, Sessions},
    stats::Stats,
};
use super::{
    accounts::{Account, Directory, Hasher},
    blocks::Blocks,
    config::Config,
    consent::{self, Consent},
    error::{Error, Result},
    lockout::Lockout,
    store::{Store, UserId},
    wire,
    writer::Writer,
};
use crate::types::{Secret, check_username};

/// Everything the server knows.
pub struct Core {
    /// Settings.
    pub(super) config: Config,
    /// Durable storage (reads; writes go through `writer`).
    pub(super) store: Arc<dyn Store>,
    /// The group-commit writer.
    pub(super) writer: Writer,
    /// Accounts.
    pub(super) accounts: Directory,
    /// Password hashing.
    hasher: Arc<Hasher>,
    /// Blocks.
    blocks: Blocks,
    /// Live sessions.
    pub(super) sessions: Arc<Sessions>,
    /// Logins and logouts, for every stream to read.
    pub(super) presence: Arc<feed::PresenceFeed>,
    /// The address handshake.
    consent: Consent,
    /// Login lockout and throttling.
    lockout: std::sync::Mutex<Lockout>,
    /// Counters.
    pub(super) stats: Stats,
    /// The admin token.
    pub(super) admin_token: Secret,
    /// Start time.
    pub(super) started: Instant,
    /// The cluster this node belongs to; `None` for a lone server, which then publishes
    /// nothing.
    cluster: Option<Arc<crate::server::cluster::Cluster>>,
    /// Who may have stored messages (used on a lone node only).
    backlog: Arc<backlog::Backlog>,
}

impl Core {
    /// Loads accounts and blocks from `store`, starts the writer (delivering committed messages
    /// to this node's streams) and the background tasks: the session reaper and the ending of
    /// sessions whose stream stopped reading. The tasks stop when the core is dropped.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn start(
        config: Config,
        store: Arc<dyn Store>,
        admin_token: Secret,
    ) -> anyhow::Result<Arc<Self>> {
        Self::start_node(config, store, admin_token, None)
    }

    /// [`Core::start`] for a node of `cluster` (or a lone server, `None`): committed messages
    /// for users on other nodes, and every change other nodes must know, go through its bus.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn start_node(
        config: Config,
        store: Arc<dyn Store>,
        admin_token: Secret,
        cluster: Option<Arc<crate::server::cluster::Cluster>>,
    ) -> anyhow::Result<Arc<Self>> {
        let (slow_tx, slow_rx) = mpsc::unbounded_channel();
        let presence = feed::PresenceFeed::new(wire::presence_batches);
        let sessions = Arc::new(Sessions::new(slow_tx, presence.position()));
        let stats = Stats::default();
        let waiting = store.inbox_counts()?.into_iter().map(|(user, _)| user);
        let backlog = Arc::new(backlog::Backlog::new(waiting));
        let local = delivery::Local::new(
            sessions.clone(),
            stats.send_to_delivery.clone(),
            backlog.clone(),
        );
        let deliver: Arc<dyn crate::server::writer::Deliver> = match &cluster {
            Some(c) => Arc::new(publish::ClusterDeliver::new(local, c.clone())),
            None => Arc::new(local),
        };
        let (writer, _thread) = Writer::start(store.clone(), deliver);
        let accounts = Directory::load(store.users()?);
        let blocks = Blocks::load(store.blocks()?);
        let consent = Consent::new(consent::Limits {
            timeout: config.consent_timeout,
            cooldown: config.consent_cooldown,
            max_pending: config.max_pending_requests,
        });
        let lockout = Lockout::new(
            config.max_login_attempts,
            config.block_duration,
            config.login_rate,
            config.login_burst,
        );
        let core = Arc::new(Core {
            hasher: Arc::new(Hasher::new(config.fast_hash)),
            config,
            store,
            writer,
            accounts,
            blocks,
            sessions,
            presence: presence.clone(),
            consent,
            lockout: std::sync::Mutex::new(lockout),
            stats,
            admin_token,
            started: Instant::now(),
            cluster,
            backlog,
        });
        tokio::spawn(end_slow_readers(Arc::downgrade(&core), slow_rx));
        tokio::spawn(reap(Arc::downgrade(&core)));
        tokio::spawn(feed::PresenceFeed::run(Arc::downgrade(&presence)));
        Ok(core)
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `user` certainly has no stored message after seq `after`, so a new stream can
    /// skip the replay. Never certain on a cluster node (others append to the same inbox).
    pub fn nothing_stored_after(&self, user: UserId, after: u64) -> bool {
        self.cluster.is_none() && self.backlog.nothing_after(user, after)
    }

    /// A replay read `user`'s whole inbox, showing seqs up to `last`.
    pub fn replayed(&self, user: UserId, last: u64) {
        self.backlog.replayed(user, last);
    }

    fn lockout(&self) -> std::sync::MutexGuard<'_, Lockout> {
        self.lockout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account called `name`, or `NOT_FOUND`.
    pub fn account(&self, name: &str) -> Result<Arc<Account>> {
        self.accounts
            .get(name)
            .ok_or_else(|| Error::NoSuchUser(name.to_owned()))
    }

    /// The account called `name`, which must not be `me` (`INVALID_ARGUMENT`).
    fn other(
        &self,
        me: &Session,
        name: &str,
        field: &'static str,
        what: &str,
    ) -> Result<Arc<Account>> {
        check_username(name).map_err(|m| Error::invalid(field, m))?;
        let account = self.account(name)?;
        if account.id == me.user_id() {
            return Err(Error::invalid(field, format!("you cannot {what} yourself")));
        }
        Ok(account)
    }

    /// Ends every session (`SERVER_SHUTDOWN`): each stream says so and closes.
    pub fn shut_down(&self) {
        self.end_all(EndReason::ServerShutdown);
    }

    /// Ends every session of this node for `reason`.
    pub fn end_all(&self, reason: EndReason) {
        for s in self.sessions.all() {
            self.end_session(&s, reason);
        }
    }
}

/// Ends the sessions whose stream queue overflowed, outside the pushing code's locks (a push
/// happens under the table's and the writer's feet; ending one publishes presence).
async fn end_slow_readers(core: Weak<Core>, mut slow: mpsc::UnboundedReceiver<Arc<Session>>) {
    while let Some(session) = slow.recv().await {
        let Some(core) = core.upgrade() else {
            break;
        };
        if core.end_session(&session, EndReason::TooSlow) {
            tracing::warn!(user = %session.name(), "stream stopped reading; session ended");
        }
    }
}

/// Ends sessions that showed no activity for the session timeout, checking a few times per
/// timeout.
async fn reap(core: Weak<Core>) {
    let Some(tick) = core.upgrade().map(|c| {
        (c.config.session_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }) else {
        return;
    };
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let Some(core) = core.upgrade() else {
            break;
        };
        core.reap();
    }
}
