//! One write of a batch applied inside the writer's transaction, and the in-memory inbox
//! counters that make an append a single `INSERT`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::super::{DiskFull, UserId, WriteOp, WriteOutcome, int};

/// The writer connection and the inbox counters it keeps current.
pub(super) struct Writer {
    pub(super) conn: Connection,
    /// user → (highest seq ever given, messages stored now), as committed.
    pub(super) inboxes: HashMap<UserId, Counters>,
}

impl Writer {
    /// Takes the writer connection and rebuilds the counters from the committed database.
    pub(super) fn new(conn: Connection) -> anyhow::Result<Self> {
        let inboxes = {
            let mut stmt = conn.prepare(
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
        Ok(Writer { conn, inboxes })
    }

    /// Applies `ops` in one transaction; on an error nothing is committed and the counters are
    /// as they were.
    pub(super) fn write(&mut self, ops: &[WriteOp]) -> anyhow::Result<Vec<WriteOutcome>> {
        let Writer { conn, inboxes } = self;
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
