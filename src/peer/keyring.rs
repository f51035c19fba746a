//! The listener's current static keys and the initiator keys allowed to use them, by user.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tracing::debug;

use super::noise::{KEY_LEN, PeerKeys};

/// Our current static keys and the initiators allowed to use them.
///
/// A std `Mutex`: every critical section is a map operation, never held across an `.await`.
#[derive(Debug)]
pub(super) struct Keyring(Mutex<KeyringState>);

#[derive(Debug)]
struct KeyringState {
    keys: PeerKeys,
    /// Bumped by every rekey, so a handshake begun under old keys cannot be approved by an
    /// allowlist built for the new ones.
    generation: u64,
    /// Initiator static key → the username it was allowed for.
    allowed: HashMap<[u8; KEY_LEN], String>,
}

impl Keyring {
    pub(super) fn new(keys: PeerKeys) -> Keyring {
        Keyring(Mutex::new(KeyringState {
            keys,
            generation: 0,
            allowed: HashMap::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyringState> {
        // The state stays consistent even if a holder panicked: every section is one map call.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn rekey(&self, keys: PeerKeys) {
        let mut state = self.lock();
        state.keys = keys;
        state.generation += 1;
        state.allowed.clear();
    }

    pub(super) fn allow(&self, user: &str, key: &[u8]) {
        let Ok(key) = <[u8; KEY_LEN]>::try_from(key) else {
            debug!(
                user,
                len = key.len(),
                "ignoring a peer key that is not 32 bytes"
            );
            return;
        };
        self.lock().allowed.insert(key, user.to_owned());
    }

    pub(super) fn revoke(&self, user: &str) {
        self.lock()
            .allowed
            .retain(|_, allowed| !allowed.eq_ignore_ascii_case(user));
    }

    /// The keys to answer a new handshake with, and their generation.
    pub(super) fn current(&self) -> (PeerKeys, u64) {
        let state = self.lock();
        (state.keys.clone(), state.generation)
    }

    /// The user `key` is allowed for, if it is and our keys are still those of `generation`.
    pub(super) fn user_for(&self, generation: u64, key: &[u8]) -> Option<String> {
        let state = self.lock();
        if state.generation != generation {
            return None;
        }
        let key = <[u8; KEY_LEN]>::try_from(key).ok()?;
        state.allowed.get(&key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_revokes_case_insensitively_and_rekey_forgets_everyone() {
        let ring = Keyring::new(PeerKeys::generate());
        let (a, b) = ([1u8; KEY_LEN], [2u8; KEY_LEN]);
        ring.allow("Alice", &a);
        ring.allow("bob", &b);
        ring.allow("carol", &[3u8; 31]); // ignored
        let (_, generation) = ring.current();
        assert_eq!(ring.user_for(generation, &a).as_deref(), Some("Alice"));

        ring.revoke("ALICE");
        assert_eq!(ring.user_for(generation, &a), None);
        assert_eq!(ring.user_for(generation, &b).as_deref(), Some("bob"));

        ring.rekey(PeerKeys::generate());
        assert_eq!(ring.user_for(generation, &b), None, "old generation");
        let (_, generation) = ring.current();
        assert_eq!(ring.user_for(generation, &b), None, "allowlist cleared");
    }
}
