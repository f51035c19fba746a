//! The writer: one OS thread that owns every write to the store and commits them in groups.
//!
//! Requests queue on a channel; the thread takes whatever has queued (up to [`MAX_BATCH`]),
//! applies it in one transaction, and only after the commit pushes the new direct messages onto
//! their recipients' live streams, in seq order, and answers the callers. While one commit runs
//! the next batch gathers, so a thousand concurrent senders pay a handful of fsyncs, not a
//! thousand.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot};

use super::{
    sessions::{Outbound, Pushed, Sessions},
    store::{DiskFull, Store, WriteOp, WriteOutcome},
    wire,
};

/// Most operations committed together.
pub const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer before senders wait (backpressure).
const QUEUE: usize = 16 * 1024;

/// The outcome of a write, and for an `Append` whether it reached a live stream.
#[derive(Debug, Clone)]
pub struct Written {
    /// What the store did.
    pub outcome: WriteOutcome,
    /// The new message was queued on the recipient's live stream.
    pub live: bool,
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
    /// Starts the writer thread over `store`, delivering new messages through `sessions`.
    pub fn start(
        store: Arc<dyn Store>,
        sessions: Arc<Sessions>,
    ) -> (Writer, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let handle = thread::Builder::new()
            .name("confab-writer".into())
            .spawn(move || run(rx, store.as_ref(), &sessions, &counter))
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

fn run(mut rx: mpsc::Receiver<Job>, store: &dyn Store, sessions: &Sessions, commits: &AtomicU64) {
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
        // Ops move into the batch and come back out for delivery, so bodies are not cloned.
        let mut has_op = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            has_op.push(job.op.is_some());
            if let Some(op) = job.op.take() {
                ops.push(op);
            }
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
                let mut ops_iter = ops.drain(..).zip(outcomes);
                for (job, had_op) in jobs.drain(..).zip(has_op) {
                    let written = if had_op {
                        let (op, outcome) = ops_iter.next().expect("one outcome per op");
                        let live = deliver(sessions, &op, &outcome, job.from.as_deref());
                        Written { outcome, live }
                    } else {
                        Written {
                            outcome: WriteOutcome::Done,
                            live: false,
                        }
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
                ops.clear();
                for job in jobs.drain(..) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(DiskFull.into()));
                    }
                }
            }
            Err(e) => {
                tracing::error!("committing a batch of {} writes failed: {e:#}", ops.len());
                ops.clear();
                for job in jobs.drain(..) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(anyhow!("storage failure: {e:#}")));
                    }
                }
            }
        }
    }
}

/// Pushes a newly stored message onto its recipient's stream. Returns whether it was queued
/// live (for a duplicate: whether the recipient is online, since it has or will get it).
fn deliver(sessions: &Sessions, op: &WriteOp, outcome: &WriteOutcome, from: Option<&str>) -> bool {
    let (
        WriteOp::Append {
            recipient,
            message_id,
            body,
            sent_ms,
            ..
        },
        WriteOutcome::Appended { seq, duplicate },
    ) = (op, outcome)
    else {
        return false;
    };
    let Some(session) = sessions.by_user(*recipient) else {
        return false;
    };
    if *duplicate {
        return session.subscribed();
    }
    let event = wire::direct(*seq, from.unwrap_or_default(), body, message_id, *sent_ms);
    session.push(Outbound {
        seq: *seq,
        event,
        lazy: false,
    }) == Pushed::Queued
}
