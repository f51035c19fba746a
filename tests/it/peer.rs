//! The peer path end to end over loopback: a real `PeerListener` and real `send`s, plus raw
//! sockets playing misbehaving peers.
//!
//! No sleeps: every wait is on an event (a message, an EOF) under a generous timeout, so a
//! broken listener fails a test instead of hanging it.

use std::time::{Duration, Instant};

use confab::pb::PeerMessage;
use confab::peer::{Inbound, ListenerLimits, PeerError, PeerKeys, PeerListener, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

/// Long enough for anything that should happen to happen, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

struct Peer {
    listener: PeerListener,
    inbound: Receiver<Inbound>,
    /// The listener's current keys, whose public half a sender must use.
    keys: PeerKeys,
}

impl Peer {
    async fn start(limits: ListenerLimits) -> Peer {
        let keys = PeerKeys::generate();
        let (listener, inbound) =
            PeerListener::bind_with("127.0.0.1:0".parse().unwrap(), keys.clone(), limits)
                .await
                .expect("bind on loopback");
        Peer {
            listener,
            inbound,
            keys,
        }
    }

    async fn send(&self, keys: &PeerKeys, message: &PeerMessage) -> Result<(), PeerError> {
        let port = self.listener.local_addr().port();
        send(
            "127.0.0.1",
            port,
            self.keys.public(),
            keys,
            message,
            PATIENCE,
        )
        .await
    }

    async fn next_inbound(&mut self, awaited: &str) -> Inbound {
        timeout(PATIENCE, self.inbound.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {awaited}"))
            .unwrap_or_else(|| panic!("listener stopped while waiting for {awaited}"))
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.listener.local_addr())
            .await
            .expect("connect to the listener")
    }
}

fn message(id: &str, from: &str) -> PeerMessage {
    PeerMessage {
        message_id: id.into(),
        from: from.into(),
        to: "bob".into(),
        body: format!("body of {id}"),
        sent_at_ms: 1_700_000_000_000,
    }
}

fn limits(deadline: Duration) -> ListenerLimits {
    ListenerLimits {
        deadline,
        ..ListenerLimits::default()
    }
}

/// Waits until the listener closes `stream`, failing if it replies with anything first.
async fn expect_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Ok(n)) => panic!("the listener answered {what} with {n} bytes"),
        Ok(Err(e)) => panic!("unexpected error on {what}: {e}"),
        Err(_) => panic!("the listener did not close {what} within {PATIENCE:?}"),
    }
}

/// Returns once the listener has accepted every connection made before the call: it accepts
/// in order, so a full exchange on a later connection proves the earlier ones were taken in and
/// are now held by their own tasks (not waiting in the kernel's backlog).
async fn accept_barrier(peer: &mut Peer, allowed: &PeerKeys) {
    peer.send(allowed, &message("barrier", "alice"))
        .await
        .expect("barrier send");
    assert_eq!(
        peer.next_inbound("the barrier message")
            .await
            .message
            .message_id,
        "barrier"
    );
}

#[tokio::test]
async fn a_message_arrives_under_the_name_its_key_was_allowed_for() {
    let mut bob = Peer::start(ListenerLimits::default()).await;
    let alice = PeerKeys::generate();
    bob.listener.allow("Alice", alice.public().to_vec());

    let sent = message("m1", "alice"); // any ASCII case of the allowed name
    bob.send(&alice, &sent).await.expect("direct send");

    let got = bob.next_inbound("alice's message").await;
    assert_eq!(got.from, "Alice");
    assert_eq!(got.message, sent);
}

