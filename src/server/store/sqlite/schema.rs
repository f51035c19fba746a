//! The SQLite schema: its migrations and the version this binary writes.

use anyhow::Context;
use rusqlite::Connection;

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
    // 3: device tickets (SPEC §2): the hash of each ticket a successful login handed out.
    "CREATE TABLE device_tickets (
        hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX device_tickets_user ON device_tickets (user_id, created_ms);",
    // 4: the duplicate check moves into memory (`dedupe.rs`): the index cost each append a
    // second random leaf, a second page in the WAL.
    "DROP INDEX inbox_dedupe;",
];

/// The schema version this binary writes: a database with a higher `user_version` comes from a
/// newer confab and is refused.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What `sqlite_master` holds after the first `version` migrations, as
/// (type, name, table, SQL) rows in order: the schema a database of that version must have.
///
/// # Errors
/// SQLite failed on an in-memory database (out of memory).
pub(super) fn expected(version: usize) -> anyhow::Result<Vec<SchemaRow>> {
    let conn = Connection::open_in_memory()?;
    for sql in MIGRATIONS.iter().take(version) {
        conn.execute_batch(sql)?;
    }
    actual(&conn)
}

/// One object of `sqlite_master`: type, name, table, SQL.
pub(super) type SchemaRow = (String, String, String, Option<String>);

/// What `conn`'s `sqlite_master` holds, in the order [`expected`] gives, each statement
/// without its comments and with its spacing collapsed (SQLite keeps the text as written, and
/// editing a comment in a migration must not make older databases look foreign). SQLite's own
/// statistics tables are left out.
///
/// # Errors
/// The schema cannot be read.
pub(super) fn actual(conn: &Connection) -> anyhow::Result<Vec<SchemaRow>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master
         WHERE name NOT LIKE 'sqlite_stat%' ORDER BY type, name",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let sql: Option<String> = r.get(3)?;
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, sql.as_deref().map(bare)))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// `sql` without `--` comments, its whitespace runs made single spaces. (The schema has no
/// string literal that could hold `--`.)
fn bare(sql: &str) -> String {
    sql.lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
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
