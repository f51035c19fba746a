//! Store recovery: a data directory whose database, write-ahead log and shared-memory index are
//! whatever the input says, opened as `confab serve` opens it.
//!
//! An input is `db_len: u32 LE`, `wal_len: u32 LE`, then that many bytes of `confab.db`, that
//! many of `confab.db-wal`, and the rest as `confab.db-shm`. A length of zero leaves the file out.
//! [`store_seed`] makes inputs from a real store, so the fuzzer starts from what a server writes.

use std::path::Path;

use crate::server::store::sqlite::SqliteStore;
use crate::server::store::{Store, WriteOp, WriteOutcome};

/// The SQLite file's name in a data directory.
const DB: &str = "confab.db";
/// Messages read at a time, as the server replays an inbox.
const PAGE: usize = 256;

/// Opens a store made of `data`'s files. Invariants: no panic; the store either refuses to open
/// (with a sentence) or opens and then reads every account, block and stored message without an
/// error, with each inbox holding as many messages as the store counts for it.
pub fn store_open(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let db = dir.path().join(DB);
    let files = split(data);
    for (suffix, bytes) in ["", "-wal", "-shm"].into_iter().zip(files) {
        if !bytes.is_empty() {
            std::fs::write(dir.path().join(format!("{DB}{suffix}")), bytes)
                .expect("writing a file into the temporary data directory");
        }
    }
    let store = match SqliteStore::open(&db) {
        Ok(store) => store,
        Err(refusal) => {
            assert!(!format!("{refusal:#}").trim().is_empty());
            return;
        }
    };
    if let Err(e) = read_everything(&store) {
        panic!("the store opened, then failed to serve what it holds: {e:#}");
    }
}

/// The three files' bytes: database, log, shared memory.
fn split(data: &[u8]) -> [&[u8]; 3] {
    let len = |at: usize| {
        data.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (db_len, wal_len) = (len(0), len(4));
    let rest = data.get(8..).unwrap_or_default();
    let (db, rest) = rest.split_at(db_len.min(rest.len()));
    let (wal, shm) = rest.split_at(wal_len.min(rest.len()));
    [db, wal, shm]
}

/// Everything the server reads from its store while it starts and serves.
fn read_everything(store: &SqliteStore) -> anyhow::Result<()> {
    let users = store.users()?;
    store.blocks()?;
    let counts: std::collections::HashMap<_, _> = store.inbox_counts()?.into_iter().collect();
    for user in &users {
        let mut after = 0;
        let mut held = 0u64;
        loop {
            let page = store.inbox_page(user.id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            anyhow::ensure!(last.seq > after, "an inbox page went backwards");
            after = last.seq;
            held += page.len() as u64;
        }
        let counted = counts.get(&user.id).copied().unwrap_or(0);
        anyhow::ensure!(
            held == counted,
            "{} holds {held} messages but the store counts {counted}",
            user.name
        );
    }
    Ok(())
}

/// Inputs for [`store_open`] taken from a real store: one with its write-ahead log and shared
/// memory as a running server leaves them, one after a clean stop (the database alone).
///
/// # Panics
/// If a temporary store cannot be made; the fuzzers and tests cannot go on without one.
pub fn store_seed() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let db = dir.path().join(DB);
    let store = SqliteStore::open(&db).expect("a fresh store opens");
    fill(&store);
    let running = input(dir.path());
    store.close().expect("a clean stop");
    drop(store);
    let stopped = input(dir.path());
    vec![running, stopped]
}

/// A few accounts, a block, stored messages and an acknowledgement.
fn fill(store: &SqliteStore) {
    let mut ids = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let created = store
            .write_batch(&[WriteOp::CreateUser {
                name: name.into(),
                name_key: name.into(),
                password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
                created_ms: 1,
            }])
            .expect("creating an account");
        let [WriteOutcome::Created(id)] = created[..] else {
            panic!("unexpected outcome {created:?}");
        };
        ids.push(id);
    }
    let mut ops = vec![WriteOp::Block {
        blocker: ids[2],
        blocked: ids[0],
    }];
    for i in 0..20 {
        ops.push(WriteOp::Append {
            recipient: ids[i % 2],
            sender: ids[(i + 1) % 3],
            message_id: format!("m{i}"),
            body: format!("message number {i}"),
            sent_ms: i as i64,
            max_inbox: 100,
        });
    }
    store.write_batch(&ops).expect("storing messages");
    store
        .write_batch(&[WriteOp::Ack {
            user: ids[0],
            upto: 4,
        }])
        .expect("an acknowledgement");
}

/// The data directory's files as one [`store_open`] input.
fn input(dir: &Path) -> Vec<u8> {
    let read = |suffix: &str| std::fs::read(dir.join(format!("{DB}{suffix}"))).unwrap_or_default();
    let (db, wal, shm) = (read(""), read("-wal"), read("-shm"));
    let mut out = Vec::with_capacity(8 + db.len() + wal.len() + shm.len());
    out.extend((db.len() as u32).to_le_bytes());
    out.extend((wal.len() as u32).to_le_bytes());
    out.extend(db);
    out.extend(wal);
    out.extend(shm);
    out
}
