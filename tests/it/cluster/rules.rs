//! SPEC §5 and §6 between users on different nodes: blocks and every effect of one, and the
//! consent handshake with its grants and their revocation.

use confab::pb::{self, event::Kind};
use tonic::Code;

use super::{TestCluster, next_not_presence};
use crate::common::assert_status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_on_one_node_holds_on_the_others() {
    let c = TestCluster::start(2).await;
    let mut bob = c.nodes[1].user("bob").await;
    let mut alice = c.nodes[0].user("alice").await;
    assert_eq!(bob.presence().await, ("alice".into(), pb::Presence::Online));
    alice.block("bob").await;
    // A barrier: alice's node published the block before this message, so once bob has the
    // message his node knows of the block.
    alice.send("bob", "barrier").await.unwrap();
    assert_eq!(super::message(&mut bob).await.body, "barrier");
    let refused = bob.send("alice", "hi").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("alice has blocked you"),
        "{refused:?}"
    );
    // Alice is hidden from bob's ListOnline, and bob does not see her leave.
    assert!(bob.online().await.is_empty());
    alice.logout().await;
    let mut carol = c.nodes[0].user("carol").await;
    assert_eq!(
        bob.presence().await,
        ("carol".into(), pb::Presence::Online),
        "bob saw carol arrive, and nothing of alice before"
    );
    // Unblocked (on the other node), messages go through again.
    let mut alice = c.nodes[1].login("alice").await.unwrap();
    alice.try_unblock("bob").await.unwrap();
    bob.send("alice", "again").await.unwrap();
    carol.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_handshake_and_its_revocation_work_across_nodes() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    assert_eq!(alice.presence().await.0, "bob");
    let id = alice.request_address("bob").await.unwrap().request_id;
    assert!(!id.is_empty());
    let asked = match next_not_presence(&mut bob, "the request").await {
        Kind::AddressRequested(r) => r,
        other => panic!("expected AddressRequested, got {other:?}"),
    };
    assert_eq!(asked.request_id, id);
    assert_eq!(asked.from, "alice");
    assert_eq!(asked.from_public_key, alice.peer_public_key);
    // Only the target may answer: alice cannot answer her own request.
    assert_status(alice.respond(&id, true).await, Code::PermissionDenied, "");
    bob.respond(&id, true).await.unwrap();
    let granted = match next_not_presence(&mut alice, "the grant").await {
        Kind::AddressGranted(g) => g,
        other => panic!("expected AddressGranted, got {other:?}"),
    };
    assert_eq!(granted.user, "bob");
    assert_eq!(granted.public_key, bob.peer_public_key);
    assert_ne!(granted.port, 0);
    // Asking again returns the grant at once.
    let again = alice.request_address("bob").await.unwrap();
    assert!(again.grant.is_some());
    // Bob logs out on his node: both sides are told the grant is over.
    bob.logout().await;
    match next_not_presence(&mut alice, "the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "bob"),
        other => panic!("expected AddressRevoked, got {other:?}"),
    }
    assert_status(
        alice.request_address("bob").await,
        Code::FailedPrecondition,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_and_a_block_on_another_node_end_requests_and_grants() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    assert_eq!(alice.presence().await.0, "bob");
    let id = alice.request_address("bob").await.unwrap().request_id;
    next_not_presence(&mut bob, "the request").await;
    bob.respond(&id, false).await.unwrap();
    match next_not_presence(&mut alice, "the denial").await {
        Kind::AddressDenied(d) => assert_eq!(d.user, "bob"),
        other => panic!("expected AddressDenied, got {other:?}"),
    }
    // The other way round, granted, then ended by a block on the granting node.
    let id = bob.request_address("alice").await.unwrap().request_id;
    next_not_presence(&mut alice, "bob's request").await;
    alice.respond(&id, true).await.unwrap();
    assert!(matches!(
        next_not_presence(&mut bob, "the grant").await,
        Kind::AddressGranted(_)
    ));
    alice.block("bob").await;
    match next_not_presence(&mut bob, "the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "alice"),
        other => panic!("expected AddressRevoked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_logging_out_on_its_node_ends_the_grant_once_for_the_target() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    let mut carol = c.nodes[0].user("carol").await;
    // Alice's node knows bob is online once she sees him (carol may come first).
    while alice.presence().await.0 != "bob" {}
    let id = alice.request_address("bob").await.unwrap().request_id;
    assert!(matches!(
        next_not_presence(&mut bob, "the request").await,
        Kind::AddressRequested(_)
    ));
    bob.respond(&id, true).await.unwrap();
    assert!(matches!(
        next_not_presence(&mut alice, "the grant").await,
        Kind::AddressGranted(_)
    ));
    alice.logout().await;
    match next_not_presence(&mut bob, "the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "alice"),
        other => panic!("expected AddressRevoked, got {other:?}"),
    }
    // Once: the next thing bob sees is carol's message, not the revocation again.
    carol.send("bob", "after").await.unwrap();
    match next_not_presence(&mut bob, "carol's message").await {
        Kind::Message(m) => assert_eq!(m.body, "after"),
        other => panic!("expected carol's message, got {other:?}"),
    }
}
