//! TLS as people set it up, through the real binary: the certificate of the usual `openssl req
//! -x509` one-liner, given to clients with `--ca`, is pinned and works for `confab register`,
//! `chat` and `admin`, under any name the server is reached by; a certificate that is not the
//! pinned one (another, or the server's replaced one) is refused in one sentence; a small CA
//! made by the README's recipe still vouches for its server certificates through webpki, names
//! checked; plain `http://` to a TLS port says to use https, `confab admin` included.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::{
    chat_connect::one_line,
    common::{
        PASSWORD,
        process::{BIN, ServerProcess, run_with_stdin},
    },
};

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

/// The usual one-liner, word for word: a self-signed certificate for `/CN=localhost` only (no
/// subjectAltName), which openssl marks as a CA.
const ONE_LINER: &[&str] = &[
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "key.pem",
    "-out",
    "cert.pem",
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
];

/// A directory holding a fresh one-liner `cert.pem` and `key.pem`.
async fn one_liner() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path(), ONE_LINER).await;
    dir
}

/// `confab serve` with `cert` and `key` on `data`; its port.
async fn tls_server(data: &Path, cert: &Path, key: &Path) -> (ServerProcess, u16) {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = ServerProcess::start(data, &["--tls-cert", cert, "--tls-key", key]).await;
    let port = server.addr.rsplit_once(':').unwrap().1.parse().unwrap();
    (server, port)
}

/// `confab register --server URL --user USER [--ca CA]`, the password piped in.
async fn register(url: &str, user: &str, ca: Option<&Path>) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args([
        "register",
        "--server",
        url,
        "--user",
        user,
        "--password-stdin",
    ]);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    run_with_stdin(&mut command, &format!("{PASSWORD}\n")).await
}

/// `confab chat … --json` running `whoami` as alice.
async fn chat(url: &str, ca: Option<&Path>) -> std::process::Output {
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
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    run_with_stdin(&mut command, &format!("{PASSWORD}\nwhoami\n")).await
}

/// `confab admin users` against the server whose data directory is `data`.
async fn admin_users(url: &str, data: &Path, ca: Option<&Path>) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(["admin", "users", "--server", url, "--data-dir"]);
    command.arg(data);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    run_with_stdin(&mut command, "").await
}

