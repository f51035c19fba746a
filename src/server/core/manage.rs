//! SPEC §14: accounts for operators (disable, enable, delete, set a password) and the user's
//! own password change.
//!
//! Each change is committed through the writer before the in-memory directory follows, and a
//! change that shuts somebody out (disable, delete) ends their live session through
//! [`Core::end_session`], like a kick, so no stream outlives its account.

use std::sync::{Arc, atomic::Ordering};

use super::{Core, EndReason, Session, login::check_password};
use crate::{
    server::{
        accounts::Account,
        cluster::bus::{AccountChange, Kind},
        error::{Error, Result},
        store::WriteOp,
    },
    types::Secret,
};

impl Core {
    /// Disables (`disabled`) or enables `name`'s account. Returns whether a live session was
    /// ended.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let account = self.account(name)?;
        self.writer
            .write(WriteOp::SetDisabled {
                user: account.id,
                disabled,
            })
            .await?;
        account.disabled.store(disabled, Ordering::Relaxed);
        self.publish(Kind::Account(AccountChange { user: account.id }));
        tracing::info!(user = %account.name, disabled, "account disabled or enabled by the operator");
        Ok(disabled && self.end_live(&account))
    }

    /// Deletes `name`'s account with its inbox and blocks; returns whether a live session was
    /// ended.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let account = self.account(name)?;
        // Out of the directory first, so no new login or message finds it while it goes.
        self.accounts.remove(account.id);
        let ended = self.end_live(&account);
        self.writer
            .write(WriteOp::DeleteUser { user: account.id })
            .await?;
        for blocked in self.blocks.blocked_by_user(account.id) {
            self.blocks.remove(account.id, blocked);
        }
        for blocker in self.blocks.blockers_of(account.id) {
            self.blocks.remove(blocker, account.id);
        }
        self.publish(Kind::Account(AccountChange { user: account.id }));
        tracing::info!(user = %account.name, "account deleted by the operator");
        Ok(ended)
    }

    /// Sets `name`'s password (the operator's reset). The user's live session goes on.
    pub async fn set_password(&self, name: &str, password: Secret) -> Result<()> {
        let account = self.account(name)?;
        self.store_password(&account, password).await?;
        tracing::info!(user = %account.name, "password set by the operator");
        Ok(())
    }

    /// Changes the caller's own password, given the current one.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` on `old_password` when it is not the current password (without
    /// counting towards a lockout: the caller is logged in already), or on `new_password` when
    /// it breaks the password rules.
    pub async fn change_password(&self, me: &Session, old: Secret, new: Secret) -> Result<()> {
        let account = self.account(me.name())?;
        check_password(&new).map_err(|e| match e {
            Error::Invalid { message, .. } => Error::invalid("new_password", message),
            other => other,
        })?;
        if !self.hasher.verify(Some(account.clone()), old).await {
            return Err(Error::invalid(
                "old_password",
                "that is not your current password",
            ));
        }
        self.store_password(&account, new).await?;
        tracing::info!(user = %account.name, "password changed by its owner");
        Ok(())
    }

    async fn store_password(&self, account: &Arc<Account>, password: Secret) -> Result<()> {
        check_password(&password)?;
        let password_hash = self.hasher.hash(password).await?;
        self.writer
            .write(WriteOp::SetPassword {
                user: account.id,
                password_hash: password_hash.clone(),
            })
            .await?;
        account.set_password_hash(password_hash);
        self.publish(Kind::Account(AccountChange { user: account.id }));
        Ok(())
    }

    /// Ends `account`'s live session, if any, as a kick.
    fn end_live(&self, account: &Account) -> bool {
        self.sessions
            .by_user(account.id)
            .is_some_and(|s| self.end_session(&s, EndReason::Kicked))
    }
}
