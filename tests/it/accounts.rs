//! SPEC §14 accounts for operators: disable, enable, delete, set a password; and a user's own
//! password change.

use confab::pb::{self, SessionEndReason, event::Kind};
use tonic::Code;

use crate::common::*;

fn kicked(kind: Kind) {
    match kind {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), SessionEndReason::Kicked),
        other => panic!("expected SessionEnded{{KICKED}}, got {other:?}"),
    }
}

async fn login_with(
    srv: &TestServer,
    name: &str,
    password: &str,
) -> Result<Session, tonic::Status> {
    srv.login_from(name, password, None).await
}

#[tokio::test]
async fn a_disabled_account_loses_its_session_and_cannot_log_in_until_enabled() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut admin = srv.admin().await;
    let r = admin
        .disable_user(pb::DisableUserRequest {
            username: "BOB".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.was_online);
    kicked(bob.next("the end of bob's session").await);

    let refused = srv
        .login("bob")
        .await
        .err()
        .expect("a disabled account is refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "the account bob is disabled; ask the server's operator to enable it"
    );
    // A wrong password is told as any wrong password: being disabled is not revealed.
    let guess = login_with(&srv, "bob", "not the password")
        .await
        .err()
        .unwrap();
    assert_eq!(guess.code(), Code::Unauthenticated);
    let listed = srv.users().await;
    assert!(listed.iter().any(|u| u.username == "bob" && u.disabled));

    // It stays disabled across a restart: the store has it.
    let srv = srv.restart().await;
    let refused = srv.login("bob").await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);

    srv.admin()
        .await
        .enable_user(pb::EnableUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap();
    srv.login("bob").await.expect("enabled again");
    assert!(srv.users().await.iter().all(|u| !u.disabled));
}

#[tokio::test]
async fn a_deleted_account_loses_its_inbox_and_blocks_and_its_name_is_free() {
    let srv = TestServer::start().await;
    let mut alice = srv.user("alice").await;
    let mut bob = srv.user("bob").await;
    let mut carol = srv.user("carol").await;
    bob.block("carol").await;
    carol.block("bob").await;
    // bob's stream is closed, so these wait in his inbox.
    bob.events = None;
    alice.send("bob", "for the old bob").await.unwrap();
    // And one from bob waits in alice's inbox after she stops reading.
    alice.events = None;
    bob.send("alice", "from the old bob").await.unwrap();

    let r = srv
        .admin()
        .await
        .delete_user(pb::DeleteUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.was_online);
    let names: Vec<String> = srv.users().await.into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["alice", "carol"]);
    assert!(
        carol.blocked().await.is_empty(),
        "blocks of bob went with him"
    );
    let gone = srv.login("bob").await.err().unwrap();
    assert_eq!(gone.code(), Code::Unauthenticated);
    let err = alice.send("bob", "anyone?").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // What bob sent before is still delivered, under his name.
    alice.subscribe(0).await;
    let backlog = alice.backlog().await;
    assert_eq!(backlog.len(), 1);
    assert_eq!(
        (backlog[0].from.as_str(), backlog[0].body.as_str()),
        ("bob", "from the old bob")
    );

    // A new bob starts empty: no inbox, no blocks, also after a restart.
    let srv = srv.restart().await;
    let mut new_bob = srv.user("bob").await;
    assert!(new_bob.blocked().await.is_empty());
    let mut carol = srv.login("carol").await.unwrap();
    assert!(carol.blocked().await.is_empty());
    new_bob
        .send("carol", "hello")
        .await
        .expect("no block remains");
}

#[tokio::test]
async fn the_operator_sets_a_password_and_the_old_one_stops_working() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut admin = srv.admin().await;
    let short = admin
        .set_password(pb::SetPasswordRequest {
            username: "bob".into(),
            password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    let unknown = admin
        .set_password(pb::SetPasswordRequest {
            username: "nobody".into(),
            password: "a new password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    admin
        .set_password(pb::SetPasswordRequest {
            username: "bob".into(),
            password: "a new password".into(),
        })
        .await
        .unwrap();
    // The live session goes on.
    bob.online().await;
    let old = srv.login("bob").await.err().unwrap();
    assert_eq!(old.code(), Code::Unauthenticated);
    login_with(&srv, "bob", "a new password")
        .await
        .expect("the new password works");
}

#[tokio::test]
async fn users_change_their_own_password_given_the_current_one() {
    let srv = TestServer::start().await;
    let mut alice = srv.user("alice").await;
    let change = |old: &str, new: &str| pb::ChangePasswordRequest {
        old_password: old.into(),
        new_password: new.into(),
    };
    let wrong = alice
        .chat
        .change_password(change("not it at all", "a fresh password"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert_eq!(wrong.message(), "that is not your current password");
    let short = alice
        .chat
        .change_password(change(PASSWORD, "tiny"))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    // Neither counted towards a lockout, nor changed anything.
    srv.login("alice")
        .await
        .expect("the old password still works");

    let mut alice = srv.login("alice").await.unwrap();
    alice
        .chat
        .change_password(change(PASSWORD, "a fresh password"))
        .await
        .unwrap();
    assert_eq!(
        srv.login("alice").await.err().unwrap().code(),
        Code::Unauthenticated
    );
    let srv = srv.restart().await;
    login_with(&srv, "alice", "a fresh password")
        .await
        .expect("the new password is stored");
}

#[tokio::test]
async fn account_changes_need_the_admin_token() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut wrong = confab::client::api::admin(srv.channel().await, "not-the-token").unwrap();
    let refused = wrong
        .delete_user(pb::DeleteUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(srv.users().await.len(), 1);
}
