//! SPEC §12: what the other nodes' events do to this node. Each event is applied by the same
//! rules as a local change (blocks filter presence and broadcast, grants end with either
//! session, one session per user), one after the other in each publisher's order; and the
//! node's own comings and goings in the cluster (catching up, leaving, dead nodes' sessions).

use std::{collections::HashMap, sync::Arc};

use super::{Core, EndReason, session::Outbound};
use crate::server::{
    cluster::{
        bus::{self, Envelope, Kind, PresenceChange},
        remote::RemoteSession,
    },
    consent::Party,
    store::{UserId, pg_directory::Entry},
    wire::{self, EncodedEvent},
};

impl Core {
    /// Applies an event from another node. Events are applied one after the other, in the
    /// order each node published them; an event naming an account this node has not heard of
    /// yet (created a moment ago elsewhere) waits for it to be read.
    pub async fn apply_remote(self: &Arc<Self>, envelope: Envelope) {
        let Some(kind) = envelope.event.and_then(|e| e.kind) else {
            return;
        };
        let users: Vec<UserId> = match &kind {
            Kind::Presence(b) => b.changes.iter().map(|c| c.user).collect(),
            Kind::Answer(a) => vec![a.user],
            _ => Vec::new(),
        };
        for user in users {
            if self.accounts.by_id(user).is_none() {
                self.load_account(user).await;
            }
        }
        match kind {
            Kind::Direct(batch) => {
                let mut elsewhere = Vec::new();
                for m in batch.messages {
                    match self.sessions.by_user(m.recipient) {
                        Some(s) => {
                            let event =
                                wire::direct(m.seq, &m.from, &m.body, &m.message_id, m.sent_ms);
                            s.push(Outbound::stored(m.seq, event));
                        }
                        // The sender's mirror was behind: the recipient moved to another
                        // node. The directory says where, once.
                        None if !batch.looked_up => elsewhere.push((m, None)),
                        None => {}
                    }
                }
                if !elsewhere.is_empty()
                    && let Some(cluster) = &self.cluster
                {
                    cluster.look_up_and_send(elsewhere);
                }
            }
            Kind::Presence(batch) => {
                for c in batch.changes {
                    self.remote_presence(&envelope.from, c);
                }
            }
            Kind::Notice(n) => {
                if let Some(s) = self.sessions.by_user(n.user)
                    && (n.session == 0 || s.id == n.session)
                {
                    if let Some(asked) = n.asked
                        && let Some(c) = &self.cluster
                    {
                        c.asked(asked, envelope.from);
                    }
                    s.push(Outbound::now(EncodedEvent::new(n.event)));
                }
            }
            Kind::Broadcast(b) => {
                let blockers = self.blocks.blockers_of(b.from_user);
                let event = EncodedEvent::new(b.event);
                for s in self.sessions.all() {
                    if s.user_id() != b.from_user && !blockers.contains(&s.user_id()) {
                        s.push(Outbound::now(event.clone()));
                    }
                }
            }
            Kind::Kick(k) => {
                if let Some(s) = self.sessions.by_user(k.user)
                    && s.id <= k.epoch
                {
                    self.end_session(&s, EndReason::LoggedInElsewhere);
                }
            }
            Kind::Kicked(k) => {
                if let Some(s) = self.sessions.by_user(k.user)
                    && s.id == k.epoch
                {
                    self.end_session(&s, EndReason::Kicked);
                }
            }
            Kind::Ended(e) => self.remote_session_ended(e.epoch, e.node_died),
            Kind::Block(b) => {
                if b.added {
                    self.blocks.add(b.blocker, b.blocked);
                    self.notify(self.consent.blocked(b.blocker, b.blocked));
                } else {
                    self.blocks.remove(b.blocker, b.blocked);
                }
            }
            Kind::Account(a) => self.refresh_account(a.user).await,
            Kind::Answer(a) => {
                let Some(name) = self.accounts.by_id(a.user).map(|x| x.name.clone()) else {
                    return;
                };
                let by = Party {
                    user: a.user,
                    session: a.session,
                    name,
                };
                match self
                    .consent
                    .respond(&by, &a.request_id, a.accept, std::time::Instant::now())
                {
                    Ok(notices) => self.notify(notices),
                    Err(e) => tracing::debug!("an answer from another node was refused: {e}"),
                }
            }
        }
    }

    /// A session came or went on node `node`.
    fn remote_presence(&self, node: &str, c: PresenceChange) {
        let Some(account) = self.accounts.by_id(c.user) else {
            return;
        };
        let changed = if c.online {
            account
                .last_login_ms
                .store(c.since_ms, std::sync::atomic::Ordering::Relaxed);
            self.cluster.as_ref().is_some_and(|cl| {
                cl.remote.online(
                    c.user,
                    RemoteSession {
                        node: node.to_owned(),
                        epoch: c.epoch,
                        since_ms: c.since_ms,
                        remote: c.remote.clone(),
                        peer: c
                            .peer
                            .map(|p| (p.host, u16::try_from(p.port).unwrap_or(0), p.public_key)),
                    },
                )
            })
        } else {
            self.cluster
                .as_ref()
                .is_some_and(|cl| cl.remote.offline(c.user, c.epoch))
        };
        if changed {
            self.presence.append(
                c.user,
                wire::presence(&account.name, c.online),
                self.blocks.blocked_by_user(c.user),
            );
        }
    }

