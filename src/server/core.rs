//! The message center's state and every operation on it. The RPC modules decode requests, call
//! these, and encode the results; nothing here knows about protobuf requests or tonic services.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    accounts::{Account, Directory, Hasher},
    blocks::Blocks,
    config::Config,
    consent::{self, Consent, Notices, Requested},
    error::{Error, Result},
    lockout::Lockout,
    sessions::{NewSession, Outbound, PeerInfo, Pushed, Session, Sessions},
    store::{Store, UserRow, WriteOp, WriteOutcome},
    wire::{self, EncodedEvent},
    writer::Writer,
};
use crate::{
    now_ms,
    pb::{self, DeliveryStatus, SessionEndReason, event::Kind},
    types::{MAX_MESSAGE_ID_BYTES, MAX_PASSWORD_BYTES, MIN_PASSWORD_LEN, Secret, check_username},
};

/// Counters for `Admin/GetStats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins.
    pub failed_logins: AtomicU64,
    /// Lockouts started.
    pub lockouts: AtomicU64,
    /// Direct messages stored (not counting duplicates).
    pub messages_relayed: AtomicU64,
    /// Of those, queued on a live stream.
    pub messages_delivered_live: AtomicU64,
    /// Broadcasts sent.
    pub broadcasts: AtomicU64,
    /// Broadcast copies queued.
    pub broadcast_deliveries: AtomicU64,
    /// Address requests made.
    pub address_requests: AtomicU64,
    /// Address requests granted.
    pub address_grants: AtomicU64,
    /// Sessions ended `TOO_SLOW`.
    pub streams_too_slow: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The outcome of a direct send.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// `DELIVERED` or `STORED`.
    pub status: DeliveryStatus,
    /// Inbox seq.
    pub seq: u64,
    /// The message id was stored already.
    pub duplicate: bool,
}

/// A validated direct message, ready for the writer.
pub struct Outgoing {
    recipient: Arc<Account>,
    op: WriteOp,
}

/// Everything the server knows.
pub struct Core {
    /// Settings.
    pub config: Config,
    /// Durable storage (reads; writes go through `writer`).
    pub store: Arc<dyn Store>,
    /// The group-commit writer.
    pub writer: Writer,
    /// Accounts.
    pub accounts: Directory,
    /// Password hashing.
    pub hasher: Arc<Hasher>,
    /// Blocks.
    pub blocks: Blocks,
    /// Live sessions.
    pub sessions: Arc<Sessions>,
    /// The address handshake.
    pub consent: Consent,
    /// Login lockout and throttling.
    pub lockout: std::sync::Mutex<Lockout>,
    /// Counters.
    pub stats: Stats,
    /// The admin token.
    pub admin_token: Secret,
    /// Start time.
    pub started: Instant,
}

