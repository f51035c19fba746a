//! `sendfile` between two real `confab chat` processes as people see it: at terminals (tmux),
//! a bar with the rate and the time left on both sides while the file moves, then the line
//! that says it arrived; with stdout not a terminal (`--json`, or a file), not one escape
//! sequence.
//!
//! The file goes through a relay of the test's own in front of bob's peer listener (bob
//! advertises the relay's address), which passes the sender's bytes slowly until the test
//! releases it and at full speed after: the bars stay up exactly as long as the test needs
//! them, whatever the machine's speed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use tokio::io::AsyncBufReadExt as _;

use crate::common::{
    PASSWORD,
    chat::{Chat, server_with},
    process::BIN,
    tmux::Tmux,
    within,
};

/// The file: big enough that the slow phase cannot finish it (it passes ~800 KiB/s).
const SIZE: usize = 32 << 20;

/// A relay on 127.0.0.3 in front of 127.0.0.2 (same port), slow until released.
struct Relay {
    port: u16,
    release: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
        let (release, released) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((downstream, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut down_r, mut down_w) = downstream.into_split();
                let (mut up_r, mut up_w) = upstream.into_split();
                // Receiver → sender (the answer, the ack) as it comes.
                pumps.spawn(async move {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                });
                let released = released.clone();
                pumps.spawn(async move { forward(&mut down_r, &mut up_w, released).await });
            }
        });
        Relay {
            port,
            release,
            _tasks: tasks,
        }
    }

    /// From now on at full speed.
    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// Sender → receiver: 16 KiB every 20 ms until released, then as fast as it comes.
