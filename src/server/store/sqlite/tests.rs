//! The SQLite store's own rules: seqs, duplicates, limits, acknowledgements, a full disk.

use super::*;
use crate::server::store::DiskFull;

fn user(store: &SqliteStore, name: &str) -> UserId {
    let out = store
        .write_batch(&[WriteOp::CreateUser {
            name: name.into(),
            name_key: name.to_ascii_lowercase(),
            password_hash: "x".into(),
            created_ms: 1,
        }])
        .unwrap();
    match out[0] {
        WriteOutcome::Created(id) => id,
        ref other => panic!("{other:?}"),
    }
}

fn append(store: &SqliteStore, to: UserId, from: UserId, id: &str, max: u64) -> WriteOutcome {
    store
        .write_batch(&[WriteOp::Append {
            recipient: to,
            sender: from,
            message_id: id.into(),
            body: "b".into(),
            sent_ms: 2,
            max_inbox: max,
        }])
        .unwrap()
        .remove(0)
}

#[test]
fn inbox_seqs_dedupe_limits_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let (a, b) = (user(&store, "alice"), user(&store, "bob"));
    let dup = store
        .write_batch(&[WriteOp::CreateUser {
            name: "Bob".into(),
            name_key: "bob".into(),
            password_hash: "x".into(),
            created_ms: 1,
        }])
        .unwrap();
    assert_eq!(dup, vec![WriteOutcome::NameTaken]);

    assert_eq!(
        append(&store, b, a, "m1", 2),
        WriteOutcome::Appended {
            seq: 1,
            duplicate: false
        }
    );
    assert_eq!(
        append(&store, b, a, "m1", 2),
        WriteOutcome::Appended {
            seq: 1,
            duplicate: true
        }
    );
    assert_eq!(
        append(&store, b, a, "m2", 2),
        WriteOutcome::Appended {
            seq: 2,
            duplicate: false
        }
    );
    assert_eq!(append(&store, b, a, "m3", 2), WriteOutcome::InboxFull);
    // A resend into a full inbox is still recognised as a duplicate.
    assert_eq!(
        append(&store, b, a, "m1", 2),
        WriteOutcome::Appended {
            seq: 1,
            duplicate: true
        }
    );
    assert_eq!(store.inbox_page(b, 0, 10).unwrap().len(), 2);

    store
        .write_batch(&[WriteOp::Ack { user: b, upto: 1 }])
        .unwrap();
    let left = store.inbox_page(b, 0, 10).unwrap();
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(left[0].sender, "alice");
    // Seqs are never reused after an ack.
    assert_eq!(
        append(&store, b, a, "m3", 2),
        WriteOutcome::Appended {
            seq: 3,
            duplicate: false
        }
    );
    drop(store);
    let reopened = SqliteStore::open(&dir.path().join("db")).unwrap();
    assert_eq!(reopened.inbox_counts().unwrap(), vec![(b, 2)]);
    // Acknowledge everything: after a restart the next seq still follows the last one.
    reopened
        .write_batch(&[WriteOp::Ack { user: b, upto: 3 }])
        .unwrap();
    drop(reopened);
    let reopened = SqliteStore::open(&dir.path().join("db")).unwrap();
    assert!(reopened.inbox_counts().unwrap().is_empty());
    assert_eq!(
        append(&reopened, b, a, "m4", 2),
        WriteOutcome::Appended {
            seq: 4,
            duplicate: false
        }
    );
}

fn appended(seq: u64, duplicate: bool) -> WriteOutcome {
    WriteOutcome::Appended { seq, duplicate }
}

/// Duplicates are caught in memory (`dedupe.rs`), not by an index: the check must hold across a
/// restart, forget what was acknowledged, tell senders and recipients apart, survive two
/// messages sharing a fingerprint, and follow a batch that does not commit.
#[test]
fn the_duplicate_check_follows_restarts_acks_collisions_and_failed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SqliteStore::open(&path).unwrap();
    let (a, b, c) = (
        user(&store, "alice"),
        user(&store, "bob"),
        user(&store, "carol"),
    );
    assert_eq!(append(&store, b, a, "m1", 100), appended(1, false));
    assert_eq!(append(&store, b, a, "m2", 100), appended(2, false));
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        append(&store, b, a, "m1", 100),
        appended(1, true),
        "rebuilt at start"
    );
    assert_eq!(
        append(&store, b, c, "m1", 100),
        appended(3, false),
        "another sender"
    );
    assert_eq!(
        append(&store, a, b, "m1", 100),
        appended(1, false),
        "another recipient"
    );

    // Acknowledged messages are forgotten: the id may be used again.
    store
        .write_batch(&[WriteOp::Ack { user: b, upto: 1 }])
        .unwrap();
    assert_eq!(append(&store, b, a, "m1", 100), appended(4, false));
    assert_eq!(append(&store, b, a, "m1", 100), appended(4, true));

    // m5's fingerprint made to point at another message (seq 2, m2), as a collision would.
    {
        let mut w = store.writer.lock().unwrap();
        let f = w.dedupe.fingerprint(b, a, "m5");
        w.dedupe.stored(f, 2);
        w.dedupe.commit();
    }
    assert_eq!(append(&store, b, a, "m5", 100), appended(5, false));
    assert_eq!(append(&store, b, a, "m5", 100), appended(5, true));
    assert_eq!(append(&store, b, a, "m2", 100), appended(2, true));

    // A batch that does not commit (the disk fills on its second op) changes nothing: the
    // acknowledged ids are still stored, the appended one is not.
    {
        let w = store.writer.lock().unwrap();
        let used: i64 = w
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        w.conn.pragma_update(None, "max_page_count", used).unwrap();
    }
    let failed = store.write_batch(&[
        WriteOp::Ack { user: b, upto: 5 },
        WriteOp::Append {
            recipient: b,
            sender: a,
            message_id: "m6".into(),
            body: "x".repeat(100_000),
            sent_ms: 2,
            max_inbox: 100,
        },
    ]);
    assert!(failed.unwrap_err().is::<DiskFull>());
    {
        let w = store.writer.lock().unwrap();
        w.conn
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
    }
    assert_eq!(append(&store, b, a, "m2", 100), appended(2, true));
    assert_eq!(append(&store, b, a, "m6", 100), appended(6, false));
}

