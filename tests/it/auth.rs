//! SPEC §2: accounts, login, lockout, throttling, tokens, one session per user.

use std::time::Duration;

use confab::pb::{self, SessionEndReason, event::Kind};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn registered_users_log_in_with_their_registered_spelling() {
    let srv = TestServer::start().await;
    srv.register("Alice").await;
    let s = srv.login("alice").await.unwrap();
    assert_eq!(s.name, "Alice");
    assert_eq!(s.token.len(), 64, "256 random bits, hex");
    assert_eq!(s.login.max_message_bytes, 4096);
    assert_eq!(
        s.login.heartbeat_interval_ms * 3,
        s.login.session_timeout_ms
    );
}

#[tokio::test]
async fn names_are_unique_ignoring_case() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut auth = srv.auth().await;
    let r = auth
        .register(pb::RegisterRequest {
            username: "Bob".into(),
            password: PASSWORD.into(),
        })
        .await;
    assert_status(r, Code::AlreadyExists, "the name Bob is already taken");
}

#[tokio::test]
async fn bad_usernames_and_passwords_are_invalid_arguments() {
    let srv = TestServer::start().await;
    let mut auth = srv.auth().await;
    for (name, password, text) in [
        ("", PASSWORD, "cannot be empty"),
        ("bob smith", PASSWORD, "may contain only"),
        (&"x".repeat(33), PASSWORD, "at most 32"),
        ("bøb", PASSWORD, "may contain only"),
        ("bob", "short", "at least 8"),
    ] {
        let r = auth
            .register(pb::RegisterRequest {
                username: name.into(),
                password: password.into(),
            })
            .await;
        assert_status(r, Code::InvalidArgument, text);
    }
    let r = srv.login("bob smith").await;
    assert_status(r.map(|s| s.name), Code::InvalidArgument, "may contain only");
    let huge = "p".repeat(1025);
    let r = srv.login_from("bob", &huge, None).await;
    assert_status(
        r.map(|s| s.name),
        Code::InvalidArgument,
        "at most 1024 bytes",
    );
    // Nothing was created by the bad requests.
    let users = srv.users().await;
    assert!(users.is_empty());
}

#[tokio::test]
async fn registration_can_be_switched_off() {
    let srv = TestServer::with(|c| c.registration = false).await;
    let r = srv
        .auth()
        .await
        .register(pb::RegisterRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await;
    assert_status(r, Code::PermissionDenied, "registration is disabled");
    // The operator can still create accounts.
    srv.admin()
        .await
        .create_user(pb::CreateUserRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    srv.login("alice").await.unwrap();
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let users = srv.stored_users().await;
    let hash = &users
        .iter()
        .find(|u| u.name == "alice")
        .unwrap()
        .password_hash;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn the_users_file_creates_missing_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.txt");
    std::fs::write(&file, "alice correct-horse\nbob   battery-staple\n\n").unwrap();
    let srv = TestServer::with(|c| c.users_file = Some(file.clone())).await;
    srv.login_from("alice", "correct-horse", None)
        .await
        .unwrap();
    srv.login_from("bob", "battery-staple", None).await.unwrap();
    // Importing again (a restart) keeps the accounts and creates no duplicates.
    let srv = srv.restart().await;
    srv.login_from("bob", "battery-staple", None).await.unwrap();
    let users = srv.users().await;
    assert_eq!(users.len(), 2);
}

#[tokio::test]
async fn wrong_passwords_say_how_many_attempts_are_left() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let r = srv.login_from("alice", "wrong password", None).await;
    assert_status(r.map(|s| s.name), Code::Unauthenticated, "2 attempts left");
    let r = srv.login_from("nobody", "wrong password", None).await;
    assert_status(
        r.map(|s| s.name),
        Code::Unauthenticated,
        "wrong username or password",
    );
    // A success resets the count.
    srv.login("alice").await.unwrap();
    let r = srv.login_from("alice", "wrong password", None).await;
    assert_status(r.map(|s| s.name), Code::Unauthenticated, "2 attempts left");
}

#[tokio::test]
async fn the_lockout_holds_across_addresses_and_lifts_after_its_time() {
    let srv = TestServer::with(|c| c.block_duration = Duration::from_millis(1500)).await;
    srv.register("alice").await;
    let here = Some("127.0.0.1".parse().unwrap());
    let there = Some("127.0.0.2".parse().unwrap());
    let r = srv.login_from("alice", "wrong 1", here).await;
    assert_status(r.map(|s| s.name), Code::Unauthenticated, "2 attempts left");
    let r = srv.login_from("alice", "wrong 2", there).await;
    assert_status(r.map(|s| s.name), Code::Unauthenticated, "1 attempts left");
    let r = srv.login_from("alice", "wrong 3", here).await;
    assert_status(r.map(|s| s.name), Code::PermissionDenied, "login is locked");
    // Locked: the right password from the other address is refused too, with a retry delay.
    let locked = srv
        .login_from("alice", PASSWORD, there)
        .await
        .map(|s| s.name);
    let status = locked.as_ref().unwrap_err().clone();
    assert_status(
        locked,
        Code::PermissionDenied,
        "too many failed logins for alice",
    );
    use tonic_types::StatusExt;
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay <= Duration::from_millis(1500) && delay > Duration::ZERO,
        "{delay:?}"
    );
    // Waiting out the lock (time must pass; nothing to await) lets the right password in.
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    srv.login_from("alice", PASSWORD, there).await.unwrap();
}

