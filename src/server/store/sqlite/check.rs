//! What the SQLite store checks before it serves: the write-ahead log (see [`super::wal`]), the
//! schema version, SQLite's `integrity_check`, and what that check does not look at: each row's
//! types, its text being UTF-8, and the accounts it names existing. A store that fails any of
//! them is refused, with a sentence naming the file and what to do, rather than served with
//! silent losses.
//!
//! `integrity_check` rather than the faster `quick_check`: only the full check compares every
//! index with its table, and an inbox whose index (the `inbox_dedupe` of schema version 3)
//! lacks a row passed `quick_check`, then served fewer messages than it counted. It costs about 1.4 s more per million stored
//! messages at start (BENCHMARKS.md).
//!
//! `confab admin check` runs the same checks offline and reports what it found.

use std::path::Path;

use rusqlite::Connection;

use super::{
    SCHEMA_VERSION, schema,
    wal::{self, WalReport},
};

/// Problems found in `integrity_check` output beyond which listing more helps nobody.
const MAX_PROBLEMS: usize = 10;

/// What the checks found.
#[derive(Debug, Clone)]
pub struct Health {
    /// The write-ahead log.
    pub wal: WalReport,
    /// Every reason not to trust the store, as sentences; empty when it can be trusted.
    pub problems: Vec<String>,
    /// `PRAGMA user_version`, when the database could be opened.
    pub schema_version: Option<i64>,
    /// Accounts, when they could be counted.
    pub users: Option<u64>,
    /// Stored, unacknowledged messages, when they could be counted.
    pub messages: Option<u64>,
}

/// Checks the log beside `db` before SQLite opens it (SQLite would drop what it cannot read).
///
/// # Errors
/// The files cannot be read; or the log cannot be trusted, with the sentence to show.
pub fn before_open(db: &Path) -> anyhow::Result<WalReport> {
    let report = wal::check(db)?;
    if let Some(damage) = &report.damage {
        anyhow::bail!("{}", refusal(db, damage));
    }
    Ok(report)
}

/// Checks the schema version and the database's structure on a freshly opened connection.
///
/// # Errors
/// A newer schema or a failed `integrity_check`, with the sentence to show.
pub fn after_open(conn: &Connection, db: &Path) -> anyhow::Result<()> {
    if let Some(problem) = schema_problem(conn, db)? {
        anyhow::bail!("{problem}");
    }
    let problems = integrity_check(conn)?;
    if !problems.is_empty() {
        anyhow::bail!(
            "{}",
            refusal(
                db,
                &format!("SQLite's integrity_check failed: {}", problems.join("; "))
            )
        );
    }
    Ok(())
}

/// Runs every check on the database `db` without serving it: for `confab admin check`.
///
/// The database is opened only when its log can be trusted, so a damaged log is left exactly
/// as it was found.
///
/// # Errors
/// A file cannot be read.
pub fn inspect(db: &Path) -> anyhow::Result<Health> {
    let wal = wal::check(db)?;
    let mut health = Health {
        problems: wal.damage.iter().cloned().collect(),
        wal,
        schema_version: None,
        users: None,
        messages: None,
    };
    if !health.problems.is_empty() || !db.exists() {
        return Ok(health);
    }
    let conn = Connection::open(db)?;
    let opened = (|| -> anyhow::Result<()> {
        health.schema_version = Some(conn.pragma_query_value(None, "user_version", |r| r.get(0))?);
        if let Some(problem) = schema_problem(&conn, db)? {
            health.problems.push(problem);
            return Ok(());
        }
        let problems = integrity_check(&conn)?;
        if !problems.is_empty() {
            health.problems.push(format!(
                "SQLite's integrity_check failed: {}",
                problems.join("; ")
            ));
        }
        let count = |table: &str| {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .ok()
            .map(|n| n as u64)
        };
        if health.schema_version.unwrap_or(0) > 0 {
            health.users = count("users");
            health.messages = count("inbox");
        }
        Ok(())
    })();
    if let Err(e) = opened {
        health
            .problems
            .push(format!("the database cannot be read: {e:#}"));
    }
    Ok(health)
}

/// The sentence for a store that cannot be trusted.
pub fn refusal(db: &Path, problem: &str) -> String {
    let dir = db.parent().unwrap_or(Path::new(".")).display();
    format!(
        "refusing to start: the database {} cannot be trusted: {problem}. Nothing was changed. \
         `confab admin check --data-dir {dir}` shows what is readable; `confab serve --repair \
         --data-dir {dir}` recovers it into a fresh database and keeps the damaged files aside",
        db.display()
    )
}

fn schema_problem(conn: &Connection, db: &Path) -> anyhow::Result<Option<String>> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Some(format!(
            "refusing to start: the database {} has schema version {version}, written by a newer \
             confab; this one knows versions up to {SCHEMA_VERSION}. Run the newer confab, or \
             restore a backup made with this version",
            db.display()
        )));
    }
    // A schema that differs from what its version's migrations create passes
    // `integrity_check` (its text is just a row), and then fails the first statement that
    // names a column it lacks: the server would start and not serve.
    let version = usize::try_from(version).unwrap_or(0);
    let (found, wanted) = (schema::actual(conn)?, schema::expected(version)?);
    if found != wanted {
        let differs: Vec<&str> = wanted
            .iter()
            .filter(|w| !found.contains(w))
            .chain(found.iter().filter(|f| !wanted.contains(f)))
            .map(|(_, name, _, _)| name.as_str())
            .collect();
        return Ok(Some(refusal(
            db,
            &format!(
                "its schema is not what confab's schema version {version} is ({} differs)",
                differs.join(", ")
            ),
        )));
    }
    Ok(None)
}

