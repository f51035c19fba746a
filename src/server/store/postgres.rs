//! The PostgreSQL store (`confab serve --store postgres://…`): the same [`Store`] as SQLite,
//! correct when several nodes write to one database (SPEC §12).
//!
//! One connection writes (only the writer thread calls [`Store::write_batch`]; how a batch is
//! applied is in `store/pg_batch.rs`); reads take turns on a few connections of their own, so a
//! replay never waits behind a commit. Every connection reconnects on the call after it broke;
//! while PostgreSQL is unreachable, calls fail with [`super::Unavailable`]. The schema is
//! migrated at open (`store/pg_schema.rs`).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::Context;

use super::{
    InboxRow, Store, UserId, UserRow, WriteOp, WriteOutcome, pg_batch,
    pg_conn::{self, Conn, Runtime, with_session},
    pg_schema,
};

/// Connections for reads (replays at login, admin counts).
const READERS: usize = 4;

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    runtime: Runtime,
    writer: Arc<Conn>,
    readers: Arc<[Conn]>,
    next_reader: AtomicUsize,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and applies pending
    /// migrations.
    ///
    /// # Errors
    /// The URL is malformed, PostgreSQL cannot be reached, its schema is newer than this
    /// binary's, or a migration fails.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let config = pg_conn::parse(url)?;
        let place = pg_conn::describe(&config);
        let runtime = Runtime::start()?;
        let writer = Arc::new(Conn::new(config.clone()));
        let readers: Arc<[Conn]> = (0..READERS).map(|_| Conn::new(config.clone())).collect();
        let migrating = writer.clone();
        runtime
            .run(async move {
                with_session(&migrating, async |s| {
                    pg_schema::migrate(&mut s.client).await
                })
                .await
            })
            .with_context(|| format!("opening the store in {place}"))?;
        tracing::info!(store = %place, "using PostgreSQL");
        Ok(PostgresStore {
            runtime,
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on the next read connection.
    fn read<T: Send + 'static>(
        &self,
        sql: &'static str,
        f: impl FnOnce(Vec<tokio_postgres::Row>) -> anyhow::Result<T> + Send + 'static,
        params: Params,
    ) -> anyhow::Result<T> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        self.runtime.run(async move {
            let rows = with_session(&readers[i], async |s| {
                let stmt = s.prepare(sql).await?;
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &params {
                    Params::None => vec![],
                    Params::Page(user, after, limit) => vec![user, after, limit],
                    Params::Hash(hash) => vec![hash],
                };
                Ok(s.client.query(&stmt, &params).await?)
            })
            .await?;
            f(rows)
        })
    }
}

/// The parameters of a read.
enum Params {
    None,
    /// user, after, limit.
    Page(i64, i64, i64),
    /// A device ticket's hash.
    Hash(Vec<u8>),
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store for PostgresStore {
    fn users(&self) -> anyhow::Result<Vec<UserRow>> {
        self.read(
            "SELECT id, name, password_hash, created_ms, last_login_ms, disabled FROM users
             WHERE NOT deleted ORDER BY id",
            |rows| {
                Ok(rows
                    .iter()
                    .map(|r| UserRow {
                        id: r.get(0),
                        name: r.get(1),
                        password_hash: r.get(2),
                        created_ms: r.get(3),
                        last_login_ms: r.get(4),
                        disabled: r.get(5),
                    })
                    .collect())
            },
            Params::None,
        )
    }

    fn blocks(&self) -> anyhow::Result<Vec<(UserId, UserId)>> {
        self.read(
            "SELECT blocker, blocked FROM blocks",
            |rows| Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect()),
            Params::None,
        )
    }

    fn device_ticket_owner(&self, hash: &[u8]) -> anyhow::Result<Option<UserId>> {
        self.read(
            "SELECT user_id FROM device_tickets WHERE hash = $1",
            |rows| Ok(rows.first().map(|r| r.get(0))),
            Params::Hash(hash.to_vec()),
        )
    }

    fn inbox_page(&self, user: UserId, after: u64, limit: usize) -> anyhow::Result<Vec<InboxRow>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(
            "SELECT i.seq, u.name, i.message_id, i.body, i.sent_ms
             FROM inbox i JOIN users u ON u.id = i.sender
             WHERE i.recipient = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3",
            |rows| {
                rows.iter()
                    .map(|r| {
                        Ok(InboxRow {
                            seq: count(r.get(0)),
                            sender: r.get(1),
                            message_id: String::from_utf8(r.get(2))
                                .context("a stored message id is not UTF-8")?,
                            body: String::from_utf8(r.get(3))
                                .context("a stored message body is not UTF-8")?,
                            sent_ms: r.get(4),
                        })
                    })
                    .collect()
            },
            Params::Page(user, after, limit),
        )
    }

    fn inbox_counts(&self) -> anyhow::Result<Vec<(UserId, u64)>> {
        self.read(
            "SELECT id, inbox_count FROM users WHERE inbox_count > 0",
            |rows| Ok(rows.iter().map(|r| (r.get(0), count(r.get(1)))).collect()),
            Params::None,
        )
    }

    fn write_batch(&self, ops: &[WriteOp]) -> anyhow::Result<Vec<WriteOutcome>> {
        // Owned, to move to the store's runtime.
        let ops = ops.to_vec();
        let writer = self.writer.clone();
        self.runtime.run(async move {
            with_session(&writer, async |s| pg_batch::write(s, &ops).await).await
        })
    }
}
