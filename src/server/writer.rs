//! The writer: one OS thread that owns every write to the store and commits them in groups.
//!
//! Requests queue on a channel; the thread takes whatever has queued (up to [`MAX_BATCH`]),
//! applies it in one transaction, and only after the commit hands the batch's new direct
//! messages, in seq order, to a [`Deliver`] it does not know (live streams on this node, or a bus
//! to other nodes), then answers the callers. While one commit runs the next batch gathers, so a
//! thousand concurrent senders pay a handful of fsyncs, not a thousand.
//!
//! **Invariant:** durable before visible: nothing reaches [`Deliver`] (nor a caller) before its
//! commit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot};

use super::store::{DiskFull, Store, Unavailable, UserId, WriteOp, WriteOutcome};

/// Most operations committed together.
pub const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer before senders wait (backpressure).
const QUEUE: usize = 16 * 1024;

/// A direct message just committed, as the writer hands it to delivery.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    /// Whose inbox.
    pub recipient: UserId,
    /// The sender's name as registered.
    pub from: &'a str,
    /// Its seq in the recipient's inbox.
    pub seq: u64,
    /// The sender's id for it.
    pub message_id: &'a str,
    /// UTF-8 body.
    pub body: &'a str,
    /// Send time, Unix ms.
    pub sent_ms: i64,
    /// It was in the inbox already (a resend); nothing new was stored.
    pub duplicate: bool,
}

/// The step after a commit. Runs on the writer thread, so it must not block.
pub trait Deliver: Send + Sync + 'static {
    /// Takes a committed batch's messages, in commit order, and says for each whether it
    /// reached a live stream (the `DELIVERED`/`STORED` its sender is told).
    fn deliver(&self, batch: &[Committed<'_>]) -> Vec<Reach>;
}

/// Whether a committed message reached a live stream: known when it is handed over, or only
/// once a lookup elsewhere answers (a cluster's session directory); the sender's answer waits
/// for it, at most 2 s (`LOOKUP_WAIT`). A lookup that fails or takes longer counts as not reached
/// (the message is committed either way, and waits in the inbox if nobody gets it live).
#[derive(Debug)]
pub enum Reach {
    /// Known now.
    Now(bool),
    /// Known when this resolves.
    Later(oneshot::Receiver<bool>),
}

/// The longest a sender's answer waits for [`Reach::Later`].
const LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Reach {
    /// Whether the message reached a live stream, once that is known.
    pub async fn reached(self) -> bool {
        match self {
            Reach::Now(live) => live,
            Reach::Later(answer) => tokio::time::timeout(LOOKUP_WAIT, answer)
                .await
                .is_ok_and(|reached| reached.unwrap_or(false)),
        }
    }
}

/// The outcome of a write, and for an `Append` whether it reached a live stream.
#[derive(Debug)]
pub struct Written {
    /// What the store did.
    pub outcome: WriteOutcome,
    /// Whether the new message reached the recipient's live stream.
    pub reach: Reach,
}

struct Job {
    op: Option<WriteOp>,
    /// Sender's display name, for the event of an `Append`.
    from: Option<Arc<str>>,
    reply: Option<oneshot::Sender<anyhow::Result<Written>>>,
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread over `store`, handing committed messages to `deliver`.
    pub fn start(
        store: Arc<dyn Store>,
        deliver: Arc<dyn Deliver>,
    ) -> (Writer, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let handle = thread::Builder::new()
            .name("confab-writer".into())
            .spawn(move || run(rx, store.as_ref(), deliver.as_ref(), &counter))
            .expect("spawning the writer thread");
        (Writer { tx, commits }, handle)
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Applies `op` durably and waits for the commit.
    pub async fn write(&self, op: WriteOp) -> anyhow::Result<WriteOutcome> {
        Ok(self.submit(op, None).await?.await??.outcome)
    }

    /// Queues an `Append` and returns a receiver for its result, so a stream of sends can keep
    /// several in flight. `from` is the sender's name for the live event.
    pub async fn submit(
        &self,
        op: WriteOp,
        from: Option<Arc<str>>,
    ) -> anyhow::Result<oneshot::Receiver<anyhow::Result<Written>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                op: Some(op),
                from,
                reply: Some(reply),
            })
            .await
            .map_err(|_| anyhow!("the writer has stopped"))?;
        Ok(rx)
    }

    /// Queues `op` without waiting for it (acknowledgements, last-login times). It is
    /// committed with the next group, and before [`Writer::flush`] returns.
    pub fn spawn(&self, op: WriteOp) {
        let job = Job {
            op: Some(op),
            from: None,
            reply: None,
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            // Rare: the queue is full; wait for room off the caller's path.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(job).await;
            });
        }
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                op: None,
                from: None,
                reply: Some(reply),
            })
            .await
            .map_err(|_| anyhow!("the writer has stopped"))?;
        rx.await?.map(|_| ())
    }
}

