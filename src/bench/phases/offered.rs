//! Phase 2: direct messages at a fixed offered rate, open loop, between random pairs of users.
//!
//! The pacer (`schedule.rs`) issues send `i` at `start + i / rate` whether or not earlier sends
//! have been answered, each in a task of its own; the body carries the scheduled time, and the
//! recipient's reader measures from it. At the end every send is awaited and the arrivals are
//! given `--grace` to come in: anything still missing is undelivered. Phase 5 runs this twice.
//! Against a cluster every message goes to a user on another node. The server's CPU (every
//! process of it the bench knows) is weighed from the first send until the last arrival.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use rand::{SeedableRng, rngs::StdRng};
use tokio_util::task::TaskTracker;

use super::{Ctx, Failures, pair};
use crate::bench::{
    cpu,
    report::Offered,
    schedule::{self, Schedule},
    stats::{Recorder, ns_at},
    target::{Target, User},
};

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>, label: &str) -> anyhow::Result<Offered> {
    let s = ctx.settings;
    let recorder = Recorder::new();
    ctx.sink.measure(Some(recorder.clone()));
    let failures = Arc::new(Failures::default());
    let issued = Arc::new(AtomicU64::new(0));
    let sends = TaskTracker::new();

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
            let failures = failures.clone();
            issued.fetch_add(1, Ordering::Relaxed);
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
