//! The embedded store: one SQLite file in WAL mode with `synchronous=NORMAL`, which survives the
//! server process dying (SPEC §4). One connection writes (used only by the writer thread); reads
//! use a second connection so a replay never waits behind a commit.
//!
//! Checkpoints (copying the WAL back into the database, with the fsyncs that takes) run on a
//! thread of their own, so the writer never stalls behind one: with automatic checkpoints, every
//! few thousand commits one commit waited several milliseconds for the disk. The WAL is kept
//! small: once it passes 16 MiB (`WAL_TRUNCATE_PAGES`) the checkpointer waits for a gap between commits
//! to finish and truncate it, `journal_size_limit` trims it whenever it starts over, and
//! [`Store::close`] truncates it at a clean stop.
//!
//! Before anything is served, [`super::check`] refuses a log, schema or database that cannot be
//! trusted.
//!
//! Each user's inbox counters (`last_seq`, `inbox_count`) are kept in memory beside the writer
//! connection, so an append is one `INSERT`: no counter row is rewritten per message (every page
//! a commit touches is a page written to the WAL). `users.last_seq` is written when messages are
//! acknowledged, which keeps it at least as high as any deleted seq; at start the counters are
//! rebuilt from it and the inbox itself, so seqs are never reused.

use std::{collections::HashMap, path::Path, sync::Mutex, time::Duration};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};

use super::{DiskFull, InboxRow, Store, UserId, UserRow, WriteOp, WriteOutcome, check};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, blocks, inbox.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_login_ms INTEGER NOT NULL DEFAULT 0,
        -- Highest seq ever given to this user's inbox; seqs are never reused.
        last_seq INTEGER NOT NULL DEFAULT 0,
        inbox_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE blocks (
        blocker INTEGER NOT NULL REFERENCES users(id),
        blocked INTEGER NOT NULL REFERENCES users(id),
        PRIMARY KEY (blocker, blocked)
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        recipient INTEGER NOT NULL REFERENCES users(id),
        seq INTEGER NOT NULL,
        sender INTEGER NOT NULL REFERENCES users(id),
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_ms INTEGER NOT NULL,
        PRIMARY KEY (recipient, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX inbox_dedupe ON inbox (recipient, sender, message_id);",
    // 2: operators disable and delete accounts. A deleted account stays as a tombstone (its
    // name_key freed) while messages it sent wait in other inboxes, which name their sender.
    "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;",
];

/// The schema version this binary writes: a database with a higher `user_version` comes from a
/// newer confab and is refused.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

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
    /// Dropping it stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// Page size of a new database, in bytes.
const PAGE_SIZE: i64 = 4096;
/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// WAL pages (of [`PAGE_SIZE`]) above which the checkpointer also waits for a gap between the
/// writer's commits to finish the checkpoint and truncate the log (16 MiB), so a busy server's
/// WAL cannot grow without bound.
const WAL_TRUNCATE_PAGES: i64 = 4096;
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

/// The writer connection and the inbox counters it keeps current.
struct Writer {
    conn: Connection,
    /// user → (highest seq ever given, messages stored now), as committed.
    inboxes: HashMap<UserId, Counters>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    last_seq: u64,
    count: u64,
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
    /// The file cannot be opened, it fails a check of [`super::check`] (the message says what
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
        let inboxes = {
            let mut stmt = writer.prepare(
                "SELECT u.id, MAX(u.last_seq, COALESCE(MAX(i.seq), 0)), COUNT(i.seq)
                 FROM users u LEFT JOIN inbox i ON i.recipient = u.id GROUP BY u.id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, UserId>(0)?,
                    Counters {
                        last_seq: r.get::<_, i64>(1)? as u64,
                        count: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })?;
            rows.collect::<Result<HashMap<_, _>, _>>()?
        };
        let reader = Connection::open(path)?;
        tune(&reader)?;
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("confab-checkpoint".into())
            .spawn(move || checkpointer(&checkpoints, &stopped))?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn: writer,
                inboxes,
            }),
            reader: Mutex::new(reader),
            _checkpointer: stop,
        })
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checkpoints every [`CHECKPOINT_EVERY`] until the store is dropped, and once more then.
fn checkpointer(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(RecvTimeoutError::Disconnected)
        );
        // PASSIVE never blocks the writer; TRUNCATE (only for a long log, after PASSIVE copied
        // most of it) waits for a gap between its commits so the log can start over, empty.
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match passive {
            Ok((log, _)) if log > WAL_TRUNCATE_PAGES || last => {
                if let Err(e) = truncate_wal(conn) {
                    tracing::warn!("WAL truncating checkpoint failed: {e:#}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
        }
        if last {
            return;
        }
    }
}

/// Copies the whole WAL into the database and truncates it to nothing.
fn truncate_wal(conn: &Connection) -> anyhow::Result<()> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        anyhow::bail!("the WAL was busy; it is truncated at a later checkpoint");
    }
    Ok(())
}

