//! Phase 8: users joining while the others are online. `--users` fresh accounts connect, log in
//! and subscribe, `--concurrency` at a time, each stream open (and read) from the moment it is
//! live, so every login is presence news to every user already there: N²/2 presence events for
//! N users. Phase 1 keeps logins and streams apart on purpose; this phase is the other half, the
//! cost of a crowd arriving (a restart, the morning), which a server that pushes each login to
//! each stream one by one pays quadratically in wake-ups.
//!
//! Reported: the time until the last user is live, joins per second, the server's CPU over the
//! phase, and the presence events the joiners' streams had read by then.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::Context;

use super::{Ctx, cpu_seconds, parallel};
use crate::bench::{
    report::Join,
    target::{Target, User},
};

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>) -> anyhow::Result<Join> {
    let s = ctx.settings;
    let n = s.users;
    let label = format!("{} 8 join", ctx.target.name());
    let names: Vec<String> = (0..n).map(|i| s.join_user(i)).collect();
    let ticker = ctx
        .progress
        .show(&label, move || format!("registering {n} users"));
    ctx.target.register(&names, s.concurrency).await?;
    ticker.finish().await;

    let done = Arc::new(AtomicUsize::new(0));
    let ticker = ctx.progress.show(&label, {
        let done = done.clone();
        move || format!("joined {}/{n}", done.load(Ordering::Relaxed))
    });
    let presence_before = ctx.sink.presence();
    let before = ctx.server();
    let started = Instant::now();
    let (names, target, sink) = (Arc::new(names), ctx.target.clone(), ctx.sink.clone());
    let joined = parallel(n, s.concurrency, done, move |i| {
        let (target, names, sink) = (target.clone(), names.clone(), sink.clone());
        async move {
            let user = target.connect(&names[i]).await?;
            user.subscribe(sink).await?;
            anyhow::Ok(user)
        }
    })
    .await
    .context("joining users")?;
    let seconds = started.elapsed().as_secs_f64();
    let after = ctx.server();
    ticker.finish().await;
    let presence_events = ctx.sink.presence() - presence_before;
    // The joiners leave with the phase: their streams close, their sessions end.
    drop(joined);
    Ok(Join {
        users: n,
        seconds,
        joins_per_s: n as f64 / seconds,
        server_cpu_s: cpu_seconds(before, after),
        presence_events,
    })
}
