//! SPEC §5: block, unblock, list, and their effects; blocks survive a restart.

use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn blocking_is_idempotent_listed_and_checked() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    srv.register("Carol").await;
    let mut alice = srv.user("alice").await;
    alice.block("bob").await;
    alice.block("BOB").await;
    alice.block("carol").await;
    let list = alice.blocked().await;
    assert_eq!(list, ["bob", "Carol"]);
    alice.try_unblock("bob").await.unwrap();
    alice.try_unblock("bob").await.unwrap();
    let list = alice.blocked().await;
    assert_eq!(list, ["Carol"]);
    let r = alice.try_block("nobody").await;
    assert_status(r, Code::NotFound, "no user called nobody");
    let r = alice.try_block("alice").await;
    assert_status(r, Code::InvalidArgument, "you cannot block yourself");
    let r = alice.try_unblock("Alice").await;
    assert_status(r, Code::InvalidArgument, "yourself");
}

#[tokio::test]
async fn a_blocked_sender_is_told_and_nothing_is_stored() {
    let srv = TestServer::start().await;
    let mut alice = srv.user("alice").await;
    let mut bob = srv.user("bob").await;
    alice.presence().await;
    alice.block("bob").await;
    let r = bob.send("alice", "hello?").await;
    assert_status(
        r,
        Code::PermissionDenied,
        "your message could not be delivered because alice has blocked you",
    );
    // Alice can still write to bob, and after an unblock bob can answer.
    alice.send("bob", "one way").await.unwrap();
    alice.try_unblock("bob").await.unwrap();
    bob.send("alice", "thanks").await.unwrap();
    let m = alice.message().await;
    assert_eq!(
        (m.seq, m.body.as_str()),
        (1, "thanks"),
        "the refused message was never stored"
    );
}

#[tokio::test]
async fn blocks_survive_a_restart() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    alice.block("bob").await;
    let srv = srv.restart().await;
    let mut bob = srv.login("bob").await.unwrap();
    assert_status(
        bob.send("alice", "hi").await,
        Code::PermissionDenied,
        "alice has blocked you",
    );
    let mut alice = srv.login("alice").await.unwrap();
    let list = alice.blocked().await;
    assert_eq!(list, ["bob"]);
}
