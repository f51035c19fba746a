//! SPEC §2: the lockout cannot be turned against the owner. A login presenting a valid device
//! ticket of its user is judged by its own failures only; any other ticket counts as none; an
//! operator revokes them; they survive a restart (they are in the store, SQLite or PostgreSQL).

use confab::pb;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::common::*;

async fn login(
    srv: &TestServer,
    name: &str,
    password: &str,
    ticket: &str,
) -> Result<pb::LoginResponse, Status> {
    srv.auth()
        .await
        .login(pb::LoginRequest {
            username: name.into(),
            password: password.into(),
            device_ticket: ticket.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Three wrong passwords from a stranger (no ticket): alice's name is locked for strangers.
async fn lock_out(srv: &TestServer, name: &str) {
    for _ in 0..3 {
        let _ = login(srv, name, "a stranger's guess", "").await;
    }
    let locked = login(srv, name, PASSWORD, "").await.map(|r| r.username);
    assert_status(locked, Code::PermissionDenied, "too many failed logins");
}

#[tokio::test]
async fn a_device_that_logged_in_before_is_not_locked_out_by_strangers() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let first = login(&srv, "alice", PASSWORD, "").await.unwrap();
    let ticket = first.device_ticket;
    assert_eq!(ticket.len(), 32, "128 random bits in hex: {ticket:?}");

    lock_out(&srv, "alice").await;
    // Alice's own device still gets in, and keeps its ticket.
    let again = login(&srv, "alice", PASSWORD, &ticket).await.unwrap();
    assert_eq!(again.device_ticket, ticket);
    // Her success reset the shared count: strangers start from three again.
    let r = login(&srv, "alice", "a stranger's guess", "").await;
    assert_status(
        r.map(|r| r.username),
        Code::Unauthenticated,
        "2 attempts left",
    );
}

#[tokio::test]
async fn a_ticket_buys_no_guesses_beyond_its_own_count() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let ticket = login(&srv, "alice", PASSWORD, "")
        .await
        .unwrap()
        .device_ticket;
    // Wrong passwords with the ticket count against the ticket, not against strangers…
    for left in ["2 attempts left", "1 attempts left"] {
        let r = login(&srv, "alice", "wrong", &ticket).await;
        assert_status(r.map(|r| r.username), Code::Unauthenticated, left);
    }
    let r = login(&srv, "alice", "wrong", &ticket).await;
    assert_status(
        r.map(|r| r.username),
        Code::PermissionDenied,
        "too many failed logins",
    );
    // …so the ticket is locked now, even with the right password,
    let r = login(&srv, "alice", PASSWORD, &ticket).await;
    assert_status(
        r.map(|r| r.username),
        Code::PermissionDenied,
        "too many failed logins",
    );
    // while the account as such is not: a login without it still gets in.
    let fresh = login(&srv, "alice", PASSWORD, "").await.unwrap();
    assert_ne!(
        fresh.device_ticket, ticket,
        "a new device gets a new ticket"
    );
}

#[tokio::test]
async fn another_users_or_a_made_up_ticket_counts_as_none() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    srv.register("mallory").await;
    let mallorys = login(&srv, "mallory", PASSWORD, "")
        .await
        .unwrap()
        .device_ticket;
    lock_out(&srv, "alice").await;
    for ticket in [mallorys.as_str(), "0123456789abcdef0123456789abcdef"] {
        let r = login(&srv, "alice", PASSWORD, ticket).await;
        assert_status(
            r.map(|r| r.username),
            Code::PermissionDenied,
            "too many failed logins",
        );
    }
}

#[tokio::test]
async fn a_ticket_longer_than_any_handed_out_is_refused_as_malformed() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let longest = "x".repeat(128);
    let r = login(&srv, "alice", PASSWORD, &longest).await;
    assert!(r.is_ok(), "128 bytes is the limit, allowed: {r:?}");
    let status = login(&srv, "alice", PASSWORD, &"x".repeat(129))
        .await
        .expect_err("129 bytes is over the limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 128 bytes"), "{status:?}");
    let bad = status.get_details_bad_request().expect("a BadRequest");
    assert_eq!(bad.field_violations[0].field, "device_ticket");
    // Malformed is not a failed password: nothing was counted against the name.
    let r = login(&srv, "alice", "wrong", "").await;
    assert_status(
        r.map(|r| r.username),
        Code::Unauthenticated,
        "2 attempts left",
    );
}

