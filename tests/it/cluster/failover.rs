//! `confab chat --server A,B` (SPEC §12): the real chat client on a cluster of real nodes. When
//! its node is killed it logs in at the next node of its list by itself and resumes after what
//! it showed, so every acknowledged message is shown exactly once; a message typed while no node
//! answers goes out when one does; a node drained with SIGTERM sends its chats on too; a list
//! whose first node is down at start works, as does one whose first node answers but cannot log
//! anybody in; one where none answers says so; a session ended on
//! purpose is not taken for a dead node.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::{
    PASSWORD,
    chat::{Chat, chat_server},
    login_at, nats, pg,
    process::{BIN, ServerProcess, run_with_stdin},
};

/// Nodes of one cluster (a fresh database on the shared PostgreSQL, the shared nats-server),
/// each a `confab serve` process with its own data directory.
struct Cluster {
    db: String,
    bus: String,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            db: pg::fresh_database(),
            bus: nats::server_url(),
            dirs: Vec::new(),
        }
    }

    /// Starts node `name` on a free port.
    async fn node(&mut self, name: &str) -> ServerProcess {
        self.dirs.push(tempfile::tempdir().unwrap());
        let dir = self.dirs.last().unwrap().path().to_owned();
        self.node_at(&dir, "127.0.0.1:0", name).await
    }

    /// Starts node `name` with its data in `dir` on `listen` (a restart reuses both).
    async fn node_at(&self, dir: &Path, listen: &str, name: &str) -> ServerProcess {
        let args = ["--store", &self.db, "--bus", &self.bus, "--node-id", name];
        chat_server(dir, listen, &args).await
    }
}

/// `--server` for these nodes, in this order.
fn list(nodes: &[&str]) -> String {
    nodes.join(",")
}

