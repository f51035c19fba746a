//! Who serves a PostgreSQL database: one lone server, or the nodes of one cluster, never a lone
//! server beside anyone else.
//!
//! A lone server (no `--bus`) keeps what it needs to answer quickly in memory — the accounts,
//! the blocks, which inboxes may hold messages — and nothing tells it what another server wrote.
//! A second lone server on its database, or a lone server on a cluster's, would answer from a
//! stale picture (a user registered elsewhere unknown, a stored message not replayed). So every
//! server claims the database before it serves: a lone server with an exclusive advisory lock,
//! a cluster node with a shared one, each on a connection of its own held for as long as the
//! server runs. A refused claim stops the start with a sentence saying who is there.
//!
//! PostgreSQL lets go of the lock when the process dies (its connection closes). A clean stop
//! releases it explicitly, so the next start on the same database never races the old
//! connection's close. If the connection is lost while the server runs, the claim is made again
//! once PostgreSQL answers; if another server took it meanwhile, this one stops ([`Claim::lost`]).

use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::pg_conn;

/// The advisory lock's two keys. Space 1 is the session directory's per-user lock
/// (`pg_directory.rs`); space 2 is this claim.
const KEY: (i32, i32) = (2, 0);
/// How long a start waits for a server that is stopping on the same database to let go.
const HANDOVER: Duration = Duration::from_secs(3);
/// How often a refused start asks again within [`HANDOVER`].
const HANDOVER_POLL: Duration = Duration::from_millis(100);
/// How long after losing its connection the claim is made again (and then how often, while
/// PostgreSQL does not answer).
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// The connection's `application_name`, so an operator can find it in `pg_stat_activity`.
const APPLICATION: &str = "confab-claim";

/// How a server uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A lone server (no `--bus`): nobody else may use the database.
    Lone,
    /// A node of a cluster: other nodes may, a lone server may not.
    Node,
}

/// A held claim. Release it with [`Claim::release`] at a clean stop; dropping it lets go when
/// its connection closes.
pub struct Claim {
    keeper: JoinHandle<()>,
    stop: CancellationToken,
    lost: oneshot::Receiver<anyhow::Error>,
}

/// Claims the database at `url` for a server in `role`, waiting a few seconds for a server
/// that is stopping.
///
/// # Errors
/// The URL is malformed, PostgreSQL cannot be reached, or another server holds the database in
/// a way `role` cannot share (the error says which).
pub async fn claim(url: &str, role: Role) -> anyhow::Result<Claim> {
    let mut config = pg_conn::parse(url)?;
    config.application_name(APPLICATION);
    let place = pg_conn::describe(&config);
    let (client, connection) = connect(&config)
        .await
        .with_context(|| format!("claiming the database in {place}"))?;
    let deadline = tokio::time::Instant::now() + HANDOVER;
    while !try_lock(&client, role).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(refusal(&client, role, &place).await);
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
    let stop = CancellationToken::new();
    let (tell, lost) = oneshot::channel();
    let keeper = tokio::spawn(keep(
        config,
        role,
        place,
        client,
        connection,
        stop.clone(),
        tell,
    ));
    Ok(Claim { keeper, stop, lost })
}

impl Claim {
    /// Resolves if the claim was lost to another server while this one ran; never otherwise.
    pub async fn lost(&mut self) -> anyhow::Error {
        match (&mut self.lost).await {
            Ok(e) => e,
            // The keeper ended without losing the claim: released.
            Err(_) => std::future::pending().await,
        }
    }

    /// Lets go of the claim and waits until PostgreSQL has, so a server started next on the
    /// database finds it free.
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.keeper.await;
    }
}

type Connection = JoinHandle<Result<(), tokio_postgres::Error>>;

async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<(Client, Connection)> {
    let connecting = config.connect(NoTls);
    let (client, connection) =
        match tokio::time::timeout(pg_conn::CONNECT_TIMEOUT, connecting).await {
            Ok(pair) => pair.map_err(pg_conn::classify)?,
            Err(_) => {
                return Err(anyhow!(
                    "connecting took longer than {:?}",
                    pg_conn::CONNECT_TIMEOUT
                ));
            }
        };
    Ok((client, tokio::spawn(connection)))
}

async fn try_lock(client: &Client, role: Role) -> anyhow::Result<bool> {
    let sql = match role {
        Role::Lone => "SELECT pg_try_advisory_lock($1, $2)",
        Role::Node => "SELECT pg_try_advisory_lock_shared($1, $2)",
    };
    let row = client
        .query_one(sql, &[&KEY.0, &KEY.1])
        .await
        .map_err(pg_conn::classify)?;
    Ok(row.get(0))
}

/// Why `role` could not claim the database: who holds it. A lone server that finds the lock
/// shareable knows cluster nodes hold it.
async fn refusal(client: &Client, role: Role, place: &str) -> anyhow::Error {
    match role {
        Role::Node => anyhow!(
            "a confab server without --bus is using the database in {place}: stop it before \
             starting the nodes of a cluster on this database (or start it with --bus and \
             --node-id as a node too)"
        ),
        Role::Lone => match try_lock(client, Role::Node).await {
            Ok(true) => anyhow!(
                "the nodes of a cluster are using the database in {place}: start this server \
                 with --bus and --node-id to join them, or give it a database of its own"
            ),
            _ => anyhow!(
                "another confab server is using the database in {place}: two servers on one \
                 database must both be nodes of a cluster (--bus and --node-id); or give this \
                 one a database of its own"
            ),
        },
    }
}

/// Holds the claim until `stop`: releases it then, and makes it again whenever its connection
/// is lost; tells `lost` (and ends) if another server took the database meanwhile.
async fn keep(
    config: tokio_postgres::Config,
    role: Role,
    place: String,
    mut client: Client,
    mut connection: Connection,
    stop: CancellationToken,
    lost: oneshot::Sender<anyhow::Error>,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let unlock = match role {
                    Role::Lone => "SELECT pg_advisory_unlock($1, $2)",
                    Role::Node => "SELECT pg_advisory_unlock_shared($1, $2)",
                };
                // If this fails the connection is gone, and with it the lock.
                let _ = client.query_one(unlock, &[&KEY.0, &KEY.1]).await;
                drop(client);
                let _ = connection.await;
                return;
            }
            _ = &mut connection => {
                tracing::warn!(store = %place, "the connection holding this server's claim on the database was lost; claiming it again");
            }
        }
        // Claimed again as soon as PostgreSQL answers; until then the store's own calls fail
        // with UNAVAILABLE.
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECLAIM_EVERY) => {}
            }
            let Ok((c, conn)) = connect(&config).await else {
                continue;
            };
            match try_lock(&c, role).await {
                Ok(true) => {
                    tracing::info!(store = %place, "claimed the database again");
                    (client, connection) = (c, conn);
                    break;
                }
                Ok(false) => {
                    let why = refusal(&c, role, &place).await;
                    let _ = lost.send(why.context(
                        "another server took the database while this server's claim on it was \
                         lost; stopping",
                    ));
                    return;
                }
                Err(_) => {}
            }
        }
    }
}
