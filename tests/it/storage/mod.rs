//! The store on disk, through the real `confab` binary: damage refused at start, `admin check`,
//! repair, the data directory's lock and modes, SIGKILL under load, a full disk.

mod damage;
mod datadir;
mod durability;

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Output, Stdio},
};

use confab::pb;

use crate::common::{process::ServerProcess, *};

pub fn confab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_confab"))
}

/// Runs `confab serve` on `data`, which must refuse to start: returns what it said on stderr.
pub fn refused(data: &Path, extra: &[&str]) -> String {
    let mut child = confab()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refusing server exits without a line; one that starts announces itself.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("confab serve started on {}: {line}", data.display());
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "a refusal exits non-zero: {stderr}");
    stderr
}

/// `confab serve` on `data` with send limits loose enough for these tests' volumes.
pub async fn start(data: &Path, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--send-rate", "1000000", "--send-burst", "1000000"];
    args.extend(extra);
    ServerProcess::start(data, &args).await
}

/// `confab admin ARGS --data-dir DATA`.
pub fn admin(command: &str, data: &Path) -> Output {
    confab()
        .args(["admin", command, "--data-dir"])
        .arg(data)
        .output()
        .unwrap()
}

/// Sends SIGTERM to the server and waits for it to exit cleanly.
pub async fn stop(mut server: ServerProcess) {
    server.signal("-TERM");
    // Awaited, not blocked on, so clients' connections can answer the server's GOAWAY.
    let exited = server.exit_status().await;
    assert!(exited.success());
}

/// A server process reached over gRPC.
pub struct Remote {
    pub url: String,
}

impl Remote {
    pub fn new(server: &ServerProcess) -> Self {
        Remote {
            url: server.url.clone(),
        }
    }

    pub async fn register(&self, name: &str) {
        confab::client::api::auth(confab::client::api::connect(&self.url, None).await.unwrap())
            .register(pb::RegisterRequest {
                username: name.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap();
    }

    pub async fn login(&self, name: &str) -> Session {
        let channel = confab::client::api::connect(&self.url, None).await.unwrap();
        let r = confab::client::api::auth(channel.clone())
            .login(pb::LoginRequest {
                username: name.into(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        Session {
            name: r.username.clone(),
            chat: confab::client::api::chat(channel, &r.token).unwrap(),
            token: r.token.clone(),
            peer_public_key: Vec::new(),
            events: None,
            login: r,
        }
    }
}

/// A message of the numbered series every test here sends: id `m-{i}`, body `message {i}`.
pub fn numbered(to: &str, i: u64) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        to: to.into(),
        body: format!("message {i}"),
        message_id: format!("m-{i}"),
    }
}

/// Sends messages `range` from `from` to `to` over one SendStream; all must be stored.
pub async fn stream(from: &mut Session, to: &str, range: std::ops::Range<u64>) {
    let n = range.end - range.start;
    let requests: Vec<_> = range
        .map(|i| pb::SendStreamRequest {
            message: Some(numbered(to, i)),
        })
        .collect();
    let mut responses = from
        .chat
        .send_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answered = 0;
    while let Some(r) = within("SendStream answers", responses.message())
        .await
        .unwrap()
    {
        assert_eq!(r.code, 0, "{}: {}", r.message_id, r.error);
        answered += 1;
    }
    assert_eq!(answered, n);
}

/// `user`'s whole backlog after logging in, checked to be messages of the numbered series in
/// seq order; returns their numbers.
pub async fn backlog_numbers(remote: &Remote, user: &str) -> Vec<u64> {
    let mut s = remote.login(user).await;
    s.subscribe(0).await;
    let backlog = s.backlog().await;
    assert!(
        backlog.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs increase"
    );
    backlog
        .iter()
        .map(|m| {
            let i: u64 = m.message_id.strip_prefix("m-").unwrap().parse().unwrap();
            assert_eq!(m.body, format!("message {i}"), "the body belongs to its id");
            i
        })
        .collect()
}

/// Copies the files (not subdirectories) of `from` into a new directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
