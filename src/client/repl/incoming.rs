//! What arrives without being asked for: the session's notices and events from the server, and
//! messages straight from peers — shown, remembered, and acted on (grants, names for Tab).

use std::sync::atomic::Ordering;

use super::super::{
    Consent,
    actions::{self},
    events::Notice,
    reconnect::reason_words,
    render::{Item, Via},
};
use crate::{
    now_ms,
    pb::{DenyReason, Presence, PresenceChanged, event::Kind},
    peer::Inbound,
    types::fingerprint,
};

use super::{Exit, Repl};

impl Repl {
    /// Handles a notice from the pump; `Some` when the loop must stop.
    pub(super) fn on_notice(&mut self, notice: Notice) -> Option<Exit> {
        match notice {
            Notice::Event { kind, replayed } => self.on_event(kind, replayed),
            Notice::Connected { replayed, resumed } => {
                self.show(Item::Connected { replayed, resumed });
            }
            Notice::LoggedIn(live) => {
                // The old session's grants are revoked by the server (on another node too);
                // ours go with them, so `private` asks again.
                self.grants.new_login();
                let moved = live.server != self.live.server;
                self.live = live;
                self.show(Item::LoggedIn {
                    user: self.live.user.clone(),
                    fingerprint: fingerprint(self.live.keys.public()),
                    peer_port: self.listener.local_addr().port(),
                    again: true,
                    server: moved.then(|| self.live.server.clone()),
                });
            }
            Notice::Lost { why, next } => self.show(Item::Disconnected {
                error: why,
                next_server: next,
            }),
            Notice::Retrying {
                attempt,
                why,
                retry_in,
                next,
            } => self.show(Item::Reconnecting {
                attempt,
                error: why,
                retry_in_ms: retry_in.as_millis() as u64,
                next_server: next,
            }),
            Notice::Ended(reason) => {
                let name = reason
                    .as_str_name()
                    .trim_start_matches("SESSION_END_REASON_")
                    .to_owned();
                self.show(Item::SessionEnded {
                    reason: name,
                    text: reason_words(reason).into(),
                });
                return Some(Exit::Over);
            }
            Notice::Failed { why } => {
                self.show(Item::Fatal { error: why });
                return Some(Exit::Over);
            }
        }
        None
    }

    fn on_presence(&mut self, p: PresenceChanged) {
        let online = p.presence == Presence::Online as i32;
        // The server drops a request whose asker left: so does the prompt.
        let withdrawn = if online {
            None
        } else {
            self.grants.withdrawn(&p.user)
        };
        self.show(Item::Presence {
            user: p.user,
            online,
        });
        if let Some(request) = withdrawn {
            self.show(Item::AddressRequestEnded {
                user: request.from,
                reason: "WITHDRAWN".into(),
            });
        }
    }

    fn on_event(&mut self, kind: Kind, replayed: bool) {
        match kind {
            Kind::Message(m) => {
                if self.seen.first_time(&m.from, &m.message_id) {
                    self.show(Item::Message {
                        from: m.from,
                        body: m.body,
                        message_id: m.message_id,
                        seq: Some(m.seq),
                        sent_at_ms: m.sent_at_ms,
                        via: Via::Server,
                        replayed,
                    });
                }
                // Shown now, or shown before under the other path: either way it may go.
                self.shown.fetch_max(m.seq, Ordering::AcqRel);
            }
            Kind::Broadcast(b) => self.show(Item::Broadcast {
                from: b.from,
                body: b.body,
                sent_at_ms: b.sent_at_ms,
            }),
            Kind::Presence(p) => self.on_presence(p),
            Kind::PresenceBatch(b) => b.changes.into_iter().for_each(|p| self.on_presence(p)),
            Kind::AddressRequested(r) => {
                let request = self.grants.requested(&r);
                let accept = match self.consent {
                    Consent::Ask => {
                        self.show(Item::AddressRequest {
                            fingerprint: fingerprint(&request.key),
                            from: request.from,
                            request_id: request.id,
                            expires_at_ms: request.expires_at_ms,
                        });
                        return;
                    }
                    Consent::Accept => true,
                    Consent::Deny => false,
                };
                if let Ok(request) = self.grants.take_request(Some(&request.from), now_ms()) {
                    let pending =
                        actions::answer(&self.live, &mut self.grants, request, accept, true);
                    self.background.spawn(pending);
                }
            }
            Kind::AddressGranted(g) => {
                let item = actions::granted(&mut self.grants, &g);
                self.show(item);
            }
            Kind::AddressDenied(d) => {
                let reason = DenyReason::try_from(d.reason)
                    .unwrap_or(DenyReason::Unspecified)
                    .as_str_name()
                    .trim_start_matches("DENY_REASON_")
                    .to_owned();
                self.show(Item::AddressDenied {
                    user: d.user,
                    reason,
                });
            }
            Kind::AddressRevoked(r) => {
                self.grants.revoked(&r.user);
                self.show(Item::AddressRevoked { user: r.user });
            }
            Kind::LoginFailed(l) => self.show(Item::LoginFailed {
                failed_attempts: l.failed_attempts,
                locked_until_ms: l.locked_until_ms,
                source: l.source,
            }),
            // The pump turns these into notices of their own.
            Kind::SessionEnded(_) | Kind::BacklogEnd(_) => {}
        }
    }

    /// A message that came over the peer path (already acknowledged to its sender).
    pub(super) fn on_private(&mut self, inbound: Inbound) {
        let m = inbound.message;
        if self.seen.first_time(&inbound.from, &m.message_id) {
            self.show(Item::Message {
                from: inbound.from,
                body: m.body,
                message_id: m.message_id,
                seq: None,
                sent_at_ms: m.sent_at_ms,
                via: Via::Direct,
                replayed: false,
            });
        }
    }
}
