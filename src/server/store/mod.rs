//! Durable storage behind a trait: accounts, blocks and the per-user inbox of unacknowledged
//! direct messages.
//!
//! The trait is synchronous on purpose. All writes go through one writer thread
//! ([`crate::server::writer`]) that hands the store a batch of operations to apply in one
//! transaction (group commit); reads are rare (start-up, replay, admin) and run on
//! `spawn_blocking`. SQLite ([`sqlite::SqliteStore`]) is the embedded default;
//! [`postgres::PostgresStore`] keeps the same data in PostgreSQL, for several nodes.

mod pg_batch;
pub mod pg_claim;
mod pg_conn;
pub mod pg_directory;
mod pg_schema;
pub mod postgres;
pub mod sqlite;

pub use sqlite::{check, salvage, wal};

/// The disk holding the store is full: nothing of the failed batch was committed, and a later
/// write may succeed once space is freed. A store returns it (through `anyhow`) so the server
/// can tell the client, and the client can retry.
#[derive(Debug, thiserror::Error)]
#[error("the disk holding the database is full")]
pub struct DiskFull;

use std::sync::Arc;

/// The store cannot be reached right now (PostgreSQL is down or unreachable): nothing was
/// written. Requests fail with `UNAVAILABLE`; the store reconnects by itself on a later call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the database cannot be reached: {0}")]
pub struct Unavailable(pub String);

/// Opens the store `url` names (`postgres://…`), or with `None` the SQLite file `sqlite_path`.
///
/// # Errors
/// As [`postgres::PostgresStore::open`] and [`sqlite::SqliteStore::open`].
pub fn open(url: Option<&str>, sqlite_path: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match url {
        Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
            anyhow::bail!(
                "--store takes a postgres:// URL; leave it out to keep the data in SQLite in \
                 --data-dir"
            )
        }
        Some(url) => Arc::new(postgres::PostgresStore::open(url)?),
        None => Arc::new(sqlite::SqliteStore::open(sqlite_path)?),
    })
}

/// A user's row id.
pub type UserId = i64;

/// An account as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Row id.
    pub id: UserId,
    /// The name as registered.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last successful login, Unix ms (0: never).
    pub last_login_ms: i64,
    /// An operator disabled the account: it cannot log in until enabled again.
    pub disabled: bool,
}

/// A stored direct message.
#[derive(Debug, Clone)]
pub struct InboxRow {
    /// Per-recipient sequence number.
    pub seq: u64,
    /// Sender's name as registered.
    pub sender: String,
    /// Sender's message id.
    pub message_id: String,
    /// UTF-8 body.
    pub body: String,
    /// Send time, Unix ms.
    pub sent_ms: i64,
}

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Creates an account unless the name key is taken.
    CreateUser {
        /// As registered.
        name: String,
        /// Lowercase uniqueness key.
        name_key: String,
        /// PHC string.
        password_hash: String,
        /// Unix ms.
        created_ms: i64,
    },
    /// Appends a message to `recipient`'s inbox unless it is full or holds the same
    /// `(sender, message_id)` already.
    Append {
        /// Recipient.
        recipient: UserId,
        /// Sender.
        sender: UserId,
        /// Sender's id for the message.
        message_id: String,
        /// Body.
        body: String,
        /// Unix ms.
        sent_ms: i64,
        /// The inbox limit.
        max_inbox: u64,
    },
    /// Deletes `user`'s messages with `seq <= upto`.
    Ack {
        /// Whose inbox.
        user: UserId,
        /// Highest acknowledged seq.
        upto: u64,
    },
    /// Stores that `blocker` blocks `blocked`.
    Block {
        /// Who blocks.
        blocker: UserId,
        /// Who is blocked.
        blocked: UserId,
    },
    /// Removes a block.
    Unblock {
        /// Who blocked.
        blocker: UserId,
        /// Who was blocked.
        blocked: UserId,
    },
    /// Records a successful login.
    LastLogin {
        /// Who.
        user: UserId,
        /// Unix ms.
        at_ms: i64,
    },
    /// Replaces `user`'s password hash (an operator's reset or the user's own change).
    SetPassword {
        /// Whose.
        user: UserId,
        /// The new PHC string.
        password_hash: String,
    },
    /// Disables or enables `user`'s account ([`UserRow::disabled`]).
    SetDisabled {
        /// Whose.
        user: UserId,
        /// `true` disables.
        disabled: bool,
    },
    /// Deletes `user`: their inbox and every block they made or received go at once, the
    /// account leaves [`Store::users`] and its name may be registered again. Messages the user
    /// sent that still wait in other inboxes stay there and keep the sender's name, so nobody
    /// loses what was already accepted. (SQLite keeps the row as a tombstone for that; another
    /// store may copy the name into the inbox instead.) Deleting an unknown id is a no-op.
    DeleteUser {
        /// Whom.
        user: UserId,
    },
    /// Stores a device ticket's hash for `user` (an existing hash is left alone), then forgets
    /// the user's oldest tickets beyond the newest `keep`.
    AddDeviceTicket {
        /// Whose.
        user: UserId,
        /// SHA-256 of the ticket; the ticket itself is never stored.
        hash: Vec<u8>,
        /// Unix ms.
        created_ms: i64,
        /// How many of the user's tickets to keep.
        keep: u32,
    },
    /// Forgets every device ticket of `user` (the operator's revocation).
    RevokeDeviceTickets {
        /// Whose.
        user: UserId,
    },
}

/// The result of one [`WriteOp`], in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The operation was applied (or was a no-op that needs no answer).
    Done,
    /// `CreateUser` succeeded with this id.
    Created(UserId),
    /// `CreateUser` found the name taken.
    NameTaken,
    /// `Append` stored the message (or found it stored already: `duplicate`).
    Appended {
        /// The message's seq in the recipient's inbox.
        seq: u64,
        /// The `(sender, message_id)` was already in the inbox.
        duplicate: bool,
    },
    /// `Append` found the inbox full.
    InboxFull,
    /// This operation failed; the others in the batch were still committed.
    Failed(String),
}

/// A count or client-supplied position as the engines' signed 64-bit integer: beyond its range
/// means "no limit" or "everything", which `i64::MAX` says as well (a plain cast would wrap to -1
/// and mean "nothing").
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Durable storage. Implementations must be safe to call from any thread.
pub trait Store: Send + Sync + 'static {
    /// Every account.
    fn users(&self) -> anyhow::Result<Vec<UserRow>>;
    /// Every block, as `(blocker, blocked)`.
    fn blocks(&self) -> anyhow::Result<Vec<(UserId, UserId)>>;
    /// Up to `limit` of `user`'s messages with `seq > after`, oldest first.
    fn inbox_page(&self, user: UserId, after: u64, limit: usize) -> anyhow::Result<Vec<InboxRow>>;
    /// Number of unacknowledged messages per user that has any.
    fn inbox_counts(&self) -> anyhow::Result<Vec<(UserId, u64)>>;
    /// The user a device ticket with this hash belongs to, if it is stored.
    fn device_ticket_owner(&self, hash: &[u8]) -> anyhow::Result<Option<UserId>>;
    /// Applies `ops` in one transaction and returns one outcome per op. Only the writer thread
    /// calls this. An `Err` means nothing was committed.
    /// An `Err` that is a [`DiskFull`] means the disk is full.
    fn write_batch(&self, ops: &[WriteOp]) -> anyhow::Result<Vec<WriteOutcome>>;
    /// Leaves the files tidy at a clean stop (SQLite: the WAL copied back and truncated). Writes
    /// after it still work. The default does nothing.
    fn close(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
