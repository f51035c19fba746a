//! The real `confab serve` process: durability across SIGKILL, graceful SIGTERM, the plaintext
//! rule, and grpcurl against reflection, health and the Admin service.

use std::{path::Path, process::Command};

use confab::pb::{self, SessionEndReason, event::Kind};

use crate::common::{
    process::{BIN, ServerProcess, run_with_stdin},
    *,
};

#[tokio::test]
async fn unacknowledged_messages_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    server.register("alice").await;
    server.register("bob").await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    bob.subscribe(0).await;
    bob.backlog().await;
    for i in 1..=3 {
        alice.send("bob", &format!("durable {i}")).await.unwrap();
        assert_eq!(bob.message().await.seq, i);
    }
    bob.heartbeat(1).await; // acknowledged: must not come back
    // Make sure the acknowledgement is committed before the crash.
    assert_bob_has_two_pending(&server).await;
    server.kill().await;

    let server = ServerProcess::start(dir.path(), &[]).await;
    let mut bob = server.login("bob").await;
    bob.subscribe(0).await;
    let replay = bob.backlog().await;
    assert_eq!(
        replay
            .iter()
            .map(|m| (m.seq, m.body.as_str()))
            .collect::<Vec<_>>(),
        [(2, "durable 2"), (3, "durable 3")]
    );
    // Sequence numbers continue after the crash.
    let mut alice = server.login("alice").await;
    assert_eq!(alice.send("bob", "after").await.unwrap().seq, 4);
}

/// `ListSessions` commits pending acknowledgements before it counts them: once bob's count is
/// two, his acknowledgement of the first is durable.
async fn assert_bob_has_two_pending(server: &ServerProcess) {
    let token = std::fs::read_to_string(server.dir.join("admin.token")).unwrap();
    let channel = confab::client::api::connect(&server.url, None)
        .await
        .unwrap();
    let sessions = confab::client::api::admin(channel, token.trim())
        .unwrap()
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let bob = sessions.iter().find(|s| s.username == "bob").unwrap();
    assert_eq!(bob.pending_inbox, 2);
}

#[tokio::test]
async fn sigterm_tells_streams_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]).await;
    server.register("alice").await;
    let mut alice = server.login("alice").await;
    alice.subscribe(0).await;
    alice.backlog().await;
    server.signal("-TERM");
    match alice.next("the shutdown notice").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), SessionEndReason::ServerShutdown),
        other => panic!("{other:?}"),
    }
    // Awaited, not blocked on, so this client's connection can answer the server's GOAWAY.
    let status = server.exit_status().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_sigterm_the_moment_it_says_listening_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]).await;
    // `start` returns as soon as the listening line is read: no call has been made yet.
    server.signal("-TERM");
    let status = server.exit_status().await;
    assert!(status.success(), "killed instead of stopped: {status:?}");
}

#[test]
fn plaintext_on_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without TLS"),
        "{stderr}"
    );
    // --allow-insecure and TLS lift the rule: unit-tested beside it (server::tests), without
    // binding a public address here.
}

/// grpcurl, installed by the test command (scripts/test.sh) into target/tools.
fn grpcurl() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("CONFAB_GRPCURL") {
        return path.into();
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/grpcurl");
    assert!(
        local.exists(),
        "grpcurl is not installed: run the test command (scripts/test.sh), which installs it"
    );
    local
}

fn run_grpcurl(args: &[&str]) -> String {
    let out = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_by_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    server.register("alice").await;
    let _alice = server.login("alice").await;
    let list = run_grpcurl(&["-plaintext", &server.addr, "list"]);
    for service in [
        "confab.v1.Auth",
        "confab.v1.Chat",
        "confab.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(service), "{list}");
    }
    let described = run_grpcurl(&["-plaintext", &server.addr, "describe", "confab.v1.Chat"]);
    assert!(described.contains("rpc Subscribe"), "{described}");
    assert!(
        described.contains("Opens the session's event stream"),
        "comments reach grpcurl: {described}"
    );
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let header = format!("authorization: Bearer {}", token.trim());
    let sessions = run_grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &server.addr,
        "confab.v1.Admin/ListSessions",
    ]);
    assert!(sessions.contains("\"username\": \"alice\""), "{sessions}");
    let health = run_grpcurl(&["-plaintext", &server.addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let chat = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"confab.v1.Chat"}"#,
        &server.addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(chat.contains("\"SERVING\""), "{chat}");
}

