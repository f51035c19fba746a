//! SPEC §2: accounts, login and the lockout; the session token checked on every call.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use anyhow::{Context, bail};

use crate::server::lockout::Failure;

use super::{
    Core, EndReason,
    session::{NewSession, PeerInfo, Session},
    stats::bump,
};
use crate::{
    now_ms,
    server::{
        accounts::Account,
        cluster::bus::{AccountChange, Kind},
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
                self.publish(Kind::Account(AccountChange { user: id }));
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
        super::tickets::check_ticket(ticket)?;
        let name_key = username_key(name);
        let account = match self.accounts.get(name) {
            Some(a) => Some(a),
            None => self.account_from_cluster(&name_key).await?,
        };
        let device = self.device(account.as_deref(), ticket).await?;
        let key = device.lock_key(&name_key).to_owned();
        if let Some(left) = self.locked_for(&key).await? {
            return Err(Error::LockedOut {
                user: name.to_owned(),
                left,
            });
        }
        if !self.hasher.verify(account.clone(), password).await {
            let failure = self.count_failure(&key).await?;
            return Err(self.login_failed(name, failure, account.as_deref(), remote));
        }
        let account = account.expect("verified accounts exist");
        // Told only to someone who knows the password, so it reveals nothing to guessers.
        if account.is_disabled() {
            return Err(Error::AccountDisabled(account.name.to_string()));
        }
        // The lock may have started while this attempt was hashing.
        if let Some(left) = self.locked_for(&key).await? {
            return Err(Error::LockedOut {
                user: name.to_owned(),
                left,
            });
        }
        // The owner is in: the account's count starts afresh too.
        self.clear_failures(&key).await?;
        if key != name_key {
            self.clear_failures(&name_key).await?;
        }
        // Queued first, so it shares the commit a new device ticket waits for: one commit per
        // login, not two.
        let now = now_ms();
        self.writer.spawn(WriteOp::LastLogin {
            user: account.id,
            at_ms: now,
        });
        let device_ticket = self.ticket_for(&account, device).await;
        let id = self.claim_session(&account, remote, peer.as_ref()).await?;
        let (session, token, replaced) = self.sessions.create(NewSession {
            id,
            user: account.clone(),
            remote,
            peer,
            send_rate: self.config.send_rate,
            send_burst: self.config.send_burst,
        });
        if let Some(old) = replaced {
            self.after_end(&old, EndReason::LoggedInElsewhere);
        }
        account.last_login_ms.store(now, Ordering::Relaxed);
        bump(&self.stats.logins);
        tracing::info!(user = %account.name, %remote, session = session.id, "logged in");
        self.presence(&session, true);
        Ok((session, token, device_ticket))
    }

    /// On a cluster node, makes sure an account another node just created is known here
    /// before a call names it (the bus tells every node, but may be a moment behind the
    /// caller). Nothing on a lone server.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn learn(&self, name: &str) -> Result<()> {
        if self.cluster.is_none()
            || check_username(name).is_err()
            || self.accounts.get(name).is_some()
        {
            return Ok(());
        }
        self.account_from_cluster(&username_key(name)).await?;
        Ok(())
    }

    /// On a cluster node, an account another node created that this one has not heard of yet.
    async fn account_from_cluster(&self, key: &str) -> Result<Option<Arc<Account>>> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        Ok(cluster
            .directory()
            .user(key)
            .await?
            .map(|row| self.accounts.insert(row)))
    }

    /// On a cluster node, makes this login the user's one session in the cluster (another
    /// node's session of the user is kicked) and returns its epoch, the session's id.
    async fn claim_session(
        &self,
        account: &Account,
        remote: SocketAddr,
        peer: Option<&PeerInfo>,
    ) -> Result<Option<u64>> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let entry = crate::server::store::pg_directory::Entry {
            user: account.id,
            node: String::new(),
            epoch: 0,
            since_ms: now_ms(),
            remote: remote.to_string(),
            peer: peer.map(|p| (p.host.clone(), p.port, p.public_key.clone())),
        };
        let (epoch, _replaced) = cluster.claim(entry).await?;
        Ok(Some(epoch))
    }

    /// How long `key` stays locked out: counted by this node alone, or on a cluster by every
    /// node together (in PostgreSQL), so spreading guesses over the nodes gains nothing.
    async fn locked_for(&self, key: &str) -> Result<Option<std::time::Duration>> {
        let Some(cluster) = self.cluster() else {
            return Ok(self.lockout().locked(key, Instant::now()));
        };
        let left = cluster.directory().locked(key, now_ms()).await?;
        Ok(left.map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    }

    /// Counts a failed login for `key` (cluster-wide on a cluster node).
    async fn count_failure(&self, key: &str) -> Result<Failure> {
        let Some(cluster) = self.cluster() else {
            return Ok(self.lockout().fail(key, Instant::now()));
        };
        let now = now_ms();
        let block_ms = i64::try_from(self.config.block_duration.as_millis()).unwrap_or(i64::MAX);
        let (failures, until) = cluster
            .directory()
            .fail(key, self.config.max_login_attempts, now, block_ms)
            .await?;
        Ok(Failure {
            failures,
            locked_until: until.map(|u| {
                Instant::now()
                    + std::time::Duration::from_millis(u64::try_from(u - now).unwrap_or(0))
            }),
        })
    }

    /// Forgets `key`'s failures (cluster-wide on a cluster node).
    async fn clear_failures(&self, key: &str) -> Result<()> {
        self.lockout().clear(key);
        if let Some(cluster) = self.cluster() {
            cluster.directory().clear_failures(key).await?;
        }
        Ok(())
    }

    fn login_failed(
        &self,
        name: &str,
        failure: Failure,
        account: Option<&Account>,
        remote: SocketAddr,
    ) -> Error {
        bump(&self.stats.failed_logins);
        let now = Instant::now();
        let attempts_left = self.lockout().attempts_left(failure);
        tracing::info!(user = name, %remote, failures = failure.failures, "login failed");
        let locked_until_ms = failure.locked_until.map_or(0, |u| {
            now_ms() + u.saturating_duration_since(now).as_millis() as i64
        });
        if let Some(account) = account {
            let event = wire::login_failed(failure.failures, locked_until_ms, remote.ip());
            self.push_to_user(account.id, event);
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

    /// Lifts `name`'s lockout (the account's, on every node; a device's own count runs out by
    /// itself).
    pub async fn unlock(&self, name: &str) -> Result<()> {
        self.learn(name).await?;
        let account = self.account(name)?;
        self.clear_failures(&username_key(&account.name)).await
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
