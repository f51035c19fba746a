//! The account directory: every account in memory (loaded at start, written through the writer),
//! and password hashing with argon2id on blocking threads so it never stalls message delivery.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
};

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use tokio::sync::Semaphore;

use super::store::{UserId, UserRow};
use crate::types::{Secret, username_key};

/// One account.
#[derive(Debug)]
pub struct Account {
    /// Row id.
    pub id: UserId,
    /// The name as registered.
    pub name: Arc<str>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last successful login, Unix ms.
    pub last_login_ms: AtomicI64,
    /// Replaced when the password is set or changed (`Core::set_password`).
    password_hash: RwLock<String>,
    /// An operator disabled the account: logins are refused.
    pub disabled: AtomicBool,
}

impl Account {
    /// Last successful login, Unix ms (0: never).
    pub fn last_login(&self) -> i64 {
        self.last_login_ms.load(Ordering::Relaxed)
    }

    /// The PHC string of the current password.
    fn password_hash(&self) -> String {
        self.password_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the password hash (after the store has committed it).
    pub fn set_password_hash(&self, hash: String) {
        *self
            .password_hash
            .write()
            .unwrap_or_else(|p| p.into_inner()) = hash;
    }

    /// Whether an operator disabled the account.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }
}

/// Every account, by name key and by id.
#[derive(Debug, Default)]
pub struct Directory {
    inner: RwLock<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    by_key: HashMap<String, Arc<Account>>,
    by_id: HashMap<UserId, Arc<Account>>,
}

impl Directory {
    /// A directory holding `rows`.
    pub fn load(rows: Vec<UserRow>) -> Self {
        let dir = Directory::default();
        for row in rows {
            dir.insert(row);
        }
        dir
    }

    /// Adds an account.
    pub fn insert(&self, row: UserRow) -> Arc<Account> {
        let account = Arc::new(Account {
            id: row.id,
            name: row.name.as_str().into(),
            created_ms: row.created_ms,
            last_login_ms: AtomicI64::new(row.last_login_ms),
            password_hash: RwLock::new(row.password_hash),
            disabled: AtomicBool::new(row.disabled),
        });
        let mut maps = self.inner.write().unwrap_or_else(|p| p.into_inner());
        maps.by_key.insert(username_key(&row.name), account.clone());
        maps.by_id.insert(row.id, account.clone());
        account
    }

    /// Forgets the account `id` (deleted); its name may be registered again.
    pub fn remove(&self, id: UserId) {
        let mut maps = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(account) = maps.by_id.remove(&id) {
            maps.by_key.remove(&username_key(&account.name));
        }
    }

    /// The account named `name`, ignoring case.
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        let maps = self.inner.read().unwrap_or_else(|p| p.into_inner());
        maps.by_key.get(&username_key(name)).cloned()
    }

    /// The account with row id `id`.
    pub fn by_id(&self, id: UserId) -> Option<Arc<Account>> {
        let maps = self.inner.read().unwrap_or_else(|p| p.into_inner());
        maps.by_id.get(&id).cloned()
    }

    /// Every account.
    pub fn all(&self) -> Vec<Arc<Account>> {
        let maps = self.inner.read().unwrap_or_else(|p| p.into_inner());
        maps.by_id.values().cloned().collect()
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    /// Whether there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// argon2id hashing, bounded to one job per core so a login storm queues instead of eating
/// memory (each hash uses 19 MiB at the production cost).
#[derive(Debug)]
pub struct Hasher {
    params: Params,
    permits: Semaphore,
    /// A hash of a random password, verified against when the user does not exist so that
    /// unknown and known usernames take the same time.
    dummy: String,
}

impl Hasher {
    /// Production cost (argon2's OWASP defaults: 19 MiB, 2 passes) or, with `fast`, a cost for
    /// load tests only.
    pub fn new(fast: bool) -> Self {
        let params = if fast {
            Params::new(256, 1, 1, None).expect("valid argon2 params")
        } else {
            Params::default()
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut hasher = Hasher {
            params,
            permits: Semaphore::new(cores),
            dummy: String::new(),
        };
        hasher.dummy = hasher
            .hash_blocking(&Secret::new(format!("{:x}", rand::random::<u128>())))
            .expect("hashing a fresh password");
        hasher
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_blocking(&self, password: &Secret) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let hash = self
            .argon()
            .hash_password(password.expose().as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(hash.to_string())
    }

    /// Hashes `password` on a blocking thread.
    pub async fn hash(self: &Arc<Self>, password: Secret) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.hash_blocking(&password)).await?
    }

    /// Checks `password` against `account`'s hash (or the dummy hash when there is no account)
    /// on a blocking thread.
    pub async fn verify(self: &Arc<Self>, account: Option<Arc<Account>>, password: Secret) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let hash = account
                .as_ref()
                .map_or_else(|| this.dummy.clone(), |a| a.password_hash());
            let ok = PasswordHash::new(&hash).is_ok_and(|parsed| {
                // Verify with the parameters stored in the hash, whatever today's cost is.
                Argon2::default()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok()
            });
            ok && account.is_some()
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = Arc::new(Hasher::new(true));
        let hash = h.hash(Secret::new("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let dir = Directory::load(vec![UserRow {
            id: 1,
            name: "Alice".into(),
            password_hash: hash,
            created_ms: 0,
            last_login_ms: 0,
            disabled: false,
        }]);
        let alice = dir.get("alice");
        assert!(alice.is_some());
        assert!(h.verify(alice.clone(), Secret::new("correct horse")).await);
        assert!(!h.verify(alice, Secret::new("wrong horse")).await);
        assert!(!h.verify(None, Secret::new("correct horse")).await);
    }
}
