//! Who blocks whom, in memory for the hot paths (every send, broadcast and presence fan-out asks)
//! and written through to the store by the caller.

use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
};

use super::store::UserId;

/// The block relation, indexed both ways.
#[derive(Debug, Default)]
pub struct Blocks {
    inner: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// blocker → users it blocks.
    blocking: HashMap<UserId, HashSet<UserId>>,
    /// blocked → users blocking it.
    blocked_by: HashMap<UserId, HashSet<UserId>>,
}

impl Blocks {
    /// An index holding `pairs` of `(blocker, blocked)`.
    pub fn load(pairs: Vec<(UserId, UserId)>) -> Self {
        let blocks = Blocks::default();
        for (a, b) in pairs {
            blocks.add(a, b);
        }
        blocks
    }

    /// Records that `blocker` blocks `blocked`.
    pub fn add(&self, blocker: UserId, blocked: UserId) {
        let mut i = self.inner.write().unwrap_or_else(|p| p.into_inner());
        i.blocking.entry(blocker).or_default().insert(blocked);
        i.blocked_by.entry(blocked).or_default().insert(blocker);
    }

    /// Removes a block.
    pub fn remove(&self, blocker: UserId, blocked: UserId) {
        let mut i = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = i.blocking.get_mut(&blocker) {
            set.remove(&blocked);
        }
        if let Some(set) = i.blocked_by.get_mut(&blocked) {
            set.remove(&blocker);
        }
    }

    /// Whether `blocker` blocks `blocked`.
    pub fn blocks(&self, blocker: UserId, blocked: UserId) -> bool {
        let i = self.inner.read().unwrap_or_else(|p| p.into_inner());
        i.blocking
            .get(&blocker)
            .is_some_and(|s| s.contains(&blocked))
    }

    /// The users `blocker` blocks.
    pub fn blocked_by_user(&self, blocker: UserId) -> HashSet<UserId> {
        let i = self.inner.read().unwrap_or_else(|p| p.into_inner());
        i.blocking.get(&blocker).cloned().unwrap_or_default()
    }

    /// The users who block `blocked`.
    pub fn blockers_of(&self, blocked: UserId) -> HashSet<UserId> {
        let i = self.inner.read().unwrap_or_else(|p| p.into_inner());
        i.blocked_by.get(&blocked).cloned().unwrap_or_default()
    }
}
