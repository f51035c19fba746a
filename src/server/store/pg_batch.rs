//! How the PostgreSQL store applies one batch of writes in one transaction (group commit),
//! correctly when several nodes write to the same database at once.
//!
//! - The batch first locks the counter rows (`users`) of every user whose inbox or login time
//!   it touches, in id order, so two nodes' batches never deadlock on them. While a node holds a
//!   recipient's row, no other node can append to that inbox; and because PostgreSQL (READ
//!   COMMITTED) gives each later statement a fresh snapshot, the duplicate check of an append
//!   sees every message another node committed to that inbox.
//! - An append allocates its `seq` with `UPDATE users SET last_seq = last_seq + 1 … RETURNING`
//!   in the same statement that inserts the message: nothing is read first and written later,
//!   so seqs are distinct and gap-free across nodes. Nothing is cached in memory (the SQLite
//!   store keeps the counters beside its single writer; with several writers that would be
//!   wrong).
//! - The statements are pipelined: all are sent, then all replies read, so a batch costs about
//!   three round trips (begin, statements, commit) whatever its size.
//! - A statement that fails aborts a PostgreSQL transaction and everything after it. Then the
//!   batch is applied again, each operation in a savepoint of its own, so a failing operation
//!   reports [`WriteOutcome::Failed`] and the others still commit, as with SQLite. (Savepoints
//!   only on that rare path: each costs a round trip and a subtransaction.)

use futures_util::future::{join, join_all};
use tokio_postgres::{GenericClient, Statement};

use super::{
    UserId, WriteOp, WriteOutcome, int,
    pg_conn::{Session, is_conflict},
};

/// How often a batch is retried when another node's transaction wins a lock cycle.
const CONFLICT_RETRIES: usize = 5;

const LOCK: &str = "SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";
const CREATE_USER: &str = "INSERT INTO users (name, name_key, password_hash, created_ms)
     VALUES ($1, $2, $3, $4) ON CONFLICT (name_key) DO NOTHING RETURNING id";
/// One statement: the existing seq of a duplicate, or the new seq, or neither (inbox full). A
/// duplicate wins over a full inbox: a resend of a stored message is not refused.
const APPEND: &str = "WITH dup AS (
         SELECT seq FROM inbox WHERE recipient = $1 AND sender = $2 AND message_id = $3
     ), bump AS (
         UPDATE users SET last_seq = last_seq + 1, inbox_count = inbox_count + 1
         WHERE id = $1 AND inbox_count < $6 AND NOT EXISTS (SELECT 1 FROM dup)
         RETURNING last_seq
     ), ins AS (
         INSERT INTO inbox (recipient, seq, sender, message_id, body, sent_ms)
         SELECT $1, last_seq, $2, $3, $4, $5 FROM bump RETURNING seq
     )
     SELECT (SELECT seq FROM dup), (SELECT seq FROM ins)";
/// `last_seq` is left alone: deleted seqs are never given out again.
const ACK: &str = "WITH gone AS (
         DELETE FROM inbox WHERE recipient = $1 AND seq <= $2 RETURNING 1
     )
     UPDATE users SET inbox_count = inbox_count - (SELECT count(*) FROM gone)
     WHERE id = $1 AND EXISTS (SELECT 1 FROM gone)";
const BLOCK: &str = "INSERT INTO blocks (blocker, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const UNBLOCK: &str = "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2";
const LAST_LOGIN: &str = "UPDATE users SET last_login_ms = $2 WHERE id = $1";
const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2 WHERE id = $1 AND NOT deleted";
const SET_DISABLED: &str = "UPDATE users SET disabled = $2 WHERE id = $1 AND NOT deleted";
/// The inbox and every block go; the row stays as a tombstone (no password, a name key nobody
/// can type: usernames have no `/`) so messages it sent keep their sender's name.
const DELETE_USER: &str = "WITH inbox_gone AS (
         DELETE FROM inbox WHERE recipient = $1 RETURNING 1
     ), blocks_gone AS (
         DELETE FROM blocks WHERE blocker = $1 OR blocked = $1 RETURNING 1
     ), tickets_gone AS (
         DELETE FROM device_tickets WHERE user_id = $1 RETURNING 1
     )
     UPDATE users SET deleted = true, password_hash = '', inbox_count = 0,
         name_key = 'deleted/' || id
     WHERE id = $1 AND NOT deleted";

