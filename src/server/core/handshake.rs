//! SPEC §6: the address/consent handshake. [`crate::server::consent`] decides; this file checks
//! the request against accounts, blocks and presence, arms the timeout and delivers the notices.

use std::{sync::Arc, time::Instant};

use super::{Core, session::Session, stats::bump};
use crate::{
    now_ms,
    server::{
        accounts::Account,
        cluster::bus,
        consent::{Address, Notice, Party, Requested},
        error::{Error, Result},
        wire,
    },
};

/// `session` as a side of the handshake.
pub(super) fn party(session: &Session) -> Party {
    Party {
        user: session.user_id(),
        session: session.id,
        name: session.user.name.clone(),
    }
}

impl Core {
    /// `me` asks for `name`'s address.
    pub fn request_address(self: &Arc<Self>, me: &Arc<Session>, name: &str) -> Result<Requested> {
        let target = self.other(me, name, "user", "ask for the address of")?;
        if self.blocks.blocks(target.id, me.user_id()) {
            return Err(Error::BlockedAddress(target.name.to_string()));
        }
        let Some(my_peer) = &me.peer else {
            return Err(Error::invalid(
                "peer_public_key",
                "your session has no peer key: log in with peer_public_key to use direct messages",
            ));
        };
        let (to, to_address) = self.target_of_request(&target)?;
        let (requested, notices) = self.consent.request(
            &party(me),
            &my_peer.public_key,
            &to,
            &to_address,
            Instant::now(),
            now_ms(),
        )?;
        self.notify(notices);
        if let Requested::Pending { id, new: true } = &requested {
            bump(&self.stats.address_requests);
            let (core, id) = (Arc::downgrade(self), id.clone());
            let timeout = self.config.consent_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(core) = core.upgrade() {
                    core.notify(core.consent.expire(&id));
                }
            });
        }
        Ok(requested)
    }

    /// The target's session (here or on another node) and its peer address.
    fn target_of_request(&self, target: &Account) -> Result<(Party, Address)> {
        let no_listener = || Error::NoPeerListener(target.name.to_string());
        if let Some(to) = self.sessions.by_user(target.id) {
            let to_peer = to
                .peer
                .as_ref()
                .filter(|p| p.port != 0)
                .ok_or_else(no_listener)?;
            let address = Address {
                host: to_peer.host.clone(),
                port: to_peer.port,
                public_key: to_peer.public_key.clone(),
            };
            return Ok((party(&to), address));
        }
        let there = self
            .cluster()
            .and_then(|c| c.remote_session(target.id))
            .ok_or_else(|| Error::Offline(target.name.to_string()))?;
        let (host, port, public_key) = there.peer.filter(|p| p.1 != 0).ok_or_else(no_listener)?;
        let to = Party {
            user: target.id,
            session: there.epoch,
            name: target.name.clone(),
        };
        Ok((
            to,
            Address {
                host,
                port,
                public_key,
            },
        ))
    }

    /// `me` answers request `id`.
    pub fn respond_address(&self, me: &Arc<Session>, id: &str, accept: bool) -> Result<()> {
        let notices = match self.consent.respond(&party(me), id, accept, Instant::now()) {
            // Made on the requester's node: the answer goes there.
            Err(Error::NoSuchRequest) if self.answer_elsewhere(me, id, accept) => {
                if accept {
                    bump(&self.stats.address_grants);
                }
                return Ok(());
            }
            other => other?,
        };
        if accept {
            bump(&self.stats.address_grants);
        }
        self.notify(notices);
        Ok(())
    }

    /// Pushes each notice to its party's session, if that session is still the live one.
    pub(super) fn notify(&self, notices: Vec<Notice>) {
        for notice in notices {
            let (to, event, request) = match notice {
                Notice::Asked {
                    to,
                    id,
                    from,
                    from_session,
                    from_key,
                    expires_at_ms,
                } => {
                    let event = wire::address_requested(id.clone(), &from, from_key, expires_at_ms);
                    let asked = bus::Asked {
                        request_id: id,
                        requester_session: from_session,
                        requester: from.to_string(),
                    };
                    (to, event, Some(asked))
                }
                Notice::Granted { to, grant } => (to, wire::address_granted(&grant), None),
                Notice::Denied { to, by, why } => (to, wire::address_denied(&by, why), None),
                Notice::Revoked { to, with } => (to, wire::address_revoked(&with), None),
            };
            self.push_to(&to, event, request);
        }
    }
}
