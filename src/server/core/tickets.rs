//! SPEC §2: device tickets, so the lockout cannot be turned against an account's owner (OWASP's
//! "device cookies"). A successful login hands the client a random ticket; a later login that
//! presents a valid ticket of that user is judged by the failures made *with that ticket* only,
//! so strangers typing wrong passwords for the name lock out strangers, not the owner's device.
//! A ticket is no password: the password is still checked every time. A stolen ticket buys
//! nothing but its own three guesses per lockout period.
//!
//! Only a ticket's SHA-256 is stored (a database leak yields no usable ticket), in the store, so
//! every node of a cluster honours it and a restart keeps it; an operator revokes a user's
//! tickets with `Admin/RevokeDeviceTickets`.

use std::sync::atomic::{AtomicI64, Ordering};

use sha2::{Digest as _, Sha256};

use super::Core;
use crate::{
    now_ms,
    server::{
        accounts::Account,
        error::{Error, Result},
        store::WriteOp,
    },
    types::{MAX_DEVICE_TICKET_BYTES, Secret, username_key},
};

/// How a login is judged for the lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Device {
    /// No valid ticket: the account's shared count.
    Unknown,
    /// A valid ticket of this user: a count of its own, keyed by the ticket's hash.
    Trusted {
        /// The lockout key for this device.
        key: String,
        /// The ticket presented, handed back at success.
        ticket: Secret,
    },
}

impl Device {
    /// The lockout key: the account's (`name_key`) or this device's.
    pub(super) fn lock_key<'a>(&'a self, name_key: &'a str) -> &'a str {
        match self {
            Device::Unknown => name_key,
            Device::Trusted { key, .. } => key,
        }
    }
}

fn hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// A ticket longer than any this server hands out is a malformed request, not an unknown device.
pub(super) fn check_ticket(ticket: &str) -> Result<()> {
    if ticket.len() > MAX_DEVICE_TICKET_BYTES {
        return Err(Error::invalid(
            "device_ticket",
            format!("a device ticket has at most {MAX_DEVICE_TICKET_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The creation time stored with a new ticket: the clock, but later than any ticket this
/// process stamped before, so "the oldest" is well defined for logins in the same millisecond.
fn creation_stamp() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .expect("the update always returns Some");
    now.max(previous + 1)
}

impl Core {
    /// Whether `ticket` is a valid ticket of `account`. Its length was checked by [`check_ticket`].
    pub(super) async fn device(&self, account: Option<&Account>, ticket: &str) -> Result<Device> {
        let Some(account) = account else {
            return Ok(Device::Unknown);
        };
        if ticket.is_empty() {
            return Ok(Device::Unknown);
        }
        let hashed = hash(ticket);
        let store = self.store.clone();
        let lookup = hashed.clone();
        let owner = tokio::task::spawn_blocking(move || store.device_ticket_owner(&lookup))
            .await
            .map_err(|e| Error::Internal(e.into()))?
            .map_err(Error::from)?;
        if owner != Some(account.id) {
            return Ok(Device::Unknown);
        }
        let hex: String = hashed[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Device::Trusted {
            // A `#` cannot occur in a username key: no account's key collides with a device's.
            // (Not a NUL: on a cluster the key is PostgreSQL `text`, which refuses NUL.)
            key: format!("{}#{hex}", username_key(&account.name)),
            ticket: Secret::new(ticket),
        })
    }

    /// The ticket to hand back after a successful login: the valid one presented, or a new one
    /// (stored before it is handed out). Empty if storing failed: the login stands, the device
    /// is simply not trusted yet.
    pub(super) async fn ticket_for(&self, account: &Account, device: Device) -> String {
        if let Device::Trusted { ticket, .. } = device {
            return ticket.expose().to_owned();
        }
        let ticket = format!("{:032x}", rand::random::<u128>());
        let write = self.writer.write(WriteOp::AddDeviceTicket {
            user: account.id,
            hash: hash(&ticket),
            created_ms: creation_stamp(),
            keep: self.config.device_tickets,
        });
        match write.await {
            Ok(_) => ticket,
            Err(e) => {
                tracing::warn!(user = %account.name, "no device ticket stored: {e}");
                String::new()
            }
        }
    }

    /// Forgets every device ticket of `name` (the operator's revocation).
    pub async fn revoke_device_tickets(&self, name: &str) -> Result<()> {
        let account = self.account(name)?;
        self.writer
            .write(WriteOp::RevokeDeviceTickets { user: account.id })
            .await?;
        tracing::info!(user = %account.name, "device tickets revoked by the operator");
        Ok(())
    }
}
