//! SPEC §4: durable direct messages, acknowledgement and replay, limits, broadcast, SendStream,
//! and the bounded stream queue.

use confab::pb::{self, DeliveryStatus, SessionEndReason, event::Kind};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn a_message_to_an_online_user_is_delivered_live() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    bob.presence().await;
    let r = alice.send_id("BOB", "hello bob", "m-1").await.unwrap();
    assert_eq!(
        (r.status(), r.seq, r.duplicate),
        (DeliveryStatus::Delivered, 1, false)
    );
    let m = bob.message().await;
    assert_eq!(
        (
            m.seq,
            m.from.as_str(),
            m.body.as_str(),
            m.message_id.as_str()
        ),
        (1, "alice", "hello bob", "m-1")
    );
    assert!(m.sent_at_ms > 0);
}

#[tokio::test]
async fn offline_messages_are_replayed_in_order_at_the_next_login() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    for i in 1..=5 {
        let r = alice.send("bob", &format!("message {i}")).await.unwrap();
        assert_eq!((r.status(), r.seq), (DeliveryStatus::Stored, i));
    }
    let mut bob = srv.login("bob").await.unwrap();
    bob.subscribe(0).await;
    let replay = bob.backlog().await;
    let bodies: Vec<_> = replay.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "message 1",
            "message 2",
            "message 3",
            "message 4",
            "message 5"
        ]
    );
    assert_eq!(
        replay.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // Live messages follow the backlog.
    alice.send("bob", "now live").await.unwrap();
    assert_eq!(bob.message().await.seq, 6);
}

#[tokio::test]
async fn unacknowledged_messages_are_replayed_after_a_reconnect() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    bob.presence().await;
    for i in 1..=3 {
        alice.send("bob", &format!("m{i}")).await.unwrap();
        bob.message().await;
    }
    bob.heartbeat(1).await; // acknowledges seq 1 only
    // The stream drops; the session lives on.
    bob.subscribe(0).await;
    let replay = bob.backlog().await;
    assert_eq!(replay.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
    // resume_after acknowledges too.
    bob.subscribe(3).await;
    assert!(bob.backlog().await.is_empty());
    bob.subscribe(0).await;
    assert!(
        bob.backlog().await.is_empty(),
        "resume_after=3 acknowledged 2 and 3"
    );
}

/// A stream skips the replay only when nothing can be stored for it (`core/backlog.rs`): after
/// a restart for messages stored before it, until a replay has read them; after an
/// acknowledgement, until the next message is stored.
#[tokio::test]
async fn a_stream_replays_whatever_is_stored_across_restarts_acks_and_logouts() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    for i in 1..=2 {
        alice.send("bob", &format!("m{i}")).await.unwrap();
    }
    let srv = srv.restart().await;
    let seqs = |replay: Vec<pb::DirectMessage>| replay.iter().map(|m| m.seq).collect::<Vec<_>>();

    let mut bob = srv.login("bob").await.unwrap();
    bob.subscribe(1).await;
    assert_eq!(seqs(bob.backlog().await), [2], "stored before the restart");
    bob.subscribe(0).await;
    assert_eq!(seqs(bob.backlog().await), [2], "not acknowledged yet");
    bob.subscribe(2).await;
    assert_eq!(seqs(bob.backlog().await), Vec::<u64>::new());
    bob.subscribe(0).await;
    assert_eq!(seqs(bob.backlog().await), Vec::<u64>::new(), "acknowledged");

    // Stored while bob is away, then shown when he is back; live once he is.
    bob.logout().await;
    let mut alice = srv.login("alice").await.unwrap();
    alice.send("bob", "m3").await.unwrap();
    let mut bob = srv.login("bob").await.unwrap();
    bob.subscribe(2).await;
    assert_eq!(seqs(bob.backlog().await), [3]);
    bob.heartbeat(3).await;
    alice.send("bob", "m4").await.unwrap();
    assert_eq!(bob.message().await.seq, 4);
    // Shown live but not acknowledged: still replayed by a new stream.
    bob.subscribe(3).await;
    assert_eq!(seqs(bob.backlog().await), [4]);
}