/// Whether `e` (from rusqlite, through anyhow) is SQLite's `SQLITE_FULL`.
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        == Some(rusqlite::ErrorCode::DiskFull)
}

/// Applies pending migrations.
pub(super) fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
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

    fn inbox_counts(&self) -> anyhow::Result<Vec<(UserId, u64)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT recipient, COUNT(*) FROM inbox GROUP BY recipient")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write_batch(&self, ops: &[WriteOp]) -> anyhow::Result<Vec<WriteOutcome>> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Writer { conn, inboxes } = &mut *guard;
        // Counters as they were before this batch, to restore if the commit fails.
        let mut before: HashMap<UserId, Option<Counters>> = HashMap::new();
        let result = (|| -> anyhow::Result<Vec<WriteOutcome>> {
            let tx = conn.transaction()?;
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                // One failing op must not undo the others that share the commit, but a full disk
                // fails the batch: nothing in it can be trusted to be stored.
                let outcome = match apply(&tx, inboxes, &mut before, op) {
                    Ok(outcome) => outcome,
                    Err(e) if is_disk_full(&e) => return Err(e),
                    Err(e) => WriteOutcome::Failed(format!("{e:#}")),
                };
                out.push(outcome);
            }
            tx.commit()?;
            Ok(out)
        })();
        result.map_err(|e| {
            for (user, counters) in before {
                match counters {
                    Some(c) => inboxes.insert(user, c),
                    None => inboxes.remove(&user),
                };
            }
            if is_disk_full(&e) { DiskFull.into() } else { e }
        })
    }

    fn close(&self) -> anyhow::Result<()> {
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        truncate_wal(&guard.conn)
    }
}

/// The counters of `user`, remembering their value before the batch.
fn counters<'a>(
    inboxes: &'a mut HashMap<UserId, Counters>,
    before: &mut HashMap<UserId, Option<Counters>>,
    user: UserId,
) -> &'a mut Counters {
    before
        .entry(user)
        .or_insert_with(|| inboxes.get(&user).copied());
    inboxes.entry(user).or_default()
}