fn run(mut rx: mpsc::Receiver<Job>, store: &dyn Store, deliver: &dyn Deliver, commits: &AtomicU64) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut ops: Vec<WriteOp> = Vec::with_capacity(MAX_BATCH);
    // Said once when the disk fills and once when it has room again, not once per batch.
    let mut disk_full = false;
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Ops move into the batch and stay there for delivery, so bodies are not cloned.
        let mut op_of: Vec<Option<usize>> = Vec::with_capacity(jobs.len());
        let mut from_of: Vec<Option<Arc<str>>> = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            op_of.push(job.op.take().map(|op| {
                ops.push(op);
                ops.len() - 1
            }));
            from_of.push(job.from.take());
        }
        let result = if ops.is_empty() {
            Ok(Vec::new())
        } else {
            let result = store.write_batch(&ops);
            if result.is_ok() {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            result
        };
        match result {
            Ok(outcomes) => {
                if std::mem::take(&mut disk_full) && !ops.is_empty() {
                    tracing::info!("the disk has room again; writes are committed again");
                }
                let mut reach = hand_over(deliver, &ops, &outcomes, &op_of, &from_of);
                for (job, index) in jobs.drain(..).zip(&op_of) {
                    let written = match index {
                        Some(i) => Written {
                            outcome: outcomes[*i].clone(),
                            reach: std::mem::replace(&mut reach[*i], Reach::Now(false)),
                        },
                        None => Written {
                            outcome: WriteOutcome::Done,
                            reach: Reach::Now(false),
                        },
                    };
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Ok(written));
                    }
                }
            }
            Err(e) if e.is::<DiskFull>() => {
                if !std::mem::replace(&mut disk_full, true) {
                    tracing::error!(
                        "the disk holding the database is full: writes are refused until there \
                         is room again"
                    );
                }
                for job in jobs.drain(..) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(DiskFull.into()));
                    }
                }
            }
            Err(e) => {
                tracing::error!("committing a batch of {} writes failed: {e:#}", ops.len());
                // An unreachable store keeps its type, so callers answer UNAVAILABLE.
                let unavailable = e.downcast_ref::<Unavailable>();
                for job in jobs.drain(..) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(match unavailable {
                            Some(u) => u.clone().into(),
                            None => anyhow!("storage failure: {e:#}"),
                        }));
                    }
                }
            }
        }
        ops.clear();
    }
}

