//! The consent prompt of `confab chat` stays true to what the server still waits for: a request
//! whose asker left disappears from it, and one that timed out says so to the person asked.

use crate::common::chat::{Chat, chat_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_asker_logged_out_leaves_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let server = chat_server(dir.path(), "127.0.0.1:0", &[]).await;
    for user in ["alice", "bob"] {
        server.register(user).await;
    }
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;
    bob.send("getaddress alice").await;
    bob.expect_type("address_request_sent").await;
    alice.expect_type("address_request").await;

    let (code, _) = bob.finish().await;
    assert_eq!(code, 0);
    let [offline, ended] = alice
        .expect_types(["presence", "address_request_ended"])
        .await;
    assert_eq!(offline["online"], false);
    assert_eq!(
        (ended["user"].as_str(), ended["reason"].as_str()),
        (Some("bob"), Some("WITHDRAWN"))
    );
    // `y` has nothing left to answer, and says so without asking the server.
    alice.send("y").await;
    let e = alice.expect_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["error"].as_str()),
        (Some("CLIENT"), Some("nobody is waiting for an answer")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_is_said_to_the_person_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = chat_server(dir.path(), "127.0.0.1:0", &["--consent-timeout", "1s"]).await;
    for user in ["alice", "bob"] {
        server.register(user).await;
    }
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;
    bob.send("getaddress alice").await;
    bob.expect_type("address_request_sent").await;
    alice.expect_type("address_request").await;
    // Nobody answers: both sides hear of the timeout.
    let denied = bob.expect_type("address_denied").await;
    assert_eq!(denied["reason"], "TIMEOUT");
    let ended = alice.expect_type("address_request_ended").await;
    assert_eq!(
        (ended["user"].as_str(), ended["reason"].as_str()),
        (Some("bob"), Some("TIMEOUT"))
    );
    alice.send("accept bob").await;
    let e = alice.expect_type("error").await;
    assert_eq!(e["code"], "CLIENT", "{e}");
}
