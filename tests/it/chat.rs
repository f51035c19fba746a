//! End-to-end tests of `confab chat`: real `confab serve` and `confab chat` processes on
//! loopback, driven through stdin and read back as `--json` lines, plus one real terminal (tmux)
//! for what only a terminal shows.
//!
//! Nothing waits on a clock: every step waits (with a deadline) for the line or screen that proves
//! the previous step happened. A thing that must *not* happen is checked after an ordering
//! barrier: something that must arrive after it, has.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::common::{
    PASSWORD,
    chat::{Chat, chat_server, server_with},
    process::{BIN, run_with_stdin},
    tmux::Tmux,
};

fn is_error(v: &Value, code: &str) -> bool {
    v["type"] == "error" && v["code"] == code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_message_broadcast_and_see_who_is_online() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob", "carol"]).await;
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;
    alice
        .expect("bob's presence", |v| {
            v["type"] == "presence" && v["user"] == "bob" && v["online"] == true
        })
        .await;
    let mut carol = Chat::start(&server, "carol", &[]).await;
    alice
        .expect("carol's presence", |v| {
            v["type"] == "presence" && v["user"] == "carol"
        })
        .await;

    alice.send("online").await;
    let online = alice.expect_type("online").await;
    let names: Vec<&str> = online["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol"]);

    alice.send("message bob hello bob").await;
    let sent = alice.expect_type("sent").await;
    assert_eq!(sent["status"], "DELIVERED", "{sent}");
    let got = bob.expect_message("alice", "hello bob").await;
    assert_eq!(got["via"], "server");
    assert_eq!(got["message_id"], sent["message_id"]);
    // Shown, so acknowledged promptly (the heartbeat interval here is 30 s).
    let shown = std::time::Instant::now();
    server
        .wait_for_session("bob", "an empty inbox", |s| s["pending_inbox"] == 0)
        .await;
    assert!(
        shown.elapsed() < Duration::from_secs(2),
        "acknowledged after {:?}",
        shown.elapsed()
    );

    bob.send("broadcast hi all").await;
    let b = bob.expect_type("broadcast_sent").await;
    assert_eq!(
        (b["delivered"].as_u64(), b["withheld"].as_u64()),
        (Some(2), Some(0))
    );
    alice
        .expect("bob's broadcast", |v| {
            v["type"] == "broadcast" && v["from"] == "bob" && v["body"] == "hi all"
        })
        .await;
    carol
        .expect("bob's broadcast", |v| {
            v["type"] == "broadcast" && v["from"] == "bob" && v["body"] == "hi all"
        })
        .await;

    carol.send("online --since 1h").await;
    let recent = carol.expect_type("online").await;
    assert_eq!(recent["since_seconds"], 3600);
    assert_eq!(recent["users"].as_array().unwrap().len(), 2, "{recent}");

    // Mistakes get a sentence, never a crash.
    alice.send("message zed hi").await;
    let e = alice.expect_type("error").await;
    assert!(is_error(&e, "NOT_FOUND"), "{e}");
    assert_eq!(e["error"], "there is no user called zed");
    alice.send("mesage bob hi").await;
    let e = alice.expect_type("error").await;
    assert!(
        is_error(&e, "USAGE") && e["error"].as_str().unwrap().contains("type help"),
        "{e}"
    );
    alice.send("message bob").await;
    let e = alice.expect_type("error").await;
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("usage: message <user> <text>"),
        "{e}"
    );

    // End of input logs out, and the others see alice leave.
    let (code, alice) = alice.finish().await;
    // Three of its commands failed: a script learns that from the exit status.
    assert_eq!(code, 1);
    assert_eq!(
        alice.count(|v| v["type"] == "logged_out"),
        1,
        "{}",
        alice.dump()
    );
    bob.expect("alice going offline", |v| {
        v["type"] == "presence" && v["user"] == "alice" && v["online"] == false
    })
    .await;
    bob.send("logout").await;
    let (code, _) = bob.finish().await;
    assert_eq!(code, 0);
    carol.send("logout").await;
    carol.expect_type("logged_out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_silences_and_hides_the_blocker() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob", "carol"]).await;
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;
    let mut carol = Chat::start(&server, "carol", &[]).await;

    alice.send("block bob").await;
    alice.expect_type("blocked").await;
    alice.send("blocked").await;
    assert_eq!(
        alice.expect_type("blocked_list").await["users"],
        serde_json::json!(["bob"])
    );

    bob.send("message alice let me in").await;
    let e = bob.expect_type("error").await;
    assert!(is_error(&e, "PERMISSION_DENIED"), "{e}");
    assert_eq!(
        e["error"],
        "your message could not be delivered because alice has blocked you"
    );

    bob.send("broadcast anyone there").await;
    let b = bob.expect_type("broadcast_sent").await;
    assert_eq!(
        (b["delivered"].as_u64(), b["withheld"].as_u64()),
        (Some(1), Some(1)),
        "{b}"
    );
    carol
        .expect("bob's broadcast", |v| {
            v["type"] == "broadcast" && v["from"] == "bob"
        })
        .await;

    bob.send("online").await;
    let online = bob.expect_type("online").await;
    assert_eq!(
        online["users"],
        serde_json::json!([{"user": "carol", "online": true, "last_login_ms": online["users"][0]["last_login_ms"]}])
    );

    bob.send("getaddress alice").await;
    let e = bob.expect_type("error").await;
    assert!(
        is_error(&e, "PERMISSION_DENIED") && e["error"] == "alice has blocked you",
        "{e}"
    );

    // Barrier: carol's message reaches alice after anything bob managed to send her.
    carol.send("message alice barrier").await;
    alice.expect_message("carol", "barrier").await;
    assert_eq!(
        alice.count(|v| v["from"] == "bob"),
        0,
        "bob reached alice: {}",
        alice.dump()
    );

    // alice leaves: bob must not see it; carol does. Barrier: carol leaving, which bob sees.
    alice.send("logout").await;
    alice.expect_type("logged_out").await;
    carol
        .expect("alice going offline", |v| {
            v["type"] == "presence" && v["user"] == "alice"
        })
        .await;
    let (code, _) = carol.finish().await;
    assert_eq!(code, 0);
    bob.expect("carol going offline", |v| {
        v["type"] == "presence" && v["user"] == "carol" && v["online"] == false
    })
    .await;
    assert_eq!(
        bob.count(|v| v["type"] == "presence" && v["user"] == "alice"),
        0,
        "{}",
        bob.dump()
    );

    // Unblocking lets bob through again.
    let mut alice = Chat::start(&server, "alice", &[]).await;
    alice.send("unblock bob").await;
    alice.expect_type("unblocked").await;
    bob.send("message alice hello again").await;
    assert_eq!(bob.expect_type("sent").await["status"], "DELIVERED");
    alice.expect_message("bob", "hello again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_goes_straight_to_the_peer_after_consent_and_bypasses_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;

    alice.send("private bob too early").await;
    let e = alice.expect_type("error").await;
    assert_eq!(
        e["error"], "you have no address for bob; run getaddress bob first",
        "{e}"
    );

    alice.send("getaddress bob").await;
    alice.expect_type("address_request_sent").await;
    let request = bob.expect_type("address_request").await;
    assert_eq!(request["from"], "alice");
    bob.send("accept alice").await;
    let answered = bob.expect_type("answered").await;
    assert_eq!(
        (answered["user"].as_str(), answered["accept"].as_bool()),
        (Some("alice"), Some(true))
    );
    let granted = alice.expect_type("address_granted").await;
    assert_eq!(granted["user"], "bob");

    // Each side can compare the other's key with what the other says its own is.
    bob.send("whoami").await;
    let bob_me = bob.expect_type("whoami").await;
    alice.send("whoami").await;
    let alice_me = alice.expect_type("whoami").await;
    alice.send("fingerprint bob").await;
    assert_eq!(
        alice.expect_type("fingerprint").await["fingerprint"],
        bob_me["fingerprint"]
    );
    assert_eq!(granted["fingerprint"], bob_me["fingerprint"]);
    bob.send("fingerprint alice").await;
    assert_eq!(
        bob.expect_type("fingerprint").await["fingerprint"],
        alice_me["fingerprint"]
    );
    assert_eq!(request["fingerprint"], alice_me["fingerprint"]);

    let relayed_before = server.stats().await["messages_relayed"].as_u64().unwrap();
    alice.send("private bob just between us").await;
    let sent = alice.expect_type("sent").await;
    assert_eq!(
        (sent["status"].as_str(), sent["via"].as_str()),
        (Some("DIRECT"), Some("direct")),
        "{sent}"
    );
    let got = bob.expect_message("alice", "just between us").await;
    assert_eq!(got["via"], "direct");
    assert_eq!(got["message_id"], sent["message_id"]);
    // The server relayed nothing: the message never went through it.
    assert_eq!(
        server.stats().await["messages_relayed"].as_u64().unwrap(),
        relayed_before
    );
    // And the control: a relayed message does move the counter.
    alice.send("message bob through the server").await;
    alice.expect_type("sent").await;
    assert_eq!(
        server.stats().await["messages_relayed"].as_u64().unwrap(),
        relayed_before + 1
    );

    // bob's logout revokes the grant on alice's side.
    bob.send("logout").await;
    bob.expect_type("logged_out").await;
    alice
        .expect("the grant's revocation", |v| {
            v["type"] == "address_revoked" && v["user"] == "bob"
        })
        .await;
    alice.send("private bob still there?").await;
    let e = alice.expect_type("error").await;
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("run getaddress bob first"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_leaves_no_address_and_a_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob", "carol"]).await;
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;
    let mut carol = Chat::start(&server, "carol", &["--auto-deny"]).await;

    alice.send("getaddress bob").await;
    alice.expect_type("address_request_sent").await;
    bob.expect_type("address_request").await;
    // The single outstanding request: plain `n` answers it.
    bob.send("n").await;
    let answered = bob.expect_type("answered").await;
    assert_eq!(
        (answered["user"].as_str(), answered["accept"].as_bool()),
        (Some("alice"), Some(false))
    );
    let denied = alice.expect_type("address_denied").await;
    assert_eq!(
        (denied["user"].as_str(), denied["reason"].as_str()),
        (Some("bob"), Some("DECLINED"))
    );

    alice.send("private bob hello?").await;
    let e = alice.expect_type("error").await;
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("run getaddress bob first"),
        "{e}"
    );
    alice.send("getaddress bob").await;
    let e = alice.expect_type("error").await;
    assert!(is_error(&e, "RESOURCE_EXHAUSTED"), "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("bob declined your request; you can ask again in"),
        "{e}"
    );
    bob.send("y").await;
    assert_eq!(
        bob.expect_type("error").await["error"],
        "nobody is waiting for an answer"
    );

    // A bot that refuses everything, without a prompt.
    alice.send("getaddress carol").await;
    // An automatic answer can reach alice's stream before her own call's result is printed.
    let [_, denied] = alice
        .expect_types(["address_request_sent", "address_denied"])
        .await;
    assert_eq!(denied["user"], "carol");
    let answered = carol.expect_type("answered").await;
    assert_eq!(
        (answered["accept"].as_bool(), answered["auto"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        carol.count(|v| v["type"] == "address_request"),
        0,
        "no prompt for a bot: {}",
        carol.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_to_a_killed_peer_falls_back_to_the_server_and_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &["--auto-accept"]).await;
    alice.send("getaddress bob").await;
    alice.expect_type("address_granted").await;
    bob.expect_type("answered").await;

    bob.kill().await;
    alice.send("private bob are you there").await;
    let sent = alice.expect_type("sent").await;
    assert_eq!(sent["via"], "server", "{sent}");
    assert!(
        matches!(sent["status"].as_str(), Some("STORED" | "DELIVERED")),
        "{sent}"
    );
    assert!(
        sent["fallback"].as_str().is_some_and(|f| !f.is_empty()),
        "the user is told why: {sent}"
    );
    let id = sent["message_id"].clone();
    // The failed grant was dropped.
    alice.send("private bob again").await;
    assert!(
        alice.expect_type("error").await["error"]
            .as_str()
            .unwrap()
            .contains("getaddress bob")
    );

    // bob's next login gets it from his inbox, once.
    let mut bob = Chat::spawn(&server, "bob", &[]).await;
    let got = bob.expect_message("alice", "are you there").await;
    assert_eq!(got["message_id"], id);
    assert_eq!(got["replayed"], true);
    bob.expect_type("connected").await;
    alice.send("message bob barrier").await;
    bob.expect_message("alice", "barrier").await;
    assert_eq!(bob.count(|v| v["message_id"] == id), 1, "{}", bob.dump());

    // Shown means acknowledged: after a logout, nothing comes back.
    let (code, _) = bob.finish().await;
    assert_eq!(code, 0);
    let mut bob = Chat::spawn(&server, "bob", &[]).await;
    let connected = bob.expect_type("connected").await;
    assert_eq!(connected["replayed"], 0, "{}", bob.dump());
    assert_eq!(bob.count(|v| v["type"] == "message"), 0, "{}", bob.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_by_itself_after_the_server_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "carol"]).await;
    let addr = server.addr.clone();
    let mut alice = Chat::start(&server, "alice", &[]).await;

    server.kill().await;
    alice.expect_type("disconnected").await;
    // Wait until alice is in a long pause between attempts (backoff past 3 s), so the message
    // below is certainly sent while she is away.
    alice
        .expect("a reconnect pause of 3 s or more", |v| {
            v["type"] == "reconnecting" && v["retry_in_ms"].as_u64().is_some_and(|ms| ms >= 3000)
        })
        .await;
    // Typed while the server is down: sent once it is back, not lost.
    alice
        .send("message carol typed while the server was down")
        .await;

    let server = chat_server(dir.path(), &addr, &[]).await;
    let mut carol = Chat::start(&server, "carol", &[]).await;
    carol.send("message alice sent while you were away").await;
    let sent = carol.expect_type("sent").await;
    assert_eq!(sent["status"], "STORED", "alice was away: {sent}");

    // alice comes back without anybody touching her: a new login, then the stored message.
    let again = alice.expect_type("logged_in").await;
    assert_eq!(again["again"], true);
    assert!(again.get("server").is_none(), "the same server: {again}");
    let [got, connected, typed] = alice.expect_types(["message", "connected", "sent"]).await;
    assert_eq!(got["body"], "sent while you were away");
    assert_eq!(got["message_id"], sent["message_id"]);
    assert_eq!(connected["resumed"], true);
    assert_eq!(typed["attempts"], 2, "{typed}");
    let typed_id = typed["message_id"].clone();
    let got = carol
        .expect_message("alice", "typed while the server was down")
        .await;
    assert_eq!(got["message_id"], typed_id);

    // Live again in both directions.
    alice.send("message carol back").await;
    assert_eq!(alice.expect_type("sent").await["status"], "DELIVERED");
    carol.expect_message("alice", "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_session_alive() {
    let dir = tempfile::tempdir().unwrap();
    // A session with no call for 900 ms is ended: only heartbeats keep an idle client in.
    let server = chat_server(
        dir.path(),
        "127.0.0.1:0",
        &["--heartbeat-interval", "300ms"],
    )
    .await;
    for user in ["alice", "bob"] {
        server.register(user).await;
    }
    let mut alice = Chat::start(&server, "alice", &[]).await;
    let mut bob = Chat::start(&server, "bob", &[]).await;

    alice.send("message bob are you awake").await;
    alice.expect_type("sent").await;
    bob.expect_message("alice", "are you awake").await;

    // Idle for several session timeouts: the same session is still there and keeps beating.
    let first = server
        .wait_for_session("alice", "a session", |_| true)
        .await;
    server
        .wait_for_session("alice", "a heartbeat 3 s after login", |s| {
            s["since_ms"] == first["since_ms"]
                && s["last_heartbeat_ms"].as_i64().unwrap()
                    > first["since_ms"].as_i64().unwrap() + 3000
        })
        .await;
    alice.send("whoami").await;
    alice.expect_type("whoami").await;
    assert_eq!(
        alice.count(|v| v["type"] == "disconnected" || v["type"] == "logged_in"),
        1,
        "{}",
        alice.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_client_ends_instead_of_reconnecting() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let mut alice = Chat::start(&server, "alice", &[]).await;
    server.admin(&["kick", "alice"]).await;
    let ended = alice.expect_type("session_ended").await;
    assert_eq!(ended["reason"], "KICKED");
    assert_eq!(alice.exit_code().await, 1);
    assert_eq!(
        alice.count(|v| v["type"] == "logged_in"),
        1,
        "no re-login: {}",
        alice.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_prints_the_servers_sentence_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let out = run_with_stdin(
        Command::new(BIN).args([
            "chat",
            "--server",
            &server.url,
            "--user",
            "alice",
            "--password-stdin",
            "--json",
        ]),
        "not the password\nwhoami\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "confab: wrong username or password (2 attempts left before a lockout)"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Tried once, not in a loop.
    assert_eq!(server.stats().await["failed_logins"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_does_not_garble_the_line_being_typed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let tmux = Tmux::new("typing");
    let command = format!(
        "env CONFAB_PASSWORD='{PASSWORD}' RUST_LOG=warn {BIN} chat --server {} --user alice --peer-listen 127.0.0.1:0",
        server.url
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "120",
        "-y",
        "30",
        &command,
    ])
    .await;
    tmux.wait_for("the prompt", |s| s.last().is_some_and(|l| l == "alice>"))
        .await;

    let typed = "message bob half typed";
    tmux.run(&["send-keys", "-t", "chat", "-l", typed]).await;
    let prompt = format!("alice> {typed}");
    tmux.wait_for("the half-typed line", |s| s.last() == Some(&prompt))
        .await;

    let mut bob = Chat::start(&server, "bob", &[]).await;
    bob.send("message alice ping from bob").await;
    assert_eq!(bob.expect_type("sent").await["status"], "DELIVERED");
    let screen = tmux
        .wait_for("bob's message above the untouched line", |s| {
            s.iter().any(|l| l.ends_with(" bob: ping from bob")) && s.last() == Some(&prompt)
        })
        .await;
    let note = screen
        .iter()
        .position(|l| l.ends_with(" bob: ping from bob"))
        .unwrap();
    assert!(note < screen.len() - 1, "{screen:?}");
    assert_eq!(
        screen.iter().filter(|l| l.contains(typed)).count(),
        1,
        "the typed line appears once: {screen:?}"
    );

    // The editor's buffer is intact too, not only the picture: finish the line and send it.
    tmux.run(&["send-keys", "-t", "chat", "-l", " and finished"])
        .await;
    tmux.run(&["send-keys", "-t", "chat", "Enter"]).await;
    bob.expect_message("alice", "half typed and finished").await;
    tmux.wait_for("the result", |s| s.iter().any(|l| l == "delivered to bob"))
        .await;

    // Ctrl-D logs out.
    tmux.run(&["send-keys", "-t", "chat", "C-d"]).await;
    bob.expect("alice going offline", |v| {
        v["type"] == "presence" && v["user"] == "alice" && v["online"] == false
    })
    .await;
}