#[tokio::test]
async fn bad_connections_are_closed_and_never_hold_up_real_messages() {
    const DEADLINE: Duration = Duration::from_secs(2);
    let mut bob = Peer::start(limits(DEADLINE)).await;
    let alice = PeerKeys::generate();
    bob.listener.allow("alice", alice.public().to_vec());

    // Two slow peers that stay open until the listener's deadline.
    let opened = Instant::now();
    let mut silent = bob.connect().await;
    let mut half_frame = bob.connect().await;
    half_frame.write_all(&[0x00, 0x60, 1, 2, 3]).await.unwrap();

    // Peers that break the protocol at once are closed at once.
    let mut garbage = bob.connect().await;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: bob\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut garbage, "an HTTP request").await;

    let mut zero = bob.connect().await;
    zero.write_all(&[0x00, 0x00, 0xab]).await.unwrap();
    expect_closed(&mut zero, "a zero length prefix").await;

    let mut oversize = bob.connect().await;
    oversize.write_all(&[0xff, 0xff]).await.unwrap();
    oversize.write_all(&[0x5a; 1000]).await.unwrap();
    expect_closed(&mut oversize, "a 65535-byte length prefix").await;

    let mut noise_garbage = bob.connect().await;
    noise_garbage.write_all(&[0x00, 96]).await.unwrap();
    noise_garbage.write_all(&[0x42; 96]).await.unwrap();
    expect_closed(&mut noise_garbage, "a handshake-sized frame of garbage").await;

    // A well-formed handshake from a key nobody allowed: the listener hangs up without a reply.
    let stranger = PeerKeys::generate();
    let refused = bob.send(&stranger, &message("x1", "alice")).await;
    assert!(
        matches!(refused, Err(PeerError::Refused)),
        "unknown key: {refused:?}"
    );

    // A real message gets through while the slow peers still hold their connections.
    bob.send(&alice, &message("m1", "alice"))
        .await
        .expect("send beside slow peers");
    assert!(
        opened.elapsed() < DEADLINE,
        "took longer than the listener's deadline, so the slow peers may already be gone and \
         this test proves nothing; run it on a less loaded machine"
    );
    assert_eq!(bob.next_inbound("m1").await.message.message_id, "m1");

    // The slow peers are cut off by the deadline.
    expect_closed(&mut silent, "a connection that sends nothing").await;
    expect_closed(&mut half_frame, "a connection stuck inside a frame").await;

    // And the listener is none the worse. Nothing from the bad peers came in between.
    bob.send(&alice, &message("m2", "alice"))
        .await
        .expect("send after bad peers");
    assert_eq!(bob.next_inbound("m2").await.message.message_id, "m2");
    assert!(bob.inbound.try_recv().is_err(), "nothing else arrived");
}

#[tokio::test]
async fn an_oversize_length_prefix_is_refused_without_waiting_for_the_deadline() {
    // A deadline longer than PATIENCE: only an immediate refusal passes.
    let bob = Peer::start(limits(Duration::from_secs(600))).await;
    let mut oversize = bob.connect().await;
    oversize.write_all(&[0x80, 0x00]).await.unwrap();
    expect_closed(&mut oversize, "a 32768-byte length prefix").await;
}

#[tokio::test]
async fn a_message_from_someone_else_than_the_keys_user_is_not_acked() {
    let mut bob = Peer::start(ListenerLimits::default()).await;
    let alice = PeerKeys::generate();
    bob.listener.allow("alice", alice.public().to_vec());

    let spoofed = bob.send(&alice, &message("m1", "carol")).await;
    assert!(matches!(spoofed, Err(PeerError::NoAck)), "{spoofed:?}");

    // Ordering barrier: the next message to arrive is the legitimate one.
    bob.send(&alice, &message("m2", "alice"))
        .await
        .expect("legitimate send");
    assert_eq!(bob.next_inbound("m2").await.message.message_id, "m2");
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let mut bob = Peer::start(ListenerLimits::default()).await;
    let (alice, carol) = (PeerKeys::generate(), PeerKeys::generate());
    bob.listener.allow("alice", alice.public().to_vec());
    bob.listener.allow("carol", carol.public().to_vec());
    bob.send(&alice, &message("m1", "alice"))
        .await
        .expect("before revoke");
    assert_eq!(bob.next_inbound("m1").await.message.message_id, "m1");

    bob.listener.revoke("ALICE");
    let after = bob.send(&alice, &message("m1", "alice")).await;
    assert!(matches!(after, Err(PeerError::Refused)), "{after:?}");

    bob.send(&carol, &message("m3", "carol"))
        .await
        .expect("carol is still allowed");
    assert_eq!(bob.next_inbound("m3").await.message.message_id, "m3");
}

