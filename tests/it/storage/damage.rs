//! A store that cannot be trusted is refused at start with a sentence and a non-zero exit;
//! `confab admin check` says why; `--repair` / `admin repair` recover what is readable.

use std::path::Path;

use super::*;

/// The page size and the number of frames of the current generation at the start of a WAL.
fn current_frames(wal: &[u8]) -> (usize, usize) {
    let be32 = |at: usize| u32::from_be_bytes(wal[at..at + 4].try_into().unwrap());
    let page = be32(8) as usize;
    let frame = 24 + page;
    let n = (0..)
        .take_while(|i| {
            let at = 32 + i * frame;
            at + frame <= wal.len() && wal[at + 8..at + 16] == wal[16..24]
        })
        .count();
    (page, n)
}

/// A data directory holding alice and bob, with messages 0..2050 from alice stored for bob,
/// left by a server killed with SIGKILL (so the WAL holds committed frames).
async fn killed_with_a_wal(data: &Path) {
    let server = start(data, &[]).await;
    let remote = Remote::new(&server);
    remote.register("alice").await;
    remote.register("bob").await;
    let mut alice = remote.login("alice").await;
    stream(&mut alice, "bob", 0..2000).await;
    // Commits of their own at the end of the log.
    for i in 2000..2050 {
        alice.chat.send_message(numbered("bob", i)).await.unwrap();
    }
    drop(server); // SIGKILL
}

#[tokio::test]
async fn a_damaged_wal_is_refused_and_repair_recovers_what_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    killed_with_a_wal(&data).await;
    let wal = std::fs::read(data.join("confab.db-wal")).unwrap();
    let (page, frames) = current_frames(&wal);
    assert!(
        frames >= 8,
        "the log holds several commits ({frames} frames)"
    );
    let frame = 24 + page;

    // Random bytes in the middle of the committed frames.
    let garbled = tmp.path().join("garbled");
    copy_dir(&data, &garbled);
    let mut bytes = wal.clone();
    let at = 32 + frames / 2 * frame + 24 + 100;
    for (i, b) in bytes[at..at + 64].iter_mut().enumerate() {
        *b ^= 0x5a ^ i as u8;
    }
    std::fs::write(garbled.join("confab.db-wal"), &bytes).unwrap();
    let said = refused(&garbled, &[]);
    assert!(
        said.contains("confab.db-wal") && said.contains("is damaged") && said.contains("--repair"),
        "{said}"
    );
    let check = admin("check", &garbled);
    assert!(!check.status.success());
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("problem:") && out.contains("is damaged"),
        "{out}"
    );

    let server = start(&garbled, &["--repair"]).await;
    let remote = Remote::new(&server);
    let got = backlog_numbers(&remote, "bob").await;
    println!(
        "repair after random bytes in the WAL: {} of 2050 messages",
        got.len()
    );
    assert!(!got.is_empty() && got.len() <= 2050);
    // What came back is a prefix of what was sent: the log is read up to its damage.
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    // New messages follow the recovered ones.
    let mut alice = remote.login("alice").await;
    let next = alice.send("bob", "after the repair").await.unwrap().seq;
    assert!(next > 2050, "{next}");
    let aside: Vec<_> = std::fs::read_dir(&garbled)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(aside[0].join("confab.db-wal")).unwrap(),
        bytes,
        "the damaged log is kept as it was found"
    );
    drop(server);

    // The log cut in half: the index left by the killed server knows what was committed.
    let cut = tmp.path().join("cut");
    copy_dir(&data, &cut);
    let len = 32 + frames / 2 * frame + 100;
    std::fs::write(cut.join("confab.db-wal"), &wal[..len]).unwrap();
    let said = refused(&cut, &[]);
    assert!(said.contains("cut short"), "{said}");
    // Without the index, a log that ends inside a frame is still refused.
    std::fs::remove_file(cut.join("confab.db-shm")).unwrap();
    let said = refused(&cut, &[]);
    assert!(said.contains("middle of a frame"), "{said}");

    // An emptied or missing database beside the log.
    let emptied = tmp.path().join("emptied");
    copy_dir(&data, &emptied);
    std::fs::write(emptied.join("confab.db"), b"").unwrap();
    let said = refused(&emptied, &[]);
    assert!(said.contains("confab.db is empty"), "{said}");
    let missing = tmp.path().join("missing");
    copy_dir(&data, &missing);
    std::fs::remove_file(missing.join("confab.db")).unwrap();
    let said = refused(&missing, &[]);
    assert!(said.contains("confab.db is missing"), "{said}");
    // Repair rebuilds the database from the pages the log still holds.
    let repaired = admin("repair", &emptied);
    let out = String::from_utf8_lossy(&repaired.stdout);
    assert!(
        repaired.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    println!("repair of an emptied database from its log: {out}");
    assert!(out.contains("recovered"), "{out}");
    let server = start(&emptied, &[]).await;
    let remote = Remote::new(&server);
    remote.register("carol").await;
}

