//! SPEC §3: how sessions end, who is told, who is online, and acknowledgements.

use std::{sync::Arc, time::Duration};

use super::{Core, EndReason, feed::Lagged, session::Session, stats::bump};
pub use crate::server::domain::OnlineUser;
use crate::{
    now_ms,
    server::{
        store::WriteOp,
        wire::{self, EncodedEvent},
    },
};

impl Core {
    /// Ends `session` for `reason`: its stream is told, its grants revoked, others see it leave.
    /// The one way a session ends; false if it had ended already.
    pub fn end_session(&self, session: &Arc<Session>, reason: EndReason) -> bool {
        if !self.sessions.remove(session, reason) {
            return false;
        }
        self.after_end(session, reason);
        true
    }

    /// The rest of ending a session already removed from the table (by `end_session`, or by
    /// a newer login of the same user).
    pub(super) fn after_end(&self, session: &Arc<Session>, reason: EndReason) {
        tracing::info!(user = %session.name(), session = session.id, reason = reason.as_str(), "session ended");
        if reason == EndReason::TooSlow {
            bump(&self.stats.streams_too_slow);
        }
        self.notify(self.consent.session_ended(session.id));
        // A replaced session's user is still online under the new one.
        if reason != EndReason::LoggedInElsewhere {
            self.presence(session, false);
        }
        // After the presence change, so other nodes see the user gone before the grants end.
        self.publish_end(session, reason);
    }

    /// Tells every online user, except those `subject` blocks, that it came or went: one
    /// append to the presence feed, which every stream reads (`feed.rs`), instead of a push to
    /// each of them.
    pub(super) fn presence(&self, subject: &Session, online: bool) {
        self.presence.append(
            subject.user_id(),
            wire::presence(subject.name(), online),
            self.blocks.blocked_by_user(subject.user_id()),
        );
        self.publish_presence(subject, online);
    }

    /// The presence feed's position now: a new stream reads the changes after it.
    pub fn presence_position(&self) -> u64 {
        self.presence.latest()
    }

    /// Changes whenever streams should read the presence feed (once per window at most).
    pub fn presence_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.presence.subscribe()
    }

    /// The presence changes after `*cursor` up to `upto` that `me` may see, in `shape`; moves
    /// the cursor.
    ///
    /// # Errors
    /// [`Lagged`] when the stream fell too far behind to be told every change.
    pub fn presence_since(
        &self,
        cursor: &mut u64,
        upto: u64,
        me: &Session,
        shape: super::Shape,
    ) -> Result<Vec<EncodedEvent>, Lagged> {
        self.presence.read(cursor, upto, me.user_id(), shape)
    }

    /// Ends every session whose last call is older than the session timeout.
    pub fn reap(&self) {
        let cutoff = now_ms() - self.config.session_timeout.as_millis() as i64;
        for s in self.sessions.all() {
            if s.last_activity() < cutoff {
                self.end_session(&s, EndReason::TimedOut);
            }
        }
    }

    /// Acknowledges `session`'s user's messages up to `upto` (committed with the next group).
    pub fn ack(&self, session: &Session, upto: u64) {
        if upto > 0 {
            self.backlog.acknowledged(session.user_id(), upto);
            self.writer.spawn(WriteOp::Ack {
                user: session.user_id(),
                upto,
            });
        }
    }

    /// Users online now (`since` zero) or who logged in within `since`, hiding the caller and
    /// users who block the caller; sorted by name.
    pub fn online(&self, me: &Session, since: Duration) -> Vec<OnlineUser> {
        let blockers = self.blocks.blockers_of(me.user_id());
        let visible = |id| id != me.user_id() && !blockers.contains(&id);
        let mut users: Vec<OnlineUser> = if since.is_zero() {
            let mut here: Vec<OnlineUser> = self
                .sessions
                .all()
                .into_iter()
                .filter(|s| visible(s.user_id()))
                .map(|s| OnlineUser {
                    name: s.name().to_owned(),
                    online: true,
                    last_login_ms: s.user.last_login(),
                })
                .collect();
            if let Some(cluster) = self.cluster() {
                here.extend(
                    cluster
                        .remote
                        .all()
                        .into_iter()
                        .filter(|(u, _)| visible(*u) && self.sessions.by_user(*u).is_none())
                        .filter_map(|(u, _)| self.accounts.by_id(u))
                        .map(|a| OnlineUser {
                            name: a.name.to_string(),
                            online: true,
                            last_login_ms: a.last_login(),
                        }),
                );
            }
            here
        } else {
            let cutoff = now_ms() - since.as_millis() as i64;
            self.accounts
                .all()
                .into_iter()
                .filter(|a| visible(a.id) && a.last_login() >= cutoff && a.last_login() > 0)
                .map(|a| OnlineUser {
                    name: a.name.to_string(),
                    online: self.sessions.by_user(a.id).is_some()
                        || self.cluster().is_some_and(|c| c.remote.get(a.id).is_some()),
                    last_login_ms: a.last_login(),
                })
                .collect()
        };
        users.sort_by_key(|u| u.name.to_ascii_lowercase());
        users
    }
}
