//! The embedded store: one SQLite file in WAL mode with `synchronous=NORMAL`, which survives the
//! server process dying (SPEC §4). One connection writes (used only by the writer thread); reads
//! use a second connection so a replay never waits behind a commit.
//!
//! Checkpoints (copying the WAL back into the database, with the fsyncs that takes) run on a
//! thread of their own, so the writer does not stall behind one: with automatic checkpoints,
//! every few thousand commits one commit waited several milliseconds for the disk. The WAL is
//! kept small: once it passes 16 MiB the writer copies the little that thread left, between two
//! batches, so that the log starts over (the `checkpoint` module says why the writer);
//! `journal_size_limit` trims the file then, and [`Store::close`] truncates it at a clean stop.
//!
//! Before anything is served, [`check`] refuses a log, schema or database that cannot be
//! trusted.
//!
//! Each user's inbox counters (`last_seq`, `inbox_count`) are kept in memory beside the writer
//! connection, so an append is one `INSERT`: no counter row is rewritten per message (every page
//! a commit touches is a page written to the WAL). `users.last_seq` is written when messages are
//! acknowledged, which keeps it at least as high as any deleted seq; at start the counters are
//! rebuilt from it and the inbox itself, so seqs are never reused.

use std::{
    path::Path,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{InboxRow, Store, UserId, UserRow, WriteOp, WriteOutcome, int};

mod apply;
pub mod check;
mod checkpoint;
mod dedupe;
pub mod salvage;
mod schema;
#[cfg(test)]
mod tests;
pub mod wal;

use apply::Writer;
use checkpoint::{checkpointer, finish_checkpoint};
pub use schema::SCHEMA_VERSION;
use schema::migrate;

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sync {
    /// `synchronous=NORMAL`: a commit survives the process dying; a power cut can lose the last
    /// commits (the WAL is synced only at checkpoints).
    #[default]
    Normal,
    /// `synchronous=FULL`: every group commit is synced to disk before it is acknowledged, so it
    /// survives a power cut too.
    Full,
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    /// The checkpointer thread, and the sender whose drop tells it to make its last checkpoint
    /// (truncating the log) and stop. Closing or dropping the store waits for it, so a closed
    /// store leaves no thread touching its files, and a clean stop a truncated log.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Set by the checkpointer when the log is long; the writer then starts it over.
    long_log: Arc<AtomicBool>,
}

/// The checkpointer thread and the sender whose drop stops it.
type Checkpointer = (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<anyhow::Result<()>>,
);

impl SqliteStore {
    /// Stops the checkpointer thread and returns how its last checkpoint, the truncation, went.
    /// The truncation is the thread's, not another connection's: a checkpoint of its own running
    /// at the same time made the one at a clean stop fail as busy.
    fn stop_checkpointer(&self) -> anyhow::Result<()> {
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some((stop, thread)) = checkpointer else {
            return Ok(());
        };
        drop(stop);
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the checkpointer thread panicked"))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Err(e) = self.stop_checkpointer() {
            tracing::warn!("the last WAL checkpoint failed: {e:#}");
        }
    }
}

/// Page size of a new database, in bytes.
const PAGE_SIZE: i64 = 4096;
/// What SQLite trims the WAL file to whenever the log starts over.
const WAL_LIMIT_BYTES: i64 = 4 * 1024 * 1024;
/// Memory-mapped I/O for reads: replay and page lookups without a `pread` each.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;
/// Page cache per connection, in KiB (SQLite's negative-size convention).
const CACHE_KIB: i64 = 64 * 1024;

fn tune(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) `path` with `synchronous=NORMAL` and applies pending
    /// migrations.
    ///
    /// # Errors
    /// As [`SqliteStore::open_with`].
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, Sync::Normal)
    }

    /// Opens (creating if needed) `path`, checks it can be trusted, and applies pending
    /// migrations.
    ///
    /// # Errors
    /// The file cannot be opened, it fails a check of [`check`] (the message says what
    /// to do), or a migration fails.
    pub fn open_with(path: &Path, sync: Sync) -> anyhow::Result<Self> {
        check::before_open(path)?;
        let writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        check::after_open(&writer, path)?;
        // For a new database (no effect on an existing file). Measured: 1 KiB pages cut the
        // WAL written per commit and the latency tail, but cost ~6% more CPU per message at
        // saturation (deeper trees); 4 KiB keeps the CPU.
        writer.pragma_update(None, "page_size", PAGE_SIZE)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        let synchronous = match sync {
            Sync::Normal => "NORMAL",
            Sync::Full => "FULL",
        };
        writer.pragma_update(None, "synchronous", synchronous)?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
        tune(&writer)?;
        migrate(&writer)?;
        let reader = Connection::open(path)?;
        tune(&reader)?;
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(Duration::from_secs(5))?;
        let writer = Writer::new(writer)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let long_log = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("confab-checkpoint".into())
            .spawn({
                let long_log = Arc::clone(&long_log);
                let wal = wal::sibling(path, "-wal");
                move || checkpointer(&checkpoints, &wal, &stopped, &long_log)
            })?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            checkpointer: Mutex::new(Some((stop, thread))),
            long_log,
        })
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SqliteStore {
    fn users(&self) -> anyhow::Result<Vec<UserRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT id, name, password_hash, created_ms, last_login_ms, disabled FROM users
             WHERE deleted = 0 ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(UserRow {
                id: r.get(0)?,
                name: r.get(1)?,
                password_hash: r.get(2)?,
                created_ms: r.get(3)?,
                last_login_ms: r.get(4)?,
                disabled: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn blocks(&self) -> anyhow::Result<Vec<(UserId, UserId)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT blocker, blocked FROM blocks")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn inbox_page(&self, user: UserId, after: u64, limit: usize) -> anyhow::Result<Vec<InboxRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT i.seq, u.name, i.message_id, i.body, i.sent_ms
             FROM inbox i JOIN users u ON u.id = i.sender
             WHERE i.recipient = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![user, int(after), int(limit as u64)], |r| {
            Ok(InboxRow {
                seq: r.get::<_, i64>(0)? as u64,
                sender: r.get(1)?,
                message_id: r.get(2)?,
                body: r.get(3)?,
                sent_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn device_ticket_owner(&self, hash: &[u8]) -> anyhow::Result<Option<UserId>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT user_id FROM device_tickets WHERE hash = ?1")?;
        Ok(stmt.query_row(params![hash], |r| r.get(0)).optional()?)
    }

    /// From the writer's counters, as committed: no scan of the inbox (a scan cost start-up,
    /// every `/metrics` scrape and every `admin sessions` a pass over every stored message).
    fn inbox_counts(&self) -> anyhow::Result<Vec<(UserId, u64)>> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(writer.inbox_counts())
    }

    fn write_batch(&self, ops: &[WriteOp]) -> anyhow::Result<Vec<WriteOutcome>> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        finish_checkpoint(&writer.conn, &self.long_log);
        writer.write(ops)
    }

    fn close(&self) -> anyhow::Result<()> {
        // Held so no batch is written while the log is truncated.
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.stop_checkpointer()
    }
}
