//! The address/consent handshake of SPEC §6: pending requests, grants, decline cooldowns.
//!
//! State only: every method returns the events to push, and the caller pushes them after the
//! lock is released. A grant or request refers to the two live sessions it was made between;
//! ending either session ends it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    error::{Error, Result},
    sessions::Session,
    store::UserId,
    wire::{self, EncodedEvent},
};
use crate::pb::{self, DenyReason, event::Kind};

/// Events to push once the lock is released.
pub type Notices = Vec<(Arc<Session>, EncodedEvent)>;

struct Pending {
    from: Arc<Session>,
    to: Arc<Session>,
}

struct Grant {
    requester: Arc<Session>,
    target: Arc<Session>,
    event: pb::AddressGranted,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// (requester, target) → pending request id.
    by_pair: HashMap<(UserId, UserId), String>,
    /// (requester, target) → the requester may dial the target.
    grants: HashMap<(UserId, UserId), Grant>,
    /// (requester, target) → no new request before this.
    cooldown: HashMap<(UserId, UserId), Instant>,
}

/// What [`Consent::request`] decided.
#[derive(Debug)]
pub enum Requested {
    /// A grant already exists.
    Granted(pb::AddressGranted),
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

    /// `from` asks for `to`'s address. The caller has checked existence, blocks and presence.
    pub fn request(
        &self,
        from: &Arc<Session>,
        to: &Arc<Session>,
        now: Instant,
        now_ms: i64,
    ) -> Result<(Requested, Notices)> {
        let pair = (from.user_id(), to.user_id());
        let mut s = self.lock();
        if let Some(g) = s.grants.get(&pair) {
            return Ok((Requested::Granted(g.event.clone()), Vec::new()));
        }
        if let Some(id) = s.by_pair.get(&pair) {
            return Ok((
                Requested::Pending {
                    id: id.clone(),
                    new: false,
                },
                Vec::new(),
            ));
        }
        match s.cooldown.get(&pair) {
            Some(until) if *until > now => {
                return Err(Error::Cooldown {
                    user: to.name().to_owned(),
                    retry: *until - now,
                });
            }
            Some(_) => {
                s.cooldown.remove(&pair);
            }
            None => {}
        }
        let waiting = s.pending.values().filter(|p| p.to.id == to.id).count();
        if waiting >= self.limits.max_pending {
            return Err(Error::TooManyPending(to.name().to_owned()));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        s.pending.insert(
            id.clone(),
            Pending {
                from: from.clone(),
                to: to.clone(),
            },
        );
        s.by_pair.insert(pair, id.clone());
        let expires_at_ms = now_ms + self.limits.timeout.as_millis() as i64;
        let event = wire::encode(Kind::AddressRequested(pb::AddressRequested {
            request_id: id.clone(),
            from: from.name().to_owned(),
            from_public_key: from
                .peer
                .as_ref()
                .map(|p| p.public_key.clone())
                .unwrap_or_default(),
            expires_at_ms,
        }));
        Ok((
            Requested::Pending { id, new: true },
            vec![(to.clone(), event)],
        ))
    }

    /// `by` answers request `id`.
    pub fn respond(
        &self,
        by: &Arc<Session>,
        id: &str,
        accept: bool,
        now: Instant,
    ) -> Result<Notices> {
        let mut s = self.lock();
        let Some(p) = s.pending.get(id) else {
            return Err(Error::NoSuchRequest);
        };
        if p.to.id != by.id {
            return Err(Error::NotYourRequest);
        }
        let p = s.pending.remove(id).expect("present");
        let pair = (p.from.user_id(), p.to.user_id());
        s.by_pair.remove(&pair);
        if !accept {
            s.cooldown.insert(pair, now + self.limits.cooldown);
            let event = wire::address_denied(p.to.name(), DenyReason::Declined);
            return Ok(vec![(p.from, event)]);
        }
        let peer =
            p.to.peer
                .clone()
                .unwrap_or_else(|| super::sessions::PeerInfo {
                    host: String::new(),
                    port: 0,
                    public_key: Vec::new(),
                });
        let granted = pb::AddressGranted {
            user: p.to.name().to_owned(),
            host: peer.host,
            port: u32::from(peer.port),
            public_key: peer.public_key,
        };
        let event = wire::encode(Kind::AddressGranted(granted.clone()));
        s.grants.insert(
            pair,
            Grant {
                requester: p.from.clone(),
                target: p.to,
                event: granted,
            },
        );
        Ok(vec![(p.from, event)])
    }

    /// Request `id` ran out of time: the requester is told, if it was still pending.
    pub fn expire(&self, id: &str) -> Notices {
        let mut s = self.lock();
        let Some(p) = s.pending.remove(id) else {
            return Vec::new();
        };
        s.by_pair.remove(&(p.from.user_id(), p.to.user_id()));
        vec![(
            p.from,
            wire::address_denied(p.to.name(), DenyReason::Timeout),
        )]
    }

    /// `session` ended: its grants are revoked on both sides and requests to it are denied.
    pub fn session_ended(&self, session: &Session) -> Notices {
        let mut s = self.lock();
        let mut notices = Vec::new();
        let ids: Vec<String> = s
            .pending
            .iter()
            .filter(|(_, p)| p.from.id == session.id || p.to.id == session.id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let p = s.pending.remove(&id).expect("present");
            s.by_pair.remove(&(p.from.user_id(), p.to.user_id()));
            if p.to.id == session.id {
                notices.push((
                    p.from,
                    wire::address_denied(p.to.name(), DenyReason::Offline),
                ));
            }
        }
        let pairs: Vec<(UserId, UserId)> = s
            .grants
            .iter()
            .filter(|(_, g)| g.requester.id == session.id || g.target.id == session.id)
            .map(|(k, _)| *k)
            .collect();
        for pair in pairs {
            let g = s.grants.remove(&pair).expect("present");
            revoke_notices(&g, &mut notices);
        }
        notices
    }

    /// `a` blocked `b`: grants between them end and pending requests between them are declined.
    pub fn blocked(&self, a: UserId, b: UserId) -> Notices {
        let mut s = self.lock();
        let mut notices = Vec::new();
        for pair in [(a, b), (b, a)] {
            if let Some(g) = s.grants.remove(&pair) {
                revoke_notices(&g, &mut notices);
            }
            if let Some(id) = s.by_pair.remove(&pair)
                && let Some(p) = s.pending.remove(&id)
            {
                notices.push((
                    p.from,
                    wire::address_denied(p.to.name(), DenyReason::Declined),
                ));
            }
        }
        notices
    }
}

fn revoke_notices(g: &Grant, notices: &mut Notices) {
    notices.push((g.requester.clone(), wire::address_revoked(g.target.name())));
    notices.push((g.target.clone(), wire::address_revoked(g.requester.name())));
}
