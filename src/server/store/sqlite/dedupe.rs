//! The duplicate check of the SQLite inbox, in memory: a fingerprint of each stored message's
//! `(recipient, sender, message_id)` pointing at its seq.
//!
//! It replaces a unique index on those columns, which cost every append a descent into a
//! second, randomly placed B-tree leaf and a second page written to the WAL per message
//! (BENCHMARKS.md, "The inbox without its dedupe index"). The map holds only stored,
//! unacknowledged messages, is rebuilt from the inbox at start, and follows each batch's
//! transaction: a batch that does not commit leaves it as it was.
//!
//! A fingerprint is a keyed 64-bit hash, so two messages can share one; the map then says
//! "ambiguous" and the store looks the message up in the recipient's inbox (a scan of at most
//! the inbox's size, as the old index's absence would cost). Every stored message's fingerprint
//! is in the map, so a fingerprint the map does not hold is certainly not a duplicate.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
};

use super::super::UserId;

/// The seq recorded for a fingerprint that more than one stored message may share.
const AMBIGUOUS: u64 = u64::MAX;

/// Undo entries whose room is kept between batches (a batch is at most a few thousand writes).
const UNDO_KEPT: usize = 16 * 1024;

/// Where the duplicate check says to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// No stored message has this fingerprint: not a duplicate.
    Never,
    /// The stored message at this seq has the fingerprint; it is the duplicate if its sender
    /// and id match.
    At(u64),
    /// Several stored messages may have it: look in the inbox.
    Ambiguous,
}

/// Fingerprint → seq of the stored messages, with the changes of the batch in progress.
pub(super) struct Dedupe {
    keys: RandomState,
    seqs: HashMap<u64, u64>,
    /// What each change of the current batch replaced, newest last, to undo a failed commit.
    undo: Vec<(u64, Option<u64>)>,
}

impl Dedupe {
    /// An empty map with room for `stored` messages; fill it with [`Dedupe::load`]. (Sized
    /// once: growing it message by message at start left the smaller tables behind in the
    /// allocator, twice the memory for a large inbox.)
    pub(super) fn with_capacity(stored: usize) -> Self {
        Dedupe {
            keys: RandomState::new(),
            seqs: HashMap::with_capacity(stored),
            undo: Vec::new(),
        }
    }

    /// The fingerprint of a message.
    pub(super) fn fingerprint(&self, recipient: UserId, sender: UserId, message_id: &str) -> u64 {
        self.keys.hash_one((recipient, sender, message_id))
    }

    /// What the map knows of `fingerprint`.
    pub(super) fn seen(&self, fingerprint: u64) -> Seen {
        match self.seqs.get(&fingerprint) {
            None => Seen::Never,
            Some(&AMBIGUOUS) => Seen::Ambiguous,
            Some(&seq) => Seen::At(seq),
        }
    }

    /// A message found in the inbox at start (not part of a batch: nothing to undo).
    pub(super) fn load(&mut self, fingerprint: u64, seq: u64) {
        self.seqs
            .entry(fingerprint)
            .and_modify(|s| *s = AMBIGUOUS)
            .or_insert(seq);
    }

    /// A message stored at `seq`.
    pub(super) fn stored(&mut self, fingerprint: u64, seq: u64) {
        let previous = self.seqs.get(&fingerprint).copied();
        let now = if previous.is_some() { AMBIGUOUS } else { seq };
        self.seqs.insert(fingerprint, now);
        self.undo.push((fingerprint, previous));
    }

    /// The message at `seq` deleted. An ambiguous fingerprint stays so (until the next start):
    /// another stored message may still have it.
    pub(super) fn deleted(&mut self, fingerprint: u64, seq: u64) {
        if self.seqs.get(&fingerprint) == Some(&seq) {
            self.seqs.remove(&fingerprint);
            self.undo.push((fingerprint, Some(seq)));
        }
    }

    /// The batch committed: its changes stay.
    pub(super) fn commit(&mut self) {
        self.undo.clear();
        // A batch that deleted a large inbox must not keep its undo room for good.
        if self.undo.capacity() > UNDO_KEPT {
            self.undo = Vec::new();
        }
    }

    /// The batch did not commit: back to how the map was before it.
    pub(super) fn roll_back(&mut self) {
        while let Some((fingerprint, previous)) = self.undo.pop() {
            match previous {
                Some(seq) => self.seqs.insert(fingerprint, seq),
                None => self.seqs.remove(&fingerprint),
            };
        }
    }

    /// Fingerprints held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seqs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_fingerprint_turns_ambiguous_and_stays_so() {
        let mut d = Dedupe::with_capacity(0);
        d.stored(7, 1);
        assert_eq!(d.seen(7), Seen::At(1));
        d.stored(7, 2);
        assert_eq!(d.seen(7), Seen::Ambiguous);
        d.deleted(7, 1);
        d.deleted(7, 2);
        assert_eq!(d.seen(7), Seen::Ambiguous);
    }

    #[test]
    fn loading_at_start_marks_shared_fingerprints_too() {
        let mut d = Dedupe::with_capacity(2);
        d.load(7, 1);
        d.load(8, 2);
        d.load(7, 3);
        assert_eq!(d.seen(7), Seen::Ambiguous);
        assert_eq!(d.seen(8), Seen::At(2));
        d.roll_back();
        assert_eq!(d.len(), 2, "nothing to undo");
    }

    #[test]
    fn deleting_another_seq_keeps_the_entry() {
        let mut d = Dedupe::with_capacity(0);
        d.stored(7, 1);
        d.deleted(7, 2);
        assert_eq!(d.seen(7), Seen::At(1));
        d.deleted(7, 1);
        assert_eq!(d.seen(7), Seen::Never);
    }

    #[test]
    fn a_rolled_back_batch_leaves_the_map_as_it_was() {
        let mut d = Dedupe::with_capacity(0);
        d.stored(1, 10);
        d.stored(2, 20);
        d.commit();
        d.deleted(1, 10);
        d.stored(2, 21);
        d.stored(3, 30);
        d.roll_back();
        assert_eq!(d.seen(1), Seen::At(10));
        assert_eq!(d.seen(2), Seen::At(20));
        assert_eq!(d.seen(3), Seen::Never);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn fingerprints_tell_recipient_sender_and_id_apart() {
        let d = Dedupe::with_capacity(0);
        let f = d.fingerprint(1, 2, "m");
        assert_eq!(f, d.fingerprint(1, 2, "m"));
        assert_ne!(f, d.fingerprint(2, 1, "m"));
        assert_ne!(f, d.fingerprint(1, 2, "n"));
    }
}
