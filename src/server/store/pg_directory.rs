//! The cluster's session directory in PostgreSQL: which node holds each user's session, under
//! which epoch (a cluster-wide session number), and the nodes' leases.
//!
//! A table, not a NATS key-value bucket, because the directory must agree with what else
//! PostgreSQL holds and must outlive any one node: a login claims the user's row under the
//! user's advisory lock (so two nodes claiming at once are put in order and the later one sees,
//! and kicks, the earlier), and a node that dies leaves rows any other node can take away once
//! its lease has run out. Async, on the caller's runtime: unlike [`super::Store`] it is only
//! ever called from async code.

use std::sync::Arc;

use anyhow::Context;

use super::{
    UserId,
    pg_conn::{self, Conn, with_session},
};

/// One session in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Whose.
    pub user: UserId,
    /// The node holding it.
    pub node: String,
    /// Its cluster-wide number; a newer login has a larger one.
    pub epoch: u64,
    /// Login time, Unix ms.
    pub since_ms: i64,
    /// The client's address as the node saw it.
    pub remote: String,
    /// The client's peer listener: host, port, public key.
    pub peer: Option<(String, u16, Vec<u8>)>,
}

/// What a claim replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The node that held the user's previous session.
    pub node: String,
    /// That session's epoch.
    pub epoch: u64,
}

/// How an account is looked up.
enum UserKey {
    Name(String),
    Id(UserId),
}

/// The directory, on its own connection.
pub struct PgDirectory {
    conn: Arc<Conn>,
}

