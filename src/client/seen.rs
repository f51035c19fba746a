//! Showing each message once, whichever path brought it.
//!
//! A duplicate arrives when a direct send fell back to the server, or when a replay repeats what
//! was shown but not yet acknowledged; both happen within seconds, so a bounded memory of recent
//! ids is enough.

use std::collections::{HashSet, VecDeque};

/// Message ids remembered for dropping duplicates: a few thousand covers the seconds in which
/// a duplicate can arrive.
const SEEN_CAPACITY: usize = 4096;

/// Remembers recent (sender, message id) pairs so each message is shown once, whichever path
/// brought it. Keyed by sender too, so nobody can suppress another sender's message by reusing
/// its id.
#[derive(Debug)]
pub(crate) struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::with_capacity(SEEN_CAPACITY)
    }
}

impl Seen {
    /// Remembers at most `capacity` ids, forgetting the oldest first.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Seen {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `id` from `from` is seen; false for a duplicate.
    pub(crate) fn first_time(&mut self, from: &str, id: &str) -> bool {
        let key = format!("{}\n{id}", from.to_ascii_lowercase());
        if self.ids.contains(&key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_drops_duplicates_and_forgets_the_oldest() {
        let mut seen = Seen::with_capacity(2);
        assert!(seen.first_time("bob", "a"));
        assert!(!seen.first_time("Bob", "a"));
        assert!(
            seen.first_time("carol", "a"),
            "another sender's id is another message"
        );
        assert!(seen.first_time("bob", "c"));
        // Capacity 2: (bob, c) pushed out (bob, a).
        assert!(!seen.first_time("bob", "c"));
        assert!(seen.first_time("bob", "a"), "the oldest was forgotten");
    }
}