#[tokio::test]
async fn register_and_admin_commands_talk_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let confab = async |args: &[&str], stdin: &str| {
        run_with_stdin(
            tokio::process::Command::new(BIN)
                .args(args)
                .env("CONFAB_SERVER", &server.url)
                .env("CONFAB_ADMIN_TOKEN_FILE", dir.path().join("admin.token"))
                .env_remove("CONFAB_PASSWORD"),
            stdin,
        )
        .await
    };
    let out = confab(
        &["register", "--user", "alice", "--password-stdin"],
        "a good password\n",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "registered alice"
    );
    // The server's sentence, and a failing exit code.
    let out = confab(
        &["register", "--user", "ALICE", "--password-stdin"],
        "a good password\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the name ALICE is already taken"));
    let out = confab(
        &["register", "--user", "bob", "--password-stdin"],
        "short\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));

    let out = confab(
        &["admin", "create-user", "carol", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _carol = server.login("carol").await;
    let out = confab(&["admin", "--json", "sessions"], "").await;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let session: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON session");
    assert_eq!(session["username"], "carol");
    let out = confab(&["admin", "--json", "stats"], "").await;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (stats["users"].as_u64(), stats["logins"].as_u64()),
        (Some(2), Some(1))
    );
    let out = confab(&["admin", "kick", "carol"], "").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kicked carol");
    let out = confab(&["admin", "users"], "").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("alice") && text.contains("carol"), "{text}");
    // A wrong token is refused with the server's sentence.
    std::fs::write(dir.path().join("wrong.token"), "0123456789abcdef0123").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["admin", "--server", &server.url, "--token-file"])
        .arg(dir.path().join("wrong.token"))
        .arg("stats")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin token"));
}

#[tokio::test]
async fn logs_never_contain_passwords_tokens_or_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::logging(
        &dir.path().join("data"),
        &[],
        "debug",
        std::fs::File::create(&log).unwrap().into(),
    )
    .await;
    let url = server.url.clone();
    server.register("alice").await;
    server.register("bob").await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    bob.subscribe(0).await;
    bob.backlog().await;
    let body = "the secret plans are under the mat";
    alice.send("bob", body).await.unwrap();
    assert_eq!(bob.message().await.body, body);
    alice
        .chat
        .broadcast(pb::BroadcastRequest { body: body.into() })
        .await
        .unwrap();
    let _ = confab::client::api::auth(confab::client::api::connect(&url, None).await.unwrap())
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: "a wrong password".into(),
            ..Default::default()
        })
        .await;
    server.signal("-TERM");
    // Awaited, not blocked on, so the clients' connections can answer the server's GOAWAY.
    let status = server.exit_status().await;
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("logged in"),
        "the log is written at all: {text}"
    );
    let admin_token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    for secret in [
        PASSWORD,
        "a wrong password",
        &alice.token,
        &bob.token,
        admin_token.trim(),
        body,
    ] {
        assert!(!text.contains(secret), "the log contains {secret:?}");
    }
}

/// The server turns transparent huge pages off for itself (they doubled its memory per user),
/// unless the operator asks for them with mimalloc's own variable.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_runs_without_huge_pages_unless_asked() {
    fn thp_enabled(pid: u32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_owned())
            .expect("a THP_enabled line (Linux 5.0 and later)")
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    assert_eq!(thp_enabled(server.pid()), "0");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bench-fast-hash",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("MIMALLOC_ALLOW_THP", "1")
        .env("RUST_LOG", "warn");
    let server = ServerProcess::from_command(command, dir.path()).await;
    assert_eq!(thp_enabled(server.pid()), "1");
}
