//! The `Store` contract, checked the same way against both engines: every check below runs on
//! SQLite and on PostgreSQL (a fresh database on `CONFAB_TEST_POSTGRES`). Then what only several
//! PostgreSQL writers can show: concurrent appends from several stores, and migrations racing.

use std::sync::{Arc, Barrier};

use confab::server::store::{self, Store, UserId, WriteOp, WriteOutcome, postgres::PostgresStore};

use crate::common::pg;

/// A store of one engine, reopenable on the same data.
struct Engine {
    store: Arc<dyn Store>,
    url: Option<String>,
    dir: tempfile::TempDir,
}

impl Engine {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(None, dir)
    }

    fn postgres() -> Self {
        Self::open(Some(pg::fresh_database()), tempfile::tempdir().unwrap())
    }

    fn open(url: Option<String>, dir: tempfile::TempDir) -> Self {
        let store = store::open(url.as_deref(), &dir.path().join("confab.db")).unwrap();
        Engine { store, url, dir }
    }

    /// Closes the store and opens it again, as a server restart does.
    fn reopen(self) -> Self {
        let Engine { store, url, dir } = self;
        drop(store);
        Self::open(url, dir)
    }
}

fn create(store: &dyn Store, name: &str) -> UserId {
    match &store.write_batch(&[create_op(name)]).unwrap()[0] {
        WriteOutcome::Created(id) => *id,
        other => panic!("creating {name}: {other:?}"),
    }
}

fn create_op(name: &str) -> WriteOp {
    WriteOp::CreateUser {
        name: name.into(),
        name_key: name.to_ascii_lowercase(),
        password_hash: format!("hash-of-{name}"),
        created_ms: 1,
    }
}

fn append_op(to: UserId, from: UserId, id: &str, body: &str, max: u64) -> WriteOp {
    WriteOp::Append {
        recipient: to,
        sender: from,
        message_id: id.into(),
        body: body.into(),
        sent_ms: 7,
        max_inbox: max,
    }
}

fn append(store: &dyn Store, to: UserId, from: UserId, id: &str, max: u64) -> WriteOutcome {
    store
        .write_batch(&[append_op(to, from, id, "b", max)])
        .unwrap()
        .remove(0)
}

fn stored(seq: u64) -> WriteOutcome {
    WriteOutcome::Appended {
        seq,
        duplicate: false,
    }
}

fn duplicate(seq: u64) -> WriteOutcome {
    WriteOutcome::Appended {
        seq,
        duplicate: true,
    }
}

