//! Who may talk to whom directly, as this client knows it for the current login.
//!
//! Two directions: *outbound* grants (`AddressGranted`: a user's host, port and key, for our
//! `private` sends) and *inbound* ones (requesters whose `AddressRequested` we accepted; their
//! keys are what the peer listener lets in). Also the address requests waiting for our answer.
//!
//! Owns the invariant that the listener's allowlist is exactly the inbound set: every change to
//! it goes through here ([`Allowlist`]), and a revocation drops both directions at once. It
//! knows nothing of the server: the REPL feeds it events and asks it questions. Everything is
//! keyed by the username's case-folded form, as the server compares names.

use std::collections::HashMap;

use crate::{
    pb,
    peer::PeerListener,
    types::{fingerprint, username_key},
};

/// The peer listener's allowlist, as far as grants need it (a fake in the tests).
pub(crate) trait Allowlist {
    /// Lets `user` in with `key`.
    fn allow(&self, user: &str, key: Vec<u8>);
    /// Forgets `user`'s key.
    fn revoke(&self, user: &str);
}

impl Allowlist for PeerListener {
    fn allow(&self, user: &str, key: Vec<u8>) {
        PeerListener::allow(self, user, key);
    }
    fn revoke(&self, user: &str) {
        PeerListener::revoke(self, user);
    }
}

/// Where to send `private` messages for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The user's name as the server spells it.
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The user's static key for this login of theirs; the Noise responder must prove it.
    pub(crate) key: Vec<u8>,
}

/// Somebody asked for our address and waits for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) id: String,
    pub(crate) from: String,
    /// The requester's static key: allowed on the listener if we accept.
    pub(crate) key: Vec<u8>,
    /// After this the server has answered TIMEOUT for us; answering fails.
    pub(crate) expires_at_ms: i64,
}

/// Where a key we hold for a user came from (for `fingerprint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// Their `AddressGranted`: we send to this key.
    Granted,
    /// Their request, which we accepted: the listener lets this key in.
    Accepted,
    /// Their request, not answered yet.
    Requested,
}

/// The grants of one login.
#[derive(Debug)]
pub(crate) struct Grants<A: Allowlist> {
    allowlist: A,
    outbound: HashMap<String, Grant>,
    /// Case-folded name → (name, key) of requesters we accepted.
    inbound: HashMap<String, (String, Vec<u8>)>,
    requests: HashMap<String, Request>,
}