#[tokio::test]
async fn a_resent_message_id_is_stored_once() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    let first = alice.send_id("bob", "hi", "same-id").await.unwrap();
    let again = alice.send_id("bob", "hi", "same-id").await.unwrap();
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!((again.seq, again.duplicate), (1, true));
    let mut bob = srv.login("bob").await.unwrap();
    bob.subscribe(0).await;
    assert_eq!(bob.backlog().await.len(), 1);
}

#[tokio::test]
async fn bad_messages_are_refused_with_the_right_code() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    assert_status(
        alice.send("alice", "hi").await,
        Code::InvalidArgument,
        "you cannot message yourself",
    );
    assert_status(
        alice.send("nobody", "hi").await,
        Code::NotFound,
        "there is no user called nobody",
    );
    assert_status(
        alice.send("bad name", "hi").await,
        Code::InvalidArgument,
        "may contain only",
    );
    assert_status(
        alice.send("bob", "").await,
        Code::InvalidArgument,
        "cannot be empty",
    );
    let big = "x".repeat(4097);
    assert_status(
        alice.send("bob", &big).await,
        Code::InvalidArgument,
        "the limit is 4096 bytes",
    );
    assert_status(
        alice.send_id("bob", "hi", "").await,
        Code::InvalidArgument,
        "message_id",
    );
    assert_status(
        alice.send_id("bob", "hi", &"i".repeat(65)).await,
        Code::InvalidArgument,
        "message_id",
    );
    // Exactly at the limit is fine, and nothing refused was stored.
    let r = alice.send("bob", &"x".repeat(4096)).await.unwrap();
    assert_eq!(r.seq, 1);
}

#[tokio::test]
async fn a_full_inbox_refuses_new_messages_and_keeps_the_old_ones() {
    let srv = TestServer::with(|c| c.max_inbox = 3).await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    for i in 1..=3 {
        alice.send("bob", &format!("kept {i}")).await.unwrap();
    }
    assert_status(
        alice.send("bob", "one too many").await,
        Code::ResourceExhausted,
        "bob's inbox is full",
    );
    let mut bob = srv.login("bob").await.unwrap();
    bob.subscribe(0).await;
    let replay = bob.backlog().await;
    assert_eq!(
        replay.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["kept 1", "kept 2", "kept 3"]
    );
    // Acknowledging makes room again.
    bob.heartbeat(3).await;
    let r = alice.send("bob", "room again").await.unwrap();
    assert_eq!((r.status(), r.seq), (DeliveryStatus::Delivered, 4));
}

#[tokio::test]
async fn sending_faster_than_the_rate_limit_is_refused() {
    let srv = TestServer::with(|c| {
        c.send_rate = 0.01;
        c.send_burst = 2.0;
    })
    .await;
    srv.register("bob").await;
    let mut alice = srv.user("alice").await;
    alice.send("bob", "1").await.unwrap();
    alice.send("bob", "2").await.unwrap();
    let r = alice.send("bob", "3").await;
    let status = r.as_ref().unwrap_err().clone();
    assert_status(r, Code::ResourceExhausted, "you are sending too fast");
    use tonic_types::StatusExt;
    assert!(status.get_details_retry_info().is_some());
    let b = alice.broadcast("hi").await;
    assert_status(b, Code::ResourceExhausted, "too fast");
}

#[tokio::test]
async fn broadcasts_reach_everyone_online_except_blockers_and_say_so() {
    let srv = TestServer::start().await;
    let mut carol = srv.user("carol").await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    carol.presence().await;
    carol.presence().await;
    bob.presence().await;
    let r = alice.broadcast("hello all").await.unwrap();
    assert_eq!((r.delivered, r.withheld), (2, 0));
    for user in [&mut bob, &mut carol] {
        match user.next("the broadcast").await {
            Kind::Broadcast(b) => {
                assert_eq!((b.from.as_str(), b.body.as_str()), ("alice", "hello all"))
            }
            other => panic!("{other:?}"),
        }
    }
    carol.block("alice").await;
    let r = alice.broadcast("second").await.unwrap();
    assert_eq!((r.delivered, r.withheld), (1, 1));
    // Ordering barrier: carol's next event is bob's message, not alice's broadcast.
    bob.send("carol", "barrier").await.unwrap();
    assert_eq!(carol.message().await.body, "barrier");
    assert!(matches!(
        bob.next("the second broadcast").await,
        Kind::Broadcast(_)
    ));
    assert_status(alice.broadcast("").await, Code::InvalidArgument, "empty");
}