/// The batch's statements, prepared on the writer connection.
const ADD_TICKET: &str = "INSERT INTO device_tickets (hash, user_id, created_ms)
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const PRUNE_TICKETS: &str = "DELETE FROM device_tickets WHERE user_id = $1 AND hash NOT IN (
         SELECT hash FROM device_tickets WHERE user_id = $1
         ORDER BY created_ms DESC, hash LIMIT $2)";
const REVOKE_TICKETS: &str = "DELETE FROM device_tickets WHERE user_id = $1";

struct Statements {
    lock: Statement,
    create_user: Statement,
    append: Statement,
    ack: Statement,
    block: Statement,
    unblock: Statement,
    last_login: Statement,
    set_password: Statement,
    set_disabled: Statement,
    delete_user: Statement,
    add_ticket: Statement,
    prune_tickets: Statement,
    revoke_tickets: Statement,
}

impl Statements {
    async fn prepare(session: &mut Session) -> anyhow::Result<Self> {
        Ok(Statements {
            lock: session.prepare(LOCK).await?,
            create_user: session.prepare(CREATE_USER).await?,
            append: session.prepare(APPEND).await?,
            ack: session.prepare(ACK).await?,
            block: session.prepare(BLOCK).await?,
            unblock: session.prepare(UNBLOCK).await?,
            last_login: session.prepare(LAST_LOGIN).await?,
            set_password: session.prepare(SET_PASSWORD).await?,
            set_disabled: session.prepare(SET_DISABLED).await?,
            delete_user: session.prepare(DELETE_USER).await?,
            add_ticket: session.prepare(ADD_TICKET).await?,
            prune_tickets: session.prepare(PRUNE_TICKETS).await?,
            revoke_tickets: session.prepare(REVOKE_TICKETS).await?,
        })
    }
}

/// Applies `ops` in one transaction; one outcome per op, in order.
pub(super) async fn write(
    session: &mut Session,
    ops: &[WriteOp],
) -> anyhow::Result<Vec<WriteOutcome>> {
    let st = Statements::prepare(session).await?;
    let mut locked: Vec<UserId> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Append { recipient: u, .. }
            | WriteOp::Ack { user: u, .. }
            | WriteOp::LastLogin { user: u, .. }
            | WriteOp::DeleteUser { user: u } => Some(*u),
            _ => None,
        })
        .collect();
    locked.sort_unstable();
    locked.dedup();
    let mut attempt = 0;
    loop {
        let result = match pipelined(session, &st, &locked, ops).await {
            Ok(out) => Ok(out),
            Err(e) if is_conflict(&e) => Err(e),
            Err(e) if e.downcast_ref::<super::Unavailable>().is_some() => Err(e),
            Err(e) if is_connection_gone(session, &e) => Err(e),
            // One op failed and took the transaction with it: again, one savepoint per op.
            Err(_) => one_by_one(session, &st, &locked, ops).await,
        };
        match result {
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES => {
                attempt += 1;
                tracing::debug!(
                    attempt,
                    "batch lost a lock conflict to another writer; retrying"
                );
            }
            other => return other,
        }
    }
}

fn is_connection_gone(session: &Session, e: &anyhow::Error) -> bool {
    session.client.is_closed()
        || e.downcast_ref::<tokio_postgres::Error>()
            .is_some_and(|pg| pg.code().is_none())
}