fn succeeded(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line a refused command printed, asserting it failed.
fn refused(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    one_line(&out.stderr)
}

/// What `confab` says when the server's certificate is not one `ca` vouches for.
fn not_vouched_for(url: &str, ca: &Path) -> String {
    let ca = ca.display();
    format!(
        "confab: the server at {url} has a certificate that is neither in {ca} nor signed by an \
         authority in it: if the server's certificate was replaced, put the new one in {ca}; \
         if not, something else is answering at that address"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_liner_certificate_given_with_ca_works_for_register_chat_and_admin() {
    let certs = one_liner().await;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let data = tempfile::tempdir().unwrap();
    let (_server, port) = tls_server(data.path(), &cert, &key).await;

    let url = format!("https://localhost:{port}");
    assert_eq!(
        succeeded(&register(&url, "alice", Some(&cert)).await),
        "registered alice\n"
    );
    // Pinned, the certificate is trusted under a name it does not carry (it names localhost
    // in its subject only, and 127.0.0.1 nowhere).
    let by_address = format!("https://127.0.0.1:{port}");
    let stdout = succeeded(&chat(&by_address, Some(&cert)).await);
    assert!(stdout.contains("\"type\":\"whoami\""), "{stdout}");
    let stdout = succeeded(&admin_users(&url, data.path(), Some(&cert)).await);
    assert!(stdout.lines().any(|l| l.starts_with("alice ")), "{stdout}");

    // Without --ca nothing vouches for it, and the sentence says what to give.
    let line = refused(&register(&url, "bob", None).await);
    assert_eq!(
        line,
        format!(
            "confab: the server at {url} has a certificate this client was not told to trust: \
             give the server's certificate (self-signed is fine) or the authority that signed \
             it with --ca FILE"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_other_than_the_pinned_one_is_refused_in_a_sentence() {
    let certs = one_liner().await;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let data = tempfile::tempdir().unwrap();
    let (server, port) = tls_server(data.path(), &cert, &key).await;
    let url = format!("https://localhost:{port}");

    // Another one-liner's certificate (same name, another key) in --ca.
    let stranger = one_liner().await;
    let wrong = stranger.path().join("cert.pem");
    let expected = not_vouched_for(&url, &wrong);
    assert_eq!(
        refused(&register(&url, "alice", Some(&wrong)).await),
        expected
    );
    assert_eq!(refused(&chat(&url, Some(&wrong)).await), expected);
    assert_eq!(
        refused(&admin_users(&url, data.path(), Some(&wrong)).await),
        expected
    );

    // The server's certificate is replaced: the copy a client pinned no longer matches, and the
    // new one does.
    let pinned = certs.path().join("pinned.pem");
    std::fs::copy(&cert, &pinned).unwrap();
    assert_eq!(
        succeeded(&register(&url, "alice", Some(&pinned)).await),
        "registered alice\n"
    );
    server.kill().await;
    openssl(certs.path(), ONE_LINER).await;
    let (_server, port) = tls_server(data.path(), &cert, &key).await;
    let url = format!("https://localhost:{port}");
    assert_eq!(
        refused(&register(&url, "bob", Some(&pinned)).await),
        not_vouched_for(&url, &pinned)
    );
    assert_eq!(
        succeeded(&register(&url, "bob", Some(&cert)).await),
        "registered bob\n"
    );
}

/// The README's small CA and a server certificate it signed for `localhost`: `ca.pem`,
/// `server.pem`, `server.key` in the directory.
async fn small_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=confab CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir.path(), &ca).await;
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir.path(), &request).await;
    std::fs::write(
        dir.path().join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "825",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    )
    .await;
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_ca_still_vouches_for_its_server_certificates_by_name() {
    let ca = small_ca().await;
    let path = |name: &str| -> PathBuf { ca.path().join(name) };
    let data = tempfile::tempdir().unwrap();
    let (_server, port) = tls_server(data.path(), &path("server.pem"), &path("server.key")).await;

    let url = format!("https://localhost:{port}");
    assert_eq!(
        succeeded(&register(&url, "alice", Some(&path("ca.pem"))).await),
        "registered alice\n"
    );
    // The CA's certificate is not the server's: the name is checked, as any TLS client does.
    let by_address = format!("https://127.0.0.1:{port}");
    assert_eq!(
        refused(&register(&by_address, "bob", Some(&path("ca.pem"))).await),
        format!(
            "confab: the server at {by_address} has a certificate issued for another name: \
             connect with a name the certificate lists (its subjectAltName), e.g. \
             https://localhost:PORT for a local test, or give the server's certificate itself \
             with --ca"
        )
    );
    // Which is the way out when the name cannot be helped: the server's certificate, pinned.
    assert_eq!(
        succeeded(&register(&by_address, "bob", Some(&path("server.pem"))).await),
        "registered bob\n"
    );
    // A one-liner's certificate vouches for nothing it did not sign.
    let stranger = one_liner().await;
    let wrong = stranger.path().join("cert.pem");
    assert_eq!(
        refused(&register(&url, "carol", Some(&wrong)).await),
        not_vouched_for(&url, &wrong)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_tls_port_says_to_use_https_for_every_command() {
    let certs = one_liner().await;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let data = tempfile::tempdir().unwrap();
    let (_server, port) = tls_server(data.path(), &cert, &key).await;

    let plain = format!("http://127.0.0.1:{port}");
    let tls_needed = format!(
        "confab: the server at {plain} speaks TLS, not plain http: connect to \
         https://127.0.0.1:{port} (with --ca FILE if its certificate is your own)"
    );
    assert_eq!(refused(&chat(&plain, None).await), tls_needed);
    assert_eq!(refused(&register(&plain, "bob", None).await), tls_needed);
    assert_eq!(
        refused(&admin_users(&plain, data.path(), None).await),
        tls_needed
    );
    // Typed without a scheme, a loopback address means http: the same sentence, with the URL
    // it was taken for.
    let bare = format!("127.0.0.1:{port}");
    assert_eq!(
        refused(&admin_users(&bare, data.path(), None).await),
        tls_needed
    );
}

/// The README's one-liner: its lines from `openssl req -x509 -newkey rsa` up to `confab serve`.
fn readme_one_liner() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("openssl req -x509 -newkey rsa")
        .expect("README has the one-liner");
    let end = start
        + readme[start..]
            .find("\nconfab serve")
            .expect("the one-liner comes before confab serve");
    readme[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_one_liner_works_by_address_too() {
    let certs = tempfile::tempdir().unwrap();
    let made = Command::new("bash")
        .current_dir(certs.path())
        .args(["-euo", "pipefail", "-c", &readme_one_liner()])
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "the README's openssl line: {made:?}");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let data = tempfile::tempdir().unwrap();
    let (_server, port) = tls_server(data.path(), &cert, &key).await;
    // Its certificate names chat.example.org; pinned, the address reaches it all the same.
    let url = format!("https://127.0.0.1:{port}");
    assert_eq!(
        succeeded(&register(&url, "alice", Some(&cert)).await),
        "registered alice\n"
    );
}
