//! SPEC §2: accounts, login and the lockout; the session token checked on every call.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use anyhow::{Context, bail};

use super::{
    Core, EndReason,
    session::{NewSession, Outbound, PeerInfo, Session},
    stats::bump,
};
use crate::{
    now_ms,
    server::{
        accounts::Account,
        error::{Error, Result},
        store::{UserRow, WriteOp, WriteOutcome},
        wire,
    },
    types::{MAX_PASSWORD_BYTES, MIN_PASSWORD_LEN, Secret, check_username, username_key},
};

impl Core {
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
                name_key: username_key(name),
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
                    disabled: false,
                }))
            }
            WriteOutcome::NameTaken => Err(Error::NameTaken(name.to_owned())),
            other => Err(Error::Internal(anyhow::anyhow!(
                "creating a user: {other:?}"
            ))),
        }
    }

    /// Creates the accounts of an assignment-style credentials file (`username password` per
    /// line) that do not exist yet.
    ///
    /// # Errors
    /// The file cannot be read, a line is malformed, or an account cannot be created.
    pub async fn import_users(self: &Arc<Self>, path: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut jobs = tokio::task::JoinSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, password)) = line.split_once(char::is_whitespace) else {
                bail!("{}:{}: expected `username password`", path.display(), n + 1);
            };
            let (name, password) = (name.to_owned(), password.trim().to_owned());
            if self.accounts.get(&name).is_some() {
                continue;
            }
            let core = self.clone();
            let where_ = format!("{}:{}", path.display(), n + 1);
            jobs.spawn(async move {
                match core.create_user(&name, Secret::new(password)).await {
                    Ok(_) | Err(Error::NameTaken(_)) => Ok(()),
                    Err(e) => Err(anyhow::anyhow!("{where_}: {e}")),
                }
            });
        }
        let mut created = 0usize;
        while let Some(result) = jobs.join_next().await {
            result??;
            created += 1;
        }
        tracing::info!(created, "imported the users file");
        Ok(())
    }

    /// Counts a login or registration attempt from `remote` against its address's rate.
    pub fn throttle(&self, remote: SocketAddr) -> Result<()> {
        self.lockout()
            .throttle(remote.ip(), Instant::now())
            .map_err(|retry| Error::LoginThrottled { retry })
    }

    /// Checks credentials and starts a session, ending the user's previous one. A valid device
    /// `ticket` of the user puts the login under its own lockout count ([`super::tickets`]).
    /// Returns the session, its token and the device ticket to keep.
    pub async fn login(
        &self,
        name: &str,
        password: Secret,
        ticket: &str,
        remote: SocketAddr,
        peer: Option<PeerInfo>,
    ) -> Result<(Arc<Session>, String, String)> {
        self.throttle(remote)?;
        check_username(name).map_err(|m| Error::invalid("username", m))?;
        if password.expose().len() > MAX_PASSWORD_BYTES {
            // Refused before hashing: bounds the work one request can cause.
            return Err(Error::invalid(
                "password",
                format!("a password has at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        let name_key = username_key(name);
        let account = self.accounts.get(name);
        let device = self.device(account.as_deref(), ticket).await?;
        let key = device.lock_key(&name_key).to_owned();
        if let Some(left) = self.lockout().locked(&key, Instant::now()) {
            return Err(Error::LockedOut {
                user: name.to_owned(),
                left,
            });
        }
        if !self.hasher.verify(account.clone(), password).await {
            return Err(self.login_failed(name, &key, account.as_deref(), remote));
        }
        let account = account.expect("verified accounts exist");
        // Told only to someone who knows the password, so it reveals nothing to guessers.
        if account.is_disabled() {
            return Err(Error::AccountDisabled(account.name.to_string()));
        }
        // The lock may have started while this attempt was hashing.
        if let Some(left) = self.lockout().locked(&key, Instant::now()) {
            return Err(Error::LockedOut {
                user: name.to_owned(),
                left,
            });
        }
        {
            // The owner is in: the account's count starts afresh too.
            let mut lockout = self.lockout();
            lockout.clear(&key);
            lockout.clear(&name_key);
        }
        let device_ticket = self.ticket_for(&account, device).await;
        let (session, token, replaced) = self.sessions.create(NewSession {
            user: account.clone(),
            remote,
            peer,
            send_rate: self.config.send_rate,
            send_burst: self.config.send_burst,
        });
        if let Some(old) = replaced {
            self.after_end(&old, EndReason::LoggedInElsewhere);
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
        Ok((session, token, device_ticket))
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
            let event = wire::login_failed(failure.failures, locked_until_ms, remote.ip());
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

    /// Lifts `name`'s lockout (the account's; a device's own count runs out by itself).
    pub fn unlock(&self, name: &str) -> Result<()> {
        let account = self.account(name)?;
        self.lockout().clear(&username_key(&account.name));
        Ok(())
    }

    /// When `name`'s lockout ends, if it is locked.
    pub fn locked_until_ms(&self, name: &str) -> i64 {
        let key = username_key(name);
        self.lockout()
            .locked(&key, Instant::now())
            .map_or(0, |left| now_ms() + left.as_millis() as i64)
    }

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
}

pub(super) fn check_password(password: &Secret) -> Result<()> {
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
