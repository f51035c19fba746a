//! What this node knows of the sessions on other nodes: a mirror of the session directory,
//! kept current by the other nodes' presence batches and reloaded from the directory when the
//! bus comes back. Read on the paths that must not wait for PostgreSQL: `ListOnline`, whether a
//! committed message goes out live, broadcast counts, address requests.
//!
//! Epochs make it indifferent to order: a session replaces the user's entry only if it is
//! newer, and an "offline" removes the entry only if it is that very session.

use std::{collections::HashMap, sync::RwLock};

use crate::server::store::{UserId, pg_directory::Entry};

/// A session on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSession {
    /// The node.
    pub node: String,
    /// The session's epoch (its id, cluster-wide).
    pub epoch: u64,
    /// Login time, Unix ms.
    pub since_ms: i64,
    /// The client's address as its node saw it.
    pub remote: String,
    /// The client's peer listener: host, port, public key.
    pub peer: Option<(String, u16, Vec<u8>)>,
}

impl From<Entry> for RemoteSession {
    fn from(e: Entry) -> Self {
        RemoteSession {
            node: e.node,
            epoch: e.epoch,
            since_ms: e.since_ms,
            remote: e.remote,
            peer: e.peer,
        }
    }
}

/// The mirror.
#[derive(Debug, Default)]
pub struct Remote {
    sessions: RwLock<HashMap<UserId, RemoteSession>>,
}

impl Remote {
    /// Records `session` as `user`'s, unless a newer one is known. Whether it was recorded.
    pub fn online(&self, user: UserId, session: RemoteSession) -> bool {
        let mut s = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        match s.get(&user) {
            Some(known) if known.epoch >= session.epoch => false,
            _ => {
                s.insert(user, session);
                true
            }
        }
    }

    /// Forgets `user`'s session `epoch` (or older). Whether one was forgotten.
    pub fn offline(&self, user: UserId, epoch: u64) -> bool {
        let mut s = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        if s.get(&user).is_some_and(|k| k.epoch <= epoch) {
            s.remove(&user);
            return true;
        }
        false
    }

    /// `user`'s session elsewhere.
    pub fn get(&self, user: UserId) -> Option<RemoteSession> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user)
            .cloned()
    }

    /// Every session elsewhere.
    pub fn all(&self) -> Vec<(UserId, RemoteSession)> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(u, s)| (*u, s.clone()))
            .collect()
    }

    /// Replaces everything with `sessions`; returns (gone, new) users for presence.
    pub fn reset(&self, sessions: HashMap<UserId, RemoteSession>) -> (Vec<UserId>, Vec<UserId>) {
        let mut s = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        let gone = s
            .keys()
            .filter(|u| !sessions.contains_key(u))
            .copied()
            .collect();
        let new = sessions
            .iter()
            .filter(|(u, r)| s.get(u).is_none_or(|k| k.epoch != r.epoch))
            .map(|(u, _)| *u)
            .collect();
        *s = sessions;
        (gone, new)
    }

    /// Sessions elsewhere.
    pub fn len(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no session is elsewhere.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(node: &str, epoch: u64) -> RemoteSession {
        RemoteSession {
            node: node.into(),
            epoch,
            since_ms: 0,
            remote: String::new(),
            peer: None,
        }
    }

    #[test]
    fn a_late_offline_of_an_older_session_leaves_the_newer_one() {
        let r = Remote::default();
        assert!(r.online(1, on("a", 5)));
        assert!(r.online(1, on("b", 7)));
        assert!(!r.online(1, on("a", 6)), "older than what is known");
        assert!(!r.offline(1, 5), "the known session is newer");
        assert_eq!(r.get(1).map(|s| s.node), Some("b".into()));
        assert!(r.offline(1, 7));
        assert!(r.get(1).is_none());
    }
}