#[tokio::test]
async fn rekey_retires_the_old_key_and_every_allowance() {
    let mut bob = Peer::start(ListenerLimits::default()).await;
    let alice = PeerKeys::generate();
    bob.listener.allow("alice", alice.public().to_vec());
    let old = bob.keys.clone();
    let port = bob.listener.local_addr().port();

    bob.keys = PeerKeys::generate();
    bob.listener.rekey(bob.keys.clone());
    assert_eq!(
        bob.listener.local_addr().port(),
        port,
        "the port survives a new login"
    );

    let to_old_key = send(
        "127.0.0.1",
        port,
        old.public(),
        &alice,
        &message("m1", "alice"),
        PATIENCE,
    )
    .await;
    assert!(
        matches!(to_old_key, Err(PeerError::Refused)),
        "old key: {to_old_key:?}"
    );

    let not_allowed_yet = bob.send(&alice, &message("m2", "alice")).await;
    assert!(
        matches!(not_allowed_yet, Err(PeerError::Refused)),
        "{not_allowed_yet:?}"
    );

    bob.listener.allow("alice", alice.public().to_vec());
    bob.send(&alice, &message("m3", "alice"))
        .await
        .expect("allowed again under the new key");
    assert_eq!(bob.next_inbound("m3").await.message.message_id, "m3");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let bob = Peer::start(ListenerLimits {
        max_connections: 2,
        deadline: Duration::from_secs(600),
        ..ListenerLimits::default()
    })
    .await;
    // The listener accepts in order, so by the time it accepts the third connection the first
    // two hold both slots; they say nothing and the deadline is far away.
    let _first = bob.connect().await;
    let _second = bob.connect().await;
    let mut third = bob.connect().await;
    expect_closed(&mut third, "a connection over the cap").await;
}

#[tokio::test]
async fn shutdown_closes_open_connections_and_refuses_new_ones() {
    let mut bob = Peer::start(limits(Duration::from_secs(600))).await;
    let alice = PeerKeys::generate();
    bob.listener.allow("alice", alice.public().to_vec());
    let mut waiting = bob.connect().await;
    accept_barrier(&mut bob, &alice).await;

    bob.listener.shutdown();
    expect_closed(&mut waiting, "a connection open at shutdown").await;
    let after = bob.send(&alice, &message("m1", "alice")).await;
    assert!(after.is_err(), "a send after shutdown succeeded");
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_listener() {
    let mut bob = Peer::start(limits(Duration::from_secs(600))).await;
    let alice = PeerKeys::generate();
    bob.listener.allow("alice", alice.public().to_vec());
    let mut waiting = bob.connect().await;
    accept_barrier(&mut bob, &alice).await;

    let extra_handle = bob.listener.clone();
    drop(bob.listener);
    drop(extra_handle);
    expect_closed(
        &mut waiting,
        "a connection open when the listener was dropped",
    )
    .await;
}

#[tokio::test]
async fn send_to_a_closed_port_is_a_connect_error() {
    let port = {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket.local_addr().unwrap().port()
    }; // closed again here
    let keys = PeerKeys::generate();
    let m1 = message("m1", "alice");
    let result = send("127.0.0.1", port, keys.public(), &keys, &m1, PATIENCE);
    let result = timeout(PATIENCE, result).await.expect("send returned");
    assert!(matches!(result, Err(PeerError::Connect(_))), "{result:?}");
}

#[tokio::test]
async fn a_peer_that_never_answers_makes_send_time_out() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    // Accepts and then holds the connection without a word until the test ends.
    let mute = tokio::spawn(async move {
        let (stream, _) = socket.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(stream);
    });

    let deadline = Duration::from_millis(300);
    let keys = PeerKeys::generate();
    let m1 = message("m1", "alice");
    let result = send("127.0.0.1", port, keys.public(), &keys, &m1, deadline);
    let result = timeout(PATIENCE, result)
        .await
        .expect("send kept its deadline");
    assert!(
        matches!(result, Err(PeerError::Timeout(d)) if d == deadline),
        "{result:?}"
    );
    mute.abort();
}

#[tokio::test]
async fn a_receiver_that_does_not_take_messages_leaves_the_sender_without_an_ack() {
    let mut bob = Peer::start(ListenerLimits {
        inbound_queue: 1,
        deadline: Duration::from_secs(600),
        ..ListenerLimits::default()
    })
    .await;
    let alice = PeerKeys::generate();
    bob.listener.allow("alice", alice.public().to_vec());
    bob.send(&alice, &message("m1", "alice"))
        .await
        .expect("fills the queue");

    // The queue is full and nobody reads it: no ack, so the sender gives up at its deadline.
    let port = bob.listener.local_addr().port();
    let deadline = Duration::from_millis(300);
    let m2 = message("m2", "alice");
    let second = send("127.0.0.1", port, bob.keys.public(), &alice, &m2, deadline);
    let second = timeout(PATIENCE, second)
        .await
        .expect("send kept its deadline");
    assert!(matches!(second, Err(PeerError::Timeout(_))), "{second:?}");
    assert_eq!(bob.next_inbound("m1").await.message.message_id, "m1");
}
