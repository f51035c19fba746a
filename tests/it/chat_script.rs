//! `confab chat` run by a script (stdin a pipe): what it sends arrives exactly once even past
//! the server's rate limit, and the exit status tells the script whether every line worked.

use std::collections::BTreeMap;

use confab::pb::event::Kind;
use tokio::process::Command;

use crate::common::{
    PASSWORD,
    process::{BIN, ServerProcess, run_with_stdin},
};

/// The server's default send limits (50 a second, bursts of 100), but logins as fast as tests
/// make them.
async fn server_with_default_send_limits(dir: &std::path::Path) -> ServerProcess {
    let server =
        ServerProcess::start(dir, &["--login-rate", "1000", "--login-burst", "1000"]).await;
    server.register("alice").await;
    server.register("bob").await;
    server
}

fn chat_as_alice(url: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args([
        "chat",
        "--server",
        url,
        "--user",
        "alice",
        "--password-stdin",
    ]);
    command.args(["--json", "--peer-listen", "127.0.0.1:0"]);
    command
}

/// A server with alice and bob whose send limit a script meets however slowly the store commits
/// (the default, 50 a second in bursts of 100, is not met when a loaded machine takes 20 ms a
/// commit): 10 a second in bursts of 5, so 30 lines take 2.5 s at the least.
async fn rate_limited_server(dir: &std::path::Path) -> ServerProcess {
    let server = ServerProcess::start(
        dir,
        &[
            "--login-rate",
            "1000",
            "--login-burst",
            "1000",
            "--send-rate",
            "10",
            "--send-burst",
            "5",
        ],
    )
    .await;
    server.register("alice").await;
    server.register("bob").await;
    server
}

/// Pipes the password and `lines` into alice's `confab chat --json` at `url`, asserts that it
/// exits 0, and returns what it printed.
async fn script_succeeds(url: &str, lines: &[String]) -> String {
    let script = format!("{PASSWORD}\n{}\n", lines.join("\n"));
    let out = run_with_stdin(&mut chat_as_alice(url), &script).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Broadcasts meet the same rate limit and are sent again after its hint: none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_broadcasts_past_the_rate_limit_all_go_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = rate_limited_server(dir.path()).await;
    let mut bob = server.login("bob").await;
    bob.subscribe(0).await;
    assert!(bob.backlog().await.is_empty());
    let lines: Vec<String> = (0..15).map(|i| format!("broadcast news {i}")).collect();
    let stdout = script_succeeds(&server.url, &lines).await;
    let sent = stdout
        .lines()
        .filter(|l| l.contains(r#""type":"broadcast_sent""#))
        .count();
    assert_eq!(sent, 15, "{stdout}");
    let mut bodies = Vec::new();
    while bodies.len() < 15 {
        if let Kind::Broadcast(b) = bob.next("alice's broadcasts").await {
            bodies.push(b.body);
        }
    }
    let expected: Vec<String> = (0..15).map(|i| format!("news {i}")).collect();
    assert_eq!(bodies, expected, "each once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_burst_past_the_rate_limit_arrives_exactly_once_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = rate_limited_server(dir.path()).await;
    let lines: Vec<String> = (0..30).map(|i| format!("message bob line {i}")).collect();
    let stdout = script_succeeds(&server.url, &lines).await;
    let sent: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "sent")
        .collect();
    assert_eq!(sent.len(), 30, "{stdout}");
    // The limit was really met: some sends took more than one try.
    assert!(
        sent.iter().any(|v| v["attempts"].as_u64().unwrap_or(1) > 1),
        "the burst never met the rate limit, so this proves nothing: {stdout}"
    );

    let mut bob = server.login("bob").await;
    bob.subscribe(0).await;
    let mut bodies = BTreeMap::<String, usize>::new();
    for m in bob.backlog().await {
        assert_eq!(m.from, "alice");
        *bodies.entry(m.body).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (0..30).map(|i| (format!("line {i}"), 1)).collect();
    assert_eq!(bodies, expected, "each line arrives once, none missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_with_a_failed_command_exits_non_zero_after_running_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_default_send_limits(dir.path()).await;
    let script = format!("{PASSWORD}\nmessage nobody hello\nmessage bob still sent\n");
    let out = run_with_stdin(&mut chat_as_alice(&server.url), &script).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(
        stderr.trim(),
        "confab: 1 command failed (see the error line above)"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "error" && v["code"] == "NOT_FOUND"),
        "{stdout}"
    );
    // The failure did not stop the script: the next line ran, and it still logged out.
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "sent" && v["to"] == "bob"),
        "{stdout}"
    );
    assert_eq!(lines.last().unwrap()["type"], "logged_out", "{stdout}");

    // A mistyped command counts as a failure too; a clean script exits 0.
    let out = run_with_stdin(
        &mut chat_as_alice(&server.url),
        &format!("{PASSWORD}\nmesage bob x\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let out = run_with_stdin(
        &mut chat_as_alice(&server.url),
        &format!("{PASSWORD}\nwhoami\n"),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
