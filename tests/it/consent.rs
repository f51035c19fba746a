//! SPEC §6: the address/consent handshake.

use std::time::Duration;

use confab::pb::{self, DenyReason, event::Kind};
use tonic::Code;

use crate::common::*;

/// Alice and bob online, each having seen the other arrive.
async fn pair(srv: &TestServer) -> (Session, Session) {
    let mut bob = srv.user("bob").await;
    let alice = srv.user("alice").await;
    bob.presence().await;
    (alice, bob)
}

async fn requested(user: &mut Session) -> pb::AddressRequested {
    match user.next("an address request").await {
        Kind::AddressRequested(r) => r,
        other => panic!("expected AddressRequested, got {other:?}"),
    }
}

/// Alice asks bob, bob accepts, alice holds the grant.
async fn grant(alice: &mut Session, bob: &mut Session) {
    let id = alice.request_address("bob").await.unwrap().request_id;
    requested(bob).await;
    bob.respond(&id, true).await.unwrap();
    assert!(matches!(alice.next("grant").await, Kind::AddressGranted(_)));
}

#[tokio::test]
async fn an_accepted_request_grants_the_address_and_is_reused() {
    let srv = TestServer::start().await;
    let (mut alice, mut bob) = pair(&srv).await;
    let id = alice.request_address("bob").await.unwrap().request_id;
    assert!(!id.is_empty());
    let req = requested(&mut bob).await;
    assert_eq!(
        (req.request_id.as_str(), req.from.as_str()),
        (id.as_str(), "alice")
    );
    assert_eq!(req.from_public_key, alice.peer_public_key);
    assert!(req.expires_at_ms > confab::now_ms());
    // Asking again while pending: same id, no second prompt.
    assert_eq!(alice.request_address("bob").await.unwrap().request_id, id);
    bob.respond(&id, true).await.unwrap();
    let grant = match alice.next("the grant").await {
        Kind::AddressGranted(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (grant.user.as_str(), grant.host.as_str()),
        ("bob", "127.0.0.1")
    );
    assert_eq!(grant.public_key, bob.peer_public_key);
    assert!(grant.port >= 40_000);
    // A valid grant is returned at once, without asking bob.
    let again = alice.request_address("bob").await.unwrap();
    assert_eq!(again.grant, Some(grant));
    assert!(again.request_id.is_empty());
    // Barrier: bob's next event is a message, not a second prompt.
    alice.send("bob", "barrier").await.unwrap();
    assert_eq!(bob.message().await.body, "barrier");
    let stats = srv.stats().await;
    assert_eq!((stats.address_requests, stats.address_grants), (1, 1));
}

#[tokio::test]
async fn a_decline_is_reported_and_starts_a_cooldown() {
    let srv = TestServer::start().await;
    let (mut alice, mut bob) = pair(&srv).await;
    let id = alice.request_address("bob").await.unwrap().request_id;
    requested(&mut bob).await;
    bob.respond(&id, false).await.unwrap();
    match alice.next("the denial").await {
        Kind::AddressDenied(d) => {
            assert_eq!((d.user.as_str(), d.reason()), ("bob", DenyReason::Declined))
        }
        other => panic!("{other:?}"),
    }
    assert_status(
        alice.request_address("bob").await,
        Code::ResourceExhausted,
        "bob declined your request; you can ask again in 5m",
    );
    // The answered request is gone.
    assert_status(
        bob.respond(&id, true).await,
        Code::NotFound,
        "no pending address request",
    );
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let srv = TestServer::with(|c| c.consent_timeout = Duration::from_millis(300)).await;
    let (mut alice, mut bob) = pair(&srv).await;
    let id = alice.request_address("bob").await.unwrap().request_id;
    requested(&mut bob).await;
    match alice.next("the timeout").await {
        Kind::AddressDenied(d) => assert_eq!(d.reason(), DenyReason::Timeout),
        other => panic!("{other:?}"),
    }
    assert_status(bob.respond(&id, true).await, Code::NotFound, "expired");
    // No cooldown after a timeout: asking again prompts again.
    let id2 = alice.request_address("bob").await.unwrap().request_id;
    assert_ne!(id, id2);
    requested(&mut bob).await;
}

#[tokio::test]
async fn grants_are_revoked_on_logout_on_both_sides() {
    let srv = TestServer::start().await;
    let (mut alice, mut bob) = pair(&srv).await;
    grant(&mut alice, &mut bob).await;
    bob.logout().await;
    match alice.next("the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "bob"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        alice.presence().await,
        ("bob".into(), pb::Presence::Offline)
    );
    assert_status(
        alice.request_address("bob").await,
        Code::FailedPrecondition,
        "bob is offline",
    );
}

#[tokio::test]
async fn grants_are_revoked_when_the_target_blocks_the_requester() {
    let srv = TestServer::start().await;
    let (mut alice, mut bob) = pair(&srv).await;
    grant(&mut alice, &mut bob).await;
    bob.block("alice").await;
    match alice.next("the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "bob"),
        other => panic!("{other:?}"),
    }
    match bob.next("the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "alice"),
        other => panic!("{other:?}"),
    }
    assert_status(
        alice.request_address("bob").await,
        Code::PermissionDenied,
        "bob has blocked you",
    );
}

#[tokio::test]
async fn grants_are_revoked_when_either_side_logs_in_again() {
    let srv = TestServer::start().await;
    let (mut alice, mut bob) = pair(&srv).await;
    grant(&mut alice, &mut bob).await;
    let _bob_again = srv.login("bob").await.unwrap();
    match alice.next("the revocation").await {
        Kind::AddressRevoked(r) => assert_eq!(r.user, "bob"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn requests_are_checked() {
    let srv = TestServer::with(|c| c.max_pending_requests = 1).await;
    let (mut alice, mut bob) = pair(&srv).await;
    srv.register("dave").await;
    assert_status(
        alice.request_address("alice").await,
        Code::InvalidArgument,
        "yourself",
    );
    assert_status(
        alice.request_address("nobody").await,
        Code::NotFound,
        "no user called nobody",
    );
    assert_status(
        alice.request_address("dave").await,
        Code::FailedPrecondition,
        "dave is offline",
    );
    let id = alice.request_address("bob").await.unwrap().request_id;
    requested(&mut bob).await;
    // Only the target may answer.
    assert_status(
        alice.respond(&id, true).await,
        Code::PermissionDenied,
        "somebody else",
    );
    assert_status(
        bob.respond("no-such-id", true).await,
        Code::NotFound,
        "no pending",
    );
    // The pending cap (1 here) stops a second requester.
    let mut carol = srv.user("carol").await;
    assert_status(
        carol.request_address("bob").await,
        Code::ResourceExhausted,
        "too many address requests",
    );
    // A target that blocks the requester refuses it.
    bob.block("carol").await;
    assert_status(
        carol.request_address("bob").await,
        Code::PermissionDenied,
        "bob has blocked you",
    );
}

#[tokio::test]
async fn a_target_going_offline_denies_its_pending_requests() {
    let srv = TestServer::start().await;
    let (mut alice, mut bob) = pair(&srv).await;
    alice.request_address("bob").await.unwrap();
    requested(&mut bob).await;
    bob.logout().await;
    match alice.next("the denial").await {
        Kind::AddressDenied(d) => assert_eq!(d.reason(), DenyReason::Offline),
        other => panic!("{other:?}"),
    }
}