async fn forward(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    released: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    loop {
        let slow = !*released.borrow();
        let want = if slow {
            pace.tick().await;
            16 * 1024
        } else {
            buf.len()
        };
        let n = match from.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `env …` for a chat in tmux: the test's own config and state directories, the password.
fn env(home: &Path) -> String {
    format!(
        "env XDG_CONFIG_HOME={home}/config XDG_STATE_HOME={home}/state CONFAB_PASSWORD='{PASSWORD}' \
         RUST_LOG=warn",
        home = home.display()
    )
}

/// A file of `SIZE` bytes that do not repeat, and its SHA-256 in hex.
fn payload(dir: &Path) -> (std::path::PathBuf, String) {
    let path = dir.join("payload.bin");
    let data: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    (path, confab::peer::file::hex(&Sha256::digest(&data)))
}

/// A bar line for `arrow` showing a rate and a time left (`ETA` and a digit).
fn has_bar(screen: &[String], arrow: &str) -> bool {
    screen.iter().any(|l| {
        l.starts_with(&format!("{arrow} ["))
            && l.contains("/s ETA ")
            && l.split("ETA ")
                .nth(1)
                .is_some_and(|eta| eta.starts_with(|c: char| c.is_ascii_digit()))
    })
}

async fn keys(tmux: &Tmux, target: &str, text: &str) {
    tmux.run(&["send-keys", "-t", target, "-l", text]).await;
    tmux.run(&["send-keys", "-t", target, "Enter"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_terminals_show_a_bar_with_rate_and_time_left_then_the_file_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let (source, sha256) = payload(dir.path());
    let downloads = dir.path().join("downloads");
    let relay = Relay::start().await;
    let tmux = Tmux::new("sendfile");
    let start = |name: &str, extra: String| {
        format!(
            "{} {BIN} chat --server {} --user {name} {extra}",
            env(dir.path()),
            server.url
        )
    };
    let alice = start("alice", "--peer-listen 127.0.0.1:0".into());
    let bob = start(
        "bob",
        format!(
            "--peer-listen 127.0.0.2:{port} --advertise-host 127.0.0.3 --auto-accept \
             --download-dir {}",
            downloads.display(),
            port = relay.port
        ),
    );
    // Wide enough that no line of the test wraps.
    for (session, command) in [("alice", &alice), ("bob", &bob)] {
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "230",
            "-y",
            "30",
            command,
        ])
        .await;
    }
    tmux.wait_in("alice", "alice's prompt", |s| {
        s.last().is_some_and(|l| l == "alice>")
    })
    .await;
    tmux.wait_in("bob", "bob's prompt", |s| {
        s.last().is_some_and(|l| l == "bob>")
    })
    .await;

    keys(&tmux, "alice", "getaddress bob").await;
    tmux.wait_in("alice", "bob's address", |s| {
        s.iter()
            .any(|l| l.starts_with("bob gave you their address"))
    })
    .await;
    keys(
        &tmux,
        "alice",
        &format!("sendfile bob {}", source.display()),
    )
    .await;
    tmux.wait_in("bob", "the offer", |s| {
        s.iter()
            .any(|l| l.contains("offers you a file: payload.bin (32.00 MiB)"))
    })
    .await;
    keys(&tmux, "bob", "y").await;

    // The relay holds the transfer to a crawl: both bars must show how fast and how long,
    // each right above a prompt that is still there.
    let screen = tmux
        .wait_in("alice", "a bar with rate and time left", |s| {
            has_bar(s, "payload.bin → bob") && s.last().is_some_and(|l| l == "alice>")
        })
        .await;
    assert_eq!(
        screen.iter().filter(|l| l.contains(" ETA ")).count(),
        1,
        "one bar, redrawn in place:\n{}",
        screen.join("\n")
    );
    let screen = tmux
        .wait_in("bob", "a bar with rate and time left", |s| {
            has_bar(s, "payload.bin ← alice") && s.last().is_some_and(|l| l == "bob>")
        })
        .await;
    assert_eq!(
        screen.iter().filter(|l| l.contains(" ETA ")).count(),
        1,
        "one bar, redrawn in place:\n{}",
        screen.join("\n")
    );
    assert!(
        std::fs::read_dir(&downloads).unwrap().all(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".part")),
        "the bars were seen before the file was complete"
    );

    relay.release();
    let sent = format!("sent payload.bin (32.00 MiB) to bob; sha256 {sha256}");
    let screen = tmux
        .wait_in("alice", "the file sent", |s| s.contains(&sent))
        .await;
    assert_eq!(
        screen[screen.len() - 2..],
        [sent.clone(), "alice>".to_owned()],
        "the bar made way for the result"
    );
    let saved = downloads.join("payload.bin");
    let received = format!(
        "received {} (32.00 MiB) from alice; sha256 {sha256}",
        saved.display()
    );
    let screen = tmux
        .wait_in("bob", "the file received", |s| s.contains(&received))
        .await;
    assert_eq!(
        screen[screen.len() - 2..],
        [received.clone(), "bob>".to_owned()],
        "the bar made way for the result"
    );
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(&source).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_on_stdout_no_bar_and_no_escape_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let (source, sha256) = payload(dir.path());
    let downloads = dir.path().join("downloads");
    let relay = Relay::start().await;
    // Bob at a terminal with stdout into a FIFO the test reads: stdin and stderr are the
    // terminal, so only stdout tells that nobody watches a bar.
    let fifo = dir.path().join("bob.out");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Read and write: never an end of file while bob has not opened it yet.
    let reader = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .unwrap();
    let (tx, mut bob_lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let _reading = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut bob_said = String::new();
    let mut bob_expect = async |what: &str| {
        let found = within(&format!("bob's {what:?} line"), async {
            loop {
                let line = bob_lines.recv().await.expect("bob's stdout is open");
                bob_said.push_str(&line);
                bob_said.push('\n');
                if line.contains(what) {
                    return line;
                }
            }
        })
        .await;
        (found, bob_said.clone())
    };
    let tmux = Tmux::new("sendfile-pipe");
    let bob = format!(
        "{} {BIN} chat --server {} --user bob --peer-listen 127.0.0.2:{port} \
         --advertise-host 127.0.0.3 --auto-accept --auto-accept-files --download-dir {} > {}",
        env(dir.path()),
        server.url,
        downloads.display(),
        fifo.display(),
        port = relay.port
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "200",
        "-y",
        "30",
        &bob,
    ])
    .await;
    bob_expect("logged in as bob").await;
    // Alice with `--json` into a pipe.
    let mut alice = Chat::start(&server, "alice", &[]).await;

    alice.send("getaddress bob").await;
    alice.expect_type("address_granted").await;
    alice
        .send(&format!("sendfile bob {}", source.display()))
        .await;
    // Progress lines while the relay holds the transfer back: both clients are ticking.
    for _ in 0..2 {
        let progress = alice.expect_type("file_progress").await;
        assert_eq!(progress["direction"], "send", "{progress}");
        assert!(
            progress["bytes"].as_u64().unwrap() < SIZE as u64,
            "{progress}"
        );
    }
    relay.release();
    let sent = alice.expect_type("file_sent").await;
    assert_eq!(sent["sha256"], sha256.as_str());
    let (received, text) = bob_expect("received ").await;
    assert!(
        received.ends_with(&format!("(32.00 MiB) from alice; sha256 {sha256}")),
        "{received}"
    );
    assert!(
        !text.contains('\x1b') && !text.contains("ETA"),
        "bob's stdout:\n{text:?}"
    );
    let screen = tmux.screen().await;
    assert!(
        !screen.iter().any(|l| l.contains("ETA")),
        "bob's terminal (stderr):\n{}",
        screen.join("\n")
    );
    assert_eq!(
        alice.count(|v| !v.is_object()),
        0,
        "alice printed only JSON:\n{}",
        alice.dump()
    );
    assert!(!alice.dump().contains('\x1b'), "{}", alice.dump());
}
