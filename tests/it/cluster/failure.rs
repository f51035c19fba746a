//! Nodes stopping and dying: a clean stop takes its users offline for the others at once; a
//! SIGKILL loses no acknowledged message, and its users go offline for the others (and their
//! grants end) within the session timeout.

use std::collections::HashSet;

use confab::pb::{self, event::Kind};

use super::{TestCluster, next_not_presence};
use crate::common::{nats, pg, process::ServerProcess, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_takes_its_users_offline_for_the_others() {
    let mut c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let _bob = c.nodes[1].user("bob").await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));
    let leaving = c.nodes.pop().unwrap();
    leaving.handle.shutdown.cancel();
    assert_eq!(
        alice.presence().await,
        ("bob".into(), pb::Presence::Offline)
    );
    assert!(alice.online().await.is_empty());
    // Bob can log in again on the node that stayed.
    let mut bob = c.nodes[0].login("bob").await.unwrap();
    bob.subscribe(0).await;
    bob.backlog().await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_acknowledged_message_and_its_users_go_offline() {
    let db = pg::fresh_database();
    let bus = nats::server_url();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let args = |name: &'static str| {
        vec![
            "--store".to_string(),
            db.clone(),
            "--bus".into(),
            bus.clone(),
            "--node-id".into(),
            name.into(),
            // Short, so the test is: the lease lasts two thirds of it (4 s).
            "--session-timeout".into(),
            "6s".into(),
            "--send-burst".into(),
            "1000".into(),
        ]
    };
    let start = |i: usize, name: &'static str| {
        let a = args(name);
        let dir = dirs[i].path().to_owned();
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            ServerProcess::start(&dir, &a).await
        }
    };
    let doomed = start(0, "doomed").await;
    let survivor = start(1, "survivor").await;
    doomed.register("bob").await;
    survivor.register("alice").await;
    // Alice first, so she sees bob arrive.
    let mut alice = survivor.login("alice").await;
    alice.subscribe(0).await;
    alice.backlog().await;
    let mut bob = doomed.login("bob").await;
    bob.subscribe(0).await;
    bob.backlog().await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));
    // Bob holds alice's address, a grant his node keeps.
    let id = bob.request_address("alice").await.unwrap().request_id;
    assert!(matches!(
        next_not_presence(&mut alice, "bob's request").await,
        Kind::AddressRequested(_)
    ));
    alice.respond(&id, true).await.unwrap();
    assert!(matches!(
        next_not_presence(&mut bob, "the grant").await,
        Kind::AddressGranted(_)
    ));

    // Numbered messages from alice to bob; bob's node is killed half-way.
    let mut acknowledged = Vec::new();
    let mut doomed = Some(doomed);
    for i in 0..200 {
        if i == 100 {
            doomed.take().unwrap().kill().await;
        }
        let id = format!("m{i}");
        match alice.send_id("bob", &format!("n{i}"), &id).await {
            Ok(_) => acknowledged.push(id),
            Err(e) => panic!("the surviving node refused a send: {e:?}"),
        }
    }
    // Alice stays alive meanwhile (the sends do not count as heartbeats).
    alice.heartbeat(0).await;
    // Bob's node stopped renewing its lease: alice sees him go within the session timeout,
    // and the grant she gave him ends, though the node that held it is gone.
    let (mut offline, mut revoked) = (false, false);
    while !(offline && revoked) {
        match alice
            .next("bob going offline and his address revoked")
            .await
        {
            Kind::Presence(p) if p.user == "bob" && p.presence() == pb::Presence::Offline => {
                offline = true;
            }
            Kind::AddressRevoked(r) => {
                assert_eq!(r.user, "bob");
                revoked = true;
            }
            _ => {}
        }
    }
    assert!(alice.online().await.is_empty());

    // Bob comes back on the surviving node: every acknowledged message, exactly once.
    let mut bob = survivor.login("bob").await;
    bob.subscribe(0).await;
    let backlog = within("bob's backlog", bob.backlog()).await;
    let ids: Vec<String> = backlog.iter().map(|m| m.message_id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no message twice");
    for id in &acknowledged {
        assert!(unique.contains(id), "acknowledged {id} is missing");
    }
    assert_eq!(ids.len(), acknowledged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_messages_are_stored_and_service_comes_back_by_itself() {
    let nats = tokio::task::spawn_blocking(nats::private_server)
        .await
        .unwrap();
    let db = pg::fresh_database();
    let n0 = super::node(&db, &nats.url, "n0", &|_| {}).await;
    let n1 = super::node(&db, &nats.url, "n1", &|_| {}).await;
    let mut alice = n0.user("alice").await;
    let mut bob = n1.user("bob").await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));

    let nats = tokio::task::spawn_blocking(move || {
        nats.stop();
        nats
    })
    .await
    .unwrap();
    // Committed while the bus is away: every send is acknowledged.
    for i in 0..3 {
        alice
            .send_id("bob", &format!("during {i}"), &format!("d{i}"))
            .await
            .unwrap();
    }
    let nats = tokio::task::spawn_blocking(move || {
        nats.restart();
        nats
    })
    .await
    .unwrap();
    // Back by itself: once the nodes have reconnected, messages reach bob live again. Events
    // published before that are lost with the connection (the messages are in the inbox), so
    // alice sends until one arrives live; bob's arrival ends the wait, not a timer.
    let mut sent = Vec::new();
    let arrived = within("a live message after NATS came back", async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let id = format!("a{}", sent.len());
                    alice.send_id("bob", "after", &id).await.unwrap();
                    sent.push(id);
                }
                m = super::message(&mut bob) => {
                    if m.message_id.starts_with('a') {
                        break m.message_id;
                    }
                }
            }
        }
    })
    .await;
    assert!(sent.contains(&arrived));
    // Nothing was lost: what the bus dropped is in bob's inbox.
    bob.subscribe(0).await;
    let ids: HashSet<String> = bob
        .backlog()
        .await
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    for id in ["d0", "d1", "d2"]
        .iter()
        .copied()
        .chain(sent.iter().map(String::as_str))
    {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_the_cluster_says_unavailable_and_recovers_by_itself() {
    let pg = tokio::task::spawn_blocking(pg::private_server)
        .await
        .unwrap();
    let db = pg::fresh_database_on(&pg.url);
    let bus = nats::server_url();
    let n0 = super::node(&db, &bus, "n0", &|_| {}).await;
    let n1 = super::node(&db, &bus, "n1", &|_| {}).await;
    let mut alice = n0.user("alice").await;
    let mut bob = n1.user("bob").await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // Twice: the first finds the connection broken, the second fails to reconnect.
    for _ in 0..2 {
        let refused = alice.send_id("bob", "while down", "d0").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("cannot reach its database"),
            "{refused:?}"
        );
    }
    // A login needs the session directory: refused the same way, on either node.
    let refused = crate::common::login_at(&n1.url, "alice", crate::common::PASSWORD, None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    // Back by itself: the retried message is stored once and reaches bob on the other node.
    let sent = alice.send_id("bob", "while down", "d0").await.unwrap();
    assert!(!sent.duplicate);
    let m = super::message(&mut bob).await;
    assert_eq!(
        (m.message_id.as_str(), m.body.as_str()),
        ("d0", "while down")
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_one_node_and_leaves_the_others_serving() {
    let db = pg::fresh_database();
    let bus = nats::server_url();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for (dir, name) in dirs.iter().zip(["stays", "leaves"]) {
        let args = ["--store", &db, "--bus", &bus, "--node-id", name];
        nodes.push(ServerProcess::start(dir.path(), &args).await);
    }
    let mut leaving = nodes.pop().unwrap();
    let staying = nodes.pop().unwrap();
    staying.register("alice").await;
    staying.register("bob").await;
    let mut alice = staying.login("alice").await;
    alice.subscribe(0).await;
    alice.backlog().await;
    let mut bob = leaving.login("bob").await;
    bob.subscribe(0).await;
    bob.backlog().await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));

    leaving.signal("-TERM");
    // Bob's stream is told why it ends; the node exits cleanly.
    match super::next_not_presence(&mut bob, "the end of bob's session").await {
        pb::event::Kind::SessionEnded(e) => {
            assert_eq!(e.reason(), pb::SessionEndReason::ServerShutdown)
        }
        other => panic!("expected SessionEnded, got {other:?}"),
    }
    assert!(leaving.exit_status().await.success());
    // Alice sees bob leave at once (not after a lease), and her node goes on serving.
    assert_eq!(
        alice.presence().await,
        ("bob".into(), pb::Presence::Offline)
    );
    let mut bob = staying.login("bob").await;
    bob.subscribe(0).await;
    bob.backlog().await;
    alice.send("bob", "still here").await.unwrap();
    assert_eq!(super::message(&mut bob).await.body, "still here");
}
