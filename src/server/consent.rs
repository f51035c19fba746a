//! The address/consent handshake of SPEC §6 as pure decisions: pending requests, grants, decline
//! cooldowns and the pending cap.
//!
//! It knows users and sessions only by id ([`Party`]) and returns [`Notice`]s saying who must be
//! told what; the core delivers them after the lock here is released. Time comes in as an
//! argument, so every rule is unit-tested below. A grant or request belongs to the two sessions
//! it was made between: ending either one ends it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    error::{Error, Result},
    store::UserId,
};

/// One side of a request or grant: a user in one particular session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// The user.
    pub user: UserId,
    /// The session (a new login is a new party).
    pub session: u64,
    /// The user's name as registered.
    pub name: Arc<str>,
}

/// Where a user's client takes direct connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host to dial.
    pub host: String,
    /// Peer listener port.
    pub port: u16,
    /// X25519 static public key.
    pub public_key: Vec<u8>,
}

/// What a requester is given when its request is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Whose address.
    pub user: Arc<str>,
    /// The address.
    pub address: Address,
}

/// Why a request was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The target said no (or blocked the requester meanwhile).
    Declined,
    /// Nobody answered in time.
    Timeout,
    /// The target's session ended.
    Offline,
}

/// Somebody must be told something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `to` is asked whether `from` may have its address.
    Asked {
        /// The target.
        to: Party,
        /// The request's id, for the answer.
        id: String,
        /// The requester's name.
        from: Arc<str>,
        /// The requester's session: a grant ends with it.
        from_session: u64,
        /// The requester's public key, to allow on the target's listener.
        from_key: Vec<u8>,
        /// When the request times out, Unix ms.
        expires_at_ms: i64,
    },
    /// `to` may dial the granted address.
    Granted {
        /// The requester.
        to: Party,
        /// What it was given.
        grant: Grant,
    },
    /// `to`'s request to `by` was not granted.
    Denied {
        /// The requester.
        to: Party,
        /// The target's name.
        by: Arc<str>,
        /// Why.
        why: Denial,
    },
    /// The grant between `to` and `with` is over.
    Revoked {
        /// One side.
        to: Party,
        /// The other side's name.
        with: Arc<str>,
    },
}

/// What [`Consent::request`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A grant already exists.
    Granted(Grant),
    /// A request is pending under this id; `new` when it was created by this call (the caller
    /// then arms its timeout).
    Pending {
        /// Request id.
        id: String,
        /// Created now.
        new: bool,
    },
}

/// Limits of the handshake.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unanswered requests are denied after this.
    pub timeout: Duration,
    /// A declined requester waits this long.
    pub cooldown: Duration,
    /// Pending requests per target.
    pub max_pending: usize,
}

struct Pending {
    from: Party,
    to: Party,
    to_address: Address,
}

struct Granted {
    requester: Party,
    target: Party,
    grant: Grant,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// (requester, target) → pending request id.
    by_pair: HashMap<(UserId, UserId), String>,
    /// (requester, target) → the requester may dial the target.
    grants: HashMap<(UserId, UserId), Granted>,
    /// (requester, target) → no new request before this.
    cooldown: HashMap<(UserId, UserId), Instant>,
}

/// The handshake's state.
pub struct Consent {
    state: Mutex<State>,
    limits: Limits,
}