fn seqs(store: &dyn Store, user: UserId) -> Vec<u64> {
    store
        .inbox_page(user, 0, 1000)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

/// Seqs, duplicates, the inbox limit, acknowledgements, and seqs never reused across restarts.
fn inbox_seqs_dedupe_limits_and_acks(engine: Engine) {
    let s = &*engine.store;
    let (a, b) = (create(s, "alice"), create(s, "bob"));
    assert_eq!(
        s.write_batch(&[create_op("Bob")]).unwrap(),
        vec![WriteOutcome::NameTaken]
    );
    assert_eq!(append(s, b, a, "m1", 2), stored(1));
    assert_eq!(append(s, b, a, "m1", 2), duplicate(1));
    assert_eq!(append(s, b, a, "m2", 2), stored(2));
    assert_eq!(append(s, b, a, "m3", 2), WriteOutcome::InboxFull);
    // A resend into a full inbox is still recognised as a duplicate.
    assert_eq!(append(s, b, a, "m1", 2), duplicate(1));
    // The same message id from another sender is another message.
    let c = create(s, "carol");
    assert_eq!(append(s, b, c, "m1", 3), stored(3));
    assert_eq!(seqs(s, b), vec![1, 2, 3]);
    assert_eq!(s.inbox_page(b, 1, 1).unwrap()[0].seq, 2, "after and limit");

    s.write_batch(&[WriteOp::Ack { user: b, upto: 1 }]).unwrap();
    let left = s.inbox_page(b, 0, 10).unwrap();
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!((left[0].sender.as_str(), left[0].sent_ms), ("alice", 7));
    assert_eq!(append(s, b, a, "m4", 3), stored(4), "seqs are never reused");
    let engine = engine.reopen();
    let s = &*engine.store;
    assert_eq!(s.inbox_counts().unwrap(), vec![(b, 3)]);
    // Acknowledge everything: after a restart the next seq still follows the last one.
    s.write_batch(&[WriteOp::Ack { user: b, upto: 4 }]).unwrap();
    let engine = engine.reopen();
    let s = &*engine.store;
    assert!(s.inbox_counts().unwrap().is_empty());
    assert_eq!(append(s, b, a, "m5", 3), stored(5));
}

/// Operations in one batch take effect in order, as if committed one by one.
fn a_batch_applies_its_operations_in_order(engine: Engine) {
    let s = &*engine.store;
    let (a, b) = (create(s, "alice"), create(s, "bob"));
    let out = s
        .write_batch(&[
            append_op(b, a, "x", "first", 2),
            append_op(b, a, "x", "again", 2),
            append_op(b, a, "y", "second", 2),
            append_op(b, a, "z", "full", 2),
            WriteOp::Ack { user: b, upto: 1 },
            append_op(b, a, "z", "room again", 2),
            WriteOp::Block {
                blocker: a,
                blocked: b,
            },
            WriteOp::Unblock {
                blocker: a,
                blocked: b,
            },
            WriteOp::Block {
                blocker: b,
                blocked: a,
            },
            create_op("carol"),
            create_op("CAROL"),
        ])
        .unwrap();
    assert_eq!(
        out[..4],
        [stored(1), duplicate(1), stored(2), WriteOutcome::InboxFull]
    );
    assert_eq!(out[4], WriteOutcome::Done);
    assert_eq!(out[5], stored(3));
    assert_eq!(
        out[6..9],
        [WriteOutcome::Done, WriteOutcome::Done, WriteOutcome::Done]
    );
    assert!(matches!(out[9], WriteOutcome::Created(_)), "{:?}", out[9]);
    assert_eq!(out[10], WriteOutcome::NameTaken);
    let bodies: Vec<String> = s
        .inbox_page(b, 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies, ["second", "room again"]);
    assert_eq!(s.blocks().unwrap(), vec![(b, a)]);
}

/// An operation that fails does not undo the others in its batch.
fn a_failing_operation_does_not_poison_its_batch(engine: Engine) {
    let s = &*engine.store;
    let (a, b) = (create(s, "alice"), create(s, "bob"));
    let out = s
        .write_batch(&[
            append_op(b, a, "m1", "kept", 10),
            // No user 999 999: the block's reference to it fails.
            WriteOp::Block {
                blocker: a,
                blocked: 999_999,
            },
            append_op(b, a, "m2", "kept too", 10),
            create_op("carol"),
        ])
        .unwrap();
    assert_eq!(out[0], stored(1));
    assert!(matches!(out[1], WriteOutcome::Failed(_)), "{:?}", out[1]);
    assert_eq!(out[2], stored(2));
    assert!(matches!(out[3], WriteOutcome::Created(_)), "{:?}", out[3]);
    let engine = engine.reopen();
    assert_eq!(seqs(&*engine.store, b), vec![1, 2]);
    assert!(engine.store.blocks().unwrap().is_empty());
    assert_eq!(engine.store.users().unwrap().len(), 3);
}

/// Bodies and ids come back byte for byte, NUL and all; extreme acks and limits are accepted.
fn bodies_come_back_exactly_and_extremes_are_safe(engine: Engine) {
    let s = &*engine.store;
    let (a, b) = (create(s, "alice"), create(s, "bob"));
    let body = "nul \0 inside, ünïcødé, 😀, 'quotes' and \\ backslash";
    let id = "id\0with nul";
    let out = s
        .write_batch(&[append_op(b, a, id, body, u64::MAX)])
        .unwrap();
    assert_eq!(out, vec![stored(1)]);
    assert_eq!(
        s.write_batch(&[append_op(b, a, id, "other", u64::MAX)])
            .unwrap(),
        vec![duplicate(1)]
    );
    let row = &s.inbox_page(b, 0, 10).unwrap()[0];
    assert_eq!((row.body.as_str(), row.message_id.as_str()), (body, id));
    assert!(s.inbox_page(b, u64::MAX, usize::MAX).unwrap().is_empty());
    s.write_batch(&[WriteOp::Ack {
        user: b,
        upto: u64::MAX,
    }])
    .unwrap();
    assert!(s.inbox_page(b, 0, 10).unwrap().is_empty());
    assert_eq!(append(s, b, a, "next", 1), stored(2));
}

/// Accounts, blocks, login times and inbox counts as the server loads them at start.
fn accounts_blocks_and_counts_survive_a_restart(engine: Engine) {
    let s = &*engine.store;
    let (a, b, c) = (create(s, "alice"), create(s, "Bob"), create(s, "carol"));
    s.write_batch(&[
        WriteOp::Block {
            blocker: a,
            blocked: b,
        },
        WriteOp::Block {
            blocker: a,
            blocked: b,
        },
        WriteOp::Block {
            blocker: c,
            blocked: a,
        },
        WriteOp::Unblock {
            blocker: c,
            blocked: a,
        },
        WriteOp::Unblock {
            blocker: b,
            blocked: c,
        },
        WriteOp::LastLogin { user: b, at_ms: 42 },
        append_op(c, a, "1", "x", 10),
        append_op(c, b, "1", "y", 10),
    ])
    .unwrap();
    let engine = engine.reopen();
    let s = &*engine.store;
    let users = s.users().unwrap();
    let names: Vec<_> = users.iter().map(|u| (u.id, u.name.as_str())).collect();
    assert_eq!(names, [(a, "alice"), (b, "Bob"), (c, "carol")]);
    assert_eq!(users[1].last_login_ms, 42);
    assert_eq!(users[1].password_hash, "hash-of-Bob");
    assert_eq!(users[0].last_login_ms, 0);
    assert_eq!(s.blocks().unwrap(), vec![(a, b)]);
    assert_eq!(s.inbox_counts().unwrap(), vec![(c, 2)]);
}

macro_rules! on_both_engines {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $check() { super::$check(super::Engine::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $check() { super::$check(super::Engine::postgres()) })*
        }
    };
}

