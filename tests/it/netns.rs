//! Several hosts, for real: network namespaces this test creates (Debian's iproute2), joined by
//! veth pairs to a server namespace, with the real `confab serve` running inside it through
//! `ip netns exec`. Clients run on a thread that has entered their host's namespace, so the
//! server sees each host's own address.
//!
//! Where namespaces cannot be made (no CAP_SYS_ADMIN, no `ip`), each test says so on stderr and
//! returns; `scripts/test.sh` prints the same probe's verdict in its log, so a skip is visible.

use std::{
    future::Future,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use confab::{
    client::api,
    pb::{self, event::Kind},
};
use tonic::{Code, Streaming};

use crate::common::{PASSWORD, within};

/// A server namespace `s` and hosts `h1`, `h2`: host n is 10.77.n.2, its gateway (the server's
/// side) 10.77.n.1. Deleted, with their veths, on drop.
struct Net {
    prefix: String,
    hosts: Vec<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Builds the namespaces; `Err` only when the first cannot be made (not permitted here).
    /// Anything failing after that is a test failure, not a skip.
    fn new(hosts: usize) -> Result<Net, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Short: interface names have 15 characters at most.
        let prefix = format!("cf{}x{n}", std::process::id() % 100_000);
        let server = format!("{prefix}s");
        ip(&["netns", "add", &server])?;
        let mut net = Net {
            prefix: prefix.clone(),
            hosts: vec![server.clone()],
        };
        net.build(hosts)
            .unwrap_or_else(|e| panic!("building the test network: {e}"));
        Ok(net)
    }

    fn build(&mut self, hosts: usize) -> Result<(), String> {
        let prefix = self.prefix.clone();
        let server = self.hosts[0].clone();
        ip(&["-n", &server, "link", "set", "lo", "up"])?;
        for h in 1..=hosts {
            let host = format!("{prefix}h{h}");
            ip(&["netns", "add", &host])?;
            self.hosts.push(host.clone());
            let (outer, inner) = (format!("{prefix}a{h}"), format!("{prefix}b{h}"));
            ip(&[
                "-n", &server, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                "netns", &host,
            ])?;
            ip(&[
                "-n",
                &server,
                "addr",
                "add",
                &format!("10.77.{h}.1/24"),
                "dev",
                &outer,
            ])?;
            ip(&["-n", &server, "link", "set", &outer, "up"])?;
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("10.77.{h}.2/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &host, "link", "set", &inner, "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            // Hosts reach each other through the server's namespace, which routes.
            ip(&[
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{h}.1"),
            ])?;
        }
        let forward = Command::new("ip")
            .args([
                "netns",
                "exec",
                &server,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .map_err(|e| format!("sysctl: {e}"))?;
        if !forward.success() {
            return Err("enabling forwarding in the server namespace".into());
        }
        Ok(())
    }

    fn server_ns(&self) -> &str {
        &self.hosts[0]
    }

    fn host_ns(&self, n: usize) -> &str {
        &self.hosts[n]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.hosts {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleaning up {}: {e}", self.prefix);
            }
        }
    }
}

/// The namespaces, or `None` after saying on stderr why this test is skipped.
fn net_or_skip(test: &str, hosts: usize) -> Option<Net> {
    match Net::new(hosts) {
        Ok(net) => Some(net),
        Err(why) => {
            eprintln!("SKIPPED {test}: network namespaces are not available here ({why})");
            None
        }
    }
}

/// `confab serve` inside the server namespace, listening on every address there.
struct Served {
    child: Child,
    port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(net: &Net, dir: &std::path::Path) -> Served {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                net.server_ns(),
                env!("CARGO_BIN_EXE_confab"),
            ])
            .args(["serve", "--listen", "0.0.0.0:0", "--allow-insecure"])
            .args(["--bench-fast-hash", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec confab serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Served { child, port }
    }

    /// The URL host `n` reaches the server at (its gateway).
    fn url(&self, n: usize) -> String {
        format!("http://10.77.{n}.1:{}", self.port)
    }
}

/// A thread inside host `n`'s namespace running its own runtime: what is spawned on it opens
/// its sockets from that host. (A socket keeps its namespace wherever it is used later.)
struct Host {
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

impl Host {
    fn enter(namespace: &str) -> Host {
        let path = format!("/var/run/netns/{namespace}");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tx.send(runtime.handle().clone()).unwrap();
            let _ = runtime.block_on(stopped);
        });
        Host {
            runtime: rx.recv().unwrap(),
            stop: Some(stop),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        self.runtime.spawn(f).await.expect("the host's task")
    }
}

/// A logged-in user with its event stream.
struct User {
    chat: pb::chat_client::ChatClient<api::Authed>,
    events: Streaming<pb::Event>,
}

impl User {
    async fn next(&mut self, what: &str) -> Kind {
        match within(what, self.events.message()).await {
            Ok(Some(pb::Event { kind: Some(kind) })) => kind,
            other => panic!("{what}: the stream gave {other:?}"),
        }
    }

    /// Skips events until `pick` takes one.
    async fn until<T>(&mut self, what: &str, pick: impl Fn(Kind) -> Option<T>) -> T {
        loop {
            if let Some(t) = pick(self.next(what).await) {
                return t;
            }
        }
    }
}

async fn register(url: String, name: &'static str) {
    api::auth(api::connect(&url, None).await.unwrap())
        .register(pb::RegisterRequest {
            username: name.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
}

async fn try_login(
    url: String,
    name: &'static str,
    password: &'static str,
    peer_host: &'static str,
) -> Result<User, tonic::Status> {
    let channel = api::connect(&url, None).await.unwrap();
    let login = api::auth(channel.clone())
        .login(pb::LoginRequest {
            username: name.into(),
            password: password.into(),
            peer_port: 40_000,
            peer_public_key: vec![7; 32],
            peer_host: peer_host.into(),
            device_ticket: String::new(),
        })
        .await?
        .into_inner();
    let mut chat = api::chat(channel, &login.token).unwrap();
    let events = chat
        .subscribe(pb::SubscribeRequest {
            resume_after: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(User { chat, events })
}

#[tokio::test]
async fn the_lockout_counts_failures_from_every_host_and_tells_the_owner_where_they_came_from() {
    let Some(net) = net_or_skip("netns lockout", 2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Served::start(&net, dir.path());
    let (h1, h2) = (Host::enter(net.host_ns(1)), Host::enter(net.host_ns(2)));
    let (url1, url2) = (server.url(1), server.url(2));

    h1.run(register(url1.clone(), "alice")).await;
    let mut alice = h1
        .run(try_login(url1.clone(), "alice", PASSWORD, ""))
        .await
        .expect("alice logs in from host 1");
    alice
        .until("the backlog", |k| {
            matches!(k, Kind::BacklogEnd(_)).then_some(())
        })
        .await;

    let wrong = |url: String| try_login(url, "alice", "wrong password!", "");
    let first = h2.run(wrong(url2.clone())).await.err().expect("refused");
    assert_eq!(first.code(), Code::Unauthenticated);
    assert!(
        first.message().contains("2 attempts left"),
        "{}",
        first.message()
    );
    let failed = alice
        .until("LoginFailed", |k| match k {
            Kind::LoginFailed(f) => Some(f),
            _ => None,
        })
        .await;
    assert_eq!(failed.source, "10.77.2.2", "the failure came from host 2");

    let second = h1.run(wrong(url1.clone())).await.err().expect("refused");
    assert!(
        second.message().contains("1 attempts left"),
        "{}",
        second.message()
    );
    let failed = alice
        .until("LoginFailed", |k| match k {
            Kind::LoginFailed(f) => Some(f),
            _ => None,
        })
        .await;
    assert_eq!(failed.source, "10.77.1.2");
    assert_eq!(failed.failed_attempts, 2, "counted across both hosts");

    let third = h2.run(wrong(url2.clone())).await.err().expect("refused");
    assert_eq!(third.code(), Code::PermissionDenied, "{third:?}");
    // Locked from either host, even with the right password.
    let locked = h2
        .run(try_login(url2, "alice", PASSWORD, ""))
        .await
        .err()
        .expect("locked");
    assert_eq!(locked.code(), Code::PermissionDenied, "{locked:?}");
}

#[tokio::test]
async fn a_grant_carries_the_address_the_server_saw_or_was_told_and_a_move_revokes_it() {
    let Some(net) = net_or_skip("netns grants", 2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Served::start(&net, dir.path());
    let (h1, h2) = (Host::enter(net.host_ns(1)), Host::enter(net.host_ns(2)));
    let (url1, url2) = (server.url(1), server.url(2));
    h1.run(register(url1.clone(), "alice")).await;
    h1.run(register(url1.clone(), "bob")).await;

    // bob on host 2 asks for alice's address; alice, on host 1, grants it.
    let mut alice = h1
        .run(try_login(url1.clone(), "alice", PASSWORD, ""))
        .await
        .unwrap();
    let mut bob = h2
        .run(try_login(url2.clone(), "bob", PASSWORD, ""))
        .await
        .unwrap();
    let granted = exchange(&mut bob, &mut alice).await;
    assert_eq!(
        granted.host, "10.77.1.2",
        "the address the server saw alice come from"
    );

    // alice logs in again from host 2: the grant made to her old address is revoked.
    let mut alice = h2
        .run(try_login(url2.clone(), "alice", PASSWORD, ""))
        .await
        .unwrap();
    let revoked = bob
        .until("the old grant's revocation", |k| match k {
            Kind::AddressRevoked(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(revoked.user, "alice");
    let granted = exchange(&mut bob, &mut alice).await;
    assert_eq!(granted.host, "10.77.2.2", "the new address");

    // Behind an address the server does not see (--advertise-host): the grant carries what
    // she said, not where she came from.
    let mut alice = h1
        .run(try_login(url1, "alice", PASSWORD, "alice.example.net"))
        .await
        .unwrap();
    bob.until("the second grant's revocation", |k| {
        matches!(k, Kind::AddressRevoked(_)).then_some(())
    })
    .await;
    let granted = exchange(&mut bob, &mut alice).await;
    assert_eq!(granted.host, "alice.example.net");
}

/// `asker` requests alice's address, alice (`target`) accepts; returns the grant `asker` gets.
async fn exchange(asker: &mut User, target: &mut User) -> pb::AddressGranted {
    asker
        .chat
        .request_address(pb::RequestAddressRequest {
            user: "alice".into(),
        })
        .await
        .expect("request the address");
    let request = target
        .until("the address request", |k| match k {
            Kind::AddressRequested(r) => Some(r),
            _ => None,
        })
        .await;
    target
        .chat
        .respond_address_request(pb::RespondAddressRequestRequest {
            request_id: request.request_id,
            accept: true,
        })
        .await
        .expect("accept");
    asker
        .until("the grant", |k| match k {
            Kind::AddressGranted(g) => Some(g),
            _ => None,
        })
        .await
}

/// A real `confab chat --json` run inside a host's namespace with `ip netns exec`.
struct ChatProc {
    user: &'static str,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ChatProc {
    async fn start(namespace: &str, url: &str, user: &'static str, extra: &[&str]) -> ChatProc {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", namespace, env!("CARGO_BIN_EXE_confab")])
            .args([
                "chat",
                "--server",
                url,
                "--user",
                user,
                "--json",
                "--password-stdin",
            ])
            .args(["--peer-listen", "0.0.0.0:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("CONFAB_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ip netns exec confab chat");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .await
            .unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut chat = ChatProc {
            user,
            child,
            stdin,
            lines,
        };
        chat.expect("connected", |v| v["type"] == "connected").await;
        chat
    }

    async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next JSON line `pred` accepts, skipping the others.
    async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let user = self.user;
        within(&format!("{user}: {what}"), async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{user}'s chat ended while waiting for {what}"));
                let value: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if pred(&value) {
                    return value;
                }
            }
        })
        .await
    }
}

impl Drop for ChatProc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_goes_directly_from_one_host_to_another() {
    let Some(net) = net_or_skip("netns peer path", 2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Served::start(&net, dir.path());
    let h1 = Host::enter(net.host_ns(1));
    h1.run(register(server.url(1), "alice")).await;
    h1.run(register(server.url(1), "bob")).await;
    let mut alice = ChatProc::start(net.host_ns(1), &server.url(1), "alice", &[]).await;
    let mut bob = ChatProc::start(net.host_ns(2), &server.url(2), "bob", &[]).await;

    alice.send("getaddress bob").await;
    let request = bob
        .expect("the address request", |v| v["type"] == "address_request")
        .await;
    assert_eq!(request["from"], "alice");
    bob.send("accept alice").await;
    let granted = alice
        .expect("the grant", |v| v["type"] == "address_granted")
        .await;
    assert_eq!(granted["user"], "bob");
    assert_eq!(
        granted["host"], "10.77.2.2",
        "where the server saw bob: {granted}"
    );

    let admin_token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let relayed = || {
        let (url, token) = (server.url(1), admin_token.trim().to_owned());
        h1.run(async move {
            api::admin(api::connect(&url, None).await.unwrap(), &token)
                .unwrap()
                .get_stats(pb::GetStatsRequest {})
                .await
                .expect("stats")
                .into_inner()
                .messages_relayed
        })
    };
    let before = relayed().await;
    alice.send("private bob across the wire").await;
    let sent = alice
        .expect("the send's result", |v| v["type"] == "sent")
        .await;
    assert_eq!(sent["via"], "direct", "{sent}");
    let got = bob
        .expect("the private message", |v| v["type"] == "message")
        .await;
    assert_eq!(
        (
            got["from"].as_str(),
            got["body"].as_str(),
            got["via"].as_str()
        ),
        (Some("alice"), Some("across the wire"), Some("direct")),
        "{got}"
    );
    assert_eq!(relayed().await, before, "the server relayed nothing");
}
