//! The lockout counted by every node together, and what operators see and do on a cluster:
//! sessions and counts of the whole cluster with each session's node, kicks and unlocks that
//! reach any node.

use std::time::Duration;

use confab::pb::{self, event::Kind};
use tonic::Code;

use super::{TestCluster, next_not_presence};
use crate::common::{assert_status, login_at, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_on_different_nodes_add_up_to_one_lockout() {
    let c = TestCluster::start(3).await;
    let mut bob = c.nodes[1].user("bob").await;
    let mut carol = c.nodes[2].user("carol").await;
    let mut alice = c.nodes[0].user("alice").await;
    // Once bob and carol have seen alice arrive, their nodes know where her session is.
    for s in [&mut bob, &mut carol] {
        while s.presence().await.0 != "alice" {}
    }
    // One wrong password on each node: the third locks the account everywhere.
    for (i, node) in c.nodes.iter().enumerate() {
        let refused = login_at(&node.url, "alice", "a guess", None).await;
        let code = refused.err().unwrap().code();
        if i < 2 {
            assert_eq!(code, Code::Unauthenticated);
        } else {
            assert_eq!(
                code,
                Code::PermissionDenied,
                "locked after the third, on node n2"
            );
        }
    }
    // Locked on every node, even for the right password.
    for node in &c.nodes {
        assert_status(
            node.login("alice").await.map(|_| ()),
            Code::PermissionDenied,
            "locked",
        );
    }
    // Alice's live session (on n0) heard of each failure, wherever it happened.
    let mut failures = Vec::new();
    while failures.len() < 3 {
        if let Kind::LoginFailed(f) = next_not_presence(&mut alice, "failed-login notices").await {
            failures.push(f.failed_attempts);
        }
    }
    assert_eq!(failures, [1, 2, 3]);
    // An operator's unlock on another node lifts it for all.
    c.nodes[2]
        .admin()
        .await
        .unlock_user(pb::UnlockUserRequest {
            username: "alice".into(),
        })
        .await
        .unwrap();
    assert!(c.nodes[1].login("alice").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_every_nodes_sessions_and_kick_on_any_node() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    assert_eq!(alice.presence().await.0, "bob");
    let listed = c.nodes[0]
        .admin()
        .await
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let who: Vec<(&str, &str)> = listed
        .iter()
        .map(|s| (s.username.as_str(), s.node.as_str()))
        .collect();
    assert_eq!(who, [("alice", "n0"), ("bob", "n1")]);
    let stats = c.nodes[0]
        .admin()
        .await
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            stats.node.as_str(),
            stats.sessions,
            stats.cluster_sessions,
            stats.nodes
        ),
        ("n0", 1, 2, 2)
    );
    // Kicked through node n0, bob's session on n1 ends.
    let kicked = c.nodes[0]
        .admin()
        .await
        .kick_user(pb::KickUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(kicked.was_online);
    match next_not_presence(&mut bob, "the kick").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), pb::SessionEndReason::Kicked),
        other => panic!("expected SessionEnded, got {other:?}"),
    }
    assert_eq!(
        alice.presence().await,
        ("bob".into(), pb::Presence::Offline)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stats_shows_every_nodes_counters_and_the_answering_nodes_are_current() {
    // A short session timeout, so leases (and the counters left with them) renew often: every
    // second, while the sessions, without heartbeats, live 6 s.
    let c = TestCluster::with(2, |c| c.session_timeout = Duration::from_secs(6)).await;
    let _alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    let _carol = c.nodes[1].user("carol").await;
    bob.send("alice", "hello").await.unwrap();
    let stats = |node: usize| {
        let server = &c.nodes[node];
        async move {
            server
                .admin()
                .await
                .get_stats(pb::GetStatsRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    // n0's own counters are current in its answer at once.
    let now = stats(0).await;
    let n0 = now
        .per_node
        .iter()
        .find(|n| n.node == "n0")
        .expect("n0 listed");
    assert_eq!((n0.logins, n0.sessions), (now.logins, now.sessions));
    assert_eq!((n0.logins, n0.sessions), (1, 1));
    // n1's arrive with its next lease renewal.
    let n1 = within("n1's counters in n0's GetStats", async {
        loop {
            let s = stats(0).await;
            assert_eq!(s.nodes, 2);
            let names: Vec<&str> = s.per_node.iter().map(|n| n.node.as_str()).collect();
            assert_eq!(names, ["n0", "n1"]);
            if let Some(n1) = s
                .per_node
                .iter()
                .find(|n| n.node == "n1" && n.messages_relayed > 0)
            {
                break n1.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!((n1.logins, n1.sessions, n1.messages_relayed), (2, 2, 1));
    // The same picture from the other node.
    let from_n1 = stats(1).await;
    assert_eq!(from_n1.node, "n1");
    assert_eq!(from_n1.per_node.len(), 2);
}
