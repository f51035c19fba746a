//! Phase 5: a login storm during the offered load of phase 2. The load runs twice for
//! `--duration`: quiet, then while `--storm-users` extra accounts, each on its own connection,
//! log in and straight out again as fast as the server lets them. Each login and logout makes
//! the server tell every online user (presence), so the storm costs what it would in real life.
//! Reported: direct-message p99 in each window and their ratio.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Failures, offered, parallel};
use crate::{
    bench::{confab, report::Storm, target::Target},
    client::api,
};

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>) -> anyhow::Result<Storm> {
    let s = ctx.settings;
    let url = ctx
        .target
        .confab_url()
        .context("the login storm needs a confab server")?;
    let names: Vec<String> = (0..s.storm_users).map(|i| s.storm_user(i)).collect();
    ctx.target.register(&names, s.concurrency).await?;
    // Connections are opened before the storm: it is a storm of logins, not of TCP handshakes.
    let url: Arc<str> = Arc::from(url);
    let channels = parallel(names.len(), s.concurrency, Arc::default(), move |_| {
        let url = url.clone();
        async move { api::connect(&url, None).await }
    })
    .await?;

    let name = ctx.target.name();
    let quiet = offered::run(ctx, &format!("{name} 5 quiet"), offered::Path::Unary).await?;

    let stop = CancellationToken::new();
    let logins = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Failures::default());
    let mut storm = tokio::task::JoinSet::new();
    for (channel, name) in channels.into_iter().zip(names) {
        let (stop, logins, failures) = (stop.clone(), logins.clone(), failures.clone());
        storm.spawn(async move {
            while !stop.is_cancelled() {
                match confab::login_logout(&channel, &name).await {
                    Ok(()) => logins.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.add(&e);
                        0
                    }
                };
            }
        });
    }
    let started = Instant::now();
    let during = offered::run(ctx, &format!("{name} 5 storm"), offered::Path::Unary).await;
    stop.cancel();
    let storm_seconds = started.elapsed().as_secs_f64();
    let storm_logins = logins.load(Ordering::Relaxed);
    while storm.join_next().await.is_some() {}
    let during = during?;

    let p99_ratio = if quiet.latency.p99_us > 0.0 {
        during.latency.p99_us / quiet.latency.p99_us
    } else {
        0.0
    };
    Ok(Storm {
        quiet,
        storm: during,
        storm_users: s.storm_users,
        storm_logins,
        storm_logins_per_s: storm_logins as f64 / storm_seconds,
        storm_errors: failures.count(),
        storm_first_error: failures.first(),
        p99_ratio,
    })
}