fn epoch(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn entry(r: &tokio_postgres::Row) -> Entry {
    let host: Option<String> = r.get(5);
    let port: Option<i32> = r.get(6);
    let key: Option<Vec<u8>> = r.get(7);
    Entry {
        user: r.get(0),
        node: r.get(1),
        epoch: epoch(r.get(2)),
        since_ms: r.get(3),
        remote: r.get(4),
        peer: match (host, port, key) {
            (Some(h), Some(p), Some(k)) => Some((h, u16::try_from(p).unwrap_or(0), k)),
            _ => None,
        },
    }
}

const COLUMNS: &str = "user_id, node, epoch, since_ms, remote, peer_host, peer_port, peer_key";

impl PgDirectory {
    /// Connects to the database at `url` (whose schema the store has migrated).
    ///
    /// # Errors
    /// The URL is malformed.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        Ok(PgDirectory {
            conn: Arc::new(Conn::new(pg_conn::parse(url)?)),
        })
    }

    /// The id the database was given when its schema was created: the cluster's name on the bus.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn cluster_id(&self) -> anyhow::Result<String> {
        with_session(&self.conn, async |s| {
            let row = s.client.query_one("SELECT id FROM cluster", &[]).await?;
            Ok(row.get::<_, String>(0))
        })
        .await
        .context("reading the cluster's id")
    }

    /// Makes `entry` the user's one session (its `epoch` is ignored: a new one is drawn) and
    /// returns the new epoch and the session it replaced, if any.
    ///
    /// # Errors
    /// PostgreSQL is unreachable ([`super::Unavailable`]) or refused the statement.
    pub async fn claim(&self, entry: &Entry) -> anyhow::Result<(u64, Option<Replaced>)> {
        let e = entry.clone();
        with_session(&self.conn, async move |s| {
            let tx = s.client.transaction().await?;
            // Claims of one user, from any node, one after the other.
            tx.execute(
                "SELECT pg_advisory_xact_lock(1, $1::int)",
                &[&(e.user as i32)],
            )
            .await?;
            let old = tx
                .query_opt(
                    "SELECT node, epoch FROM sessions WHERE user_id = $1",
                    &[&e.user],
                )
                .await?
                .map(|r| Replaced {
                    node: r.get(0),
                    epoch: epoch(r.get(1)),
                });
            let (host, port, key) = match &e.peer {
                Some((h, p, k)) => (Some(h.clone()), Some(i32::from(*p)), Some(k.clone())),
                None => (None, None, None),
            };
            let row = tx
                .query_one(
                    "INSERT INTO sessions (user_id, node, epoch, since_ms, remote, peer_host,
                        peer_port, peer_key)
                     VALUES ($1, $2, nextval('session_epoch'), $3, $4, $5, $6, $7)
                     ON CONFLICT (user_id) DO UPDATE SET node = EXCLUDED.node,
                        epoch = EXCLUDED.epoch, since_ms = EXCLUDED.since_ms,
                        remote = EXCLUDED.remote, peer_host = EXCLUDED.peer_host,
                        peer_port = EXCLUDED.peer_port, peer_key = EXCLUDED.peer_key
                     RETURNING epoch",
                    &[&e.user, &e.node, &e.since_ms, &e.remote, &host, &port, &key],
                )
                .await?;
            tx.commit().await?;
            Ok((epoch(row.get(0)), old))
        })
        .await
    }

    /// The account whose name key is `key`, if it exists (for a node that has not yet heard
    /// of an account created on another node).
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn user(&self, key: &str) -> anyhow::Result<Option<super::UserRow>> {
        self.user_where("name_key = $1", UserKey::Name(key.to_owned()))
            .await
    }

    /// The account with id `id`, if it exists and is not deleted.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn user_by_id(&self, id: UserId) -> anyhow::Result<Option<super::UserRow>> {
        self.user_where("id = $1", UserKey::Id(id)).await
    }

    async fn user_where(
        &self,
        condition: &'static str,
        key: UserKey,
    ) -> anyhow::Result<Option<super::UserRow>> {
        with_session(&self.conn, async move |s| {
            let sql = format!(
                "SELECT id, name, password_hash, created_ms, last_login_ms, disabled
                 FROM users WHERE {condition} AND NOT deleted"
            );
            let row = match &key {
                UserKey::Name(k) => s.client.query_opt(&sql, &[k]).await?,
                UserKey::Id(id) => s.client.query_opt(&sql, &[id]).await?,
            };
            Ok(row.map(|r| super::UserRow {
                id: r.get(0),
                name: r.get(1),
                password_hash: r.get(2),
                created_ms: r.get(3),
                last_login_ms: r.get(4),
                disabled: r.get(5),
            }))
        })
        .await
    }

    /// How long `key` stays locked out after `now_ms`, if it is; an expired lock is cleared
    /// (a fresh start, as on a lone server).
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn locked(&self, key: &str, now_ms: i64) -> anyhow::Result<Option<i64>> {
        let key = key.to_owned();
        with_session(&self.conn, async move |s| {
            let row = s
                .client
                .query_opt(
                    "SELECT locked_until_ms FROM lockouts WHERE name_key = $1",
                    &[&key],
                )
                .await?;
            match row.map(|r| r.get::<_, i64>(0)) {
                Some(until) if until > now_ms => Ok(Some(until - now_ms)),
                Some(until) if until > 0 => {
                    s.client
                        .execute(
                            "DELETE FROM lockouts WHERE name_key = $1 AND locked_until_ms = $2",
                            &[&key, &until],
                        )
                        .await?;
                    Ok(None)
                }
                _ => Ok(None),
            }
        })
        .await
    }

    /// Counts a failed login for `key` on any node: the failures so far, and when the lock
    /// ends if this one (the `max`th) locked it for `lock_ms`.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn fail(
        &self,
        key: &str,
        max: u32,
        now_ms: i64,
        lock_ms: i64,
    ) -> anyhow::Result<(u32, Option<i64>)> {
        let key = key.to_owned();
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let until = now_ms + lock_ms;
        with_session(&self.conn, async move |s| {
            let row = s
                .client
                .query_one(
                    "INSERT INTO lockouts AS l (name_key, failures, locked_until_ms)
                     VALUES ($1, 1, CASE WHEN 1 >= $2::integer THEN $3::bigint ELSE 0 END)
                     ON CONFLICT (name_key) DO UPDATE SET failures = l.failures + 1,
                        locked_until_ms = CASE WHEN l.failures + 1 >= $2::integer THEN $3::bigint
                                               ELSE l.locked_until_ms END
                     RETURNING failures, locked_until_ms",
                    &[&key, &max, &until],
                )
                .await?;
            let failures = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
            let locked: i64 = row.get(1);
            Ok((failures, (locked > 0).then_some(locked)))
        })
        .await
    }

    /// Clears `key`'s failures (a success, or an operator's unlock).
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn clear_failures(&self, key: &str) -> anyhow::Result<()> {
        let key = key.to_owned();
        with_session(&self.conn, async move |s| {
            s.client
                .execute("DELETE FROM lockouts WHERE name_key = $1", &[&key])
                .await?;
            Ok(())
        })
        .await
    }

    /// Removes the user's entry if it is still the session `epoch`.
    ///
    /// # Errors
    /// PostgreSQL is unreachable or refused the statement.
    pub async fn release(&self, user: UserId, epoch: u64) -> anyhow::Result<()> {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        with_session(&self.conn, async move |s| {
            s.client
                .execute(
                    "DELETE FROM sessions WHERE user_id = $1 AND epoch = $2",
                    &[&user, &epoch],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Every session in the cluster.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn all(&self) -> anyhow::Result<Vec<Entry>> {
        with_session(&self.conn, async |s| {
            let rows = s
                .client
                .query(&format!("SELECT {COLUMNS} FROM sessions"), &[])
                .await?;
            Ok(rows.iter().map(entry).collect())
        })
        .await
    }

    /// The sessions of `users`, wherever they are.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn sessions_of(&self, users: Vec<UserId>) -> anyhow::Result<Vec<Entry>> {
        with_session(&self.conn, async |s| {
            let rows = s
                .client
                .query(
                    &format!("SELECT {COLUMNS} FROM sessions WHERE user_id = ANY($1)"),
                    &[&users],
                )
                .await?;
            Ok(rows.iter().map(entry).collect())
        })
        .await
    }

    /// The nodes whose lease runs past `now_ms`, each with the counters it left with its last
    /// renewal (JSON), by name.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn node_stats(&self, now_ms: i64) -> anyhow::Result<Vec<(String, String)>> {
        with_session(&self.conn, async move |s| {
            let rows = s
                .client
                .query(
                    "SELECT name, stats FROM nodes WHERE lease_until_ms >= $1 ORDER BY name",
                    &[&now_ms],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await
    }

    /// Renews `node`'s lease until `until_ms` and leaves `stats` (its counters, JSON) with it,
    /// then, if `sweep`, removes the entries of every
    /// node whose lease ran out before `now_ms` (and those nodes), returning the entries removed and
    /// whether `node` itself had been taken for dead (its lease was gone). Two nodes sweeping at
    /// once each get a disjoint share.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn renew_and_sweep(
        &self,
        node: &str,
        until_ms: i64,
        now_ms: i64,
        sweep: bool,
        stats: String,
    ) -> anyhow::Result<(Vec<Entry>, bool)> {
        let node = node.to_owned();
        with_session(&self.conn, async move |s| {
            // `xmax = 0`: the row was inserted, not updated: there was no lease to renew.
            let renewed = s
                .client
                .query_one(
                    "INSERT INTO nodes (name, lease_until_ms, stats) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE
                         SET lease_until_ms = EXCLUDED.lease_until_ms, stats = EXCLUDED.stats
                     RETURNING xmax = 0",
                    &[&node, &until_ms, &stats],
                )
                .await?;
            let was_gone: bool = renewed.get(0);
            if !sweep {
                return Ok((Vec::new(), was_gone));
            }
            let rows = s
                .client
                .query(
                    &format!(
                        "WITH dead AS (DELETE FROM nodes WHERE lease_until_ms < $1 RETURNING name)
                         DELETE FROM sessions WHERE node IN (SELECT name FROM dead)
                         RETURNING {COLUMNS}"
                    ),
                    &[&now_ms],
                )
                .await?;
            Ok((rows.iter().map(entry).collect(), was_gone))
        })
        .await
    }

    /// Removes `node`'s entries and lease (it is stopping, or starting after it died) and
    /// returns the entries removed.
    ///
    /// # Errors
    /// PostgreSQL is unreachable.
    pub async fn clear_node(&self, node: &str) -> anyhow::Result<Vec<Entry>> {
        let node = node.to_owned();
        with_session(&self.conn, async move |s| {
            s.client
                .execute("DELETE FROM nodes WHERE name = $1", &[&node])
                .await?;
            let rows = s
                .client
                .query(
                    &format!("DELETE FROM sessions WHERE node = $1 RETURNING {COLUMNS}"),
                    &[&node],
                )
                .await?;
            Ok(rows.iter().map(entry).collect())
        })
        .await
    }
}