#[tokio::test]
async fn a_garbage_inbox_page_is_refused_and_repair_recovers_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data, &[]).await;
    let remote = Remote::new(&server);
    remote.register("alice").await;
    remote.register("bob").await;
    let mut alice = remote.login("alice").await;
    stream(&mut alice, "bob", 0..2000).await;
    stop(server).await;
    let wal = std::fs::metadata(data.join("confab.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "a clean stop leaves no log behind");

    let db = data.join("confab.db");
    let (page, leaves) = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let leaves: Vec<i64> = conn
            .prepare("SELECT pageno FROM dbstat WHERE name = 'inbox' AND pagetype = 'leaf'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (page as usize, leaves)
    };
    assert!(leaves.len() > 4, "{leaves:?}");
    let victim = leaves[leaves.len() / 2] as usize;
    let mut bytes = std::fs::read(&db).unwrap();
    let garbage: Vec<u8> = (0..page).map(|i| (i * 7 + 13) as u8).collect();
    bytes[(victim - 1) * page..victim * page].copy_from_slice(&garbage);
    std::fs::write(&db, &bytes).unwrap();

    let said = refused(&data, &[]);
    assert!(
        said.contains("confab.db") && said.contains("integrity_check") && said.contains("--repair"),
        "{said}"
    );
    let check = admin("check", &data);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("integrity_check failed"));

    let server = start(&data, &["--repair"]).await;
    let remote = Remote::new(&server);
    let got = backlog_numbers(&remote, "bob").await;
    println!(
        "repair after a garbage inbox page: {} of 2000 messages",
        got.len()
    );
    // One leaf's rows are lost, the rest come back.
    assert!(
        got.len() < 2000 && got.len() > 2000 - 2000 / leaves.len() * 2,
        "{}",
        got.len()
    );
    assert!(got.contains(&0) && got.contains(&1999));
    drop(server);
    // The repaired store passes its own checks.
    let check = admin("check", &data);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[tokio::test]
async fn a_database_from_a_newer_confab_is_refused_and_not_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data, &[]).await;
    Remote::new(&server).register("alice").await;
    stop(server).await;
    rusqlite::Connection::open(data.join("confab.db"))
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let said = refused(&data, &[]);
    assert!(
        said.contains("schema version 999") && said.contains("newer confab"),
        "{said}"
    );
    let check = admin("check", &data);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("schema version 999"));
    // A repair would throw the newer data away: refused too, and nothing is moved.
    let said = refused(&data, &["--repair"]);
    assert!(said.contains("schema version 999"), "{said}");
    assert!(data.join("confab.db").exists());
    assert!(!std::fs::read_dir(&data).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("damaged-")
    }));
}

/// Found by fuzzing (`fuzz/regressions/store_open/body-not-utf8`): a message body that is not
/// UTF-8 passes `integrity_check` (SQLite checks neither types nor encodings), and the server
/// started, then failed every replay of that inbox. It is refused now, `admin check` says why,
/// and `--repair` keeps the other messages.
#[tokio::test]
async fn text_that_is_not_utf8_is_refused_and_repair_keeps_the_rest() {
    one_damaged_message_is_refused_and_repaired(
        "UPDATE inbox SET body = CAST(x'41ff42' AS TEXT) WHERE body = 'damaged'",
        "1 row(s) of inbox hold text that is not UTF-8",
    )
    .await;
}

