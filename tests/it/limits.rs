//! What an anonymous socket can hold: connection caps (total and per address), the handshake
//! and login deadlines, HTTP/2 keepalive and `MAX_CONCURRENT_STREAMS`, each observed on the
//! wire with raw sockets from other loopback addresses (127.0.0.2 and up), while a real client
//! on 127.0.0.1 keeps working.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use confab::{client::api, pb};
use prost::Message;
use tokio::io::AsyncWriteExt;

use crate::{common::*, rawh2::*};

fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Long enough that no deadline fires during a test that is not about deadlines.
const NEVER: Duration = Duration::from_secs(600);

/// alice messages bob and bob receives it: the server is serving real clients.
async fn real_clients_work(srv: &TestServer) {
    let mut alice = within("alice to log in", srv.user("alice")).await;
    let mut bob = within("bob to log in", srv.user("bob")).await;
    within("alice's message", alice.send("bob", "still here"))
        .await
        .expect("alice sends");
    assert_eq!(bob.message().await.body, "still here");
}

#[tokio::test]
async fn idle_sockets_from_one_address_cannot_starve_a_client_from_another() {
    let srv = TestServer::with(|c| {
        c.max_connections = 32;
        c.max_connections_per_address = 5;
        c.handshake_timeout = NEVER;
        c.login_timeout = NEVER;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(connect_from(srv.handle.addr, lo(2)).await);
    }
    // Accepted in the order they connected: the first five are kept, the rest closed at once
    // (the handshake deadline is far away, so this is the cap, not a timeout).
    for (n, socket) in idle.iter_mut().enumerate().skip(5) {
        closed(
            socket,
            &format!("idle socket {n} over the per-address cap to close"),
        )
        .await;
    }
    real_clients_work(&srv).await;
}

#[tokio::test]
async fn a_full_server_closes_new_connections_at_once_and_takes_them_again_once_some_close() {
    let srv = TestServer::with(|c| {
        c.max_connections = 4;
        c.max_connections_per_address = 2;
        c.handshake_timeout = NEVER;
        c.login_timeout = NEVER;
    })
    .await;
    let mut held = Vec::new();
    for n in [2, 2, 3, 3] {
        held.push(connect_from(srv.handle.addr, lo(n)).await);
    }
    let mut over = connect_from(srv.handle.addr, lo(4)).await;
    closed(&mut over, "a connection over the total cap to close").await;

    // Two close; a client from a fifth address gets in (the server learns of the close
    // asynchronously, so the client retries until then, as a real one would).
    held.truncate(2);
    let endpoint = api::endpoint(&srv.url, None)
        .unwrap()
        .local_address(Some(lo(5)));
    let channel = within("a slot to be free again", async {
        loop {
            if let Ok(channel) = endpoint.connect().await {
                return channel;
            }
        }
    })
    .await;
    api::auth(channel)
        .register(pb::RegisterRequest {
            username: "carol".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("carol registers on a freed slot");
}

#[tokio::test]
async fn silent_preface_only_and_half_preface_connections_are_closed_at_the_handshake_deadline() {
    let handshake = Duration::from_millis(300);
    let srv = TestServer::with(|c| {
        c.handshake_timeout = handshake;
        c.login_timeout = NEVER;
    })
    .await;
    let start = Instant::now();
    let mut silent = connect_from(srv.handle.addr, lo(2)).await;
    let mut preface = connect_from(srv.handle.addr, lo(2)).await;
    let mut half = connect_from(srv.handle.addr, lo(2)).await;
    preface.write_all(PREFACE).await.unwrap();
    half.write_all(&PREFACE[..PREFACE.len() / 2]).await.unwrap();
    // Preface and SETTINGS, the whole handshake, but never a request.
    let mut settled = Raw::open(srv.handle.addr, lo(2)).await;

    closed(&mut silent, "a silent connection to close").await;
    closed(&mut preface, "a preface-only connection to close").await;
    closed(&mut half, "a half-preface connection to close").await;
    settled
        .until_closed("a connection without a request to close")
        .await;
    assert!(start.elapsed() >= handshake, "closed before the deadline");
    real_clients_work(&srv).await;
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed_and_one_that_did_stays() {
    let login = Duration::from_millis(800);
    let srv = TestServer::with(|c| {
        c.handshake_timeout = Duration::from_millis(200);
        c.login_timeout = login;
    })
    .await;
    srv.register("alice").await;
    let start = Instant::now();
    // Logs in on its raw connection (accepted first, so its deadline would pass first).
    let mut member = Raw::open(srv.handle.addr, lo(2)).await;
    let request = pb::LoginRequest {
        username: "alice".into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    member
        .unary(1, "/confab.v1.Auth/Login", None, &request.encode_to_vec())
        .await;
    member
        .until("alice's login to answer", |f| {
            f.stream == 1 && f.kind == HEADERS && f.flags & END_STREAM != 0
        })
        .await;
    // Makes calls (a failed login, a health check) but never proves who it is.
    let mut stranger = Raw::open(srv.handle.addr, lo(3)).await;
    let wrong = pb::LoginRequest {
        username: "alice".into(),
        password: "not the password".into(),
        ..Default::default()
    };
    stranger
        .unary(1, "/confab.v1.Auth/Login", None, &wrong.encode_to_vec())
        .await;
    stranger
        .unary(3, "/grpc.health.v1.Health/Check", None, &[])
        .await;
    let answered = stranger
        .until_closed("the anonymous connection to close")
        .await;
    assert!(
        answered.iter().any(|f| f.stream == 3 && f.kind == HEADERS),
        "the anonymous connection's calls were answered before it was closed"
    );
    assert!(start.elapsed() >= login, "closed before the login deadline");

    // The logged-in connection outlived its deadline: it still answers.
    member
        .unary(3, "/grpc.health.v1.Health/Check", None, &[])
        .await;
    member
        .until("a logged-in connection to answer after the deadline", |f| {
            f.stream == 3 && f.kind == HEADERS
        })
        .await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    let srv = TestServer::with(|c| {
        c.handshake_timeout = NEVER;
        c.login_timeout = NEVER;
        c.keepalive_interval = Duration::from_millis(200);
        c.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    let mut dead = Raw::open(srv.handle.addr, lo(2)).await;
    let frames = dead.until_closed("an unresponsive peer to be closed").await;
    assert!(
        frames.iter().any(|f| f.kind == PING && f.flags & ACK == 0),
        "the server pinged before giving up: {frames:?}"
    );
}

#[tokio::test]
async fn one_connection_is_held_to_its_stream_limit_and_gets_back_what_it_releases() {
    let srv = TestServer::with(|c| {
        c.max_streams_per_connection = 4;
        c.handshake_timeout = NEVER;
        c.login_timeout = NEVER;
    })
    .await;
    let mut raw = Raw::open(srv.handle.addr, lo(2)).await;
    assert_eq!(raw.max_concurrent_streams().await, Some(4), "announced");
    // Four Logins whose request never comes: each holds a stream.
    for id in [1, 3, 5, 7] {
        raw.headers(id, "/confab.v1.Auth/Login", None, false).await;
    }
    // A client that ignores the setting is refused, stream by stream.
    raw.headers(9, "/confab.v1.Auth/Login", None, false).await;
    let refused = raw
        .until("the fifth stream to be refused", |f| f.kind == RST_STREAM)
        .await;
    assert_eq!(refused.stream, 9, "only the stream over the limit is reset");
    assert_eq!(refused.payload, REFUSED_STREAM.to_be_bytes());

    // Giving one back makes room for exactly one more.
    raw.reset(1, CANCEL).await;
    raw.unary(11, "/grpc.health.v1.Health/Check", None, &[])
        .await;
    let answer = raw
        .until("the stream opened after a release", |f| {
            f.stream == 11 && (f.kind == HEADERS || f.kind == RST_STREAM)
        })
        .await;
    assert_eq!(answer.kind, HEADERS, "stream 11 was served, not refused");

    // A real client on its own connection was never affected.
    real_clients_work(&srv).await;
}

/// CPU time (user + system, in clock ticks) the process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_descriptors_the_server_pauses_says_so_a_few_times_and_serves_afterwards() {
    use crate::common::process::ServerProcess;

    const WARNING: &str = "cannot accept connections";
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    // 64 descriptors: the flood below runs out of them long before any connection cap; the
    // deadlines are far away, so the flood holds them until the test lets go. Debug logging,
    // as in the report of a spinning accept loop.
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", "ulimit -n 64 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--bench-fast-hash"])
        .args(["--handshake-timeout", "10m", "--login-timeout", "10m"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let server = ServerProcess::from_command(command, &dir.path().join("data")).await;
    let addr = server.addr.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap();

    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(connect_from(addr.parse().unwrap(), lo(2)).await);
    }
    // Whoever says it (a spinning loop says it too, once per attempt).
    within("the server to report running out of descriptors", async {
        while !log().contains("Too many open files") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Not synchronisation: the exposure time of the measurement. A loop that retries at once
    // burns a core and writes a line per attempt in this second.
    let before = cpu_ticks(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_ticks(server.pid()) - before;
    assert!(
        spent < 30,
        "the accept loop used {spent} ticks of CPU in 1 s while out of descriptors"
    );

    drop(flood);
    within("registering after the flood", async {
        server.register("alice").await;
        server.register("bob").await;
    })
    .await;
    let mut alice = within("alice to log in", server.login("alice")).await;
    let mut bob = within("bob to log in", server.login("bob")).await;
    bob.subscribe(0).await;
    assert!(bob.backlog().await.is_empty());
    alice
        .send("bob", "after the flood")
        .await
        .expect("alice sends");
    assert_eq!(bob.message().await.body, "after the flood");

    let warnings = log().matches(WARNING).count();
    let emfile_lines = log()
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .count();
    assert!(
        (1..=5).contains(&warnings) && emfile_lines == warnings,
        "{warnings} warnings, {emfile_lines} lines naming EMFILE"
    );
}
