//! Who may serve one PostgreSQL database (`store/pg_claim.rs`): a lone server alone, or the
//! nodes of one cluster. Anything else is refused at start with a sentence saying who is there,
//! and a lone server whose claim another server took while its connection was down stops.

use std::path::Path;

use confab::{
    server::{self, Config},
    types::Secret,
};

use super::TestCluster;
use crate::common::{TestServer, nats, pg};

/// A lone server's configuration on the database `db`.
fn lone(dir: &Path, db: &str) -> Config {
    let mut config = Config::for_tests(dir.to_path_buf());
    config.store = Some(Secret::new(db.to_owned()));
    config
}

/// Why a server with `config` did not start; panics if it did.
async fn refusal(config: Config) -> String {
    match server::start(config).await {
        Ok(_) => panic!("a server started on a database it must not share"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lone_server_on_a_database_is_refused_until_the_first_stops() {
    let db = pg::fresh_database();
    let mut first = TestServer::with(|c| c.store = Some(Secret::new(db.clone()))).await;
    first.register("alice").await;

    let dir = tempfile::tempdir().unwrap();
    let why = refusal(lone(dir.path(), &db)).await;
    assert!(
        why.contains("another confab server is using the database")
            && why.contains("--bus")
            && !why.contains("password"),
        "{why}"
    );

    // A clean stop lets go at once: the next server on the database starts, with its accounts.
    first.handle.shutdown.cancel();
    first.stopped().await.unwrap();
    let second = server::start(lone(dir.path(), &db))
        .await
        .expect("a server starts on the database its predecessor left");
    let url = format!("http://{}", second.addr);
    crate::common::login_at(&url, "alice", crate::common::PASSWORD, None)
        .await
        .expect("the account is there");
    second.shutdown.cancel();
    second.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_and_the_nodes_of_a_cluster_do_not_share_a_database() {
    let cluster = TestCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let why = refusal(lone(dir.path(), &cluster.db)).await;
    assert!(
        why.contains("the nodes of a cluster are using the database") && why.contains("--bus"),
        "{why}"
    );

    let db = pg::fresh_database();
    let _lone = TestServer::with(|c| c.store = Some(Secret::new(db.clone()))).await;
    let mut node = lone(dir.path(), &db);
    node.bus = Some(Secret::new(nats::server_url()));
    node.node_id = Some("n0".into());
    let why = refusal(node).await;
    assert!(
        why.contains("a confab server without --bus is using the database"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_whose_claim_another_server_took_stops_with_a_sentence() {
    let db = pg::fresh_database();
    let mut first = TestServer::with(|c| c.store = Some(Secret::new(db.clone()))).await;
    // The connection holding the first server's claim is cut (as a network fault would), and
    // a second server takes the database before the first claims it again.
    pg::execute(
        &db,
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
         WHERE application_name = 'confab-claim' AND datname = current_database()",
    );
    let dir = tempfile::tempdir().unwrap();
    let second = server::start(lone(dir.path(), &db))
        .await
        .expect("the second server claims the database the first let go of");

    let why = format!("{:#}", first.stopped().await.unwrap_err());
    assert!(
        why.contains("another server took the database")
            && why.contains("another confab server is using the database"),
        "{why}"
    );
    second.shutdown.cancel();
    second.task.await.unwrap().unwrap();
}