on_both_engines!(
    inbox_seqs_dedupe_limits_and_acks,
    a_batch_applies_its_operations_in_order,
    a_failing_operation_does_not_poison_its_batch,
    bodies_come_back_exactly_and_extremes_are_safe,
    accounts_blocks_and_counts_survive_a_restart,
);

/// Several stores on one database, as several nodes: concurrent batches appending the same
/// messages to the same two inboxes (in opposite orders, which would deadlock without ordered
/// locking) get distinct, gap-free seqs, and no message is stored twice.
#[test]
fn concurrent_writers_get_distinct_gap_free_seqs_and_store_nothing_twice() {
    const WRITERS: usize = 3;
    const MESSAGES: usize = 120;
    const BATCH: usize = 8;
    let url = pg::fresh_database();
    let first = PostgresStore::open(&url).unwrap();
    let (a, r1, r2) = (
        create(&first, "alice"),
        create(&first, "r1"),
        create(&first, "r2"),
    );
    let barrier = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = PostgresStore::open(&url).unwrap();
                // Every writer sends every message in the same order, so the same message is
                // in flight on several writers at once.
                let ids: Vec<usize> = (0..MESSAGES).collect();
                barrier.wait();
                let mut seen = Vec::new();
                for chunk in ids.chunks(BATCH) {
                    let mut ops = Vec::new();
                    for &i in chunk {
                        let id = format!("m{i}");
                        let pair = [
                            append_op(r1, a, &id, &id, 10_000),
                            append_op(r2, a, &id, &id, 10_000),
                        ];
                        let [x, y] = pair;
                        // Odd writers lock r2 before r1 within a batch's statement order.
                        if w % 2 == 1 {
                            ops.extend([y, x]);
                        } else {
                            ops.extend([x, y]);
                        }
                    }
                    let out = store.write_batch(&ops).unwrap();
                    for (op, outcome) in ops.iter().zip(out) {
                        let WriteOp::Append {
                            recipient,
                            message_id,
                            ..
                        } = op
                        else {
                            unreachable!()
                        };
                        let WriteOutcome::Appended { seq, .. } = outcome else {
                            panic!("{outcome:?}")
                        };
                        seen.push((*recipient, message_id.clone(), seq));
                    }
                }
                seen
            })
        })
        .collect();
    let seen: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    for r in [r1, r2] {
        let rows = first.inbox_page(r, 0, 10 * MESSAGES).unwrap();
        let got: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(
            got,
            (1..=MESSAGES as u64).collect::<Vec<_>>(),
            "gap-free, no repeats"
        );
        let mut ids: Vec<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), MESSAGES, "each message stored once");
        // Every writer was told the seq the message is stored under.
        for (recipient, id, seq) in seen.iter().filter(|s| s.0 == r) {
            let row = rows.iter().find(|row| row.seq == *seq).unwrap();
            assert_eq!(&row.message_id, id, "recipient {recipient}");
        }
    }
    assert_eq!(first.inbox_counts().unwrap().len(), 2);
}

