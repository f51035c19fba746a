//! Reaching a server from `confab chat` / `confab register` / `confab serve` the way a new user
//! does: the server is contacted before the password is asked, every failure is one sentence
//! printed once, a missing TLS file is said before "listening", a bare loopback address works,
//! and a wrong password typed at the prompt is asked for again. Certificates: `tls_pin.rs`.

use tokio::process::Command;

use crate::common::{
    PASSWORD,
    chat::server_with,
    process::{BIN, run_with_stdin},
    tmux::Tmux,
};

/// The one line `confab` printed on stderr, asserting there was exactly one.
pub fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one error line, printed once: {text:?}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tls_file_is_refused_before_anything_says_listening() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/missing.pem",
        ])
        .args(["--tls-key", "/missing-key.pem", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("listening"), "{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some("confab: --tls-cert /missing.pem: there is no such file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_said_before_the_password_is_asked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    // No password anywhere: had it been asked first, this would fail for the missing password.
    for command in ["chat", "register"] {
        let out = run_with_stdin(
            Command::new(BIN)
                .args([command, "--server", &url, "--user", "alice"])
                .env_remove("CONFAB_PASSWORD"),
            "",
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            one_line(&out.stderr),
            format!("confab: nothing is listening at {url}: is `confab serve` running there?")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_address_without_a_scheme_means_http_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let out = run_with_stdin(
        Command::new(BIN).args([
            "chat",
            "--server",
            &server.addr,
            "--user",
            "alice",
            "--password-stdin",
            "--json",
        ]),
        &format!("{PASSWORD}\nwhoami\n"),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\":\"whoami\""));

    let out = run_with_stdin(
        Command::new(BIN).args([
            "chat",
            "--server",
            "chat.example.org:4119",
            "--user",
            "alice",
        ]),
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_line(&out.stderr),
        "confab: write the scheme with the server: https://chat.example.org:4119 for a server \
         with TLS (add --ca FILE if its certificate is your own), or http://chat.example.org:4119 \
         if it really has none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_at_the_prompt_is_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let tmux = Tmux::new("password");
    let command = format!(
        "env -u CONFAB_PASSWORD RUST_LOG=warn {BIN} chat --server {} --user alice --peer-listen 127.0.0.1:0",
        server.url
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "150",
        "-y",
        "30",
        &command,
    ])
    .await;
    tmux.wait_for("the password prompt", |s| {
        s.last().is_some_and(|l| l == "password for alice:")
    })
    .await;
    tmux.run(&["send-keys", "-t", "chat", "-l", "not the password"])
        .await;
    tmux.run(&["send-keys", "-t", "chat", "Enter"]).await;
    tmux.wait_for("the server's sentence and a second prompt", |s| {
        s.iter()
            .any(|l| l == "wrong username or password (2 attempts left before a lockout)")
            && s.last().is_some_and(|l| l == "password for alice:")
    })
    .await;
    tmux.run(&["send-keys", "-t", "chat", "-l", PASSWORD]).await;
    tmux.run(&["send-keys", "-t", "chat", "Enter"]).await;
    let screen = tmux
        .wait_for("the chat prompt", |s| {
            s.last().is_some_and(|l| l == "alice>")
        })
        .await;
    assert!(
        screen
            .iter()
            .all(|l| !l.contains(PASSWORD) && !l.contains("not the password")),
        "a password was echoed: {screen:?}"
    );
    let stats = server.stats().await;
    assert_eq!(
        (stats["failed_logins"].as_u64(), stats["logins"].as_u64()),
        (Some(1), Some(1))
    );
    tmux.run(&["send-keys", "-t", "chat", "C-d"]).await;
}
