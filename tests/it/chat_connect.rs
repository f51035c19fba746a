//! Reaching a server from `confab chat` / `confab register` / `confab serve` the way a new user
//! does: the server is contacted before the password is asked, every failure is one sentence
//! printed once, TLS mistakes say what to do, a bare loopback address works, and a wrong
//! password typed at the prompt is asked for again.

use std::path::Path;

use tokio::process::Command;

use crate::common::{
    PASSWORD,
    chat::server_with,
    process::{BIN, ServerProcess, run_with_stdin},
    tmux::Tmux,
};

/// The one line `confab` printed on stderr, asserting there was exactly one.
fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one error line, printed once: {text:?}");
    lines[0].to_owned()
}

/// Runs `openssl ARGS` in `dir`.
async fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("openssl runs (scripts/test.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// The usual one-liner: a self-signed certificate that is its own CA (openssl marks it CA:TRUE).
const ONE_LINER: &[&str] = &[
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "30",
    "-keyout",
    "key.pem",
    "-out",
    "cert.pem",
    "-subj",
    "/CN=localhost",
];

/// The one-liner the client's error suggests, for HOST=localhost.
const SUGGESTED: &[&str] = &[
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "365",
    "-keyout",
    "key.pem",
    "-out",
    "cert.pem",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost",
    "-addext",
    "basicConstraints=critical,CA:FALSE",
];

async fn tls_server(dir: &Path) -> (ServerProcess, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = ServerProcess::start(
        &dir.join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let port = server.addr.rsplit_once(':').unwrap().1.to_owned();
    (server, port)
}

async fn register(url: &str, ca: &Path) -> std::process::Output {
    run_with_stdin(
        Command::new(BIN)
            .args([
                "register",
                "--server",
                url,
                "--user",
                "alice",
                "--password-stdin",
            ])
            .arg("--ca")
            .arg(ca),
        &format!("{PASSWORD}\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_is_explained_and_the_suggested_one_works() {
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path(), ONE_LINER).await;
    let (server, port) = tls_server(dir.path()).await;
    let url = format!("https://localhost:{port}");
    let out = register(&url, &dir.path().join("cert.pem")).await;
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with(&format!(
            "confab: the server at {url} presents a CA certificate as its own"
        )),
        "{line}"
    );
    assert!(!line.contains("CaUsedAsEndEntity"), "{line}");
    drop(server);

    // What the sentence says to do works, word for word.
    assert!(
        line.contains(&SUGGESTED.join(" ").replace("localhost", "HOST")),
        "{line}"
    );
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path(), SUGGESTED).await;
    let (_server, port) = tls_server(dir.path()).await;
    let url = format!("https://localhost:{port}");
    let out = register(&url, &dir.path().join("cert.pem")).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "registered alice\n");

    // Plain http:// to the TLS port says so, once.
    let plain = format!("http://127.0.0.1:{port}");
    let out = run_with_stdin(
        Command::new(BIN).args([
            "chat",
            "--server",
            &plain,
            "--user",
            "alice",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\nwhoami\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let tls_needed = format!(
        "confab: the server at {plain} speaks TLS, not plain http: connect to \
         https://127.0.0.1:{port} (with --ca FILE if its certificate is your own)"
    );
    assert_eq!(one_line(&out.stderr), tls_needed);
    // `confab register` says the same.
    let out = run_with_stdin(
        Command::new(BIN).args([
            "register",
            "--server",
            &plain,
            "--user",
            "bob",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(one_line(&out.stderr), tls_needed);
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