/// The fast path: every statement sent before any reply is read.
async fn pipelined(
    session: &mut Session,
    st: &Statements,
    locked: &[UserId],
    ops: &[WriteOp],
) -> anyhow::Result<Vec<WriteOutcome>> {
    let tx = session.client.transaction().await?;
    // join_all polls (and so sends) the statements in order; PostgreSQL runs them in that order.
    let lock = async {
        if !locked.is_empty() {
            tx.execute(&st.lock, &[&locked]).await?;
        }
        anyhow::Ok(())
    };
    let (lock, outcomes) = join(lock, join_all(ops.iter().map(|op| apply(&tx, st, op)))).await;
    lock?;
    let outcomes = outcomes.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The slow path: each op in a savepoint, so a failing one is rolled back alone.
async fn one_by_one(
    session: &mut Session,
    st: &Statements,
    locked: &[UserId],
    ops: &[WriteOp],
) -> anyhow::Result<Vec<WriteOutcome>> {
    let mut tx = session.client.transaction().await?;
    if !locked.is_empty() {
        tx.execute(&st.lock, &[&locked]).await?;
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let sp = tx.savepoint("op").await?;
        match apply(&sp, st, op).await {
            Ok(outcome) => {
                sp.commit().await?;
                out.push(outcome);
            }
            Err(e) => {
                let pg = e.downcast_ref::<tokio_postgres::Error>();
                if pg.is_none_or(|pg| pg.code().is_none() || is_conflict(&e)) {
                    // Not this op's fault: the connection, or a conflict worth a retry.
                    return Err(e);
                }
                sp.rollback().await?;
                tracing::warn!("one write of a batch failed: {e:#}");
                out.push(WriteOutcome::Failed(format!("{e:#}")));
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

async fn apply(
    c: &impl GenericClient,
    st: &Statements,
    op: &WriteOp,
) -> anyhow::Result<WriteOutcome> {
    Ok(match op {
        WriteOp::CreateUser {
            name,
            name_key,
            password_hash,
            created_ms,
        } => c
            .query_opt(
                &st.create_user,
                &[name, name_key, password_hash, created_ms],
            )
            .await?
            .map_or(WriteOutcome::NameTaken, |row| {
                WriteOutcome::Created(row.get(0))
            }),
        WriteOp::Append {
            recipient,
            sender,
            message_id,
            body,
            sent_ms,
            max_inbox,
        } => {
            let row = c
                .query_one(
                    &st.append,
                    &[
                        recipient,
                        sender,
                        &message_id.as_bytes(),
                        &body.as_bytes(),
                        sent_ms,
                        &int(*max_inbox),
                    ],
                )
                .await?;
            let (dup, new): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            match (dup, new) {
                (Some(seq), _) => WriteOutcome::Appended {
                    seq: seq as u64,
                    duplicate: true,
                },
                (None, Some(seq)) => WriteOutcome::Appended {
                    seq: seq as u64,
                    duplicate: false,
                },
                (None, None) => WriteOutcome::InboxFull,
            }
        }
        WriteOp::Ack { user, upto } => {
            c.execute(&st.ack, &[user, &int(*upto)]).await?;
            WriteOutcome::Done
        }
        WriteOp::Block { blocker, blocked } => {
            c.execute(&st.block, &[blocker, blocked]).await?;
            WriteOutcome::Done
        }
        WriteOp::Unblock { blocker, blocked } => {
            c.execute(&st.unblock, &[blocker, blocked]).await?;
            WriteOutcome::Done
        }
        WriteOp::LastLogin { user, at_ms } => {
            c.execute(&st.last_login, &[user, at_ms]).await?;
            WriteOutcome::Done
        }
        WriteOp::SetPassword {
            user,
            password_hash,
        } => {
            c.execute(&st.set_password, &[user, password_hash]).await?;
            WriteOutcome::Done
        }
        WriteOp::SetDisabled { user, disabled } => {
            c.execute(&st.set_disabled, &[user, disabled]).await?;
            WriteOutcome::Done
        }
        WriteOp::DeleteUser { user } => {
            c.execute(&st.delete_user, &[user]).await?;
            WriteOutcome::Done
        }
        WriteOp::AddDeviceTicket {
            user,
            hash,
            created_ms,
            keep,
        } => {
            c.execute(&st.add_ticket, &[hash, user, created_ms]).await?;
            c.execute(&st.prune_tickets, &[user, &i64::from(*keep)])
                .await?;
            WriteOutcome::Done
        }
        WriteOp::RevokeDeviceTickets { user } => {
            c.execute(&st.revoke_tickets, &[user]).await?;
            WriteOutcome::Done
        }
    })
}