/// Gives the batch's appended messages to `deliver`; per op, whether it reached a live stream.
fn hand_over(
    deliver: &dyn Deliver,
    ops: &[WriteOp],
    outcomes: &[WriteOutcome],
    op_of: &[Option<usize>],
    from_of: &[Option<Arc<str>>],
) -> Vec<Reach> {
    let mut from = vec![""; ops.len()];
    for (index, name) in op_of.iter().zip(from_of) {
        if let (Some(i), Some(name)) = (index, name) {
            from[*i] = name;
        }
    }
    let mut which = Vec::new();
    let mut batch = Vec::new();
    for (i, (op, outcome)) in ops.iter().zip(outcomes).enumerate() {
        if let (
            WriteOp::Append {
                recipient,
                message_id,
                body,
                sent_ms,
                ..
            },
            WriteOutcome::Appended { seq, duplicate },
        ) = (op, outcome)
        {
            which.push(i);
            batch.push(Committed {
                recipient: *recipient,
                from: from[i],
                seq: *seq,
                message_id,
                body,
                sent_ms: *sent_ms,
                duplicate: *duplicate,
            });
        }
    }
    let mut reach: Vec<Reach> = ops.iter().map(|_| Reach::Now(false)).collect();
    if !batch.is_empty() {
        for (i, reached) in which.into_iter().zip(deliver.deliver(&batch)) {
            reach[i] = reached;
        }
    }
    reach
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::server::store::sqlite::SqliteStore;

    /// (seq, from, body, duplicate, already in the store) of one delivered message.
    type Seen = (u64, String, String, bool, bool);

    /// Records what delivery saw, and whether the store already held it then.
    struct Recorder {
        store: Arc<dyn Store>,
        seen: Mutex<Vec<Seen>>,
    }

    impl Deliver for Recorder {
        fn deliver(&self, batch: &[Committed<'_>]) -> Vec<Reach> {
            let mut seen = self.seen.lock().unwrap();
            for m in batch {
                let stored = self
                    .store
                    .inbox_page(m.recipient, m.seq - 1, 1)
                    .unwrap()
                    .iter()
                    .any(|row| row.seq == m.seq && row.body == m.body);
                seen.push((m.seq, m.from.into(), m.body.into(), m.duplicate, stored));
            }
            // Say "live" for even seqs, so the answer can be traced back to the caller.
            batch.iter().map(|m| Reach::Now(m.seq % 2 == 0)).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_never_answers_reads_as_stored_after_the_wait() {
        let (_answer, later) = oneshot::channel::<bool>();
        assert!(!Reach::Later(later).reached().await);
        let (answer, later) = oneshot::channel();
        answer.send(true).unwrap();
        assert!(Reach::Later(later).reached().await);
        let (answer, later) = oneshot::channel::<bool>();
        drop(answer);
        assert!(!Reach::Later(later).reached().await);
    }

    async fn user(writer: &Writer, name: &str) -> UserId {
        match writer
            .write(WriteOp::CreateUser {
                name: name.into(),
                name_key: name.into(),
                password_hash: "x".into(),
                created_ms: 0,
            })
            .await
            .unwrap()
        {
            WriteOutcome::Created(id) => id,
            other => panic!("creating {name}: {other:?}"),
        }
    }

    fn append(recipient: UserId, sender: UserId, id: &str, body: &str) -> WriteOp {
        WriteOp::Append {
            recipient,
            sender,
            message_id: id.into(),
            body: body.into(),
            sent_ms: 1,
            max_inbox: 100,
        }
    }

    #[tokio::test]
    async fn delivery_sees_each_message_after_its_commit_and_its_answer_reaches_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
        let recorder = Arc::new(Recorder {
            store: store.clone(),
            seen: Mutex::default(),
        });
        let (writer, _thread) = Writer::start(store, recorder.clone());
        let (alice, bob) = (user(&writer, "alice").await, user(&writer, "bob").await);
        let mut pending = Vec::new();
        for (id, body) in [("m1", "one"), ("m2", "two"), ("m1", "one again")] {
            let rx = writer
                .submit(append(bob, alice, id, body), Some("alice".into()))
                .await
                .unwrap();
            pending.push(rx);
        }
        writer.spawn(WriteOp::Ack { user: bob, upto: 0 });
        let mut outcomes = Vec::new();
        for rx in pending {
            let written = rx.await.unwrap().unwrap();
            outcomes.push((written.outcome, written.reach.reached().await));
        }
        writer.flush().await.unwrap();
        assert_eq!(
            outcomes,
            vec![
                (
                    WriteOutcome::Appended {
                        seq: 1,
                        duplicate: false
                    },
                    false
                ),
                (
                    WriteOutcome::Appended {
                        seq: 2,
                        duplicate: false
                    },
                    true
                ),
                (
                    WriteOutcome::Appended {
                        seq: 1,
                        duplicate: true
                    },
                    false
                ),
            ]
        );
        let seen = recorder.seen.lock().unwrap().clone();
        let expect = |seq: u64, body: &str, duplicate: bool| {
            (
                seq,
                "alice".to_owned(),
                body.to_owned(),
                duplicate,
                !duplicate,
            )
        };
        // The duplicate carries the resent body; the stored one is the first.
        assert_eq!(
            seen,
            vec![
                expect(1, "one", false),
                expect(2, "two", false),
                expect(1, "one again", true)
            ]
        );
        assert!(
            writer.commits() >= 2,
            "user creation and the appends were committed"
        );
    }
}
