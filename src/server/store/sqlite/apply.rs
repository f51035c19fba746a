//! One write of a batch applied inside the writer's transaction, and the in-memory inbox
//! counters and duplicate check that make an append a single `INSERT` into one B-tree.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    super::{DiskFull, UserId, WriteOp, WriteOutcome, int},
    dedupe::{Dedupe, Seen},
};

/// The writer connection and the inbox counters it keeps current.
pub(super) struct Writer {
    pub(super) conn: Connection,
    /// user → (highest seq ever given, messages stored now), as committed.
    pub(super) inboxes: HashMap<UserId, Counters>,
    /// The stored messages' fingerprints, as committed ([`super::dedupe`]).
    pub(super) dedupe: Dedupe,
}

impl Writer {
    /// Takes the writer connection and rebuilds the counters and the duplicate check from the
    /// committed database, in one pass over the inbox.
    pub(super) fn new(conn: Connection) -> anyhow::Result<Self> {
        let mut inboxes: HashMap<UserId, Counters> = {
            let mut stmt = conn.prepare("SELECT id, last_seq FROM users")?;
            let rows = stmt.query_map([], |r| {
                let counters = Counters {
                    last_seq: r.get::<_, i64>(1)? as u64,
                    count: 0,
                };
                Ok((r.get::<_, UserId>(0)?, counters))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let stored: i64 = conn.query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0))?;
        let mut dedupe = Dedupe::with_capacity(usize::try_from(stored).unwrap_or(0));
        {
            let mut stmt = conn.prepare("SELECT recipient, seq, sender, message_id FROM inbox")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (recipient, seq) = (r.get(0)?, r.get::<_, i64>(1)? as u64);
                let message_id = r.get_ref(3)?.as_str()?;
                dedupe.load(dedupe.fingerprint(recipient, r.get(2)?, message_id), seq);
                let c = inboxes.entry(recipient).or_default();
                c.last_seq = c.last_seq.max(seq);
                c.count += 1;
            }
        }
        Ok(Writer {
            conn,
            inboxes,
            dedupe,
        })
    }

    /// Stored messages per user that has any, by user id.
    pub(super) fn inbox_counts(&self) -> Vec<(UserId, u64)> {
        let mut counts: Vec<(UserId, u64)> = self
            .inboxes
            .iter()
            .filter(|(_, c)| c.count > 0)
            .map(|(user, c)| (*user, c.count))
            .collect();
        counts.sort_unstable();
        counts
    }

    /// Applies `ops` in one transaction; on an error nothing is committed and the counters are
    /// as they were.
    pub(super) fn write(&mut self, ops: &[WriteOp]) -> anyhow::Result<Vec<WriteOutcome>> {
        let Writer {
            conn,
            inboxes,
            dedupe,
        } = self;
        // Counters as they were before this batch, to restore if the commit fails.
        let mut before: HashMap<UserId, Option<Counters>> = HashMap::new();
        let result = (|| -> anyhow::Result<Vec<WriteOutcome>> {
            let tx = conn.transaction()?;
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                // One failing op must not undo the others that share the commit, but a full disk
                // fails the batch: nothing in it can be trusted to be stored.
                let outcome = match apply(&tx, inboxes, &mut before, dedupe, op) {
                    Ok(outcome) => outcome,
                    Err(e) if is_disk_full(&e) => return Err(e),
                    Err(e) => WriteOutcome::Failed(format!("{e:#}")),
                };
                out.push(outcome);
            }
            tx.commit()?;
            Ok(out)
        })();
        if result.is_ok() {
            dedupe.commit();
        } else {
            dedupe.roll_back();
        }
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
}