impl<A: Allowlist> Grants<A> {
    /// Nothing granted yet; `allowlist` is the listener these grants control.
    pub(crate) fn new(allowlist: A) -> Self {
        Grants {
            allowlist,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    /// A new login: everything of the previous one is void (the server revoked it, and the
    /// listener was rekeyed, which forgot every allowed key).
    pub(crate) fn new_login(&mut self) {
        self.outbound.clear();
        self.inbound.clear();
        self.requests.clear();
    }

    /// Records an `AddressGranted`.
    ///
    /// # Errors
    /// The grant is unusable (no port, or a key that is not 32 bytes); a sentence.
    pub(crate) fn granted(&mut self, g: &pb::AddressGranted) -> Result<Grant, String> {
        let port = u16::try_from(g.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{} was granted without a usable port", g.user))?;
        if g.public_key.len() != 32 || g.host.is_empty() {
            return Err(format!(
                "{}'s address came without a usable host or key",
                g.user
            ));
        }
        let grant = Grant {
            user: g.user.clone(),
            host: g.host.clone(),
            port,
            key: g.public_key.clone(),
        };
        self.outbound.insert(username_key(&g.user), grant.clone());
        Ok(grant)
    }

    /// The grant for sending to `user`, if we hold one.
    pub(crate) fn outbound(&self, user: &str) -> Option<&Grant> {
        self.outbound.get(&username_key(user))
    }

    /// A direct send to `user` with `key` failed: forget that address (not a newer one that
    /// may have arrived meanwhile), so the next `private` asks for a fresh grant.
    pub(crate) fn forget_outbound(&mut self, user: &str, key: &[u8]) {
        let k = username_key(user);
        if self.outbound.get(&k).is_some_and(|g| g.key == key) {
            self.outbound.remove(&k);
        }
    }

    /// Records an `AddressRequested`; a newer request from the same user replaces the older.
    pub(crate) fn requested(&mut self, r: &pb::AddressRequested) -> Request {
        let request = Request {
            id: r.request_id.clone(),
            from: r.from.clone(),
            key: r.from_public_key.clone(),
            expires_at_ms: r.expires_at_ms,
        };
        self.requests.insert(username_key(&r.from), request.clone());
        request
    }

    /// Drops requests whose answer time has passed, and returns them (the person asked is told:
    /// the server has answered TIMEOUT for them).
    pub(crate) fn expire(&mut self, now_ms: i64) -> Vec<Request> {
        let expired: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.expires_at_ms != 0 && r.expires_at_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone: Vec<Request> = expired
            .iter()
            .filter_map(|k| self.requests.remove(k))
            .collect();
        gone.sort_by(|a, b| a.from.cmp(&b.from));
        gone
    }

    /// `user` went offline: the server dropped their request, so nothing waits for our answer
    /// any more. The request, if there was one.
    pub(crate) fn withdrawn(&mut self, user: &str) -> Option<Request> {
        self.requests.remove(&username_key(user))
    }

    /// Takes the request to answer: `user`'s, or with `None` the only one waiting.
    ///
    /// # Errors
    /// No such request, or several when `None` cannot choose; a sentence.
    /// Whether any address request waits for an answer (so a bare `y`/`n` may be about it).
    pub(crate) fn requests_waiting(&self) -> bool {
        !self.requests.is_empty()
    }

    pub(crate) fn take_request(
        &mut self,
        user: Option<&str>,
        now_ms: i64,
    ) -> Result<Request, String> {
        // Expired ones were (or are about to be) said by the REPL's tick.
        self.expire(now_ms);
        match user {
            Some(user) => self.requests.remove(&username_key(user)).ok_or_else(|| {
                format!("{user} has not asked for your address (or the request has expired)")
            }),
            None => match self.requests.len() {
                0 => Err("nobody is waiting for an answer".into()),
                1 => {
                    let key = self.requests.keys().next().cloned().unwrap_or_default();
                    self.requests
                        .remove(&key)
                        .ok_or_else(|| "nobody is waiting for an answer".into())
                }
                _ => {
                    let mut names: Vec<&str> =
                        self.requests.values().map(|r| r.from.as_str()).collect();
                    names.sort_by_key(|n| n.to_ascii_lowercase());
                    Err(format!(
                        "{} users are waiting for an answer ({}); type accept <user> or deny <user>",
                        names.len(),
                        names.join(", ")
                    ))
                }
            },
        }
    }

    /// We are accepting `request`: let its key in now, before the server tells the requester,
    /// so its first connection cannot arrive before the allowlist knows it.
    pub(crate) fn accept(&mut self, request: &Request) {
        self.requests.remove(&username_key(&request.from));
        self.allowlist.allow(&request.from, request.key.clone());
        self.inbound.insert(
            username_key(&request.from),
            (request.from.clone(), request.key.clone()),
        );
    }

    /// The server refused our acceptance (e.g. the request expired): take the key back out.
    pub(crate) fn undo_accept(&mut self, user: &str) {
        if self.inbound.remove(&username_key(user)).is_some() {
            self.allowlist.revoke(user);
        }
    }

    /// `AddressRevoked`: forget `user` in both directions.
    pub(crate) fn revoked(&mut self, user: &str) {
        let k = username_key(user);
        self.outbound.remove(&k);
        self.inbound.remove(&k);
        self.allowlist.revoke(user);
    }

    /// The key we hold for `user` and where it came from, preferring the one we send to.
    pub(crate) fn key_for(&self, user: &str) -> Option<(&[u8], KeySource)> {
        let k = username_key(user);
        if let Some(g) = self.outbound.get(&k) {
            return Some((&g.key, KeySource::Granted));
        }
        if let Some((_, key)) = self.inbound.get(&k) {
            return Some((key, KeySource::Accepted));
        }
        self.requests
            .get(&k)
            .map(|r| (r.key.as_slice(), KeySource::Requested))
    }

    /// `key_for` as a fingerprint.
    pub(crate) fn fingerprint_of(&self, user: &str) -> Option<(String, KeySource)> {
        self.key_for(user)
            .map(|(key, source)| (fingerprint(key), source))
    }
}

/// What the unit tests of code that drives [`Grants`] need: an allowlist that records what the
/// listener would hold, and the events that fill it.
#[cfg(test)]
pub(crate) mod testing {
    use std::{cell::RefCell, collections::HashMap, rc::Rc};

    use super::Allowlist;
    use crate::{pb, types::username_key};

    /// Records the allowlist as the listener would hold it.
    #[derive(Default, Clone)]
    pub(crate) struct Recorded(pub(crate) Rc<RefCell<HashMap<String, Vec<u8>>>>);

    impl Allowlist for Recorded {
        fn allow(&self, user: &str, key: Vec<u8>) {
            self.0.borrow_mut().insert(username_key(user), key);
        }
        fn revoke(&self, user: &str) {
            self.0.borrow_mut().remove(&username_key(user));
        }
    }

    /// `user`'s address on loopback, with a key of 32 `key` bytes.
    pub(crate) fn granted(user: &str, key: u8) -> pb::AddressGranted {
        pb::AddressGranted {
            user: user.into(),
            host: "127.0.0.1".into(),
            port: 4000,
            public_key: vec![key; 32],
        }
    }

    /// `from` asks for our address with request `id`, a key of 32 `key` bytes, until `expires`.
    pub(crate) fn requested(from: &str, id: &str, key: u8, expires: i64) -> pb::AddressRequested {
        pb::AddressRequested {
            request_id: id.into(),
            from: from.into(),
            from_public_key: vec![key; 32],
            expires_at_ms: expires,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        testing::{Recorded, granted, requested},
        *,
    };

    #[test]
    fn a_grant_is_found_ignoring_case_and_forgotten_only_for_its_key() {
        let mut g = Grants::new(Recorded::default());
        g.granted(&granted("Bob", 1)).unwrap();
        assert_eq!(g.outbound("bob").unwrap().port, 4000);
        g.forget_outbound("bob", &[2; 32]);
        assert!(
            g.outbound("BOB").is_some(),
            "a different key is not forgotten"
        );
        g.forget_outbound("bob", &[1; 32]);
        assert!(g.outbound("bob").is_none());
    }

    #[test]
    fn unusable_grants_are_refused() {
        let mut g = Grants::new(Recorded::default());
        let mut bad = granted("bob", 1);
        bad.port = 0;
        assert!(g.granted(&bad).is_err());
        let mut bad = granted("bob", 1);
        bad.public_key = vec![1; 5];
        assert!(g.granted(&bad).is_err());
        assert!(g.outbound("bob").is_none());
    }

    #[test]
    fn y_answers_the_only_request_and_refuses_to_guess_between_several() {
        let mut g = Grants::new(Recorded::default());
        assert_eq!(
            g.take_request(None, 0).unwrap_err(),
            "nobody is waiting for an answer"
        );
        g.requested(&requested("bob", "r1", 1, 1000));
        g.requested(&requested("carol", "r2", 2, 1000));
        let e = g.take_request(None, 0).unwrap_err();
        assert!(e.contains("(bob, carol)"), "{e}");
        assert_eq!(g.take_request(Some("Carol"), 0).unwrap().id, "r2");
        assert_eq!(g.take_request(None, 0).unwrap().id, "r1");
        assert!(
            g.take_request(Some("bob"), 0).is_err(),
            "answered once only"
        );
    }

    #[test]
    fn expired_requests_cannot_be_answered() {
        let mut g = Grants::new(Recorded::default());
        g.requested(&requested("bob", "r1", 1, 1000));
        assert!(g.take_request(None, 1000).is_err());
    }

    #[test]
    fn expiry_returns_what_timed_out_once_and_a_leaver_withdraws_theirs() {
        let mut g = Grants::new(Recorded::default());
        g.requested(&requested("carol", "r2", 2, 2000));
        g.requested(&requested("bob", "r1", 1, 1000));
        assert!(g.expire(999).is_empty());
        let gone: Vec<String> = g.expire(1000).into_iter().map(|r| r.from).collect();
        assert_eq!(gone, ["bob"]);
        assert!(g.expire(1500).is_empty(), "said once");
        assert_eq!(g.withdrawn("CAROL").map(|r| r.id), Some("r2".to_owned()));
        assert!(g.withdrawn("carol").is_none());
        assert!(!g.requests_waiting());
    }

    #[test]
    fn accepting_allows_the_key_and_a_revocation_drops_both_directions() {
        let fake = Recorded::default();
        let mut g = Grants::new(fake.clone());
        let r = g.requested(&requested("bob", "r1", 7, 1000));
        g.accept(&r);
        assert_eq!(fake.0.borrow().get("bob"), Some(&vec![7; 32]));
        assert_eq!(g.key_for("bob").unwrap().1, KeySource::Accepted);
        g.granted(&granted("bob", 9)).unwrap();
        assert_eq!(
            g.key_for("bob").unwrap(),
            (&[9u8; 32][..], KeySource::Granted)
        );
        g.revoked("BOB");
        assert!(g.outbound("bob").is_none());
        assert!(g.key_for("bob").is_none());
        assert!(fake.0.borrow().is_empty());
    }

    #[test]
    fn a_refused_acceptance_takes_the_key_back() {
        let fake = Recorded::default();
        let mut g = Grants::new(fake.clone());
        let r = g.requested(&requested("bob", "r1", 7, 1000));
        g.accept(&r);
        g.undo_accept("bob");
        assert!(fake.0.borrow().is_empty());
    }

    #[test]
    fn a_new_login_forgets_everything() {
        let mut g = Grants::new(Recorded::default());
        g.granted(&granted("bob", 1)).unwrap();
        g.requested(&requested("carol", "r", 2, 1000));
        g.new_login();
        assert!(g.outbound("bob").is_none());
        assert!(g.key_for("carol").is_none());
    }
}
