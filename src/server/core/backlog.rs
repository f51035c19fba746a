//! Which users may have messages waiting in the store, so that a `Subscribe` with nothing to
//! replay starts live at once: no wait for the writer to flush, no inbox read on a blocking
//! thread (two thread hand-offs per stream, most of a login's cost after hashing when many
//! users connect at once).
//!
//! Kept per user as the highest seq appended and not yet known to be acknowledged; a user
//! without an entry has nothing stored. The writer marks each committed message before it is
//! handed to the recipient's stream, and a stream reads the mark after attaching, so a message
//! is either marked when the stream looks or arrives on the stream live. Only a lone node uses
//! it: on a cluster other nodes append to the same inboxes.

use std::{collections::HashMap, sync::Mutex};

use crate::server::store::UserId;

/// What may be stored for one user.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The highest seq appended since the start and not known to be acknowledged.
    high: u64,
    /// The user had stored messages when the server started, whose seqs are not known here:
    /// cleared by the first replay that reads the whole inbox.
    from_before: bool,
}

/// User → what may still be stored.
#[derive(Default)]
pub struct Backlog {
    marks: Mutex<HashMap<UserId, Mark>>,
}

impl Backlog {
    /// Users who had stored messages when the server started.
    pub fn new(stored: impl IntoIterator<Item = UserId>) -> Self {
        let mark = Mark {
            high: 0,
            from_before: true,
        };
        Backlog {
            marks: Mutex::new(stored.into_iter().map(|user| (user, mark)).collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Mark>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages committed to these inboxes, as (recipient, seq).
    pub fn appended(&self, messages: impl IntoIterator<Item = (UserId, u64)>) {
        let mut marks = self.lock();
        for (user, seq) in messages {
            let mark = marks.entry(user).or_insert(Mark {
                high: 0,
                from_before: false,
            });
            mark.high = mark.high.max(seq);
        }
    }

    /// `user` acknowledged everything up to `upto`.
    pub fn acknowledged(&self, user: UserId, upto: u64) {
        let mut marks = self.lock();
        if marks
            .get(&user)
            .is_some_and(|m| !m.from_before && m.high <= upto)
        {
            marks.remove(&user);
        }
    }

    /// A replay read `user`'s whole inbox, the last stored seq being at most `last`: what was
    /// stored before the start is known now.
    pub fn replayed(&self, user: UserId, last: u64) {
        if let Some(mark) = self.lock().get_mut(&user)
            && mark.from_before
        {
            mark.from_before = false;
            mark.high = mark.high.max(last);
        }
    }

    /// Whether `user` certainly has no stored message after seq `after`.
    pub fn nothing_after(&self, user: UserId, after: u64) -> bool {
        self.lock()
            .get(&user)
            .is_none_or(|m| !m.from_before && m.high <= after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_clear_once_everything_appended_is_acknowledged() {
        let b = Backlog::new([]);
        assert!(b.nothing_after(1, 0));
        b.appended([(1, 3), (1, 5), (2, 1)]);
        assert!(!b.nothing_after(1, 4));
        assert!(b.nothing_after(1, 5), "resuming after the last one");
        b.acknowledged(1, 4);
        assert!(!b.nothing_after(1, 0));
        b.acknowledged(1, 5);
        assert!(b.nothing_after(1, 0));
        assert!(!b.nothing_after(2, 0), "another user's mark stays");
    }

    #[test]
    fn messages_stored_before_the_start_count_until_a_replay_has_read_them() {
        let b = Backlog::new([7]);
        b.acknowledged(7, u64::MAX);
        assert!(!b.nothing_after(7, u64::MAX), "their seqs are not known");
        // Appended while the replay read (after its last page): still waiting afterwards.
        b.appended([(7, 12)]);
        b.replayed(7, 10);
        assert!(!b.nothing_after(7, 10));
        b.acknowledged(7, 12);
        assert!(b.nothing_after(7, 0));
        // A later replay changes nothing for a user whose seqs are known.
        b.appended([(7, 13)]);
        b.replayed(7, 20);
        assert!(b.nothing_after(7, 13));
    }
}
