//! Several confab nodes sharing one PostgreSQL database and one nats-server (SPEC §12): one test
//! per rule that must hold across nodes. Each test gets a fresh database, so its nodes form a
//! cluster of their own (the database's id names the cluster's NATS subjects).
//!
//! In-process nodes (`TestServer`) for the rules; real `confab serve` processes where a node
//! must die (`failure.rs`), and the real `confab chat` moving between them (`failover.rs`).
//! Without `CONFAB_TEST_POSTGRES` and `CONFAB_TEST_NATS` (which `scripts/test.sh` sets) these
//! tests fail with a sentence saying so.

mod admin;
mod bus;
mod claim;
mod delivery;
mod failover;
mod failure;
mod rules;
mod sessions;

use std::time::Duration;

use confab::types::Secret;

use confab::pb::{self, event::Kind};

use crate::common::{Session, TestServer, nats, pg};

/// `s`'s next event that is not presence: a login announced by another node may arrive a
/// window after this session started (a lone node's stream never sees logins from before it).
pub async fn next_not_presence(s: &mut Session, what: &str) -> Kind {
    loop {
        match s.next(what).await {
            Kind::Presence(_) => continue,
            other => return other,
        }
    }
}

/// `s`'s next direct message, skipping presence.
pub async fn message(s: &mut Session) -> pb::DirectMessage {
    match next_not_presence(s, "a direct message").await {
        Kind::Message(m) => m,
        other => panic!("{}: expected a direct message, got {other:?}", s.name),
    }
}

/// A cluster of in-process nodes.
pub struct TestCluster {
    pub nodes: Vec<TestServer>,
    /// The database's URL.
    pub db: String,
}

impl TestCluster {
    /// `n` nodes named `n0`, `n1`, … on a fresh database and the shared nats-server.
    pub async fn start(n: usize) -> Self {
        Self::with(n, |_| {}).await
    }

    /// As [`TestCluster::start`], each node's config changed by `f`.
    pub async fn with(n: usize, f: impl Fn(&mut confab::server::Config)) -> Self {
        let db = pg::fresh_database();
        let bus = nats::server_url();
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(node(&db, &bus, &format!("n{i}"), &f).await);
        }
        TestCluster { nodes, db }
    }
}

/// Node `name` of the cluster on `db` and `bus`.
pub async fn node(
    db: &str,
    bus: &str,
    name: &str,
    f: &impl Fn(&mut confab::server::Config),
) -> TestServer {
    let (db, bus, name) = (db.to_owned(), bus.to_owned(), name.to_owned());
    TestServer::with(move |c| {
        c.store = Some(Secret::new(db));
        c.bus = Some(Secret::new(bus));
        c.node_id = Some(name);
        c.session_timeout = Duration::from_secs(30);
        f(c);
    })
    .await
}