#[test]
fn a_full_disk_fails_the_whole_batch_and_writes_resume_when_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let (a, b) = (user(&store, "alice"), user(&store, "bob"));
    let set_room = |pages: i64| {
        let w = store.writer.lock().unwrap();
        let used: i64 = w
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        w.conn
            .pragma_update(None, "max_page_count", used + pages)
            .unwrap();
    };
    // SQLite's max_page_count yields the same SQLITE_FULL as a full file system.
    set_room(2);
    let big = |id: u32| WriteOp::Append {
        recipient: b,
        sender: a,
        message_id: format!("m{id}"),
        body: "x".repeat(3000),
        sent_ms: 1,
        max_inbox: 1000,
    };
    let mut stored = 0;
    let err = loop {
        match store.write_batch(&[big(stored)]) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 100, "the page limit never bit");
    };
    assert!(err.is::<DiskFull>(), "{err:#}");
    // A batch with a small op before the one that does not fit: none of it is committed.
    let batch = [
        WriteOp::Block {
            blocker: a,
            blocked: b,
        },
        big(500),
    ];
    assert!(store.write_batch(&batch).unwrap_err().is::<DiskFull>());
    assert!(store.blocks().unwrap().is_empty());
    assert_eq!(store.inbox_counts().unwrap(), vec![(b, stored as u64)]);
    set_room(1000);
    let after = store.write_batch(&[big(501)]).unwrap();
    assert_eq!(
        after,
        vec![WriteOutcome::Appended {
            seq: stored as u64 + 1,
            duplicate: false
        }],
        "the counters were restored: no seq was skipped"
    );
}

/// A dropped store has made its last checkpoint and stopped its checkpointer: no thread of it
/// is left touching the files, and the log is empty. (Several rounds: the thread used to be left
/// to finish on its own, which a single look right after the drop may or may not catch.)
#[test]
fn dropping_the_store_waits_for_its_checkpointer() {
    let checkpointers = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            // A thread's name is cut to 15 bytes in `comm`.
            .filter(|name| name.trim() == "confab-checkpoi")
            .count()
    };
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path).unwrap();
        let (a, b) = (user(&store, "alice"), user(&store, "bob"));
        for i in 0..20 {
            append(&store, b, a, &format!("m{i}"), 100);
        }
        let wal = dir.path().join("db-wal");
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 0,
            "the log has frames"
        );
        drop(store);
        assert_eq!(
            checkpointers(),
            0,
            "round {round}: a checkpointer outlived its store"
        );
        let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(left, 0, "round {round}: the log was not emptied");
    }
}

/// The length of the WAL file beside `db` (0 when there is none).
fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(wal::sibling(db, "-wal")).map_or(0, |m| m.len())
}

/// Appends batches of 50 messages of 2 KiB from `from` to `to` until the WAL file beside `db`
/// is longer than `bytes`; returns how many it appended.
fn fill_log(store: &SqliteStore, db: &Path, (to, from): (UserId, UserId), bytes: u64) -> u64 {
    let mut next = 0u64;
    while wal_len(db) <= bytes {
        let batch: Vec<WriteOp> = (next..next + 50)
            .map(|i| WriteOp::Append {
                recipient: to,
                sender: from,
                message_id: format!("fill-{i}"),
                body: "x".repeat(2048),
                sent_ms: 2,
                max_inbox: u64::MAX,
            })
            .collect();
        store.write_batch(&batch).unwrap();
        next += 50;
    }
    next
}

/// Past 16 MiB the log starts over while the writer keeps writing: the writer finishes the
/// checkpoint between two batches instead of waiting for a gap a busy server never leaves (the
/// log reached 200 MB at saturation), and SQLite trims the file to 4 MiB.
#[test]
fn a_long_log_starts_over_while_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = SqliteStore::open(&db).unwrap();
    let (a, b) = (user(&store, "alice"), user(&store, "bob"));
    let sent = fill_log(&store, &db, (b, a), 17 << 20);
    // Writing goes on, one message at a time, until the log has started over.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while wal_len(&db) > WAL_LIMIT_BYTES as u64 + (1 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never started over: {} bytes",
            wal_len(&db)
        );
        append(&store, b, a, &format!("more-{i}"), u64::MAX);
        i += 1;
    }
    let stored = store.inbox_counts().unwrap();
    assert_eq!(stored, vec![(b, sent + i)], "every message is still stored");
}

/// A clean stop right after a long log empties it. The stop's checkpoint used to fail as busy
/// when the checkpointer thread was copying the same log at that moment, and the server exited
/// with an error and a WAL of 100 MB left behind.
#[test]
fn closing_right_after_a_long_log_empties_it() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = SqliteStore::open(&db).unwrap();
        let (a, b) = (user(&store, "alice"), user(&store, "bob"));
        fill_log(&store, &db, (b, a), 12 << 20);
        store
            .close()
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        assert_eq!(wal_len(&db), 0, "round {round}: the log was not emptied");
    }
}