/// Found by fuzzing (`fuzz/regressions/store_open/message-from-nobody`): a message whose sender
/// is no account passes `integrity_check` (SQLite does not follow references), and the replay,
/// which names the sender, left it out while the inbox still counted it. It is refused now, and
/// `--repair` keeps the other messages.
#[tokio::test]
async fn a_message_from_an_account_that_does_not_exist_is_refused_and_repaired() {
    one_damaged_message_is_refused_and_repaired(
        "PRAGMA foreign_keys = OFF; UPDATE inbox SET sender = -127 WHERE body = 'damaged'",
        "1 row(s) of inbox name an account that does not exist",
    )
    .await;
}

/// Stores "first", "damaged", "third" for bob, applies `damage` to the stopped store, and
/// checks that the server refuses it saying `problem`, that `admin check` says the same, and
/// that `--repair` keeps the two others.
async fn one_damaged_message_is_refused_and_repaired(damage: &str, problem: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data, &[]).await;
    let remote = Remote::new(&server);
    remote.register("alice").await;
    remote.register("bob").await;
    let mut alice = remote.login("alice").await;
    for body in ["first", "damaged", "third"] {
        alice.send("bob", body).await.unwrap();
    }
    drop(alice);
    stop(server).await;
    rusqlite::Connection::open(data.join("confab.db"))
        .unwrap()
        .execute_batch(damage)
        .unwrap();
    let said = refused(&data, &[]);
    assert!(
        said.contains("cannot be trusted") && said.contains(problem),
        "{said}"
    );
    let check = admin("check", &data);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains(problem));

    let server = start(&data, &["--repair"]).await;
    let mut bob = Remote::new(&server).login("bob").await;
    bob.subscribe(0).await;
    let bodies: Vec<String> = bob.backlog().await.into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, ["first", "third"]);
    drop(bob);
    stop(server).await;
}

/// Found by fuzzing (`fuzz/regressions/store_open/schema-differs-from-its-version`): a schema
/// whose text was changed (a column renamed in `sqlite_master`) passes `integrity_check`, and
/// the server started, then failed every statement naming the column. It is refused now, and
/// `admin check` says why.
#[tokio::test]
async fn a_schema_other_than_its_versions_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data, &[]).await;
    Remote::new(&server).register("alice").await;
    stop(server).await;
    rusqlite::Connection::open(data.join("confab.db"))
        .unwrap()
        .execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = replace(sql, 'password_hash', 'password_hush')
             WHERE name = 'users';",
        )
        .unwrap();
    let said = refused(&data, &[]);
    assert!(
        said.contains("cannot be trusted")
            && said.contains("its schema is not what confab's schema version")
            && said.contains("users differs"),
        "{said}"
    );
    let check = admin("check", &data);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("users differs"));
}

/// Found by fuzzing (`fuzz/regressions/store_open/index-disagrees-with-inbox`): a database
/// whose `inbox_dedupe` index lacks a row passes `quick_check`, and was served with fewer
/// messages than the store counted. It is refused now, `admin check` says why, and `--repair`
/// rebuilds the index from the rows.
#[tokio::test]
async fn an_index_that_disagrees_with_its_table_is_refused_and_repaired() {
    let input = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/store_open/index-disagrees-with-inbox"),
    )
    .unwrap();
    // The fuzz input's layout: db_len, wal_len (u32 LE), then the files; this one is a
    // database alone.
    let db_len = u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
    assert_eq!(input.len(), 8 + db_len, "a database without a log");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("confab.db"), &input[8..]).unwrap();

    let said = refused(&data, &[]);
    assert!(
        said.contains("integrity_check") && said.contains("inbox_dedupe"),
        "{said}"
    );
    let check = admin("check", &data);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("missing from index"));

    let server = start(&data, &["--repair"]).await;
    // The repaired store takes writes (and the server is up before it is stopped).
    Remote::new(&server).register("dave").await;
    stop(server).await;
    let check = admin("check", &data);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
