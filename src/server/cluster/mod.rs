//! A node of a cluster (`--store postgres://… --bus nats://… --node-id NAME`, SPEC §12): what
//! this node must tell the others, and what it knows of their sessions.
//!
//! - [`bus`]: the [`bus::Bus`] trait, its events, and the in-process implementation;
//! - [`nats`]: the NATS implementation;
//! - [`Cluster`] (here): the session directory (PostgreSQL, `store/pg_directory.rs`) with this
//!   node's lease, the mirror of other nodes' sessions ([`remote`]) and this node's presence
//!   batch, published once per window.
//!
//! What other nodes' events do to this node's streams is in `core/remote.rs`, and what this node
//! tells them in `core/publish.rs`: the core's rules stay in the core. A lone `confab serve` has
//! no `Cluster` at all, so nothing here is on its path.

pub mod bus;
pub mod nats;
pub mod remote;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Notify, oneshot};

use self::{
    bus::{Bus, Event, Kind, PresenceBatch, PresenceChange, Route},
    remote::{Remote, RemoteSession},
};
use super::consent::Party;
use super::store::{
    UserId,
    pg_directory::{Entry, PgDirectory, Replaced},
};
use crate::now_ms;

/// Checks a node name: it becomes part of NATS subjects and of what operators read.
///
/// # Errors
/// A sentence saying what is wrong with it.
pub fn check_node_id(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a node id has 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "node id {name:?} may hold only letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// This node's part in the cluster.
pub struct Cluster {
    bus: Arc<dyn Bus>,
    directory: PgDirectory,
    /// Other nodes' sessions, as their presence batches and the directory tell.
    pub(crate) remote: Remote,
    /// This node's presence changes waiting for the window to close.
    presence: Mutex<Vec<PresenceChange>>,
    presence_due: Arc<Notify>,
    /// Address requests made on other nodes to this node's sessions: request id → the node
    /// holding the request and the request, so an answer given here can be sent there.
    asks: Mutex<HashMap<String, (String, bus::Asked)>>,
    /// Grants this node's sessions gave to sessions elsewhere, by the requester's session.
    granted: Mutex<HashMap<u64, Vec<(Party, String)>>>,
    /// How long a lease lasts: a node silent for this long is taken for dead.
    lease: Duration,
    /// The runtime the node started on: [`Cluster::look_up_and_send`] is called from the
    /// writer's thread, which has none.
    runtime: tokio::runtime::Handle,
}

impl Cluster {
    /// Joins the cluster through `bus` and `directory`; `session_timeout` bounds how long a
    /// dead node's users may still look online. Called on the runtime the node runs on.
    pub fn new(bus: Arc<dyn Bus>, directory: PgDirectory, session_timeout: Duration) -> Self {
        Cluster {
            bus,
            directory,
            remote: Remote::default(),
            presence: Mutex::default(),
            presence_due: Arc::default(),
            asks: Mutex::default(),
            granted: Mutex::default(),
            // Two thirds of the session timeout, renewed every quarter of it: a dead node's
            // users are gone within the timeout, and a node must miss three renewals in a row
            // (a long stall) before the others take it for dead.
            lease: (session_timeout * 2 / 3).max(Duration::from_millis(400)),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        self.bus.node()
    }

    /// The bus.
    pub fn bus(&self) -> &dyn Bus {
        self.bus.as_ref()
    }

    /// Publishes `event` along `route`, after this node's presence changes still waiting for
    /// their window: the other nodes then see this node's changes in the order they happened
    /// here (a login before the block its user made next, before its messages).
    pub fn publish(&self, route: Route, event: Event) {
        self.flush_presence();
        self.bus.publish(route, event);
    }

    /// The directory.
    pub fn directory(&self) -> &PgDirectory {
        &self.directory
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the lease is renewed and dead nodes are looked for.
    pub fn lease_tick(&self) -> Duration {
        self.lease / 4
    }

    /// Renews this node's lease, leaving `stats` (its counters, JSON) with it, and, if `sweep`,
    /// takes away the entries of nodes whose lease ran out; also says whether this node had
    /// itself been taken for dead.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn renew(&self, sweep: bool, stats: String) -> anyhow::Result<(Vec<Entry>, bool)> {
        let now = now_ms();
        let until = now + self.lease.as_millis() as i64;
        self.directory
            .renew_and_sweep(self.node(), until, now, sweep, stats)
            .await
    }

    /// Claims the user's session for this node: its new epoch, and the session replaced.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn claim(&self, mut entry: Entry) -> anyhow::Result<(u64, Option<Replaced>)> {
        entry.node = self.node().to_owned();
        let (epoch, replaced) = self.directory.claim(&entry).await?;
        if let Some(r) = &replaced
            && r.node != self.node()
        {
            self.publish(
                Route::Node(r.node.clone()),
                Event::new(Kind::Kick(bus::SessionRef {
                    user: entry.user,
                    epoch: r.epoch,
                })),
            );
        }
        Ok((epoch, replaced))
    }

    /// Records a presence change of one of this node's sessions for the next batch.
    pub fn presence_changed(&self, change: PresenceChange) {
        self.presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(change);
        self.presence_due.notify_one();
    }

    /// Publishes this node's presence changes, one batch per `window` (the presence feed's),
    /// until `cluster` is gone.
    pub async fn publish_presence(cluster: std::sync::Weak<Cluster>, window: Duration) {
        let Some(due) = cluster.upgrade().map(|c| c.presence_due.clone()) else {
            return;
        };
        loop {
            due.notified().await;
            tokio::time::sleep(window).await;
            let Some(c) = cluster.upgrade() else { return };
            c.flush_presence();
        }
    }

    /// Publishes the presence changes waiting now, if any.
    pub fn flush_presence(&self) {
        // Published under the lock, so two flushes cannot overtake each other (publishing
        // only queues).
        let mut waiting = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        if !waiting.is_empty() {
            let changes = std::mem::take(&mut *waiting);
            self.bus.publish(
                Route::Others,
                Event::new(Kind::Presence(PresenceBatch { changes })),
            );
        }
    }

    /// Remembers that request `asked`, held by `node`, was put to a session here.
    pub fn asked(&self, asked: bus::Asked, node: String) {
        let mut asks = self.asks.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: requests time out, and a node asks at most a few per target; forget the
        // oldest beyond a generous cap rather than grow.
        if asks.len() > 100_000 {
            asks.clear();
        }
        asks.insert(asked.request_id.clone(), (node, asked));
    }

    /// The node holding request `id` and the request, if it was made elsewhere.
    pub fn asked_on(&self, id: &str) -> Option<(String, bus::Asked)> {
        self.asks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// `target`, a session here, granted its address to `asked`'s requester on another node.
    /// That node holds the grant and revokes it when the requester's session ends; if the node
    /// dies instead, this record lets the target be told ([`Cluster::requester_ended`]).
    pub fn granted(&self, asked: &bus::Asked, target: Party) {
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if granted.len() > 100_000 {
            granted.clear();
        }
        granted
            .entry(asked.requester_session)
            .or_default()
            .push((target, asked.requester.clone()));
    }

    /// Session `epoch` ended somewhere else: forgets the grants made to it from here and, if
    /// its node died (so nobody revoked them), returns them: (the target here, the requester's
    /// name).
    pub fn requester_ended(&self, epoch: u64, node_died: bool) -> Vec<(Party, String)> {
        let gone = self
            .granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&epoch)
            .unwrap_or_default();
        if node_died { gone } else { Vec::new() }
    }

    /// The user's session on another node, if it has one.
    pub fn remote_session(&self, user: UserId) -> Option<RemoteSession> {
        self.remote.get(user)
    }

    /// Sends committed `messages` whose recipients the mirror cannot place (a login elsewhere
    /// not announced yet: presence travels once per window) to the nodes the directory names,
    /// in the background. The directory is read after the commit, and a login claims its entry
    /// before its `Subscribe` replays the inbox, so each recipient either is found here or will
    /// find the message in its replay. Recipients on this node or on no node are left to that
    /// replay; a failed lookup leaves every message in its inbox, as a bus that lost it would.
    /// Each message's `answer`, if any, is told whether it went to a session (its sender is
    /// then told `DELIVERED`, else `STORED`).
    pub fn look_up_and_send(
        self: &Arc<Self>,
        messages: Vec<(bus::Direct, Option<oneshot::Sender<bool>>)>,
    ) {
        let cluster = self.clone();
        self.runtime.spawn(async move {
            let mut users: Vec<UserId> = messages.iter().map(|(m, _)| m.recipient).collect();
            users.sort_unstable();
            users.dedup();
            // A dropped answer tells its sender "stored".
            let entries = match cluster.directory.sessions_of(users).await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(
                        "could not look up where recipients are; their messages wait in their inboxes: {e:#}"
                    );
                    return;
                }
            };
            let at: HashMap<UserId, String> = entries
                .into_iter()
                .filter(|e| e.node != cluster.node())
                .map(|e| (e.user, e.node))
                .collect();
            let mut by_node: HashMap<&str, Vec<bus::Direct>> = HashMap::new();
            for (m, answer) in messages {
                let node = at.get(&m.recipient);
                if let Some(answer) = answer {
                    let _ = answer.send(node.is_some());
                }
                if let Some(node) = node {
                    by_node.entry(node).or_default().push(m);
                }
            }
            for (node, messages) in by_node {
                cluster.publish(
                    Route::Node(node.to_owned()),
                    Event::new(Kind::Direct(bus::DirectBatch {
                        messages,
                        looked_up: true,
                    })),
                );
            }
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Lets `publish_presence` notice that the cluster is gone.
        self.presence_due.notify_one();
    }
}