#[tokio::test]
async fn an_operator_can_lift_a_lockout() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    for _ in 0..3 {
        let _ = srv.login_from("alice", "wrong", None).await;
    }
    assert_status(
        srv.login("alice").await.map(|s| s.name),
        Code::PermissionDenied,
        "locked",
    );
    let users = srv.users().await;
    assert!(users[0].locked_until_ms > 0);
    srv.admin()
        .await
        .unlock_user(pb::UnlockUserRequest {
            username: "ALICE".into(),
        })
        .await
        .unwrap();
    srv.login("alice").await.unwrap();
}

#[tokio::test]
async fn the_live_session_is_told_of_failed_logins_and_survives_the_lockout() {
    let srv = TestServer::start().await;
    let mut alice = srv.user("alice").await;
    let _ = srv
        .login_from("alice", "guess 1", Some("127.0.0.2".parse().unwrap()))
        .await;
    match alice.next("a failed login notice").await {
        Kind::LoginFailed(f) => {
            assert_eq!((f.failed_attempts, f.locked_until_ms), (1, 0));
            assert_eq!(f.source, "127.0.0.2");
        }
        other => panic!("{other:?}"),
    }
    let _ = srv.login_from("alice", "guess 2", None).await;
    let _ = srv.login_from("alice", "guess 3", None).await;
    let mut last = None;
    for _ in 0..2 {
        if let Kind::LoginFailed(f) = alice.next("failed login notices").await {
            last = Some(f);
        }
    }
    let last = last.unwrap();
    assert_eq!(last.failed_attempts, 3);
    assert!(last.locked_until_ms > confab::now_ms());
    // The session still works.
    assert!(alice.online().await.is_empty());
}

#[tokio::test]
async fn one_address_cannot_spray_logins() {
    let srv = TestServer::with(|c| {
        c.login_rate = 0.01;
        c.login_burst = 3.0;
    })
    .await;
    srv.register("alice").await; // one attempt
    let _ = srv.login_from("alice", "wrong", None).await;
    let _ = srv.login_from("bob", "wrong", None).await;
    let r = srv.login_from("carol", "wrong", None).await;
    assert_status(
        r.map(|s| s.name),
        Code::ResourceExhausted,
        "too many login attempts from your address",
    );
    // Another address is not affected.
    srv.login_from("alice", PASSWORD, Some("127.0.0.2".parse().unwrap()))
        .await
        .unwrap();
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let srv = TestServer::start().await;
    let channel = srv.channel().await;
    let mut bare = pb::chat_client::ChatClient::new(channel.clone());
    let r = bare.list_online(pb::ListOnlineRequest::default()).await;
    assert_status(r, Code::Unauthenticated, "needs a session token");
    let mut wrong = confab::client::api::chat(channel, &"0".repeat(64)).unwrap();
    let r = wrong.list_online(pb::ListOnlineRequest::default()).await;
    assert_status(r, Code::Unauthenticated, "unknown or the session has ended");
    let r = wrong.subscribe(pb::SubscribeRequest::default()).await;
    assert_status(r.map(|_| ()), Code::Unauthenticated, "unknown");
}

#[tokio::test]
async fn a_second_login_ends_the_first_session() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut first = srv.user("alice").await;
    assert_eq!(bob.presence().await, ("alice".into(), pb::Presence::Online));
    let mut second = srv.login("alice").await.unwrap();
    match first.next("the kick").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), SessionEndReason::LoggedInElsewhere),
        other => panic!("{other:?}"),
    }
    assert!(first.stream_closed().await);
    let r = first
        .chat
        .list_online(pb::ListOnlineRequest::default())
        .await;
    assert_status(r, Code::Unauthenticated, "session has ended");
    // Alice stays online for everybody else.
    assert_eq!(bob.presence().await, ("alice".into(), pb::Presence::Online));
    assert_eq!(second.online().await, vec!["bob"]);
}

#[tokio::test]
async fn logout_ends_the_session_and_the_token() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    bob.presence().await;
    alice.logout().await;
    match alice.next("the end of the session").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), SessionEndReason::LoggedOut),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bob.presence().await,
        ("alice".into(), pb::Presence::Offline)
    );
    let r = alice.chat.heartbeat(pb::HeartbeatRequest::default()).await;
    assert_status(r, Code::Unauthenticated, "");
}
