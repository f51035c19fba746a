//! SPEC §9: the Admin service and its token.

use confab::pb::{self, SessionEndReason, event::Kind};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn the_admin_token_file_is_private_and_required() {
    let srv = TestServer::start().await;
    let path = srv.dir.path().join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        srv.handle.admin_token
    );
    let mut wrong = confab::client::api::admin(srv.channel().await, "not-the-token").unwrap();
    assert_status(
        wrong.get_stats(pb::GetStatsRequest {}).await,
        Code::Unauthenticated,
        "admin token",
    );
    // A user's session token is not an admin token.
    let alice = srv.user("alice").await;
    let mut user = confab::client::api::admin(srv.channel().await, &alice.token).unwrap();
    assert_status(
        user.list_users(pb::ListUsersRequest {}).await,
        Code::Unauthenticated,
        "admin token",
    );
}

#[tokio::test]
async fn sessions_stats_and_kick() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    bob.presence().await;
    alice.send("bob", "one").await.unwrap();
    bob.message().await;
    let mut admin = srv.admin().await;
    let sessions = admin
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(
        sessions
            .iter()
            .map(|s| s.username.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    let b = &sessions[1];
    assert!(b.address.starts_with("127.0.0.1:"));
    assert!(b.subscribed && b.since_ms > 0 && b.last_heartbeat_ms >= b.since_ms);
    assert_eq!(b.pending_inbox, 1);
    bob.heartbeat(1).await;
    let sessions = admin
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions[1].pending_inbox, 0);

    let stats = admin
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.users, stats.sessions, stats.logins), (2, 2, 2));
    assert_eq!(
        (stats.messages_relayed, stats.messages_delivered_live),
        (1, 1)
    );

    let kicked = admin
        .kick_user(pb::KickUserRequest {
            username: "Bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(kicked.was_online);
    match bob.next("the kick").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), SessionEndReason::Kicked),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        alice.presence().await,
        ("bob".into(), pb::Presence::Offline)
    );
    let again = admin
        .kick_user(pb::KickUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.was_online);
    assert_status(
        admin
            .kick_user(pb::KickUserRequest {
                username: "nobody".into(),
            })
            .await,
        Code::NotFound,
        "nobody",
    );
    assert_status(
        admin
            .unlock_user(pb::UnlockUserRequest {
                username: "nobody".into(),
            })
            .await,
        Code::NotFound,
        "nobody",
    );
    let r = admin
        .create_user(pb::CreateUserRequest {
            username: "ALICE".into(),
            password: PASSWORD.into(),
        })
        .await;
    assert_status(r, Code::AlreadyExists, "taken");
}