#[tokio::test]
async fn send_stream_answers_every_message_in_order_and_survives_errors() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    bob.presence().await;
    let mut requests = Vec::new();
    for i in 0..200 {
        let to = if i == 100 { "nobody" } else { "bob" };
        requests.push(pb::SendStreamRequest {
            message: Some(pb::SendMessageRequest {
                to: to.into(),
                body: format!("bulk {i}"),
                message_id: format!("bulk-{i}"),
            }),
        });
    }
    let mut responses = alice
        .chat
        .send_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = within("send stream responses", responses.message())
        .await
        .unwrap()
    {
        got.push(r);
    }
    assert_eq!(got.len(), 200);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.message_id, format!("bulk-{i}"));
        if i == 100 {
            assert_eq!(r.code, Code::NotFound as i32);
            assert!(r.error.contains("nobody"));
        } else {
            assert_eq!((r.code, r.status()), (0, DeliveryStatus::Delivered));
        }
    }
    let seqs: Vec<u64> = got.iter().filter(|r| r.code == 0).map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=199).collect::<Vec<_>>());
    // Messages in flight together share commits (group commit).
    let stats = srv.stats().await;
    assert_eq!(stats.messages_relayed, 199);
    assert!(
        stats.storage_commits < 150,
        "{} commits for 199 messages",
        stats.storage_commits
    );
    for i in 0..200 {
        if i != 100 {
            assert_eq!(bob.message().await.body, format!("bulk {i}"));
        }
    }
}

#[tokio::test]
async fn a_reader_that_stops_is_disconnected_too_slow_and_loses_nothing_durable() {
    let srv = TestServer::with(|c| c.stream_queue = 32).await;
    let mut slow = srv.user("slow").await;
    let mut fast = srv.user("fast").await;
    let mut sender = srv.user("sender").await;
    slow.presence().await;
    slow.presence().await;
    fast.presence().await;
    // `fast` keeps reading in the background and counts broadcasts.
    let mut fast_events = fast.events.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut broadcasts = 0;
        let mut saw_slow_leave = false;
        while broadcasts < 2000 || !saw_slow_leave {
            match fast_events.message().await.unwrap().unwrap().kind.unwrap() {
                Kind::Broadcast(_) => broadcasts += 1,
                Kind::Presence(p) if p.user == "slow" => saw_slow_leave = true,
                _ => {}
            }
        }
        broadcasts
    });
    // A durable message for slow first; then flood it without reading.
    sender.send("slow", "keep me").await.unwrap();
    let body = "z".repeat(4000);
    let mut too_slow_seen = false;
    for _ in 0..2000 {
        sender
            .chat
            .broadcast(pb::BroadcastRequest { body: body.clone() })
            .await
            .unwrap();
    }
    let stats = srv.stats().await;
    assert_eq!(stats.streams_too_slow, 1);
    assert_eq!(
        within("fast to read every broadcast", reader)
            .await
            .unwrap(),
        2000
    );
    // The slow stream, read at last, ends with TOO_SLOW.
    let events = slow.events.as_mut().unwrap();
    while let Ok(Some(ev)) = within("the slow stream", events.message()).await {
        if let Some(Kind::SessionEnded(e)) = ev.kind {
            assert_eq!(e.reason(), SessionEndReason::TooSlow);
            too_slow_seen = true;
        }
    }
    assert!(too_slow_seen);
    // Logging in again replays the durable message.
    let mut again = srv.login("slow").await.unwrap();
    again.subscribe(0).await;
    let replay = again.backlog().await;
    assert_eq!(
        replay.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["keep me"]
    );
}