impl Core {
    /// Assembles the state. `writer` must write to `store` and deliver through `sessions`.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        writer: Writer,
        sessions: Arc<Sessions>,
        admin_token: Secret,
    ) -> anyhow::Result<Self> {
        let accounts = Directory::load(store.users()?);
        let blocks = Blocks::load(store.blocks()?);
        let consent = Consent::new(consent::Limits {
            timeout: config.consent_timeout,
            cooldown: config.consent_cooldown,
            max_pending: config.max_pending_requests,
        });
        let lockout = Lockout::new(
            config.max_login_attempts,
            config.block_duration,
            config.login_rate,
            config.login_burst,
        );
        Ok(Core {
            hasher: Arc::new(Hasher::new(config.fast_hash)),
            config,
            store,
            writer,
            accounts,
            blocks,
            sessions,
            consent,
            lockout: std::sync::Mutex::new(lockout),
            stats: Stats::default(),
            admin_token,
            started: Instant::now(),
        })
    }

    fn lockout(&self) -> std::sync::MutexGuard<'_, Lockout> {
        self.lockout.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_all(notices: Notices) {
        for (session, event) in notices {
            session.push(Outbound::now(event));
        }
    }

    /// The account called `name`, or `NOT_FOUND`.
    pub fn account(&self, name: &str) -> Result<Arc<Account>> {
        self.accounts
            .get(name)
            .ok_or_else(|| Error::NoSuchUser(name.to_owned()))
    }

    /// The account called `name`, which must not be `me` (`INVALID_ARGUMENT`).
    fn other(
        &self,
        me: &Session,
        name: &str,
        field: &'static str,
        what: &str,
    ) -> Result<Arc<Account>> {
        check_username(name).map_err(|m| Error::invalid(field, m))?;
        let account = self.account(name)?;
        if account.id == me.user_id() {
            return Err(Error::invalid(field, format!("you cannot {what} yourself")));
        }
        Ok(account)
    }

    // ---------------------------------------------------------------------------------------
    // Accounts and login

    /// Creates an account (`Register`, `CreateUser`, `--users`).
    pub async fn create_user(&self, name: &str, password: Secret) -> Result<Arc<Account>> {
        check_username(name).map_err(|m| Error::invalid("username", m))?;
        check_password(&password)?;
        if self.accounts.get(name).is_some() {
            return Err(Error::NameTaken(name.to_owned()));
        }
        let password_hash = self.hasher.hash(password).await?;
        let created_ms = now_ms();
        let outcome = self
            .writer
            .write(WriteOp::CreateUser {
                name: name.to_owned(),
                name_key: crate::types::username_key(name),
                password_hash: password_hash.clone(),
                created_ms,
            })
            .await?;
        match outcome {
            WriteOutcome::Created(id) => {
                tracing::info!(user = name, "account created");
                Ok(self.accounts.insert(UserRow {
                    id,
                    name: name.to_owned(),
                    password_hash,
                    created_ms,
                    last_login_ms: 0,
                }))
            }
            WriteOutcome::NameTaken => Err(Error::NameTaken(name.to_owned())),
            other => Err(Error::Internal(anyhow::anyhow!(
                "creating a user: {other:?}"
            ))),
        }
    }

    /// Counts a login or registration attempt from `remote` against its address's rate.
    pub fn throttle(&self, remote: SocketAddr) -> Result<()> {
        self.lockout()
            .throttle(remote.ip(), Instant::now())
            .map_err(|retry| Error::LoginThrottled { retry })
    }

    /// Checks credentials and starts a session, ending the user's previous one.
    pub async fn login(
        &self,
        name: &str,
        password: Secret,
        remote: SocketAddr,
        peer: Option<PeerInfo>,
    ) -> Result<(Arc<Session>, String)> {
        self.throttle(remote)?;
        check_username(name).map_err(|m| Error::invalid("username", m))?;
        if password.expose().len() > MAX_PASSWORD_BYTES {
            // Refused before hashing: bounds the work one request can cause.
            return Err(Error::invalid(
                "password",
                format!("a password has at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        let key = crate::types::username_key(name);
        if let Some(left) = self.lockout().locked(&key, Instant::now()) {
            return Err(Error::LockedOut {
                user: name.to_owned(),
                left,
            });
        }
        let account = self.accounts.get(name);
        if !self.hasher.verify(account.clone(), password).await {
            return Err(self.login_failed(name, &key, account.as_deref(), remote));
        }
        let account = account.expect("verified accounts exist");
        // The lock may have started while this attempt was hashing.
        if let Some(left) = self.lockout().locked(&key, Instant::now()) {
            return Err(Error::LockedOut {
                user: name.to_owned(),
                left,
            });
        }
        self.lockout().clear(&key);
        let (session, token, replaced) = self.sessions.create(NewSession {
            user: account.clone(),
            remote,
            peer,
            send_rate: self.config.send_rate,
            send_burst: self.config.send_burst,
        });
        if let Some(old) = replaced {
            self.after_end(&old, SessionEndReason::LoggedInElsewhere);
        }
        let now = now_ms();
        account.last_login_ms.store(now, Ordering::Relaxed);
        self.writer.spawn(WriteOp::LastLogin {
            user: account.id,
            at_ms: now,
        });
        bump(&self.stats.logins);
        tracing::info!(user = %account.name, %remote, session = session.id, "logged in");
        self.presence(&session, true);
        Ok((session, token))
    }

    fn login_failed(
        &self,
        name: &str,
        key: &str,
        account: Option<&Account>,
        remote: SocketAddr,
    ) -> Error {
        bump(&self.stats.failed_logins);
        let now = Instant::now();
        let (failure, attempts_left) = {
            let mut l = self.lockout();
            let f = l.fail(key, now);
            (f, l.attempts_left(f))
        };
        tracing::info!(user = name, %remote, failures = failure.failures, "login failed");
        let locked_until_ms = failure.locked_until.map_or(0, |u| {
            now_ms() + u.saturating_duration_since(now).as_millis() as i64
        });
        if let Some(live) = account.and_then(|a| self.sessions.by_user(a.id)) {
            let event = wire::encode(Kind::LoginFailed(pb::LoginFailed {
                failed_attempts: failure.failures,
                locked_until_ms,
                source: remote.ip().to_string(),
            }));
            live.push(Outbound::now(event));
        }
        match failure.locked_until {
            Some(until) => {
                bump(&self.stats.lockouts);
                tracing::warn!(user = name, "login locked after repeated failures");
                Error::LockedOut {
                    user: name.to_owned(),
                    left: until.saturating_duration_since(now),
                }
            }
            None => Error::BadCredentials { attempts_left },
        }
    }

    /// Lifts `name`'s lockout.
    pub fn unlock(&self, name: &str) -> Result<()> {
        let account = self.account(name)?;
        self.lockout()
            .clear(&crate::types::username_key(&account.name));
        Ok(())
    }

    /// When `name`'s lockout ends, if it is locked.
    pub fn locked_until_ms(&self, name: &str) -> i64 {
        let key = crate::types::username_key(name);
        self.lockout()
            .locked(&key, Instant::now())
            .map_or(0, |left| now_ms() + left.as_millis() as i64)
    }

    // ---------------------------------------------------------------------------------------
    // Sessions

    /// The live session holding `token`; counts as activity.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Arc<Session>> {
        let token = token.ok_or(Error::Unauthenticated(
            "this call needs a session token: log in and send `authorization: Bearer <token>`",
        ))?;
        let session = self.sessions.by_token(token).ok_or(Error::Unauthenticated(
            "the session token is unknown or the session has ended; log in again",
        ))?;
        session.touch();
        Ok(session)
    }

    /// Ends `session` for `reason`: its stream is told, its grants revoked, others see it leave.
    pub fn end_session(&self, session: &Arc<Session>, reason: SessionEndReason) -> bool {
        if !self.sessions.remove(session, reason) {
            return false;
        }
        self.after_end(session, reason);
        true
    }

    /// The rest of ending a session already removed from the table.
    fn after_end(&self, session: &Arc<Session>, reason: SessionEndReason) {
        tracing::info!(user = %session.name(), session = session.id, reason = reason.as_str_name(), "session ended");
        if reason == SessionEndReason::TooSlow {
            bump(&self.stats.streams_too_slow);
        }
        Self::push_all(self.consent.session_ended(session));
        // A replaced session's user is still online under the new one.
        if reason != SessionEndReason::LoggedInElsewhere {
            self.presence(session, false);
        }
    }

    /// Tells every online user, except those `subject` blocks, that it came or went.
    fn presence(&self, subject: &Session, online: bool) {
        let hidden = self.blocks.blocked_by_user(subject.user_id());
        let event = wire::presence(subject.name(), online);
        for s in self.sessions.all() {
            if s.user_id() != subject.user_id() && !hidden.contains(&s.user_id()) {
                // Lazy: a login storm would otherwise cost every stream one write per login.
                s.push(Outbound {
                    seq: 0,
                    event: event.clone(),
                    lazy: true,
                });
            }
        }
    }

    /// Ends every session whose last call is older than the session timeout.
    pub fn reap(&self) {
        let cutoff = now_ms() - self.config.session_timeout.as_millis() as i64;
        for s in self.sessions.all() {
            if s.last_activity() < cutoff {
                self.end_session(&s, SessionEndReason::TimedOut);
            }
        }
    }

    /// Acknowledges `user`'s messages up to `upto` (committed with the next group).
    pub fn ack(&self, session: &Session, upto: u64) {
        if upto > 0 {
            self.writer.spawn(WriteOp::Ack {
                user: session.user_id(),
                upto,
            });
        }
    }

    // ---------------------------------------------------------------------------------------
    // Messages

    fn check_body(&self, body: &str) -> Result<()> {
        if body.is_empty() {
            return Err(Error::invalid("body", "a message cannot be empty"));
        }
        if body.len() > self.config.max_message_bytes {
            return Err(Error::invalid(
                "body",
                format!(
                    "the message is {} bytes; the limit is {} bytes",
                    body.len(),
                    self.config.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    fn rate(&self, session: &Session) -> Result<()> {
        session
            .send_bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
            .map_err(|retry| Error::SendThrottled { retry })
    }

    /// Checks a direct message against every rule before it is stored.
    pub fn prepare(&self, from: &Session, req: pb::SendMessageRequest) -> Result<Outgoing> {
        self.check_body(&req.body)?;
        if req.message_id.is_empty() || req.message_id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(Error::invalid(
                "message_id",
                format!("message_id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes"),
            ));
        }
        let recipient = self.other(from, &req.to, "to", "message")?;
        if self.blocks.blocks(recipient.id, from.user_id()) {
            return Err(Error::BlockedMessage(recipient.name.to_string()));
        }
        self.rate(from)?;
        Ok(Outgoing {
            op: WriteOp::Append {
                recipient: recipient.id,
                sender: from.user_id(),
                message_id: req.message_id,
                body: req.body,
                sent_ms: now_ms(),
                max_inbox: self.config.max_inbox,
            },
            recipient,
        })
    }

    /// Hands a prepared message to the writer; the returned future resolves after the commit.
    pub async fn submit(
        self: &Arc<Self>,
        from: &Session,
        out: Outgoing,
    ) -> Result<impl Future<Output = Result<Sent>> + Send + 'static> {
        let rx = self
            .writer
            .submit(out.op, Some(from.user.name.clone()))
            .await?;
        let core = self.clone();
        let recipient = out.recipient;
        Ok(async move {
            let written = rx
                .await
                .map_err(|_| Error::Internal(anyhow::anyhow!("the writer dropped a request")))??;
            match written.outcome {
                WriteOutcome::Appended { seq, duplicate } => {
                    if !duplicate {
                        bump(&core.stats.messages_relayed);
                        if written.live {
                            bump(&core.stats.messages_delivered_live);
                        }
                    }
                    let status = if written.live {
                        DeliveryStatus::Delivered
                    } else {
                        DeliveryStatus::Stored
                    };
                    Ok(Sent {
                        status,
                        seq,
                        duplicate,
                    })
                }
                WriteOutcome::InboxFull => Err(Error::InboxFull(recipient.name.to_string())),
                other => Err(Error::Internal(anyhow::anyhow!("append: {other:?}"))),
            }
        })
    }

    /// Stores and delivers one direct message.
    pub async fn send(
        self: &Arc<Self>,
        from: &Session,
        req: pb::SendMessageRequest,
    ) -> Result<Sent> {
        let out = self.prepare(from, req)?;
        self.submit(from, out).await?.await
    }

    /// Sends `body` to every online user except `from` and those blocking it.
    /// Returns (delivered, withheld).
    pub fn broadcast(&self, from: &Session, body: String) -> Result<(u32, u32)> {
        self.check_body(&body)?;
        self.rate(from)?;
        let blockers = self.blocks.blockers_of(from.user_id());
        let event: EncodedEvent = wire::encode(Kind::Broadcast(pb::BroadcastMessage {
            from: from.name().to_owned(),
            body,
            sent_at_ms: now_ms(),
        }));
        let (mut delivered, mut withheld) = (0u32, 0u32);
        for s in self.sessions.all() {
            if s.user_id() == from.user_id() {
                continue;
            }
            if blockers.contains(&s.user_id()) {
                withheld += 1;
                continue;
            }
            let pushed = s.push(Outbound::now(event.clone()));
            if pushed == Pushed::Queued {
                delivered += 1;
            }
        }
        bump(&self.stats.broadcasts);
        self.stats
            .broadcast_deliveries
            .fetch_add(u64::from(delivered), Ordering::Relaxed);
        Ok((delivered, withheld))
    }

    /// Users online now (`since` zero) or who logged in within `since`, hiding the caller and
    /// users who block the caller; sorted by name.
    pub fn online(&self, me: &Session, since: Duration) -> Vec<pb::OnlineUser> {
        let blockers = self.blocks.blockers_of(me.user_id());
        let visible = |id| id != me.user_id() && !blockers.contains(&id);
        let mut users: Vec<pb::OnlineUser> = if since.is_zero() {
            self.sessions
                .all()
                .into_iter()
                .filter(|s| visible(s.user_id()))
                .map(|s| pb::OnlineUser {
                    username: s.name().to_owned(),
                    online: true,
                    last_login_ms: s.user.last_login(),
                })
                .collect()
        } else {
            let cutoff = now_ms() - since.as_millis() as i64;
            self.accounts
                .all()
                .into_iter()
                .filter(|a| visible(a.id) && a.last_login() >= cutoff && a.last_login() > 0)
                .map(|a| pb::OnlineUser {
                    username: a.name.to_string(),
                    online: self.sessions.by_user(a.id).is_some(),
                    last_login_ms: a.last_login(),
                })
                .collect()
        };
        users.sort_by_key(|u| u.username.to_ascii_lowercase());
        users
    }

    // ---------------------------------------------------------------------------------------
    // Blocks

    /// `me` blocks `name`: stored, then every effect of SPEC §5.
    pub async fn block(&self, me: &Session, name: &str) -> Result<()> {
        let target = self.other(me, name, "user", "block")?;
        self.writer
            .write(WriteOp::Block {
                blocker: me.user_id(),
                blocked: target.id,
            })
            .await?;
        self.blocks.add(me.user_id(), target.id);
        Self::push_all(self.consent.blocked(me.user_id(), target.id));
        tracing::info!(user = %me.name(), "blocked a user");
        Ok(())
    }

    /// `me` unblocks `name`.
    pub async fn unblock(&self, me: &Session, name: &str) -> Result<()> {
        let target = self.other(me, name, "user", "unblock")?;
        self.writer
            .write(WriteOp::Unblock {
                blocker: me.user_id(),
                blocked: target.id,
            })
            .await?;
        self.blocks.remove(me.user_id(), target.id);
        Ok(())
    }

    /// The users `me` blocks, sorted by name.
    pub fn blocked(&self, me: &Session) -> Vec<String> {
        let mut names: Vec<String> = self
            .blocks
            .blocked_by_user(me.user_id())
            .into_iter()
            .filter_map(|id| self.accounts.by_id(id))
            .map(|a| a.name.to_string())
            .collect();
        names.sort_by_key(|n| n.to_ascii_lowercase());
        names
    }

    // ---------------------------------------------------------------------------------------
    // The address handshake

    /// `me` asks for `name`'s address.
    pub fn request_address(self: &Arc<Self>, me: &Arc<Session>, name: &str) -> Result<Requested> {
        let target = self.other(me, name, "user", "ask for the address of")?;
        if self.blocks.blocks(target.id, me.user_id()) {
            return Err(Error::BlockedAddress(target.name.to_string()));
        }
        if me.peer.is_none() {
            return Err(Error::invalid(
                "peer_public_key",
                "your session has no peer key: log in with peer_public_key to use direct messages",
            ));
        }
        let Some(to) = self.sessions.by_user(target.id) else {
            return Err(Error::Offline(target.name.to_string()));
        };
        if to.peer.as_ref().is_none_or(|p| p.port == 0) {
            return Err(Error::NoPeerListener(target.name.to_string()));
        }
        let (requested, notices) = self.consent.request(me, &to, Instant::now(), now_ms())?;
        Self::push_all(notices);
        if let Requested::Pending { id, new: true } = &requested {
            bump(&self.stats.address_requests);
            let (core, id) = (self.clone(), id.clone());
            let timeout = self.config.consent_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                Self::push_all(core.consent.expire(&id));
            });
        }
        Ok(requested)
    }

    /// `me` answers request `id`.
    pub fn respond_address(&self, me: &Arc<Session>, id: &str, accept: bool) -> Result<()> {
        let notices = self.consent.respond(me, id, accept, Instant::now())?;
        if accept {
            bump(&self.stats.address_grants);
        }
        Self::push_all(notices);
        Ok(())
    }
}

fn check_password(password: &Secret) -> Result<()> {
    let p = password.expose();
    if p.chars().count() < MIN_PASSWORD_LEN {
        return Err(Error::invalid(
            "password",
            format!("a password needs at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if p.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            "password",
            format!("a password has at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}
