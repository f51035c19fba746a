//! A node on PostgreSQL when PostgreSQL goes away: sends fail with `UNAVAILABLE` and a sentence
//! while it is down, service comes back by itself, and nothing acknowledged is lost. And
//! `confab serve --store` refusing what it cannot use.

use std::process::Command;

use confab::types::Secret;
use tonic::Code;

use crate::common::{pg, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_gives_unavailable_then_service_with_nothing_acknowledged_lost() {
    let pg = tokio::task::spawn_blocking(pg::private_server)
        .await
        .unwrap();
    let db = pg::fresh_database_on(&pg.url);
    let srv = TestServer::with(|c| c.store = Some(Secret::new(db))).await;
    let mut alice = srv.user("alice").await;
    srv.register("bob").await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let body = format!("before {i}");
        alice.send_id("bob", &body, &format!("b{i}")).await.unwrap();
        acknowledged.push(body);
    }

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // Twice: the first finds the connection broken, the second fails to reconnect.
    for _ in 0..2 {
        let refused = alice.send_id("bob", "while down", "d1").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("cannot reach its database")
                && refused.message().contains("try again"),
            "{refused:?}"
        );
    }

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    // The client's retry of the refused message, with the same id, then new ones.
    let retried = alice.send_id("bob", "while down", "d1").await.unwrap();
    assert!(
        !retried.duplicate,
        "it was not stored while PostgreSQL was down"
    );
    acknowledged.push("while down".into());
    for i in 0..3 {
        let body = format!("after {i}");
        alice.send_id("bob", &body, &format!("a{i}")).await.unwrap();
        acknowledged.push(body);
    }

    let mut bob = srv.login("bob").await.unwrap();
    bob.subscribe(0).await;
    let got: Vec<String> = bob.backlog().await.into_iter().map(|m| m.body).collect();
    assert_eq!(
        got, acknowledged,
        "every acknowledged message, once, in order"
    );
    drop(pg);
}

#[test]
fn serve_refuses_a_store_it_cannot_use_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |store: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("CONFAB_STORE", store)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let wrong = serve("mysql://root:hunter22@127.0.0.1/confab");
    assert!(wrong.contains("--store takes a postgres:// URL"), "{wrong}");
    assert!(!wrong.contains("hunter22"), "{wrong}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = serve(&format!(
        "postgres://confab:hunter22@127.0.0.1:{port}/confab"
    ));
    assert!(
        down.contains(&format!("PostgreSQL at 127.0.0.1:{port} (database confab)")),
        "{down}"
    );
    assert!(!down.contains("hunter22"), "{down}");
}
