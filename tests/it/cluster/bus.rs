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
    let (a, a_in) = NatsBus::connect(&url, None, &cluster, "a").await.unwrap();
    let (_b, b_in) = NatsBus::connect(&url, None, &cluster, "b").await.unwrap();
    let (_c, c_in) = NatsBus::connect(&url, None, &cluster, "c").await.unwrap();
    // Another cluster on the same server hears nothing of this one.
    let (_other, mut other_in) = NatsBus::connect(&url, None, "elsewhere", "b")
        .await
        .unwrap();
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
    let err = match NatsBus::connect(&format!("nats://127.0.0.1:{port}"), None, "x", "a").await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("connecting to the NATS bus at nats://127.0.0.1"),
        "{err}"
    );
}

/// Whether `a` reaches `b` over the bus: one event, published and received.
async fn carries(a: &NatsBus, b: &mut UnboundedReceiver<Envelope>) {
    a.publish(Route::Others, kick(42));
    a.flush().await;
    assert_eq!(epoch_of(&within("the event", b.recv()).await.unwrap()), 42);
}

async fn refused(url: &str, ca: Option<&std::path::Path>) -> String {
    match NatsBus::connect(url, ca, "x", "a").await {
        Ok(_) => panic!("connected to {url}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn credentials_in_the_url_are_sent_and_wrong_ones_refused_in_a_sentence() {
    let server = tokio::task::spawn_blocking(|| {
        nats::Configured::start(&["--user", "confab", "--pass", "p@ss w"])
    })
    .await
    .unwrap();
    let url = format!("nats://confab:p%40ss%20w@127.0.0.1:{}", server.port);
    let (a, _) = NatsBus::connect(&url, None, "x", "a").await.unwrap();
    let (_b, mut b_in) = NatsBus::connect(&url, None, "x", "b").await.unwrap();
    carries(&a, &mut b_in.events).await;

    let wrong = refused(
        &format!("nats://confab:hunter2@127.0.0.1:{}", server.port),
        None,
    )
    .await;
    assert!(wrong.contains("refused this node's credentials"), "{wrong}");
    assert!(!wrong.contains("hunter2"), "{wrong}");
    let none = refused(&format!("nats://127.0.0.1:{}", server.port), None).await;
    assert!(none.contains("refused this node's credentials"), "{none}");
}

#[tokio::test]
async fn a_token_is_the_user_part_of_the_url() {
    let server = tokio::task::spawn_blocking(|| nats::Configured::start(&["--auth", "s3cret"]))
        .await
        .unwrap();
    let url = format!("nats://s3cret@127.0.0.1:{}", server.port);
    let (a, _) = NatsBus::connect(&url, None, "x", "a").await.unwrap();
    let (_b, mut b_in) = NatsBus::connect(&url, None, "x", "b").await.unwrap();
    carries(&a, &mut b_in.events).await;
    let wrong = refused(&format!("nats://guess@127.0.0.1:{}", server.port), None).await;
    assert!(wrong.contains("refused this node's credentials"), "{wrong}");
}

/// A nats-server on TLS with a certificate for `localhost` from a private CA: the server, the
/// CA's PEM file, and the directory holding both.
async fn tls_nats() -> (nats::Configured, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = crate::common::localhost_certificate(dir.path());
    let args = [
        "--tls".to_owned(),
        "--tlscert".to_owned(),
        cert_pem.display().to_string(),
        "--tlskey".to_owned(),
        key_pem.display().to_string(),
    ];
    let server = tokio::task::spawn_blocking(move || {
        nats::Configured::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();

    (server, ca_pem, dir)
}

#[tokio::test]
async fn a_tls_bus_is_reached_with_its_private_ca_and_refused_without_it() {
    let (server, ca_pem, dir) = tls_nats().await;
    let url = format!("tls://localhost:{}", server.port);
    let (a, _) = NatsBus::connect(&url, Some(&ca_pem), "x", "a")
        .await
        .unwrap();
    // `--bus-ca` alone asks for TLS, whatever the scheme.
    let plain = format!("nats://localhost:{}", server.port);
    let (_b, mut b_in) = NatsBus::connect(&plain, Some(&ca_pem), "x", "b")
        .await
        .unwrap();
    carries(&a, &mut b_in.events).await;

    let unknown = refused(&url, None).await;
    assert!(unknown.contains("--bus-ca"), "{unknown}");
    let missing = refused(&url, Some(&dir.path().join("nope.pem"))).await;
    assert!(
        missing.contains("--bus-ca") && missing.contains("no such file"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_tls_bus_with_a_private_ca_deliver_to_each_other() {
    let (server, ca_pem, _dir) = tls_nats().await;
    let url = format!("tls://localhost:{}", server.port);
    let c = super::TestCluster::with(2, |c| {
        c.bus = Some(confab::types::Secret::new(url.clone()));
        c.bus_ca = Some(ca_pem.clone());
    })
    .await;
    let mut alice = c.nodes[0].user("alice").await;
    let mut bob = c.nodes[1].user("bob").await;
    assert_eq!(alice.presence().await.0, "bob");
    alice.send("bob", "over TLS").await.unwrap();
    assert_eq!(super::message(&mut bob).await.body, "over TLS");
}