fn apply(
    tx: &rusqlite::Transaction<'_>,
    inboxes: &mut HashMap<UserId, Counters>,
    before: &mut HashMap<UserId, Option<Counters>>,
    op: &WriteOp,
) -> anyhow::Result<WriteOutcome> {
    Ok(match op {
        WriteOp::CreateUser {
            name,
            name_key,
            password_hash,
            created_ms,
        } => {
            let id: Option<UserId> = tx
                .prepare_cached(
                    "INSERT INTO users (name, name_key, password_hash, created_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name_key) DO NOTHING RETURNING id",
                )?
                .query_row(params![name, name_key, password_hash, created_ms], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = id {
                counters(inboxes, before, id);
            }
            id.map_or(WriteOutcome::NameTaken, WriteOutcome::Created)
        }
        WriteOp::Append {
            recipient,
            sender,
            message_id,
            body,
            sent_ms,
            max_inbox,
        } => {
            let c = *counters(inboxes, before, *recipient);
            if c.count >= *max_inbox {
                // A resend of a stored message is still a duplicate, not a refusal.
                return Ok(existing_seq(tx, *recipient, *sender, message_id)?.map_or(
                    WriteOutcome::InboxFull,
                    |seq| WriteOutcome::Appended {
                        seq,
                        duplicate: true,
                    },
                ));
            }
            let seq = c.last_seq + 1;
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO inbox (recipient, seq, sender, message_id, body, sent_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![recipient, seq as i64, sender, message_id, body, sent_ms])?;
            if inserted == 0 {
                // Only the dedupe index can conflict: seq is new.
                let seq = existing_seq(tx, *recipient, *sender, message_id)?
                    .ok_or_else(|| anyhow::anyhow!("inbox insert ignored without a duplicate"))?;
                return Ok(WriteOutcome::Appended {
                    seq,
                    duplicate: true,
                });
            }
            let c = counters(inboxes, before, *recipient);
            c.last_seq = seq;
            c.count += 1;
            WriteOutcome::Appended {
                seq,
                duplicate: false,
            }
        }
        WriteOp::Ack { user, upto } => {
            let removed = tx
                .prepare_cached("DELETE FROM inbox WHERE recipient = ?1 AND seq <= ?2")?
                .execute(params![user, int(*upto)])?;
            if removed > 0 {
                let c = counters(inboxes, before, *user);
                c.count = c.count.saturating_sub(removed as u64);
                // The deleted seqs must never be given out again, even if the inbox is now empty.
                tx.prepare_cached(
                    "UPDATE users SET last_seq = ?2, inbox_count = ?3 WHERE id = ?1",
                )?
                .execute(params![user, c.last_seq as i64, c.count as i64])?;
            }
            WriteOutcome::Done
        }
        WriteOp::Block { blocker, blocked } => {
            tx.prepare_cached("INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?1, ?2)")?
                .execute(params![blocker, blocked])?;
            WriteOutcome::Done
        }
        WriteOp::Unblock { blocker, blocked } => {
            tx.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
                .execute(params![blocker, blocked])?;
            WriteOutcome::Done
        }
        WriteOp::LastLogin { user, at_ms } => {
            tx.prepare_cached("UPDATE users SET last_login_ms = ?2 WHERE id = ?1")?
                .execute(params![user, at_ms])?;
            WriteOutcome::Done
        }
        WriteOp::SetPassword {
            user,
            password_hash,
        } => {
            tx.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![user, password_hash])?;
            WriteOutcome::Done
        }
        WriteOp::SetDisabled { user, disabled } => {
            tx.prepare_cached("UPDATE users SET disabled = ?2 WHERE id = ?1")?
                .execute(params![user, disabled])?;
            WriteOutcome::Done
        }
        WriteOp::DeleteUser { user } => {
            counters(inboxes, before, *user);
            tx.prepare_cached("DELETE FROM inbox WHERE recipient = ?1")?
                .execute(params![user])?;
            tx.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 OR blocked = ?1")?
                .execute(params![user])?;
            // A tombstone: no password, a name key nobody can type (usernames have no `/`).
            tx.prepare_cached(
                "UPDATE users SET deleted = 1, password_hash = '', inbox_count = 0,
                 name_key = 'deleted/' || id WHERE id = ?1",
            )?
            .execute(params![user])?;
            inboxes.remove(user);
            WriteOutcome::Done
        }
    })
}

