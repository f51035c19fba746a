//! `confab bench --soak DURATION`: many users connected for a long time, sending, logging out
//! and in (some as killed clients) at a steady, modest rate, while the server's resident memory
//! and open files are sampled from /proc. Fails, with a sentence and a non-zero exit, if either
//! keeps growing at the end (the rule is in `growth.rs`), if an acknowledged message never
//! reaches its recipient, or if more than [`MAX_ERROR_FRACTION`] of the sends fail.
//!
//! - `user.rs`: one user's session, stream, heartbeats, and the ledger of acknowledged and
//!   received messages.
//! - `growth.rs`: the growth rule.
//! - `report.rs`: the samples and what is printed.

mod growth;
mod report;
mod user;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::{
    report::{Counts, Samples, SoakReport},
    user::{Ledger, SoakUser},
};
use super::{
    args::{ServerSource, Settings, Soak},
    confab::ConfabTarget,
    progress::Progress,
    spawn,
    target::Target,
};
use crate::pb;

/// More failed sends than this fraction fails the soak: the server was refusing work.
const MAX_ERROR_FRACTION: f64 = 0.01;
/// How long, after the load stops and every user is back online, the last messages may take.
const DRAIN: Duration = Duration::from_secs(30);

/// Runs the soak `soak` describes against the server `settings` names (or one it spawns).
///
/// # Errors
/// The server cannot be started or reached, users cannot log in, or the soak failed its rules.
pub(crate) async fn run(
    settings: &Settings,
    soak: &Soak,
    progress: Progress,
) -> anyhow::Result<()> {
    let (url, pid, spawned) = match &settings.server {
        ServerSource::Spawn => {
            let server = spawn::confab().await?;
            (server.url.clone(), Some(server.pid), Some(server))
        }
        ServerSource::External { url, pid } => (url.clone(), *pid, None),
    };
    let pid =
        pid.context("--soak samples the server's memory: give --server-pid or --spawn-server")?;
    let result = soak_on(&url, pid, settings, soak, progress).await;
    if let Some(server) = spawned {
        server.stop().await;
    }
    let report = result?;
    if settings.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(failure) = report.failure() {
        bail!("{failure}");
    }
    Ok(())
}

async fn soak_on(
    url: &str,
    pid: u32,
    settings: &Settings,
    soak: &Soak,
    progress: Progress,
) -> anyhow::Result<SoakReport> {
    let names: Vec<String> = (0..settings.users).map(|i| settings.user(i)).collect();
    let ticker = progress.show("soak: registering", String::new);
    ConfabTarget::new(url.to_owned(), Some(pid))
        .register(&names, settings.concurrency)
        .await?;
    ticker.finish().await;

    let ledger = Arc::new(Ledger::default());
    let users: Arc<Vec<Arc<SoakUser>>> = Arc::new(
        names
            .into_iter()
            .map(|name| Arc::new(SoakUser::new(name, url.to_owned(), ledger.clone())))
            .collect(),
    );
    let connected = Arc::new(AtomicU64::new(0));
    let ticker = progress.show("soak: logging in", {
        let (connected, n) = (connected.clone(), users.len());
        move || format!("{}/{n}", connected.load(Ordering::Relaxed))
    });
    let mut logins = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
    for user in users.iter() {
        let (user, slots, connected) = (user.clone(), slots.clone(), connected.clone());
        logins.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            user.login().await?;
            connected.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(())
        });
    }
    while let Some(done) = logins.join_next().await {
        done??;
    }
    ticker.finish().await;

    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut load = JoinSet::new();
    load.spawn(send(
        users.clone(),
        ledger.clone(),
        counts.clone(),
        soak.rate,
        stop.clone(),
    ));
    load.spawn(churn(
        users.clone(),
        counts.clone(),
        soak.churn,
        stop.clone(),
    ));
    let samples = Samples::default();
    let ticker = progress.show("soak", {
        let (counts, ledger, total) = (counts.clone(), ledger.clone(), soak.duration);
        move || {
            let (acked, _) = ledger.missing();
            format!(
                "{:.0}s/{:.0}s, {acked} messages acknowledged, {} logins",
                started.elapsed().as_secs_f64(),
                total.as_secs_f64(),
                counts.logins.load(Ordering::Relaxed)
            )
        }
    });
    let mut every = tokio::time::interval(soak.sample_every);
    while started.elapsed() < soak.duration {
        every.tick().await;
        samples.take(pid, started.elapsed())?;
    }
    stop.cancel();
    while load.join_next().await.is_some() {}
    ticker.finish().await;

    // Everyone back online, so every stored message can be replayed, then wait for the last.
    for user in users.iter().filter(|u| !u.online()) {
        user.login().await?;
        counts.logins.fetch_add(1, Ordering::Relaxed);
    }
    let deadline = Instant::now() + DRAIN;
    while ledger.missing().1 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (acked, lost) = ledger.missing();
    let report = SoakReport::new(settings.users, soak, &counts, acked, lost, &samples);
    Ok(report)
}

/// Sends `rate` direct messages a second, each from a random online user to another user.
async fn send(
    users: Arc<Vec<Arc<SoakUser>>>,
    ledger: Arc<Ledger>,
    counts: Arc<Counts>,
    rate: f64,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    for id in 0u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        let (from, to) = two(users.len());
        let Some(mut chat) = users[from].chat() else {
            continue; // logging out or in right now
        };
        let (to, ledger, counts) = (users[to].name.clone(), ledger.clone(), counts.clone());
        counts.sent.fetch_add(1, Ordering::Relaxed);
        in_flight.spawn(async move {
            let request = pb::SendMessageRequest {
                to,
                body: Ledger::body(id),
                message_id: format!("soak-{id}"),
            };
            match chat.send_message(request).await {
                Ok(_) => ledger.acked(id),
                Err(status) => counts.failed(&status),
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
    Ok(())
}

/// Logs `churn` users a second out and back in; every fourth is a killed client instead.
async fn churn(
    users: Arc<Vec<Arc<SoakUser>>>,
    counts: Arc<Counts>,
    churn: f64,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if churn <= 0.0 {
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / churn));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    for n in 0u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        let user = users[rand::thread_rng().gen_range(0..users.len())].clone();
        if !user.online() {
            continue; // still coming back from an earlier turn
        }
        let counts = counts.clone();
        in_flight.spawn(async move {
            let killed = n % 4 == 3;
            match user.logout(killed).await {
                Ok(()) if killed => _ = counts.kills.fetch_add(1, Ordering::Relaxed),
                Ok(()) => _ = counts.logouts.fetch_add(1, Ordering::Relaxed),
                Err(e) => counts.churn_failed(&e),
            }
            match user.login().await {
                Ok(()) => _ = counts.logins.fetch_add(1, Ordering::Relaxed),
                Err(e) => counts.churn_failed(&e),
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
    Ok(())
}

/// Two different indices below `n` (n ≥ 2).
fn two(n: usize) -> (usize, usize) {
    let mut rng = rand::thread_rng();
    let from = rng.gen_range(0..n);
    let to = (from + rng.gen_range(1..n)) % n;
    (from, to)
}