/// Three nodes starting at once on an empty database: all open, the schema exists once.
#[test]
fn three_stores_migrating_at_once_all_start() {
    let url = pg::fresh_database();
    let barrier = Arc::new(Barrier::new(3));
    let opened: Vec<_> = (0..3)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::open(&url)
            })
        })
        .collect();
    let stores: Vec<PostgresStore> = opened
        .into_iter()
        .map(|t| t.join().unwrap().expect("every node starts"))
        .collect();
    assert_eq!(
        pg::query_text(&url, "SELECT count(*) FROM confab_schema"),
        "1"
    );
    assert_eq!(
        pg::query_text(&url, "SELECT version FROM confab_schema"),
        "5"
    );
    // One cluster id, whichever node created it.
    assert_eq!(pg::query_text(&url, "SELECT count(*) FROM cluster"), "1");
    let alice = create(&stores[0], "alice");
    assert_eq!(stores[2].users().unwrap()[0].id, alice);
}

/// A database migrated by a newer confab is refused with a sentence, not written to.
#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let url = pg::fresh_database();
    drop(PostgresStore::open(&url).unwrap());
    pg::execute(&url, "UPDATE confab_schema SET version = 99");
    let err = PostgresStore::open(&url)
        .err()
        .expect("refused")
        .to_string();
    let err = format!("{err:#}");
    assert!(err.contains("opening the store"), "{err}");
    let chain = format!("{:#}", PostgresStore::open(&url).err().unwrap());
    assert!(
        chain.contains("schema is version 99, newer than this confab understands (version 5)"),
        "{chain}"
    );
}

/// Nothing listening: the store refuses to open, naming where it looked, never the password.
#[test]
fn an_unreachable_database_fails_the_start_with_a_sentence() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://confab:s3cret-pw@127.0.0.1:{port}/confab");
    let err = format!("{:#}", PostgresStore::open(&url).err().expect("refused"));
    assert!(
        err.contains(&format!("PostgreSQL at 127.0.0.1:{port} (database confab)")),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let bad = format!(
        "{:#}",
        PostgresStore::open("postgres://u:s3cret-pw@[bad")
            .err()
            .unwrap()
    );
    assert!(
        bad.contains("not a valid PostgreSQL URL") && !bad.contains("s3cret-pw"),
        "{bad}"
    );
}
