//! Delivery across nodes: direct messages after their commit, broadcast, presence and
//! `ListOnline`.

use std::time::Duration;

use confab::pb::{self, DeliveryStatus, event::Kind};

use super::{TestCluster, message, next_not_presence};
use crate::common::pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_reaches_a_user_on_another_node_live_and_in_order() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    // Bob's node has announced him once alice sees him.
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));
    for i in 0..20 {
        let sent = alice.send("bob", &format!("m{i}")).await.unwrap();
        assert_eq!(sent.status(), DeliveryStatus::Delivered);
    }
    let mut last = 0;
    for i in 0..20 {
        let m = message(&mut bob).await;
        assert_eq!(m.body, format!("m{i}"));
        assert_eq!(m.from, "alice");
        assert!(m.seq > last);
        last = m.seq;
    }
    // Acknowledged there, gone for good: a fresh login on the first node replays nothing.
    bob.heartbeat(last).await;
    bob.logout().await;
    let mut again = c.nodes[0].login("bob").await.unwrap();
    again.subscribe(0).await;
    assert!(again.backlog().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_user_offline_everywhere_waits_for_its_login_on_any_node() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    c.nodes[1].register("bob").await;
    let sent = alice.send("bob", "while away").await.unwrap();
    assert_eq!(sent.status(), DeliveryStatus::Stored);
    let mut bob = c.nodes[1].login("bob").await.unwrap();
    bob.subscribe(0).await;
    let backlog = bob.backlog().await;
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].body, "while away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_list_online_cover_the_whole_cluster() {
    let c = TestCluster::start(3).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    let carol = c.nodes[2].user("carol").await;
    let mut seen = vec![alice.presence().await.0, alice.presence().await.0];
    seen.sort();
    assert_eq!(seen, ["bob", "carol"]);
    assert_eq!(alice.online().await, ["bob", "carol"]);
    assert_eq!(bob.online().await, ["alice", "carol"]);
    // `since`: who logged in within the last hour, on any node, online or not.
    let mut carol = carol;
    carol.logout().await;
    assert_eq!(
        alice.presence().await,
        ("carol".into(), pb::Presence::Offline)
    );
    assert_eq!(alice.online().await, ["bob"]);
    let recent = alice
        .chat
        .list_online(pb::ListOnlineRequest {
            since_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    let recent: Vec<(String, bool)> = recent.into_iter().map(|u| (u.username, u.online)).collect();
    assert_eq!(
        recent,
        [("bob".to_string(), true), ("carol".to_string(), false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_node_but_not_those_who_block_the_sender() {
    let c = TestCluster::start(3).await;
    let mut erin = c.nodes[0].user("erin").await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    let mut carol = c.nodes[2].user("carol").await;
    let mut dave = c.nodes[2].user("dave").await;
    // Alice has seen the others arrive, so her node knows where they are.
    for _ in 0..3 {
        alice.presence().await;
    }
    dave.block("alice").await;
    // A barrier: dave's node published the block before this message.
    dave.send("alice", "barrier").await.unwrap();
    assert_eq!(message(&mut alice).await.body, "barrier");
    let answer = alice.broadcast("hello all").await.unwrap();
    assert_eq!(answer.delivered, 3, "bob, carol and erin: {answer:?}");
    assert_eq!(answer.withheld, 1, "{answer:?}");
    for s in [&mut bob, &mut carol, &mut erin] {
        match next_not_presence(s, "the broadcast").await {
            Kind::Broadcast(b) => {
                assert_eq!(b.from, "alice");
                assert_eq!(b.body, "hello all");
            }
            other => panic!("expected the broadcast, got {other:?}"),
        }
    }
    // Barrier: erin's node (alice's) published the broadcast before erin's message, so dave's
    // next event is erin's message, not the broadcast.
    erin.send("dave", "barrier").await.unwrap();
    loop {
        match dave.next("erin's message").await {
            Kind::Message(m) => {
                assert_eq!(m.body, "barrier");
                break;
            }
            Kind::Presence(_) => continue,
            other => panic!("dave got {other:?} before the barrier"),
        }
    }
}

/// Nodes that announce logins only once an hour: whether a message goes out live must not
/// depend on the sender's node having heard of the recipient's login.
fn slow_presence(c: &mut confab::server::Config) {
    c.cluster_presence_window = Duration::from_secs(3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_senders_node_has_not_heard_of_still_gets_its_messages_live() {
    let c = TestCluster::with(2, slow_presence).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    for i in 0..3 {
        // Not known to be online on the sender's node, but the directory knows where bob is:
        // reported as delivered (SPEC §4: stored means offline)…
        let sent = alice.send("bob", &format!("m{i}")).await.unwrap();
        assert_eq!(sent.status(), DeliveryStatus::Delivered);
    }
    // …and pushed live, in order.
    for i in 0..3 {
        assert_eq!(message(&mut bob).await.body, format!("m{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_moved_to_another_node_gets_messages_there_live() {
    let c = TestCluster::with(3, slow_presence).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut first = c.nodes[1].user("bob").await;
    // Bob's broadcast carries his node's presence batch along: alice's node places him there.
    first.broadcast("here on n1").await.unwrap();
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));
    let mut moved = c.nodes[2].login("bob").await.unwrap();
    moved.subscribe(0).await;
    assert!(moved.backlog().await.is_empty());
    match next_not_presence(&mut first, "the end of bob's first session").await {
        Kind::SessionEnded(e) => {
            assert_eq!(e.reason(), pb::SessionEndReason::LoggedInElsewhere);
        }
        other => panic!("expected SessionEnded, got {other:?}"),
    }
    // Alice's node may still place bob on n1, which passes the message on, or not at all.
    alice.send("bob", "after the move").await.unwrap();
    assert_eq!(message(&mut moved).await.body, "after the move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_bus_lost_is_shown_before_the_next_one_in_seq_order() {
    let c = TestCluster::start(2).await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    assert_eq!(alice.presence().await, ("bob".into(), pb::Presence::Online));
    // Committed as a send from alice's node is, but never published: what a dropped bus
    // event leaves behind.
    pg::execute(
        &c.db,
        "WITH b AS (UPDATE users SET last_seq = last_seq + 1, inbox_count = inbox_count + 1 \
                    WHERE name = 'bob' RETURNING id, last_seq)
         INSERT INTO inbox (recipient, seq, sender, message_id, body, sent_ms)
         SELECT b.id, b.last_seq, a.id, 'lost'::bytea, 'lost on the bus'::bytea, 0
         FROM b, users a WHERE a.name = 'alice'",
    );
    let sent = alice.send("bob", "the next one").await.unwrap();
    assert_eq!(sent.status(), DeliveryStatus::Delivered);
    let lost = message(&mut bob).await;
    assert_eq!(lost.body, "lost on the bus");
    let next = message(&mut bob).await;
    assert_eq!(next.body, "the next one");
    assert_eq!(next.seq, lost.seq + 1);
    // Acknowledging the later one acknowledges both, and both were shown.
    bob.heartbeat(next.seq).await;
    bob.logout().await;
    let mut again = c.nodes[1].login("bob").await.unwrap();
    again.subscribe(0).await;
    assert!(again.backlog().await.is_empty());
}
