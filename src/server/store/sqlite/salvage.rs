//! Recovery of what is readable from a damaged SQLite store into a fresh one, for
//! `confab serve --repair` and `confab admin repair`.
//!
//! The damaged files are moved aside, untouched, into `damaged-<time>/` in the data directory;
//! the work is done on a scratch copy. Rows are read in key order and copied into a new database
//! with the current schema; where a page cannot be read, the walk skips ahead to the first key
//! it can read again, so one garbage page costs the rows on it, not the rest. A database whose
//! file was lost or emptied is rebuilt from the pages its log still holds. A damaged log is read
//! as SQLite reads it, up to its first bad frame, unless a checkpoint had already copied more
//! than that into the database: then the database is read alone.
//!
//! Sequence numbers jump by [`SEQ_GAP`] after a repair: messages lost with a damaged page may
//! have been shown (but not yet acknowledged) with seqs above the highest one recovered, and a
//! client resumes after the last seq it showed, so reusing those seqs could hide new messages.

use std::{
    collections::HashSet,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use rusqlite::{Connection, params};

use super::{SCHEMA_VERSION, migrate, wal};
use crate::server::store::UserId;

/// How far sequence numbers jump after a repair: more than any inbox can hold.
pub const SEQ_GAP: i64 = 1_000_000_000;
/// Rows read per query while nothing fails.
const BATCH: usize = 512;

/// What a repair recovered.
#[derive(Debug, Clone, Default)]
pub struct Salvaged {
    /// Where the damaged files were moved.
    pub aside: PathBuf,
    /// Accounts recovered.
    pub users: u64,
    /// Blocks recovered.
    pub blocks: u64,
    /// Stored messages recovered.
    pub messages: u64,
    /// Readable messages dropped because their sender's or recipient's account was lost.
    pub orphaned: u64,
    /// Places where unreadable pages were skipped.
    pub skipped_ranges: u64,
}

/// Moves the damaged store `db` (with its `-wal` and `-shm`) aside and writes what can be read
/// from it into a fresh database at `db`.
///
/// # Errors
/// The files cannot be moved or written, or the database comes from a newer confab (a repair
/// would throw away what this version does not know).
pub fn repair(db: &Path) -> anyhow::Result<Salvaged> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
    let aside = dir.join(format!("damaged-{stamp}"));
    let scratch = dir.join(format!("repair-scratch-{stamp}"));
    for d in [&aside, &scratch] {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(d)
            .with_context(|| format!("creating {}", d.display()))?;
    }
    let name = db
        .file_name()
        .context("the database path has no file name")?;
    let (scratch_db, aside_db) = (scratch.join(name), aside.join(name));
    for suffix in ["", "-wal", "-shm"] {
        let from = wal::sibling(db, suffix);
        if from.exists() {
            let to = wal::sibling(&aside_db, suffix);
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    tracing::warn!(aside = %aside.display(), "moved the damaged database aside");
    let result = (|| {
        prepare_scratch(&aside_db, &scratch_db)?;
        let old = Connection::open(&scratch_db)
            .with_context(|| format!("opening a copy of {}", aside_db.display()))?;
        let version: i64 = old
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            bail!(
                "the database has schema version {version}, written by a newer confab; a repair \
                 by this one would lose what it does not know. Use the newer confab"
            );
        }
        let new = create(db)?;
        copy(&old, &new, &aside)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Copies the aside files into `scratch` (the originals stay as found). A database file that is
/// missing or empty is rebuilt from the committed pages of its log.
fn prepare_scratch(aside_db: &Path, scratch_db: &Path) -> anyhow::Result<()> {
    let db_len = std::fs::metadata(aside_db).map(|m| m.len()).unwrap_or(0);
    let wal_bytes = std::fs::read(wal::sibling(aside_db, "-wal")).unwrap_or_default();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = options.open(scratch_db)?;
    if db_len > 0 {
        file.write_all(&std::fs::read(aside_db)?)?;
        let shm = std::fs::read(wal::sibling(aside_db, "-shm")).unwrap_or_default();
        if !wal_bytes.is_empty() && !wal::prefix_is_stale(&wal_bytes, &shm) {
            let mut wal_file = options.open(wal::sibling(scratch_db, "-wal"))?;
            wal_file.write_all(&wal_bytes)?;
        }
    } else if let Some(wal::CommittedPages {
        page_size,
        db_pages,
        pages,
    }) = wal::committed_pages(&wal_bytes)
    {
        let zero = vec![0; page_size];
        for pgno in 1..=db_pages {
            file.write_all(pages.get(&pgno).copied().unwrap_or(&zero))?;
        }
    }
    Ok(())
}

/// A fresh database at `db` with the current schema, private (SQLite gives its `-wal` and
/// `-shm` the same mode).
fn create(db: &Path) -> anyhow::Result<Connection> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
        .with_context(|| format!("creating {}", db.display()))?;
    let conn = Connection::open(db).with_context(|| format!("creating {}", db.display()))?;
    conn.pragma_update(None, "page_size", 4096)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    migrate(&conn)?;
    Ok(conn)
}

fn copy(old: &Connection, new: &Connection, aside: &Path) -> anyhow::Result<Salvaged> {
    let mut report = Salvaged {
        aside: aside.to_owned(),
        ..Salvaged::default()
    };
    let tx = new.unchecked_transaction()?;
    // Users, by id.
    type User = (String, String, String, i64, i64, i64);
    let mut users: Vec<(UserId, User)> = Vec::new();
    report.skipped_ranges += walk(&mut users, |after, limit| {
        rows(
            old,
            "SELECT id, name, name_key, password_hash, created_ms, last_login_ms, last_seq
             FROM users WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after, limit as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    (
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ),
                ))
            },
        )
    });
    let known: HashSet<UserId> = users.iter().map(|(id, _)| *id).collect();
    for (id, (name, key, hash, created, last_login, _)) in &users {
        tx.execute(
            "INSERT OR IGNORE INTO users (id, name, name_key, password_hash, created_ms, last_login_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, name, key, hash, created, last_login],
        )?;
    }
    report.users = users.len() as u64;
    for (id, (.., last_seq)) in &users {
        // Blocks are few: a user's whole list is read at once, or not at all.
        let blocked = rows(
            old,
            "SELECT blocked, blocked FROM blocks WHERE blocker = ?1",
            params![id],
            |r| r.get::<_, i64>(0).map(|b| (b, b)),
        );
        if blocked.1 {
            report.skipped_ranges += 1;
        }
        for (b, _) in blocked.0.into_iter().filter(|(b, _)| known.contains(b)) {
            tx.execute(
                "INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?1, ?2)",
                params![id, b],
            )?;
            report.blocks += 1;
        }
        type Message = (i64, String, String, i64);
        let mut inbox: Vec<(i64, Message)> = Vec::new();
        report.skipped_ranges += walk(&mut inbox, |after, limit| {
            rows(
                old,
                "SELECT seq, sender, message_id, body, sent_ms FROM inbox
                 WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                params![id, after, limit as i64],
                |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))),
            )
        });
        let mut top = *last_seq;
        let mut count = 0i64;
        for (seq, (sender, message_id, body, sent_ms)) in inbox {
            if !known.contains(&sender) {
                report.orphaned += 1;
                continue;
            }
            tx.execute(
                "INSERT OR IGNORE INTO inbox (recipient, seq, sender, message_id, body, sent_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, seq, sender, message_id, body, sent_ms],
            )?;
            top = top.max(seq);
            count += 1;
        }
        report.messages += count as u64;
        tx.execute(
            "UPDATE users SET last_seq = ?2, inbox_count = ?3 WHERE id = ?1",
            params![id, top.saturating_add(SEQ_GAP), count],
        )?;
    }
    tx.commit()?;
    new.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(report)
}

