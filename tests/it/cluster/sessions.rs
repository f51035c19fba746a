//! One session per user across nodes, accounts known on every node, and what a node refuses at
//! start.

use confab::{
    pb::{self, event::Kind},
    server::{self, Config},
    types::Secret,
};

use super::TestCluster;
use crate::common::{login_at, nats, pg};

#[tokio::test]
async fn a_bus_without_the_postgres_store_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().to_path_buf());
    config.bus = Some(Secret::new(nats::server_url()));
    let err = match server::start(config).await {
        Ok(_) => panic!("a node on SQLite started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("give --store postgres://"), "{err}");
}

#[tokio::test]
async fn a_bad_node_id_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().to_path_buf());
    config.store = Some(Secret::new(pg::fresh_database()));
    config.bus = Some(Secret::new(nats::server_url()));
    config.node_id = Some("a.b".into());
    let err = match server::start(config).await {
        Ok(_) => panic!("a node named a.b started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--node-id") && err.contains("letters, digits"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_registered_on_one_node_logs_in_on_another_at_once() {
    let c = TestCluster::start(2).await;
    c.nodes[0].register("alice").await;
    // No wait: the second node has not necessarily heard of the account yet.
    let session = c.nodes[1].login("alice").await;
    assert!(session.is_ok(), "{:?}", session.err());
    // And a wrong password is still wrong there.
    let refused = login_at(&c.nodes[1].url, "alice", "not the password", None).await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_ends_the_first_session_logged_in_elsewhere() {
    let c = TestCluster::start(2).await;
    let mut first = c.nodes[0].user("alice").await;
    let mut second = c.nodes[1].login("alice").await.unwrap();
    second.subscribe(0).await;
    assert!(second.backlog().await.is_empty());
    match first.next("the end of the first session").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), pb::SessionEndReason::LoggedInElsewhere),
        other => panic!("expected SessionEnded, got {other:?}"),
    }
    assert!(first.stream_closed().await);
    // The old token no longer works; the new one does.
    let refused = first
        .chat
        .list_online(pb::ListOnlineRequest::default())
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    second.online().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_of_two_logins_on_two_nodes_wins_whatever_the_order() {
    let c = TestCluster::start(3).await;
    c.nodes[0].register("alice").await;
    // Three logins of one user on three nodes, one after the other: only the last survives.
    let mut sessions = Vec::new();
    for node in &c.nodes {
        let mut s = node.login("alice").await.unwrap();
        s.subscribe(0).await;
        s.backlog().await;
        sessions.push(s);
    }
    for s in &mut sessions[..2] {
        match s.next("the end of an earlier session").await {
            Kind::SessionEnded(e) => {
                assert_eq!(e.reason(), pb::SessionEndReason::LoggedInElsewhere)
            }
            other => panic!("expected SessionEnded, got {other:?}"),
        }
    }
    let last = sessions.last_mut().unwrap();
    last.online().await;
}
