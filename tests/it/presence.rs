//! SPEC §3: presence filtered by blocks, ListOnline, heartbeats and the session timeout.

use std::time::Duration;

use confab::pb::{self, Presence, SessionEndReason, event::Kind};

use crate::common::*;

#[tokio::test]
async fn logins_and_logouts_are_announced() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    assert_eq!(bob.presence().await, ("alice".into(), Presence::Online));
    alice.logout().await;
    assert_eq!(bob.presence().await, ("alice".into(), Presence::Offline));
}

#[tokio::test]
async fn users_the_subject_blocked_do_not_see_its_presence() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut carol = srv.user("carol").await;
    bob.presence().await; // carol online
    srv.register("alice").await;
    let mut alice = srv.login("alice").await.unwrap();
    alice.subscribe(0).await;
    alice.backlog().await;
    assert_eq!(bob.presence().await, ("alice".into(), Presence::Online));
    assert_eq!(carol.presence().await, ("alice".into(), Presence::Online));
    alice.block("bob").await;
    alice.logout().await;
    assert_eq!(carol.presence().await, ("alice".into(), Presence::Offline));
    // Ordering barrier: bob's next event is carol's message, not alice's departure.
    carol.send("bob", "barrier").await.unwrap();
    assert_eq!(bob.message().await.body, "barrier");
    // Nor her return.
    let mut alice = srv.login("alice").await.unwrap();
    alice.subscribe(0).await;
    assert_eq!(carol.presence().await, ("alice".into(), Presence::Online));
    carol.send("bob", "barrier 2").await.unwrap();
    assert_eq!(bob.message().await.body, "barrier 2");
}

#[tokio::test]
async fn list_online_hides_the_caller_and_users_who_block_the_caller() {
    let srv = TestServer::start().await;
    let mut alice = srv.user("alice").await;
    let mut bob = srv.user("bob").await;
    let _carol = srv.user("carol").await;
    assert_eq!(alice.online().await, ["bob", "carol"]);
    bob.block("alice").await;
    assert_eq!(alice.online().await, ["carol"]);
    // Blocking is one-way: bob still sees alice.
    assert_eq!(bob.online().await, ["alice", "carol"]);
}

#[tokio::test]
async fn list_online_since_lists_recent_logins_including_offline_users() {
    let srv = TestServer::start().await;
    srv.register("never").await;
    let mut gone = srv.user("gone").await;
    gone.logout().await;
    let mut alice = srv.user("alice").await;
    let users = alice
        .chat
        .list_online(pb::ListOnlineRequest {
            since_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(
        (users[0].username.as_str(), users[0].online),
        ("gone", false)
    );
    assert!(users[0].last_login_ms > 0);
}

#[tokio::test]
async fn a_session_without_heartbeats_times_out_and_the_others_are_told() {
    let srv = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.session_timeout = Duration::from_millis(800);
    })
    .await;
    let mut watcher = srv.user("watcher").await;
    let mut quiet = srv.user("quiet").await;
    assert_eq!(watcher.presence().await, ("quiet".into(), Presence::Online));
    // The watcher keeps heartbeating; `quiet` only holds its stream open.
    let mut chat = watcher.chat.clone();
    let beats = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if chat
                .heartbeat(pb::HeartbeatRequest::default())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    assert_eq!(
        watcher.presence().await,
        ("quiet".into(), Presence::Offline)
    );
    match quiet.next("the timeout").await {
        Kind::SessionEnded(e) => assert_eq!(e.reason(), SessionEndReason::TimedOut),
        other => panic!("{other:?}"),
    }
    assert!(watcher.online().await.is_empty());
    beats.abort();
}

