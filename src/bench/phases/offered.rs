//! Phase 2: direct messages at a fixed offered rate, open loop, between random pairs of users,
//! once with unary `SendMessage` and, where the server has it, once over `SendStream`.
//!
//! The pacer (`schedule.rs`) issues send `i` at `start + i / rate` whether or not earlier sends
//! have been answered: a unary send in a task of its own, a streamed one queued on the sender's
//! own `SendStream` (one per user, opened before the clock starts, its answers read by a task
//! per stream). The body carries the scheduled time, and the recipient's reader measures from
//! it. At the end every send is awaited (every stream answered) and the arrivals are given
//! `--grace` to come in: anything still missing is undelivered. Phase 5 runs this twice.
//! Against a cluster every message goes to a user on another node. The server's CPU (every
//! process of it the bench knows) is weighed from the first send until the last arrival.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, anyhow};
use rand::{SeedableRng, rngs::StdRng};
use tokio_util::task::TaskTracker;

use super::{Ctx, Failures, pair};
use crate::bench::{
    cpu,
    report::Offered,
    schedule::{self, Schedule},
    send_stream::StreamQueue,
    stats::{Recorder, ns_at},
    target::{Target, User},
};

/// How phase 2 sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// `SendMessage`, one call per message.
    Unary,
    /// `SendStream`, one stream per sender.
    Stream,
}

impl Path {
    /// The name reports use, as phase 3 does.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Path::Unary => "unary",
            Path::Stream => "stream",
        }
    }
}

pub(super) async fn run<T: Target>(
    ctx: &Ctx<'_, T>,
    label: &str,
    path: Path,
) -> anyhow::Result<Offered> {
    let s = ctx.settings;
    let recorder = Recorder::new();
    let failures = Arc::new(Failures::default());
    let issued = Arc::new(AtomicU64::new(0));
    let sends = TaskTracker::new();
    let queues = match path {
        Path::Unary => Vec::new(),
        Path::Stream => open_streams(ctx, &sends, &failures).await?,
    };
    ctx.sink.measure(Some(recorder.clone()));

    let ticker = ctx.progress.show(label, {
        let (recorder, failures, issued) = (recorder.clone(), failures.clone(), issued.clone());
        move || {
            format!(
                "sent {} delivered {} errors {}",
                issued.load(Ordering::Relaxed),
                recorder.received(),
                failures.count()
            )
        }
    });

    let issue = {
        let users = ctx.users.clone();
        let names: Vec<Arc<str>> = users.iter().map(|u| Arc::from(u.name())).collect();
        let (recorder, failures, issued) = (recorder.clone(), failures.clone(), issued.clone());
        let sends = sends.clone();
        let runtime = tokio::runtime::Handle::current();
        let body_bytes = s.body_bytes;
        let nodes = ctx.target.nodes();
        // Seeded by the run's tag: a different but reproducible-within-a-run pair sequence.
        let mut rng = StdRng::seed_from_u64(recorder.tag());
        move |i: u64, due| {
            let (from, to) = pair(&mut rng, users.len(), nodes);
            let sender = users[from].clone();
            let to = names[to].clone();
            let body = recorder.body(ns_at(due), body_bytes);
            let id = format!("{:016x}-{i}", recorder.tag());
            issued.fetch_add(1, Ordering::Relaxed);
            if let Some(queue) = queues.get(from) {
                if let Err(e) = queue.try_send(&to, id, body) {
                    failures.add(&e);
                }
                return;
            }
            let failures = failures.clone();
            sends.spawn_on(
                async move {
                    if let Err(e) = sender.send(&to, id, body).await {
                        failures.add(&e);
                    }
                },
                &runtime,
            );
        }
    };
    let cpu_before = ctx.cpu();
    // The pacer owns the streams' queues: once it is done they are dropped, the streams end
    // after their last answer, and their readers with them.
    let paced = schedule::run(Schedule::new(s.rate), s.duration, issue).await?;
    sends.close();
    sends.wait().await;
    let expected = paced.issued.saturating_sub(failures.count());
    recorder.wait_for(expected, s.grace).await;
    let cpu_after = ctx.cpu();
    ticker.finish().await;
    ctx.sink.measure(None);

    let delivered = recorder.received();
    Ok(Offered {
        path: path.name(),
        rate: s.rate,
        seconds: s.duration.as_secs_f64(),
        sent: paced.issued,
        delivered,
        errors: failures.count(),
        delivered_fraction: if paced.issued == 0 {
            0.0
        } else {
            delivered as f64 / paced.issued as f64
        },
        latency: recorder.latency(),
        pacer_lag: paced.lag(),
        server_cpu: cpu::per_message(cpu_before.as_ref(), cpu_after.as_ref(), delivered),
        first_error: failures.first(),
    })
}

/// One `SendStream` per user, in user order, each with a task in `readers` that reads its
/// answers until the stream ends and counts refusals in `failures`.
async fn open_streams<T: Target>(
    ctx: &Ctx<'_, T>,
    readers: &TaskTracker,
    failures: &Arc<Failures>,
) -> anyhow::Result<Vec<StreamQueue>> {
    let mut queues = Vec::with_capacity(ctx.users.len());
    for user in &ctx.users {
        let (queue, mut answers) = user
            .open_stream()
            .await?
            .with_context(|| format!("{} has no streaming send path", ctx.target.name()))?
            .split();
        queues.push(queue);
        let failures = failures.clone();
        readers.spawn(async move {
            loop {
                match answers.next().await {
                    Ok(Some(Ok(()))) => {}
                    Ok(Some(Err(refused))) => failures.add(&anyhow!(refused)),
                    Ok(None) => break,
                    Err(e) => {
                        failures.add(&e);
                        break;
                    }
                }
            }
        });
    }
    Ok(queues)
}
