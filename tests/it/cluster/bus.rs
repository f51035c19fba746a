//! The bus itself: both implementations carry a node's events to the others, in order, and to
//! one named node only when addressed to it.

use std::sync::Arc;

use confab::server::cluster::{
    bus::{Bus, Envelope, Event, InProcess, Kind, Route, SessionRef},
    nats::NatsBus,
};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::common::{nats, within};

fn kick(epoch: u64) -> Event {
    Event::new(Kind::Kick(SessionRef { user: 1, epoch }))
}

fn epoch_of(e: &Envelope) -> u64 {
    match e.event.as_ref().and_then(|e| e.kind.as_ref()) {
        Some(Kind::Kick(k)) => k.epoch,
        other => panic!("unexpected {other:?}"),
    }
}

/// `a` publishes 100 events to everybody, then one to `c` alone, then one more to everybody:
/// `b` gets the 101 for everybody in order, `c` all 102 in order, nobody its own.
async fn conformance(
    a: Arc<dyn Bus>,
    mut a_rx: UnboundedReceiver<Envelope>,
    mut b_rx: UnboundedReceiver<Envelope>,
    mut c_rx: UnboundedReceiver<Envelope>,
) {
    for n in 0..100 {
        a.publish(Route::Others, kick(n));
    }
    a.publish(Route::Node("c".into()), kick(1000));
    a.publish(Route::Others, kick(100));
    a.flush().await;
    let mut b_got = Vec::new();
    while b_got.len() < 101 {
        let e = within("b's events", b_rx.recv()).await.unwrap();
        assert_eq!(e.from, "a");
        b_got.push(epoch_of(&e));
    }
    assert_eq!(b_got, (0..=100).collect::<Vec<_>>(), "in publishing order");
    let mut c_got = Vec::new();
    while c_got.len() < 102 {
        c_got.push(epoch_of(&within("c's events", c_rx.recv()).await.unwrap()));
    }
    assert!(c_got.contains(&1000), "c got the event addressed to it");
    c_got.retain(|e| *e != 1000);
    assert_eq!(c_got, (0..=100).collect::<Vec<_>>());
    // A barrier: one more event to everybody, so anything else b or a received would be first.
    let (b_bus, c_bus) = (b_rx, c_rx);
    drop(c_bus);
    a.publish(Route::Others, kick(7));
    a.flush().await;
    let mut b_rx = b_bus;
    assert_eq!(
        epoch_of(&within("the barrier", b_rx.recv()).await.unwrap()),
        7,
        "b saw nothing addressed to c"
    );
    assert!(a_rx.try_recv().is_err(), "a never gets its own events");
}

#[tokio::test]
async fn the_in_process_bus_carries_events_in_order_to_the_others_only() {
    let hub = InProcess::new();
    let (a, a_rx) = hub.join("a");
    let (_b, b_rx) = hub.join("b");
    let (_c, c_rx) = hub.join("c");
    conformance(a, a_rx, b_rx, c_rx).await;
}

#[tokio::test]
async fn the_nats_bus_carries_events_in_order_to_the_others_only() {
    let url = nats::server_url();
    let cluster = format!("t{:016x}", rand::random::<u64>());
    let (a, a_in) = NatsBus::connect(&url, &cluster, "a").await.unwrap();
    let (_b, b_in) = NatsBus::connect(&url, &cluster, "b").await.unwrap();
    let (_c, c_in) = NatsBus::connect(&url, &cluster, "c").await.unwrap();
    // Another cluster on the same server hears nothing of this one.
    let (_other, mut other_in) = NatsBus::connect(&url, "elsewhere", "b").await.unwrap();
    conformance(Arc::new(a), a_in.events, b_in.events, c_in.events).await;
    assert!(other_in.events.try_recv().is_err());
}

#[tokio::test]
async fn an_unreachable_nats_server_is_refused_with_a_sentence() {
    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = match NatsBus::connect(&format!("nats://127.0.0.1:{port}"), "x", "a").await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("connecting to the NATS bus at nats://127.0.0.1"),
        "{err}"
    );
}