/// Whether `e` (from rusqlite, through anyhow) is SQLite's `SQLITE_FULL`.
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        == Some(rusqlite::ErrorCode::DiskFull)
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    last_seq: u64,
    count: u64,
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
    dedupe: &mut Dedupe,
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
            let fingerprint = dedupe.fingerprint(*recipient, *sender, message_id);
            // A resend of a stored message is a duplicate, even into a full inbox.
            if let Some(seq) = duplicate(tx, dedupe.seen(fingerprint), op)? {
                return Ok(WriteOutcome::Appended {
                    seq,
                    duplicate: true,
                });
            }
            let c = *counters(inboxes, before, *recipient);
            if c.count >= *max_inbox {
                return Ok(WriteOutcome::InboxFull);
            }
            let seq = c.last_seq + 1;
            tx.prepare_cached(
                "INSERT INTO inbox (recipient, seq, sender, message_id, body, sent_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                recipient, seq as i64, sender, message_id, body, sent_ms
            ])?;
            dedupe.stored(fingerprint, seq);
            let c = counters(inboxes, before, *recipient);
            c.last_seq = seq;
            c.count += 1;
            WriteOutcome::Appended {
                seq,
                duplicate: false,
            }
        }
        WriteOp::Ack { user, upto } => {
            let removed = delete_returning(
                tx,
                dedupe,
                *user,
                "DELETE FROM inbox WHERE recipient = ?1 AND seq <= ?2
                 RETURNING seq, sender, message_id",
                params![user, int(*upto)],
            )?;
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
            delete_returning(
                tx,
                dedupe,
                *user,
                "DELETE FROM inbox WHERE recipient = ?1 RETURNING seq, sender, message_id",
                params![user],
            )?;
            tx.prepare_cached("DELETE FROM blocks WHERE blocker = ?1 OR blocked = ?1")?
                .execute(params![user])?;
            tx.prepare_cached("DELETE FROM device_tickets WHERE user_id = ?1")?
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
        WriteOp::AddDeviceTicket {
            user,
            hash,
            created_ms,
            keep,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO device_tickets (hash, user_id, created_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![hash, user, created_ms])?;
            tx.prepare_cached(
                "DELETE FROM device_tickets WHERE user_id = ?1 AND hash NOT IN (
                     SELECT hash FROM device_tickets WHERE user_id = ?1
                     ORDER BY created_ms DESC, hash LIMIT ?2)",
            )?
            .execute(params![user, keep])?;
            WriteOutcome::Done
        }
        WriteOp::RevokeDeviceTickets { user } => {
            tx.prepare_cached("DELETE FROM device_tickets WHERE user_id = ?1")?
                .execute(params![user])?;
            WriteOutcome::Done
        }
    })
}

/// The seq of the stored message `append` (a [`WriteOp::Append`]) repeats, if any, given what
/// the duplicate check saw of its fingerprint.
fn duplicate(
    tx: &rusqlite::Transaction<'_>,
    seen: Seen,
    append: &WriteOp,
) -> anyhow::Result<Option<u64>> {
    let WriteOp::Append {
        recipient,
        sender,
        message_id,
        ..
    } = append
    else {
        return Ok(None);
    };
    match seen {
        Seen::Never => Ok(None),
        Seen::At(seq) => {
            let same: Option<bool> = tx
                .prepare_cached(
                    "SELECT sender = ?3 AND message_id = ?4 FROM inbox
                     WHERE recipient = ?1 AND seq = ?2",
                )?
                .query_row(params![recipient, int(seq), sender, message_id], |r| {
                    r.get(0)
                })
                .optional()?;
            match same {
                Some(true) => Ok(Some(seq)),
                // Another message shares the fingerprint.
                _ => existing_seq(tx, *recipient, *sender, message_id),
            }
        }
        Seen::Ambiguous => existing_seq(tx, *recipient, *sender, message_id),
    }
}

/// Runs `sql`, a `DELETE … RETURNING seq, sender, message_id` of `recipient`'s messages, and
/// drops the deleted messages' fingerprints. Returns how many were deleted.
fn delete_returning(
    tx: &rusqlite::Transaction<'_>,
    dedupe: &mut Dedupe,
    recipient: UserId,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> anyhow::Result<usize> {
    let mut stmt = tx.prepare_cached(sql)?;
    // All rows first: a statement that fails half-way is undone by SQLite, so the map must not
    // have changed either.
    let deleted = stmt
        .query_map(params, |r| {
            let message_id = r.get_ref(2)?.as_str()?;
            let fingerprint = dedupe.fingerprint(recipient, r.get(1)?, message_id);
            Ok((fingerprint, r.get::<_, i64>(0)? as u64))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for &(fingerprint, seq) in &deleted {
        dedupe.deleted(fingerprint, seq);
    }
    Ok(deleted.len())
}

/// The seq of `recipient`'s stored message from `sender` with `message_id`, by a scan of the
/// recipient's inbox.
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
