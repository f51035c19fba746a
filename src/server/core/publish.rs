//! SPEC §12: what this node tells the other nodes of a cluster, and pushes that reach a
//! session wherever it is. Direct messages reach the bus only after their commit
//! ([`ClusterDeliver`] is the writer's [`Deliver`]), so a node's death loses nothing
//! acknowledged: whatever the bus drops waits in the recipient's inbox for the next `Subscribe`.
//! Every helper here does nothing on a lone server beyond its local part.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::oneshot;

use super::{
    Core, EndReason,
    delivery::Local,
    handshake::party,
    session::{Outbound, Pushed, Session},
};
use crate::server::{
    cluster::{
        Cluster,
        bus::{self, Event, Kind, PresenceChange, Route},
    },
    consent::Party,
    store::UserId,
    wire::EncodedEvent,
    writer::{Committed, Deliver, Reach},
};

/// The writer's [`Deliver`] on a cluster node: this node's streams first, then, in one event
/// per node, the messages whose recipients are online on other nodes.
pub struct ClusterDeliver {
    local: Local,
    cluster: Arc<Cluster>,
}

impl ClusterDeliver {
    /// Delivers to `local` streams and through `cluster`.
    pub fn new(local: Local, cluster: Arc<Cluster>) -> Self {
        ClusterDeliver { local, cluster }
    }
}

impl Deliver for ClusterDeliver {
    fn deliver(&self, batch: &[Committed<'_>]) -> Vec<Reach> {
        let mut reach = Vec::with_capacity(batch.len());
        let mut by_node: HashMap<String, Vec<bus::Direct>> = HashMap::new();
        let mut unplaced = Vec::new();
        for (m, live) in batch.iter().zip(self.local.live(batch)) {
            if live {
                reach.push(Reach::Now(true));
                continue;
            }
            if m.duplicate {
                // A resend: the recipient has, or will get, the first copy.
                reach.push(Reach::Now(
                    self.cluster.remote_session(m.recipient).is_some(),
                ));
                continue;
            }
            let direct = bus::Direct {
                recipient: m.recipient,
                from: m.from.to_owned(),
                seq: m.seq,
                message_id: m.message_id.to_owned(),
                body: m.body.to_owned(),
                sent_ms: m.sent_ms,
            };
            match self.cluster.remote_session(m.recipient) {
                Some(there) => {
                    // Told "delivered" as for a local stream: the recipient is online and its
                    // node gets the message now (or, if the bus loses it, at the next
                    // Subscribe or the next message's gap).
                    reach.push(Reach::Now(true));
                    by_node.entry(there.node).or_default().push(direct);
                }
                // Offline, or logged in elsewhere a moment ago: the directory knows which,
                // and the sender's answer waits for it.
                None => {
                    let (answer, later) = oneshot::channel();
                    reach.push(Reach::Later(later));
                    unplaced.push((direct, Some(answer)));
                }
            }
        }
        for (node, messages) in by_node {
            self.cluster.publish(
                Route::Node(node),
                Event::new(Kind::Direct(bus::DirectBatch {
                    messages,
                    looked_up: false,
                })),
            );
        }
        if !unplaced.is_empty() {
            self.cluster.look_up_and_send(unplaced);
        }
        reach
    }
}

impl Core {
    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Tells the other nodes that `session` came or went (batched per window).
    pub(super) fn publish_presence(&self, session: &Session, online: bool) {
        let Some(cluster) = &self.cluster else { return };
        cluster.presence_changed(PresenceChange {
            user: session.user_id(),
            online,
            epoch: session.id,
            since_ms: session.since_ms,
            peer: session.peer.as_ref().map(|p| bus::Peer {
                host: p.host.clone(),
                port: u32::from(p.port),
                public_key: p.public_key.clone(),
            }),
            remote: session.remote.to_string(),
        });
    }