impl Consent {
    /// Empty state.
    pub fn new(limits: Limits) -> Self {
        Consent {
            state: Mutex::default(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `from` (whose key is `from_key`) asks for `to`'s address. The caller has checked
    /// existence, blocks and presence.
    ///
    /// # Errors
    /// `Cooldown` after a recent decline; `TooManyPending` when `to` has enough waiting.
    pub fn request(
        &self,
        from: &Party,
        from_key: &[u8],
        to: &Party,
        to_address: &Address,
        now: Instant,
        now_ms: i64,
    ) -> Result<(Requested, Vec<Notice>)> {
        let pair = (from.user, to.user);
        let mut s = self.lock();
        if let Some(g) = s.grants.get(&pair) {
            return Ok((Requested::Granted(g.grant.clone()), Vec::new()));
        }
        if let Some(id) = s.by_pair.get(&pair) {
            let id = id.clone();
            return Ok((Requested::Pending { id, new: false }, Vec::new()));
        }
        match s.cooldown.get(&pair) {
            Some(until) if *until > now => {
                return Err(Error::Cooldown {
                    user: to.name.to_string(),
                    retry: *until - now,
                });
            }
            Some(_) => {
                s.cooldown.remove(&pair);
            }
            None => {}
        }
        let waiting = s
            .pending
            .values()
            .filter(|p| p.to.session == to.session)
            .count();
        if waiting >= self.limits.max_pending {
            return Err(Error::TooManyPending(to.name.to_string()));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        s.pending.insert(
            id.clone(),
            Pending {
                from: from.clone(),
                to: to.clone(),
                to_address: to_address.clone(),
            },
        );
        s.by_pair.insert(pair, id.clone());
        let asked = Notice::Asked {
            to: to.clone(),
            id: id.clone(),
            from: from.name.clone(),
            from_session: from.session,
            from_key: from_key.to_vec(),
            expires_at_ms: now_ms + self.limits.timeout.as_millis() as i64,
        };
        Ok((Requested::Pending { id, new: true }, vec![asked]))
    }

    /// `by` answers request `id`.
    ///
    /// # Errors
    /// `NoSuchRequest` for an unknown (or answered, expired) id; `NotYourRequest` when `by` is
    /// not the target.
    pub fn respond(&self, by: &Party, id: &str, accept: bool, now: Instant) -> Result<Vec<Notice>> {
        let mut s = self.lock();
        let Some(p) = s.pending.get(id) else {
            return Err(Error::NoSuchRequest);
        };
        if p.to.session != by.session {
            return Err(Error::NotYourRequest);
        }
        let p = s.pending.remove(id).expect("present");
        let pair = (p.from.user, p.to.user);
        s.by_pair.remove(&pair);
        if !accept {
            s.cooldown.insert(pair, now + self.limits.cooldown);
            return Ok(vec![Notice::Denied {
                to: p.from,
                by: p.to.name,
                why: Denial::Declined,
            }]);
        }
        let grant = Grant {
            user: p.to.name.clone(),
            address: p.to_address,
        };
        s.grants.insert(
            pair,
            Granted {
                requester: p.from.clone(),
                target: p.to,
                grant: grant.clone(),
            },
        );
        Ok(vec![Notice::Granted { to: p.from, grant }])
    }

    /// Request `id` ran out of time: the requester is told, if it was still pending.
    pub fn expire(&self, id: &str) -> Vec<Notice> {
        let mut s = self.lock();
        let Some(p) = s.pending.remove(id) else {
            return Vec::new();
        };
        s.by_pair.remove(&(p.from.user, p.to.user));
        vec![Notice::Denied {
            to: p.from,
            by: p.to.name,
            why: Denial::Timeout,
        }]
    }

    /// `session` ended: its grants are revoked on both sides, requests to it are denied and
    /// its own requests are dropped.
    pub fn session_ended(&self, session: u64) -> Vec<Notice> {
        let mut s = self.lock();
        let mut notices = Vec::new();
        let ids: Vec<String> = s
            .pending
            .iter()
            .filter(|(_, p)| p.from.session == session || p.to.session == session)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let p = s.pending.remove(&id).expect("present");
            s.by_pair.remove(&(p.from.user, p.to.user));
            if p.to.session == session {
                notices.push(Notice::Denied {
                    to: p.from,
                    by: p.to.name,
                    why: Denial::Offline,
                });
            }
        }
        let pairs: Vec<(UserId, UserId)> = s
            .grants
            .iter()
            .filter(|(_, g)| g.requester.session == session || g.target.session == session)
            .map(|(k, _)| *k)
            .collect();
        for pair in pairs {
            let g = s.grants.remove(&pair).expect("present");
            revoke(g, &mut notices);
        }
        notices
    }

    /// `a` blocked `b`: grants between them end and pending requests between them are declined.
    pub fn blocked(&self, a: UserId, b: UserId) -> Vec<Notice> {
        let mut s = self.lock();
        let mut notices = Vec::new();
        for pair in [(a, b), (b, a)] {
            if let Some(g) = s.grants.remove(&pair) {
                revoke(g, &mut notices);
            }
            if let Some(id) = s.by_pair.remove(&pair)
                && let Some(p) = s.pending.remove(&id)
            {
                notices.push(Notice::Denied {
                    to: p.from,
                    by: p.to.name,
                    why: Denial::Declined,
                });
            }
        }
        notices
    }
}

fn revoke(g: Granted, notices: &mut Vec<Notice>) {
    notices.push(Notice::Revoked {
        with: g.target.name.clone(),
        to: g.requester.clone(),
    });
    notices.push(Notice::Revoked {
        with: g.requester.name,
        to: g.target,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);
    const COOLDOWN: Duration = Duration::from_secs(300);

    fn consent(max_pending: usize) -> Consent {
        Consent::new(Limits {
            timeout: TIMEOUT,
            cooldown: COOLDOWN,
            max_pending,
        })
    }

    fn party(user: UserId, session: u64, name: &str) -> Party {
        Party {
            user,
            session,
            name: name.into(),
        }
    }

    fn address(port: u16) -> Address {
        Address {
            host: "192.0.2.1".into(),
            port,
            public_key: vec![port as u8; 32],
        }
    }

    fn alice() -> Party {
        party(1, 10, "alice")
    }

    fn bob() -> Party {
        party(2, 20, "bob")
    }

    fn sorted(mut notices: Vec<Notice>) -> Vec<Notice> {
        notices.sort_by_key(|n| format!("{n:?}"));
        notices
    }

    /// Both sides of alice's grant to bob are told it is over.
    fn revoked_between_alice_and_bob() -> Vec<Notice> {
        vec![
            Notice::Revoked {
                to: alice(),
                with: "bob".into(),
            },
            Notice::Revoked {
                to: bob(),
                with: "alice".into(),
            },
        ]
    }

    /// Alice asks bob; returns the request id.
    fn ask(c: &Consent, now: Instant) -> String {
        let (requested, notices) = c
            .request(&alice(), b"alice-key", &bob(), &address(7), now, 1_000)
            .unwrap();
        let Requested::Pending { id, new: true } = requested else {
            panic!("expected a new request, got {requested:?}");
        };
        assert_eq!(
            notices,
            vec![Notice::Asked {
                to: bob(),
                id: id.clone(),
                from: "alice".into(),
                from_session: alice().session,
                from_key: b"alice-key".to_vec(),
                expires_at_ms: 1_000 + TIMEOUT.as_millis() as i64,
            }]
        );
        id
    }

    #[test]
    fn a_repeated_request_returns_the_same_id_without_asking_again() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        let (again, notices) = c
            .request(&alice(), b"alice-key", &bob(), &address(7), now, 2_000)
            .unwrap();
        assert_eq!(again, Requested::Pending { id, new: false });
        assert!(notices.is_empty());
    }

    #[test]
    fn an_accepted_request_grants_the_address_and_is_reused() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        let grant = Grant {
            user: "bob".into(),
            address: address(7),
        };
        assert_eq!(
            c.respond(&bob(), &id, true, now).unwrap(),
            vec![Notice::Granted {
                to: alice(),
                grant: grant.clone()
            }]
        );
        let (again, notices) = c
            .request(&alice(), b"alice-key", &bob(), &address(9), now, 3_000)
            .unwrap();
        assert_eq!(again, Requested::Granted(grant));
        assert!(notices.is_empty());
        // Answered requests cannot be answered again.
        assert!(matches!(
            c.respond(&bob(), &id, true, now),
            Err(Error::NoSuchRequest)
        ));
    }

    #[test]
    fn only_the_target_session_may_answer() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        assert!(matches!(
            c.respond(&alice(), &id, true, now),
            Err(Error::NotYourRequest)
        ));
        // Bob's older or newer session is not the one that was asked.
        assert!(matches!(
            c.respond(&party(2, 21, "bob"), &id, true, now),
            Err(Error::NotYourRequest)
        ));
        assert!(matches!(
            c.respond(&bob(), "no-such-id", true, now),
            Err(Error::NoSuchRequest)
        ));
        assert_eq!(c.respond(&bob(), &id, false, now).unwrap().len(), 1);
    }

    #[test]
    fn a_decline_starts_a_cooldown_that_ends_on_time() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        assert_eq!(
            c.respond(&bob(), &id, false, now).unwrap(),
            vec![Notice::Denied {
                to: alice(),
                by: "bob".into(),
                why: Denial::Declined
            }]
        );
        let later = now + COOLDOWN - Duration::from_secs(1);
        match c.request(&alice(), b"k", &bob(), &address(7), later, 0) {
            Err(Error::Cooldown { user, retry }) => {
                assert_eq!(user, "bob");
                assert_eq!(retry, Duration::from_secs(1));
            }
            other => panic!("expected a cooldown, got {other:?}"),
        }
        ask(&c, now + COOLDOWN);
    }