    /// Session `epoch` on another node ended (with that node, if `node_died`): its requests
    /// and grants held here end, and so do grants given from here that its node held.
    fn remote_session_ended(&self, epoch: u64, node_died: bool) {
        self.notify(self.consent.session_ended(epoch));
        let Some(cluster) = &self.cluster else { return };
        for (target, requester) in cluster.requester_ended(epoch, node_died) {
            self.push_to(&target, wire::address_revoked(&requester), None);
        }
    }

    /// Sessions of a node that died (or of this node's previous life) that this node took out
    /// of the directory: every node forgets them, as if each had logged out.
    pub fn sessions_gone(&self, entries: Vec<Entry>) {
        let Some(cluster) = &self.cluster else { return };
        let mut changes = Vec::new();
        for e in entries {
            changes.push(PresenceChange {
                user: e.user,
                online: false,
                epoch: e.epoch,
                since_ms: e.since_ms,
                peer: None,
                remote: e.remote.clone(),
            });
            self.remote_session_ended(e.epoch, true);
            self.publish(Kind::Ended(bus::Ended {
                user: e.user,
                epoch: e.epoch,
                node_died: true,
            }));
            self.remote_presence(&e.node, changes.last().expect("pushed").clone());
        }
        if !changes.is_empty() {
            // On behalf of the dead node: the others apply it as that node's logouts.
            for c in changes {
                cluster.presence_changed(c);
            }
        }
    }

    /// Leaves the cluster at a clean stop, after every local session ended: the other nodes
    /// get the last presence batch, and this node's entries and lease leave the directory.
    pub async fn leave(&self) {
        let Some(cluster) = &self.cluster else { return };
        cluster.flush_presence();
        if let Err(e) = cluster.directory().clear_node(cluster.node()).await {
            tracing::warn!("could not clear this node's sessions from the directory: {e:#}");
        }
        cluster.bus().flush().await;
    }

    /// Reloads who is online elsewhere from the directory (at start, and after the bus was
    /// lost, when events may have been missed), ending local sessions another node took over.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn resync(&self) -> anyhow::Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let entries = cluster.directory().all().await?;
        let mut elsewhere = HashMap::new();
        for e in entries {
            if e.node == cluster.node() {
                if let Some(s) = self.sessions.by_user(e.user)
                    && s.id < e.epoch
                {
                    self.end_session(&s, EndReason::LoggedInElsewhere);
                }
                continue;
            }
            if let Some(s) = self.sessions.by_user(e.user)
                && s.id < e.epoch
            {
                self.end_session(&s, EndReason::LoggedInElsewhere);
            }
            elsewhere.insert(e.user, RemoteSession::from(e));
        }
        let (gone, new) = cluster.remote.reset(elsewhere);
        for (users, online) in [(gone, false), (new, true)] {
            for user in users {
                if let Some(a) = self.accounts.by_id(user) {
                    self.presence.append(
                        user,
                        wire::presence(&a.name, online),
                        self.blocks.blocked_by_user(user),
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads account `user` from the database, if it exists.
    async fn load_account(&self, user: UserId) {
        let Some(cluster) = &self.cluster else { return };
        match cluster.directory().user_by_id(user).await {
            Ok(Some(row)) => {
                self.accounts.insert(row);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("could not read an account created on another node: {e:#}"),
        }
    }

    /// Reads account `user` again from the database, after another node changed it.
    async fn refresh_account(&self, user: UserId) {
        let Some(cluster) = &self.cluster else { return };
        let row = match cluster.directory().user_by_id(user).await {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!("could not reload an account changed on another node: {e:#}");
                return;
            }
        };
        match row {
            Some(row) => {
                let disabled = row.disabled;
                match self.accounts.by_id(user) {
                    Some(a) => {
                        a.disabled
                            .store(disabled, std::sync::atomic::Ordering::Relaxed);
                        a.set_password_hash(row.password_hash);
                    }
                    None => {
                        self.accounts.insert(row);
                    }
                }
                if disabled && let Some(s) = self.sessions.by_user(user) {
                    self.end_session(&s, EndReason::Kicked);
                }
            }
            None => {
                // Deleted.
                if let Some(s) = self.sessions.by_user(user) {
                    self.end_session(&s, EndReason::Kicked);
                }
                self.accounts.remove(user);
                for blocked in self.blocks.blocked_by_user(user) {
                    self.blocks.remove(user, blocked);
                }
                for blocker in self.blocks.blockers_of(user) {
                    self.blocks.remove(blocker, user);
                }
            }
        }
    }
}
