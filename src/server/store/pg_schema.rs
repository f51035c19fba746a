//! The PostgreSQL schema and its migrations, safe when several nodes start at once.
//!
//! Each node runs the migrations in one transaction that first takes a transaction-level
//! advisory lock: the first node applies them, the others wait on the lock and then find
//! nothing left to do. A database whose schema is newer than this binary is refused rather than
//! written with rules the binary does not know.

use anyhow::{Context, bail};
use tokio_postgres::Client;

/// The advisory lock key every confab node takes to migrate ("confab" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6e66_6162;

/// Schema migrations, applied in order; `confab_schema.version` records how many ran.
///
/// Differences from the SQLite schema, and why: message ids and bodies are `bytea`, because
/// PostgreSQL's `text` cannot hold a NUL character, which a UTF-8 message may contain (the store
/// hands back exactly what it was given, as SQLite does). `users` leaves room on its pages
/// (`fillfactor`) because every stored message advances its recipient's counters in place, and
/// a free slot on the same page keeps that update cheap (no index change).
const MIGRATIONS: &[&str] = &[
    // 1: accounts, blocks, inbox.
    "CREATE TABLE users (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        name_key text NOT NULL UNIQUE,
        password_hash text NOT NULL,
        created_ms bigint NOT NULL,
        last_login_ms bigint NOT NULL DEFAULT 0,
        -- Highest seq ever given to this user's inbox; seqs are never reused.
        last_seq bigint NOT NULL DEFAULT 0,
        -- Messages in the inbox now (for the inbox limit without counting rows).
        inbox_count bigint NOT NULL DEFAULT 0
    ) WITH (fillfactor = 50);
    CREATE TABLE blocks (
        blocker bigint NOT NULL REFERENCES users(id),
        blocked bigint NOT NULL REFERENCES users(id),
        PRIMARY KEY (blocker, blocked)
    );
    CREATE TABLE inbox (
        recipient bigint NOT NULL REFERENCES users(id),
        seq bigint NOT NULL,
        sender bigint NOT NULL REFERENCES users(id),
        message_id bytea NOT NULL,
        body bytea NOT NULL,
        sent_ms bigint NOT NULL,
        PRIMARY KEY (recipient, seq)
    );
    CREATE UNIQUE INDEX inbox_dedupe ON inbox (recipient, sender, message_id);",
    // 2: operators disable and delete accounts. A deleted account stays as a tombstone (its
    // name for the messages it sent that still wait in other inboxes) with a name key nobody
    // can type, so the name can be registered again.
    "ALTER TABLE users
        ADD COLUMN disabled boolean NOT NULL DEFAULT false,
        ADD COLUMN deleted boolean NOT NULL DEFAULT false;",
    // 3: device tickets (SPEC §2): the hash of each ticket a successful login handed out.
    "CREATE TABLE device_tickets (
        hash bytea PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES users(id),
        created_ms bigint NOT NULL
    );
    CREATE INDEX device_tickets_user ON device_tickets (user_id, created_ms);",
    // 4: the cluster (`store/pg_directory.rs`): the database's id, which names the cluster on
    // the bus, the nodes' leases, the session directory and the login lockout every node counts.
    "CREATE TABLE cluster (id text NOT NULL);
    INSERT INTO cluster (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 16));
    CREATE TABLE nodes (name text PRIMARY KEY, lease_until_ms bigint NOT NULL);
    CREATE SEQUENCE session_epoch;
    CREATE TABLE sessions (
        user_id bigint PRIMARY KEY REFERENCES users(id),
        node text NOT NULL,
        epoch bigint NOT NULL,
        since_ms bigint NOT NULL,
        remote text NOT NULL,
        peer_host text,
        peer_port integer,
        peer_key bytea
    );
    CREATE INDEX sessions_node ON sessions (node);
    CREATE TABLE lockouts (
        name_key text PRIMARY KEY,
        failures integer NOT NULL,
        -- 0: not locked (yet).
        locked_until_ms bigint NOT NULL
    );",
    // 5: each node leaves its `GetStats` counters (JSON) with its lease, for the others.
    "ALTER TABLE nodes ADD COLUMN stats text NOT NULL DEFAULT '{}';",
];

/// The schema version this binary writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Applies pending migrations, or refuses a schema newer than [`VERSION`].
pub(super) async fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    // Held until this transaction ends: nodes starting together migrate one after the other.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS confab_schema (version integer NOT NULL)")
        .await?;
    let applied: i32 = match tx
        .query_opt("SELECT version FROM confab_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO confab_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if applied > VERSION {
        bail!(
            "the database's schema is version {applied}, newer than this confab understands \
             (version {VERSION}); run the newer confab that upgraded it, or upgrade this one"
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {}", i + 1))?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    if applied < VERSION {
        tx.execute("UPDATE confab_schema SET version = $1", &[&VERSION])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