#[tokio::test]
async fn a_user_keeps_as_many_tickets_as_the_server_allows_and_the_oldest_goes() {
    let srv = TestServer::with(|c| c.device_tickets = 2).await;
    srv.register("alice").await;
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(
            login(&srv, "alice", PASSWORD, "")
                .await
                .unwrap()
                .device_ticket,
        );
    }
    lock_out(&srv, "alice").await;
    let r = login(&srv, "alice", PASSWORD, &tickets[0]).await;
    assert_status(
        r.map(|r| r.username),
        Code::PermissionDenied,
        "too many failed logins",
    );
    for ticket in &tickets[1..] {
        let r = login(&srv, "alice", PASSWORD, ticket).await.unwrap();
        assert_eq!(&r.device_ticket, ticket);
    }
}

#[tokio::test]
async fn an_operator_revokes_tickets_and_they_survive_a_restart() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let ticket = login(&srv, "alice", PASSWORD, "")
        .await
        .unwrap()
        .device_ticket;
    let srv = srv.restart().await;
    lock_out(&srv, "alice").await;
    login(&srv, "alice", PASSWORD, &ticket)
        .await
        .expect("the ticket outlived the restart");

    lock_out(&srv, "alice").await;
    let mut admin = srv.admin().await;
    admin
        .revoke_device_tickets(pb::RevokeDeviceTicketsRequest {
            username: "ALICE".into(),
        })
        .await
        .unwrap();
    let r = login(&srv, "alice", PASSWORD, &ticket).await;
    assert_status(
        r.map(|r| r.username),
        Code::PermissionDenied,
        "too many failed logins",
    );
    let unknown = admin
        .revoke_device_tickets(pb::RevokeDeviceTicketsRequest {
            username: "nobody".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_deleted_account_takes_its_tickets_along() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let ticket = login(&srv, "alice", PASSWORD, "")
        .await
        .unwrap()
        .device_ticket;
    let mut admin = srv.admin().await;
    admin
        .delete_user(pb::DeleteUserRequest {
            username: "alice".into(),
        })
        .await
        .unwrap();
    // The name is registered again by somebody else: the old device is a stranger to it.
    srv.register("alice").await;
    lock_out(&srv, "alice").await;
    let r = login(&srv, "alice", PASSWORD, &ticket).await;
    assert_status(
        r.map(|r| r.username),
        Code::PermissionDenied,
        "too many failed logins",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confab_chat_keeps_its_ticket_privately_and_gets_past_a_strangers_lockout() {
    use std::os::unix::fs::PermissionsExt as _;

    use crate::common::{
        chat::server_with,
        process::{BIN, run_with_stdin},
    };

    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let state = tempfile::tempdir().unwrap();
    let chat = || {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(["chat", "--server", &server.url, "--user", "alice"])
            .args(["--password-stdin", "--json", "--peer-listen", "127.0.0.1:0"])
            .env("XDG_STATE_HOME", state.path());
        command
    };
    let script = format!("{PASSWORD}\nwhoami\n");
    let out = run_with_stdin(&mut chat(), &script).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let tickets = state.path().join("confab/tickets");
    let files: Vec<_> = walk(&tickets);
    assert_eq!(
        files.len(),
        1,
        "one ticket for one server and user: {files:?}"
    );
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap().trim().len(), 32);

    for _ in 0..3 {
        let _ = login_at(&server.url, "alice", "a stranger's guess", None).await;
    }
    assert!(
        login_at(&server.url, "alice", PASSWORD, None)
            .await
            .is_err()
    );
    let out = run_with_stdin(&mut chat(), &script).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the owner's device got in: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    server.admin(&["revoke-tickets", "alice"]).await;
    for _ in 0..3 {
        let _ = login_at(&server.url, "alice", "a stranger's guess", None).await;
    }
    let out = run_with_stdin(&mut chat(), &script).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too many failed logins"), "{stderr}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// SPEC §2: the owner's live session is told of every failed login for the name, and a lockout
/// of strangers leaves it connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_chat_is_told_of_each_strangers_failure_and_stays_in() {
    use crate::common::chat::{Chat, server_with};

    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let state = tempfile::tempdir().unwrap();
    let mut alice = Chat::spawn_at(
        &server.url,
        "alice",
        &[],
        &[("XDG_STATE_HOME", state.path())],
    )
    .await;
    alice.expect_type("connected").await;

    for attempt in 1..=3 {
        let _ = login_at(&server.url, "alice", "a stranger's guess", None).await;
        let told = alice.expect_type("login_failed").await;
        assert_eq!(told["failed_attempts"], attempt, "{told}");
        assert!(
            told["source"]
                .as_str()
                .is_some_and(|s| s.contains("127.0.0.1")),
            "{told}"
        );
        let locked = told["locked_until_ms"].as_i64().unwrap();
        assert_eq!(locked > 0, attempt == 3, "locked only at the third: {told}");
    }
    alice.send("whoami").await;
    let me = alice.expect_type("whoami").await;
    assert_eq!(me["user"], "alice", "still logged in: {me}");
}