#[tokio::test]
async fn a_new_subscribe_replaces_the_old_stream_and_the_session_lives_on() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    bob.presence().await;
    // Alice holds a grant to bob.
    let id = alice.request_address("bob").await.unwrap().request_id;
    let Kind::AddressRequested(_) = bob.next("the request").await else {
        panic!()
    };
    bob.respond(&id, true).await.unwrap();
    let Kind::AddressGranted(grant) = alice.next("the grant").await else {
        panic!()
    };
    let mut old = alice.events.take().unwrap();
    alice.subscribe(0).await;
    // The replaced stream ends without a SessionEnded event.
    let rest = within("the old stream to end", async {
        let mut rest = Vec::new();
        while let Ok(Some(ev)) = old.message().await {
            rest.push(ev);
        }
        rest
    })
    .await;
    assert!(rest.is_empty(), "{rest:?}");
    assert!(alice.backlog().await.is_empty());
    // Same session: the grant is still valid and events flow to the new stream.
    let again = alice.request_address("bob").await.unwrap();
    assert_eq!(again.grant, Some(grant));
    bob.send("alice", "to the new stream").await.unwrap();
    assert_eq!(alice.message().await.body, "to the new stream");
    // A dropped stream does not end the session either.
    drop(alice.events.take());
    bob.send("alice", "while away").await.unwrap();
    alice.subscribe(0).await;
    let replay = alice.backlog().await;
    assert_eq!(replay.len(), 2, "both unacknowledged messages are replayed");
}

#[tokio::test]
async fn a_waiting_presence_event_still_arrives_before_the_message_that_follows_it() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    // Alice's arrival waits in the presence feed for its window; her message, sent at once,
    // takes it along.
    let mut alice = srv.user("alice").await;
    alice.send("bob", "right after logging in").await.unwrap();
    assert_eq!(bob.presence().await, ("alice".into(), Presence::Online));
    assert_eq!(bob.message().await.body, "right after logging in");
    // Several waiting changes keep their order.
    let mut carol = srv.user("carol").await;
    carol.logout().await;
    assert_eq!(bob.presence().await, ("carol".into(), Presence::Online));
    assert_eq!(bob.presence().await, ("carol".into(), Presence::Offline));
    assert_eq!(alice.presence().await, ("carol".into(), Presence::Online));
}

#[tokio::test]
async fn a_message_sent_before_a_logout_arrives_before_the_logout() {
    let srv = TestServer::start().await;
    let mut bob = srv.user("bob").await;
    let mut alice = srv.user("alice").await;
    assert_eq!(bob.presence().await, ("alice".into(), Presence::Online));
    alice.send("bob", "goodbye").await.unwrap();
    alice.logout().await;
    assert_eq!(bob.message().await.body, "goodbye");
    assert_eq!(bob.presence().await, ("alice".into(), Presence::Offline));
}

#[tokio::test]
async fn a_stream_that_asks_for_no_presence_gets_everything_else() {
    let srv = TestServer::start().await;
    srv.register("bot").await;
    let mut bot = srv.login("bot").await.unwrap();
    bot.subscribe_with(pb::SubscribeRequest {
        resume_after: 0,
        no_presence: true,
        ..Default::default()
    })
    .await;
    bot.backlog().await;
    let mut alice = srv.user("alice").await;
    let mut carol = srv.user("carol").await;
    carol.logout().await;
    // Ordering barrier: the bot's next event is alice's message, not anybody's presence.
    alice.send("bot", "hello bot").await.unwrap();
    assert_eq!(bot.message().await.body, "hello bot");
    alice.broadcast("to all").await.unwrap();
    match bot.next("the broadcast").await {
        Kind::Broadcast(b) => assert_eq!(b.body, "to all"),
        other => panic!("expected the broadcast, got {other:?}"),
    }
    // Others still see the bot come and go.
    bot.logout().await;
    assert_eq!(alice.presence().await, ("carol".into(), Presence::Online));
    assert_eq!(alice.presence().await, ("carol".into(), Presence::Offline));
    assert_eq!(alice.presence().await, ("bot".into(), Presence::Offline));
}

#[tokio::test]
async fn a_login_storm_reaches_every_stream_once_each_in_order() {
    let srv = TestServer::start().await;
    let mut watchers = vec![srv.user("w0").await, srv.user("w1").await];
    assert_eq!(
        watchers[0].presence().await,
        ("w1".into(), Presence::Online)
    );
    let names: Vec<String> = (0..40).map(|n| format!("storm{n:02}")).collect();
    let mut sessions = Vec::new();
    for name in &names {
        sessions.push(srv.user(name).await);
    }
    for s in &mut sessions {
        s.logout().await;
    }
    for w in &mut watchers {
        for name in &names {
            assert_eq!(w.presence().await, (name.clone(), Presence::Online));
        }
        for name in &names {
            assert_eq!(w.presence().await, (name.clone(), Presence::Offline));
        }
    }
    // Nothing more: the next event of each watcher is a message sent now.
    let (first, rest) = watchers.split_at_mut(1);
    first[0].send("w1", "barrier").await.unwrap();
    assert_eq!(rest[0].message().await.body, "barrier");
}

