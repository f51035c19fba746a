//! Phase 1: register, connect and log in every user, then subscribe every user, and weigh what
//! that cost the server: RSS after all are live minus RSS before any connected, per user, with
//! a sample in between that separates the connection and session from the stream.
//!
//! Logins all happen before any stream opens. Otherwise each login would push a presence event
//! to every stream already open — N²/2 events (50 million for 10 000 users) that would make
//! this phase a presence benchmark; phase 5 measures that cost on purpose. The "before" sample
//! is taken after registration, so accounts (which exist whether or not anyone is online) are
//! not counted as per-connection memory.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::Context;

use super::{Ctx, parallel};
use crate::bench::{
    report::Connect,
    target::{Target, User},
};

pub(super) async fn run<T: Target>(
    ctx: &Ctx<'_, T>,
) -> anyhow::Result<(Vec<Arc<T::User>>, Connect)> {
    let s = ctx.settings;
    let n = s.users;
    let label = format!("{} 1 connect", ctx.target.name());
    let names: Vec<String> = (0..n).map(|i| s.user(i)).collect();

    let started = Instant::now();
    let ticker = ctx
        .progress
        .show(&label, move || format!("registering {n} users"));
    ctx.target.register(&names, s.concurrency).await?;
    ticker.finish().await;
    let register_s = started.elapsed().as_secs_f64();
    let before = ctx.server();

    let done = Arc::new(AtomicUsize::new(0));
    let ticker = ctx.progress.show(&label, {
        let done = done.clone();
        move || format!("connected {}/{n}", done.load(Ordering::Relaxed))
    });
    let started = Instant::now();
    let names = Arc::new(names);
    let target = ctx.target.clone();
    let users = parallel(n, s.concurrency, done, move |i| {
        let (target, names) = (target.clone(), names.clone());
        async move { target.connect(&names[i]).await.map(Arc::new) }
    })
    .await
    .context("connecting users")?;
    let login_s = started.elapsed().as_secs_f64();
    let logged_in = ctx.server();
    ticker.finish().await;

    let done = Arc::new(AtomicUsize::new(0));
    let ticker = ctx.progress.show(&label, {
        let done = done.clone();
        move || format!("subscribed {}/{n}", done.load(Ordering::Relaxed))
    });
    let started = Instant::now();
    let (all, sink) = (Arc::new(users), ctx.sink.clone());
    let each = all.clone();
    parallel(n, s.concurrency, done, move |i| {
        let (user, sink) = (each[i].clone(), sink.clone());
        async move { user.subscribe(sink).await }
    })
    .await
    .context("subscribing users")?;
    let subscribe_s = started.elapsed().as_secs_f64();
    let after = ctx.server();
    ticker.finish().await;

    // The workers, and with them every other handle on `all`, are gone.
    let users = Arc::try_unwrap(all).unwrap_or_else(|all| all.as_ref().clone());
    let rss = |s: Option<crate::bench::proc::Sample>| s.map(|s| s.rss_kib);
    let memory_per_user_kib = match (before, after) {
        (Some(b), Some(a)) => Some(a.rss_kib.saturating_sub(b.rss_kib) as f64 / n as f64),
        _ => None,
    };
    Ok((
        users,
        Connect {
            users: n,
            register_per_s: n as f64 / register_s,
            login_per_s: n as f64 / login_s,
            subscribe_per_s: n as f64 / subscribe_s,
            rss_before_kib: rss(before),
            rss_logged_in_kib: rss(logged_in),
            rss_after_kib: rss(after),
            memory_per_user_kib,
        },
    ))
}