/// The URL of a port nobody listens on.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// How many times each message id was shown by `chat` so far.
fn shown_ids(chat: &Chat) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for v in chat.lines().iter().filter(|v| v["type"] == "message") {
        let id = v["message_id"].as_str().unwrap_or_default().to_owned();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_moves_to_the_next_node_when_its_node_is_killed_and_shows_every_message_once() {
    let mut cluster = Cluster::new();
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    for user in ["alice", "bob", "carol"] {
        a.register(user).await;
    }
    let state = tempfile::tempdir().unwrap();
    let env = [("XDG_STATE_HOME", state.path())];
    let servers = list(&[&a.url, &b.url]);
    let mut alice = Chat::spawn_at(&servers, "alice", &[], &env).await;
    alice.expect_type("connected").await;
    let mut carol = Chat::spawn_at(&b.url, "carol", &["--auto-accept"], &env).await;
    carol.expect_type("connected").await;
    alice
        .expect("carol online", |v| {
            v["type"] == "presence" && v["user"] == "carol" && v["online"] == true
        })
        .await;
    alice.send("getaddress carol").await;
    alice.expect_type("address_granted").await;

    // Bob, on node b, sends numbered messages to alice one after the other, each waiting for
    // the server's acknowledgement, until told to stop.
    let mut bob = b.login("bob").await;
    bob.subscribe(0).await;
    bob.backlog().await;
    let stop = CancellationToken::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        async move {
            let mut acknowledged = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            while !stop.is_cancelled() {
                pace.tick().await;
                let i = acknowledged.len();
                let id = format!("n{i}");
                bob.send_id("alice", &format!("number {i}"), &id)
                    .await
                    .unwrap_or_else(|e| panic!("node b refused {id}: {e:?}"));
                acknowledged.push(id);
                sent.store(acknowledged.len(), Ordering::Release);
            }
            (bob, acknowledged)
        }
    });
    alice
        .expect("message n20", |v| v["message_id"] == "n20")
        .await;

    a.kill().await;
    let lost = alice.expect_type("disconnected").await;
    assert_eq!(lost["next_server"], b.url.as_str(), "{lost}");
    let again = alice.expect_type("logged_in").await;
    assert_eq!(again["again"], true);
    assert_eq!(again["server"], b.url.as_str(), "{again}");
    let connected = alice.expect_type("connected").await;
    assert_eq!(connected["resumed"], true);
    // The load goes on after the move: wait for messages sent since.
    let later = format!("n{}", sent.load(Ordering::Acquire) + 20);
    alice
        .expect(&format!("message {later}"), |v| {
            v["message_id"] == later.as_str()
        })
        .await;
    stop.cancel();
    let (mut bob, acknowledged) = sender.await.unwrap();

    // Every acknowledged message, exactly once.
    while acknowledged
        .iter()
        .any(|id| !shown_ids(&alice).contains_key(id))
    {
        alice.expect_type("message").await;
    }
    bob.send_id("alice", "barrier", "barrier").await.unwrap();
    alice.expect_message("bob", "barrier").await;
    let shown = shown_ids(&alice);
    for id in &acknowledged {
        assert_eq!(shown[id], 1, "{id} shown {} times", shown[id]);
    }
    assert_eq!(
        shown.len(),
        acknowledged.len() + 1,
        "nothing but bob's messages and the barrier"
    );
    assert!(acknowledged.len() > 40, "{}", acknowledged.len());

    // Alice can still send, from her new node.
    alice.send("message bob after the move").await;
    let sent = alice.expect_type("sent").await;
    assert_eq!(sent["status"], "DELIVERED", "{sent}");
    let m = super::message(&mut bob).await;
    assert_eq!(m.body, "after the move");
    // The grant of the old session went with it: `private` asks for an address again.
    alice.send("private carol still there?").await;
    let refused = alice.expect_type("error").await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("run getaddress carol first"),
        "{refused}"
    );
    let (code, _) = alice.finish().await;
    assert_eq!(code, 1, "the private refusal counts as a failed line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_with_sigterm_sends_its_chats_to_the_next_node() {
    let mut cluster = Cluster::new();
    let mut a = cluster.node("a").await;
    let b = cluster.node("b").await;
    a.register("alice").await;
    let mut alice = Chat::spawn_at(&list(&[&a.url, &b.url]), "alice", &[], &[]).await;
    alice.expect_type("connected").await;

    a.signal("-TERM");
    let lost = alice.expect_type("disconnected").await;
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("the server is shutting down"),
        "{lost}"
    );
    assert_eq!(lost["next_server"], b.url.as_str(), "{lost}");
    assert_eq!(
        alice.expect_type("logged_in").await["server"],
        b.url.as_str()
    );
    alice.expect_type("connected").await;
    assert!(a.exit_status().await.success());
    b.wait_for_session("alice", "a session at b", |_| true)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_typed_while_no_node_answers_goes_out_once_one_does() {
    let mut cluster = Cluster::new();
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    for user in ["alice", "bob"] {
        a.register(user).await;
    }
    let (b_addr, b_dir, b_url) = (b.addr.clone(), b.dir.clone(), b.url.clone());
    let mut alice = Chat::spawn_at(&list(&[&a.url, &b.url]), "alice", &[], &[]).await;
    alice.expect_type("connected").await;

    a.kill().await;
    b.kill().await;
    alice.expect_type("disconnected").await;
    // Node b was tried and did not answer either: nothing answers now.
    let retry = alice.expect_type("reconnecting").await;
    assert_eq!(retry["error"], "the server cannot be reached", "{retry}");
    alice.send("message bob typed while no node answered").await;

    let b = cluster.node_at(&b_dir, &b_addr, "b").await;
    let [again, sent] = alice.expect_types(["logged_in", "sent"]).await;
    assert_eq!(again["server"], b_url.as_str(), "{again}");
    assert_eq!(sent["status"], "STORED", "bob is away: {sent}");
    assert_eq!(sent["attempts"], 2, "sent again once b answered: {sent}");

    let mut bob = b.login("bob").await;
    bob.subscribe(0).await;
    let backlog = bob.backlog().await;
    let bodies: Vec<&str> = backlog.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["typed while no node answered"]);
    assert_eq!(backlog[0].message_id, sent["message_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_node_that_is_down_at_start_is_skipped() {
    let mut cluster = Cluster::new();
    let b = cluster.node("b").await;
    b.register("alice").await;
    let dead = dead_url();

    let mut alice = Chat::spawn_at(&list(&[&dead, &b.url]), "alice", &[], &[]).await;
    alice.expect_type("connected").await;
    b.wait_for_session("alice", "a session at b", |_| true)
        .await;
    let (code, alice) = alice.finish().await;
    assert_eq!(code, 0, "{}", alice.dump());

    // The same list from the config file, as a TOML array.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("config.toml");
    std::fs::write(
        &file,
        format!("server = [\"{dead}\", \"{}\"]\nuser = \"alice\"\n", b.url),
    )
    .unwrap();
    let out = run_with_stdin(
        tokio::process::Command::new(BIN)
            .args(["chat", "--json", "--password-stdin", "--config"])
            .arg(&file)
            .args(["--peer-listen", "127.0.0.1:0"])
            .env_remove("CONFAB_SERVER"),
        &format!("{PASSWORD}\nwhoami\n"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"type\":\"whoami\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_node_that_answers_but_cannot_log_in_hands_over_to_the_next() {
    // Node a answers but cannot serve: its PostgreSQL is down, so logins are UNAVAILABLE.
    let private = tokio::task::spawn_blocking(pg::private_server)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = pg::fresh_database_on(&private.url);
    let bus = nats::server_url();
    let args = ["--store", &db, "--bus", &bus, "--node-id", "a"];
    let a = chat_server(dir.path(), "127.0.0.1:0", &args).await;
    a.register("alice").await;
    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        private
    })
    .await
    .unwrap();
    let refused = login_at(&a.url, "alice", PASSWORD, None).await.err();
    assert_eq!(refused.map(|s| s.code()), Some(tonic::Code::Unavailable));
    // A login that presents a device ticket looks it up in the store first: the same answer.
    let channel = confab::client::api::endpoint(&a.url, None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let with_ticket = confab::client::api::auth(channel)
        .login(confab::pb::LoginRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
            device_ticket: "0123456789abcdef0123456789abcdef".into(),
            ..Default::default()
        })
        .await
        .err();
    assert_eq!(
        with_ticket.map(|s| s.code()),
        Some(tonic::Code::Unavailable)
    );

    let mut cluster = Cluster::new();
    let b = cluster.node("b").await;
    b.register("alice").await;
    let mut alice = Chat::spawn_at(&list(&[&a.url, &b.url]), "alice", &[], &[]).await;
    alice.expect_type("connected").await;
    b.wait_for_session("alice", "a session at b", |_| true)
        .await;
    let (code, alice) = alice.finish().await;
    assert_eq!(code, 0, "{}", alice.dump());
    drop(private);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_where_no_node_answers_is_one_sentence_naming_them_and_a_failure() {
    let (one, two) = (dead_url(), dead_url());
    let out = run_with_stdin(
        tokio::process::Command::new(BIN).args([
            "chat",
            "--server",
            &format!("{one}, {two}"),
            "--user",
            "alice",
            "--password-stdin",
            "--json",
        ]),
        &format!("{PASSWORD}\nwhoami\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "confab: nothing is listening at any of {one}, {two}: is `confab serve` running \
             there?"
        )
    );
    assert!(out.stdout.is_empty());

    // A malformed list is refused before anything is tried.
    let out = run_with_stdin(
        tokio::process::Command::new(BIN).args([
            "chat",
            "--server",
            &format!("{one},,{two}"),
            "--user",
            "alice",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server 2 of the list"), "{stderr}");
    assert!(stderr.contains("is empty"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_elsewhere_ends_the_chat_instead_of_moving_it() {
    let mut cluster = Cluster::new();
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    a.register("alice").await;
    let mut alice = Chat::spawn_at(&list(&[&a.url, &b.url]), "alice", &[], &[]).await;
    alice.expect_type("connected").await;

    // Alice logs in on node b from somewhere else: the chat on a is over, not moved to b.
    let elsewhere = login_at(&b.url, "alice", PASSWORD, None).await.unwrap();
    let ended = alice.expect_type("session_ended").await;
    assert_eq!(ended["reason"], "LOGGED_IN_ELSEWHERE");
    assert_eq!(alice.exit_code().await, 1);
    assert_eq!(
        alice.count(|v| v["type"] == "logged_in"),
        1,
        "{}",
        alice.dump()
    );
    assert_eq!(
        alice.count(|v| v["type"] == "disconnected"),
        0,
        "{}",
        alice.dump()
    );
    // The other login is the one session left.
    let sessions = b.sessions().await;
    let alices: Vec<&Value> = sessions
        .iter()
        .filter(|s| s["username"] == "alice")
        .collect();
    assert_eq!(alices.len(), 1, "{sessions:?}");
    drop(elsewhere);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_node_gets_the_owner_past_a_lockout_at_the_next() {
    let mut cluster = Cluster::new();
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    a.register("alice").await;
    let state = tempfile::tempdir().unwrap();
    let env = [("XDG_STATE_HOME", state.path())];
    let mut alice = Chat::spawn_at(&list(&[&a.url, &b.url]), "alice", &[], &env).await;
    alice.expect_type("connected").await;

    // Strangers lock the name out, at node b; the lockout is the cluster's.
    for _ in 0..3 {
        let _ = login_at(&b.url, "alice", "a stranger's guess", None).await;
    }
    let locked = login_at(&b.url, "alice", PASSWORD, None)
        .await
        .err()
        .unwrap();
    assert_eq!(locked.code(), tonic::Code::PermissionDenied, "{locked:?}");

    // Alice's node dies: at b she presents the ticket node a gave her, and gets in.
    a.kill().await;
    let again = alice.expect_type("logged_in").await;
    assert_eq!(again["server"], b.url.as_str(), "{}", alice.dump());
    alice.expect_type("connected").await;
    let tickets = state.path().join("confab/tickets");
    let held: Vec<String> = std::fs::read_dir(&tickets)
        .unwrap()
        .map(|d| std::fs::read_to_string(d.unwrap().path().join("alice")).unwrap())
        .collect();
    assert_eq!(held.len(), 2, "a ticket for each node: {held:?}");
    assert_eq!(held[0], held[1], "node b handed back node a's ticket");
}