/// Runs `sql` and returns the rows read before any error, and whether one happened.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<(i64, T)>,
) -> (Vec<(i64, T)>, bool) {
    let mut out = Vec::new();
    let Ok(mut stmt) = conn.prepare(sql) else {
        return (out, true);
    };
    let Ok(mut rows) = stmt.query(params) else {
        return (out, true);
    };
    loop {
        match rows.next() {
            Ok(Some(row)) => match map(row) {
                Ok(item) => out.push(item),
                // A row that decodes wrongly (garbage in a readable page) is skipped alone.
                Err(_) => continue,
            },
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// Reads all rows through `read(after, limit)` (rows with key > `after`, in key order) into
/// `out`, skipping over keys that cannot be read. Returns how many times it had to skip.
fn walk<T>(
    out: &mut Vec<(i64, T)>,
    mut read: impl FnMut(i64, usize) -> (Vec<(i64, T)>, bool),
) -> u64 {
    let mut after = 0;
    let mut skips = 0;
    loop {
        let (rows, failed) = read(after, BATCH);
        let n = rows.len();
        if let Some((last, _)) = rows.last() {
            after = *last;
        }
        out.extend(rows);
        if !failed {
            if n < BATCH {
                return skips;
            }
            continue;
        }
        skips += 1;
        match next_readable(&mut read, after) {
            Some(next) => after = next,
            None => return skips,
        }
    }
}

/// The smallest key after `after` from which reading works again: doubling steps until a read
/// succeeds, then halving back to the edge of the unreadable range.
fn next_readable<T>(
    read: &mut impl FnMut(i64, usize) -> (Vec<(i64, T)>, bool),
    after: i64,
) -> Option<i64> {
    let works = |read: &mut dyn FnMut(i64, usize) -> (Vec<(i64, T)>, bool), at: i64| !read(at, 1).1;
    let (mut bad, mut step) = (after, 1i64);
    let good = loop {
        let probe = after.checked_add(step).filter(|p| *p < i64::MAX / 2)?;
        if works(read, probe) {
            break probe;
        }
        bad = probe;
        step = step.checked_mul(2)?;
    };
    let mut good = good;
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        if works(read, mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_skips_an_unreadable_range_and_reads_the_rest() {
        // Keys 1..=5000; 1200..=1300 cannot be read, nor can any read that starts before them
        // and reaches them.
        let read = |after: i64, limit: usize| {
            let mut rows = Vec::new();
            for k in after + 1..=5000 {
                if rows.len() == limit {
                    return (rows, false);
                }
                if (1200..=1300).contains(&k) {
                    return (rows, true);
                }
                rows.push((k, ()));
            }
            (rows, false)
        };
        let mut out = Vec::new();
        assert_eq!(walk(&mut out, read), 1);
        let keys: Vec<i64> = out.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys.len(), 5000 - 101);
        assert!(keys.contains(&1199) && keys.contains(&1301));
        assert!(!keys.contains(&1250));
    }
}