    #[test]
    fn a_target_has_a_bounded_number_of_pending_requests() {
        let c = consent(2);
        let now = Instant::now();
        for user in [3, 4] {
            let from = party(user, u64::try_from(user).unwrap() * 10, "x");
            c.request(&from, b"k", &bob(), &address(7), now, 0).unwrap();
        }
        assert!(matches!(
            c.request(&alice(), b"k", &bob(), &address(7), now, 0),
            Err(Error::TooManyPending(name)) if name == "bob"
        ));
    }

    #[test]
    fn an_unanswered_request_expires_once() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        assert_eq!(
            c.expire(&id),
            vec![Notice::Denied {
                to: alice(),
                by: "bob".into(),
                why: Denial::Timeout
            }]
        );
        assert!(c.expire(&id).is_empty());
        // Expiry is not a decline: no cooldown.
        ask(&c, now);
    }

    #[test]
    fn an_ending_session_revokes_its_grants_and_denies_requests_to_it() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        c.respond(&bob(), &id, true, now).unwrap();
        let carol = party(3, 30, "carol");
        c.request(&carol, b"k", &bob(), &address(7), now, 0)
            .unwrap();
        assert_eq!(
            sorted(c.session_ended(bob().session)),
            [
                vec![Notice::Denied {
                    to: carol,
                    by: "bob".into(),
                    why: Denial::Offline
                }],
                revoked_between_alice_and_bob()
            ]
            .concat()
        );
        assert!(c.session_ended(bob().session).is_empty());
        // The grant is gone: asking again asks again.
        ask(&c, now);
    }

    #[test]
    fn a_requesters_ending_session_drops_its_requests_silently() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        assert!(c.session_ended(alice().session).is_empty());
        assert!(matches!(
            c.respond(&bob(), &id, true, now),
            Err(Error::NoSuchRequest)
        ));
    }

    #[test]
    fn a_block_revokes_grants_and_declines_pending_requests_both_ways() {
        let c = consent(8);
        let now = Instant::now();
        let id = ask(&c, now);
        c.respond(&bob(), &id, true, now).unwrap();
        // Bob asks alice too, and that request is pending when alice blocks bob.
        let (Requested::Pending { .. }, _) = c
            .request(&bob(), b"bob-key", &alice(), &address(8), now, 0)
            .unwrap()
        else {
            panic!("expected a pending request");
        };
        assert_eq!(
            sorted(c.blocked(alice().user, bob().user)),
            [
                vec![Notice::Denied {
                    to: bob(),
                    by: "alice".into(),
                    why: Denial::Declined
                }],
                revoked_between_alice_and_bob()
            ]
            .concat()
        );
        assert!(c.blocked(alice().user, bob().user).is_empty());
    }
}