/// A client-supplied position as SQLite's `INTEGER`: beyond its range means "everything", which
/// `i64::MAX` says as well (a plain cast would wrap to -1 and mean "nothing").
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn existing_seq(
    tx: &rusqlite::Transaction<'_>,
    recipient: UserId,
    sender: UserId,
    message_id: &str,
) -> anyhow::Result<Option<u64>> {
    Ok(tx
        .prepare_cached(
            "SELECT seq FROM inbox WHERE recipient = ?1 AND sender = ?2 AND message_id = ?3",
        )?
        .query_row(params![recipient, sender, message_id], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(|s| s as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(store: &SqliteStore, name: &str) -> UserId {
        let out = store
            .write_batch(&[WriteOp::CreateUser {
                name: name.into(),
                name_key: name.to_ascii_lowercase(),
                password_hash: "x".into(),
                created_ms: 1,
            }])
            .unwrap();
        match out[0] {
            WriteOutcome::Created(id) => id,
            ref other => panic!("{other:?}"),
        }
    }

    fn append(store: &SqliteStore, to: UserId, from: UserId, id: &str, max: u64) -> WriteOutcome {
        store
            .write_batch(&[WriteOp::Append {
                recipient: to,
                sender: from,
                message_id: id.into(),
                body: "b".into(),
                sent_ms: 2,
                max_inbox: max,
            }])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn inbox_seqs_dedupe_limits_and_acks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let (a, b) = (user(&store, "alice"), user(&store, "bob"));
        let dup = store
            .write_batch(&[WriteOp::CreateUser {
                name: "Bob".into(),
                name_key: "bob".into(),
                password_hash: "x".into(),
                created_ms: 1,
            }])
            .unwrap();
        assert_eq!(dup, vec![WriteOutcome::NameTaken]);

        assert_eq!(
            append(&store, b, a, "m1", 2),
            WriteOutcome::Appended {
                seq: 1,
                duplicate: false
            }
        );
        assert_eq!(
            append(&store, b, a, "m1", 2),
            WriteOutcome::Appended {
                seq: 1,
                duplicate: true
            }
        );
        assert_eq!(
            append(&store, b, a, "m2", 2),
            WriteOutcome::Appended {
                seq: 2,
                duplicate: false
            }
        );
        assert_eq!(append(&store, b, a, "m3", 2), WriteOutcome::InboxFull);
        // A resend into a full inbox is still recognised as a duplicate.
        assert_eq!(
            append(&store, b, a, "m1", 2),
            WriteOutcome::Appended {
                seq: 1,
                duplicate: true
            }
        );
        assert_eq!(store.inbox_page(b, 0, 10).unwrap().len(), 2);

        store
            .write_batch(&[WriteOp::Ack { user: b, upto: 1 }])
            .unwrap();
        let left = store.inbox_page(b, 0, 10).unwrap();
        assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(left[0].sender, "alice");
        // Seqs are never reused after an ack.
        assert_eq!(
            append(&store, b, a, "m3", 2),
            WriteOutcome::Appended {
                seq: 3,
                duplicate: false
            }
        );
        drop(store);
        let reopened = SqliteStore::open(&dir.path().join("db")).unwrap();
        assert_eq!(reopened.inbox_counts().unwrap(), vec![(b, 2)]);
        // Acknowledge everything: after a restart the next seq still follows the last one.
        reopened
            .write_batch(&[WriteOp::Ack { user: b, upto: 3 }])
            .unwrap();
        drop(reopened);
        let reopened = SqliteStore::open(&dir.path().join("db")).unwrap();
        assert!(reopened.inbox_counts().unwrap().is_empty());
        assert_eq!(
            append(&reopened, b, a, "m4", 2),
            WriteOutcome::Appended {
                seq: 4,
                duplicate: false
            }
        );
    }

    #[test]
    fn a_full_disk_fails_the_whole_batch_and_writes_resume_when_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let (a, b) = (user(&store, "alice"), user(&store, "bob"));
        let set_room = |pages: i64| {
            let w = store.writer.lock().unwrap();
            let used: i64 = w
                .conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            w.conn
                .pragma_update(None, "max_page_count", used + pages)
                .unwrap();
        };
        // SQLite's max_page_count yields the same SQLITE_FULL as a full file system.
        set_room(2);
        let big = |id: u32| WriteOp::Append {
            recipient: b,
            sender: a,
            message_id: format!("m{id}"),
            body: "x".repeat(3000),
            sent_ms: 1,
            max_inbox: 1000,
        };
        let mut stored = 0;
        let err = loop {
            match store.write_batch(&[big(stored)]) {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
            assert!(stored < 100, "the page limit never bit");
        };
        assert!(err.is::<DiskFull>(), "{err:#}");
        // A batch with a small op before the one that does not fit: none of it is committed.
        let batch = [
            WriteOp::Block {
                blocker: a,
                blocked: b,
            },
            big(500),
        ];
        assert!(store.write_batch(&batch).unwrap_err().is::<DiskFull>());
        assert!(store.blocks().unwrap().is_empty());
        assert_eq!(store.inbox_counts().unwrap(), vec![(b, stored as u64)]);
        set_room(1000);
        let after = store.write_batch(&[big(501)]).unwrap();
        assert_eq!(
            after,
            vec![WriteOutcome::Appended {
                seq: stored as u64 + 1,
                duplicate: false
            }],
            "the counters were restored: no seq was skipped"
        );
    }
}