    /// After a session of this node ended: the other nodes end its grants, and its directory
    /// entry goes (unless a newer login took it, or the whole node is leaving, which clears
    /// its entries at once).
    pub(super) fn publish_end(&self, session: &Session, reason: EndReason) {
        let Some(cluster) = &self.cluster else { return };
        cluster.publish(
            Route::Others,
            Event::new(Kind::Ended(bus::Ended {
                user: session.user_id(),
                epoch: session.id,
                node_died: false,
            })),
        );
        if matches!(
            reason,
            EndReason::LoggedInElsewhere | EndReason::ServerShutdown
        ) {
            return;
        }
        let (cluster, user, epoch) = (cluster.clone(), session.user_id(), session.id);
        tokio::spawn(async move {
            if let Err(e) = cluster.directory().release(user, epoch).await {
                // The entry stays until this node's own stop, or its lease, clears it.
                tracing::warn!("could not remove a session from the directory: {e:#}");
            }
        });
    }

    /// Sends `kind` to every other node, if this node has any.
    pub(super) fn publish(&self, kind: Kind) {
        if let Some(cluster) = &self.cluster {
            cluster.publish(Route::Others, Event::new(kind));
        }
    }

    /// Pushes `event` to `to`'s session wherever it is: here, or through the bus. `asked`
    /// names an address request, whose answer must find its way back here.
    pub(super) fn push_to(&self, to: &Party, event: EncodedEvent, asked: Option<bus::Asked>) {
        if let Some(session) = self.sessions.by_user(to.user) {
            if session.id == to.session {
                session.push(Outbound::now(event));
            }
            return;
        }
        let Some(cluster) = &self.cluster else { return };
        let Some(there) = cluster.remote_session(to.user) else {
            return;
        };
        if there.epoch != to.session {
            return;
        }
        cluster.publish(
            Route::Node(there.node),
            Event::new(Kind::Notice(bus::Notice {
                user: to.user,
                session: to.session,
                event: event.bytes().clone(),
                asked,
            })),
        );
    }

    /// Pushes `event` to `user`'s live session, on this node or another.
    pub(super) fn push_to_user(&self, user: UserId, event: EncodedEvent) {
        if let Some(session) = self.sessions.by_user(user) {
            session.push(Outbound::now(event));
            return;
        }
        let Some(cluster) = &self.cluster else { return };
        let Some(there) = cluster.remote_session(user) else {
            return;
        };
        cluster.publish(
            Route::Node(there.node),
            Event::new(Kind::Notice(bus::Notice {
                user,
                session: there.epoch,
                event: event.bytes().clone(),
                asked: None,
            })),
        );
    }

    /// Ends `user`'s session wherever it is (`Admin/KickUser`); whether it had one.
    pub fn kick(&self, user: UserId) -> bool {
        if let Some(s) = self.sessions.by_user(user) {
            return self.end_session(&s, EndReason::Kicked);
        }
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let Some(there) = cluster.remote_session(user) else {
            return false;
        };
        cluster.publish(
            Route::Node(there.node),
            Event::new(Kind::Kicked(bus::SessionRef {
                user,
                epoch: there.epoch,
            })),
        );
        true
    }

    /// Whether `me`'s answer to request `id` must go to another node; sends it there if so.
    pub(super) fn answer_elsewhere(&self, me: &Session, id: &str, accept: bool) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let Some((node, asked)) = cluster.asked_on(id) else {
            return false;
        };
        let p = party(me);
        if accept {
            cluster.granted(&asked, p.clone());
        }
        cluster.publish(
            Route::Node(node),
            Event::new(Kind::Answer(bus::Answer {
                request_id: id.to_owned(),
                user: p.user,
                session: p.session,
                accept,
            })),
        );
        true
    }

    /// Queues `event` for every session of this node except `from`'s and those of users in
    /// `skip`; the number queued.
    pub(super) fn fan_out(
        &self,
        from: UserId,
        skip: &std::collections::HashSet<UserId>,
        event: &EncodedEvent,
    ) -> u32 {
        let mut delivered = 0;
        for s in self.sessions.all() {
            if s.user_id() != from
                && !skip.contains(&s.user_id())
                && s.push(Outbound::now(event.clone())) == Pushed::Queued
            {
                delivered += 1;
            }
        }
        delivered
    }
}