/// `PRAGMA integrity_check`'s complaints (none when it says `ok`), then values that are not of
/// the type confab wrote: SQLite checks neither a column's type nor that text is UTF-8, so a
/// damaged record can pass the check and then fail the statement that reads it.
fn integrity_check(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut problems = structure_problems(conn)?;
    if problems.is_empty() {
        problems = content_problems(conn)?;
    }
    Ok(problems)
}

/// Per schema version (from 1): each table's check that a row holds the types confab writes.
const TYPES: &[(i64, &str, &str)] = &[
    (
        1,
        "users",
        "typeof(id) <> 'integer' OR typeof(name) <> 'text' OR typeof(name_key) <> 'text'
         OR typeof(password_hash) <> 'text' OR typeof(created_ms) <> 'integer'
         OR typeof(last_login_ms) <> 'integer' OR typeof(last_seq) <> 'integer'
         OR typeof(inbox_count) <> 'integer'",
    ),
    (
        1,
        "blocks",
        "typeof(blocker) <> 'integer' OR typeof(blocked) <> 'integer'",
    ),
    (
        1,
        "inbox",
        "typeof(recipient) <> 'integer' OR typeof(seq) <> 'integer'
         OR typeof(sender) <> 'integer' OR typeof(message_id) <> 'text'
         OR typeof(body) <> 'text' OR typeof(sent_ms) <> 'integer'",
    ),
    (
        2,
        "users",
        "typeof(disabled) <> 'integer' OR typeof(deleted) <> 'integer'",
    ),
    (
        3,
        "device_tickets",
        "typeof(hash) <> 'blob' OR typeof(user_id) <> 'integer'
         OR typeof(created_ms) <> 'integer'",
    ),
];

/// Rows holding a value of another type than confab writes, or text that is not UTF-8.
fn content_problems(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut problems = Vec::new();
    for (since, table, wrong) in TYPES.iter().filter(|(since, ..)| *since <= version) {
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE {wrong}"),
            [],
            |r| r.get(0),
        )?;
        if n > 0 {
            problems.push(format!(
                "{n} row(s) of {table} hold values of another type than confab writes \
                 (schema version {since} columns)"
            ));
        }
    }
    if version < 1 || !problems.is_empty() {
        return Ok(problems);
    }
    for (table, columns) in [
        (
            "users",
            "CAST(name AS BLOB), CAST(name_key AS BLOB), CAST(password_hash AS BLOB)",
        ),
        ("inbox", "CAST(message_id AS BLOB), CAST(body AS BLOB)"),
    ] {
        let mut stmt = conn.prepare(&format!("SELECT {columns} FROM {table}"))?;
        let width = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut bad = 0u64;
        while let Some(row) = rows.next()? {
            for i in 0..width {
                if std::str::from_utf8(row.get_ref(i)?.as_blob()?).is_err() {
                    bad += 1;
                    break;
                }
            }
        }
        if bad > 0 {
            problems.push(format!(
                "{bad} row(s) of {table} hold text that is not UTF-8"
            ));
        }
    }
    if problems.is_empty() {
        problems = orphans(conn, version)?;
    }
    Ok(problems)
}

/// Per schema version (from 1): each table's columns that name an account.
const REFERENCES: &[(i64, &str, &[&str])] = &[
    (1, "inbox", &["recipient", "sender"]),
    (1, "blocks", &["blocker", "blocked"]),
    (3, "device_tickets", &["user_id"]),
];

/// Rows naming an account that does not exist. SQLite's `integrity_check` does not follow
/// references, and a message from nobody was left out of the replay (which names the sender)
/// while the inbox still counted it. (Deleted accounts stay as rows, so nothing confab writes
/// is caught here.) One pass per table: ≈ 0.12 s per million stored messages.
fn orphans(conn: &Connection, version: i64) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for (_, table, columns) in REFERENCES.iter().filter(|(since, ..)| *since <= version) {
        let dangling: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} NOT IN (SELECT id FROM users)"))
            .collect();
        let n: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM {table} WHERE {}",
                dangling.join(" OR ")
            ),
            [],
            |r| r.get(0),
        )?;
        if n > 0 {
            problems.push(format!(
                "{n} row(s) of {table} name an account that does not exist"
            ));
        }
    }
    Ok(problems)
}

/// What `PRAGMA integrity_check` says is wrong with the file's structure.
fn structure_problems(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({MAX_PROBLEMS})"))?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
    match lines {
        Ok(lines) if lines == ["ok"] => Ok(Vec::new()),
        Ok(lines) => Ok(lines),
        // Damage can stop the check itself (a garbage page where the schema lives).
        Err(e) => Ok(vec![e.to_string()]),
    }
}