/// The changes of the next event, which must be a `PresenceBatch`.
async fn batch(s: &mut Session) -> Vec<(String, Presence)> {
    match s.next("a presence batch").await {
        Kind::PresenceBatch(b) => b
            .changes
            .into_iter()
            .map(|p| {
                let presence = p.presence();
                (p.user, presence)
            })
            .collect(),
        other => panic!("{}: expected a presence batch, got {other:?}", s.name),
    }
}

/// A session on a stream that asked for presence batches.
async fn batched(srv: &TestServer, name: &str) -> Session {
    srv.register(name).await;
    let mut s = srv.login(name).await.unwrap();
    s.subscribe_with(pb::SubscribeRequest {
        presence_batches: true,
        ..Default::default()
    })
    .await;
    s.backlog().await;
    s
}

#[tokio::test]
async fn a_batched_stream_gets_a_storm_in_few_events_in_order_and_a_single_stream_one_each() {
    let srv = TestServer::start().await;
    let mut watcher = batched(&srv, "watcher").await;
    let mut single = srv.user("single").await;
    assert_eq!(
        batch(&mut watcher).await,
        [("single".into(), Presence::Online)]
    );
    let names: Vec<String> = (0..40).map(|n| format!("storm{n:02}")).collect();
    for name in &names {
        srv.register(name).await;
    }
    // Logged in together, so their changes share windows.
    let mut sessions = futures_util::future::join_all(names.iter().map(|n| srv.login(n))).await;
    for s in &mut sessions {
        s.as_mut().unwrap().subscribe(0).await;
    }
    let mut seen = Vec::new();
    let mut events = 0;
    while seen.len() < names.len() {
        seen.extend(batch(&mut watcher).await);
        events += 1;
    }
    let mut expected: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), Presence::Online))
        .collect();
    // The logins raced each other: compare as sets, then check nobody came twice.
    let mut sorted = seen.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    assert!(
        events < names.len(),
        "40 logins in {events} events: presence was not batched"
    );
    // A stream that did not ask for batches gets one event per change, as before.
    for _ in &names {
        assert_eq!(single.presence().await.1, Presence::Online);
    }
    // Order with other events holds: alice's `online` comes before her first message.
    let mut alice = srv.user("alice").await;
    alice.send("watcher", "first").await.unwrap();
    assert_eq!(
        batch(&mut watcher).await,
        [("alice".into(), Presence::Online)]
    );
    assert_eq!(watcher.message().await.body, "first");
}

#[tokio::test]
async fn a_batched_stream_does_not_see_a_user_who_blocks_it() {
    let srv = TestServer::start().await;
    let mut bob = batched(&srv, "bob").await;
    let mut carol = batched(&srv, "carol").await;
    assert_eq!(batch(&mut bob).await, [("carol".into(), Presence::Online)]);
    let mut alice = srv.user("alice").await;
    alice.block("bob").await;
    assert_eq!(batch(&mut bob).await, [("alice".into(), Presence::Online)]);
    assert_eq!(
        batch(&mut carol).await,
        [("alice".into(), Presence::Online)]
    );
    // alice leaves and dave arrives in the same breath: carol sees both, bob only dave.
    alice.logout().await;
    let _dave = srv.user("dave").await;
    let mut carol_saw = Vec::new();
    while carol_saw.len() < 2 {
        carol_saw.extend(batch(&mut carol).await);
    }
    assert_eq!(
        carol_saw,
        [
            ("alice".into(), Presence::Offline),
            ("dave".into(), Presence::Online)
        ]
    );
    assert_eq!(batch(&mut bob).await, [("dave".into(), Presence::Online)]);
    // Nothing of alice's departure follows: the next thing bob gets is carol's message.
    carol.send("bob", "barrier").await.unwrap();
    assert_eq!(bob.message().await.body, "barrier");
}
