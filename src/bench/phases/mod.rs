//! The phases, one file each, written once against [`Target`] so confab and the relay run
//! the same code. [`run`] runs the selected ones in order on one target.
//!
//! Phases 1–4 and 8 (users joining while others are online) run on any target; 5 (login storm),
//! 6 (peer path) and 7 (a file over it) need logins and peer keys, which only confab has. Every phase that needs users gets the ones phase 1 connected, even
//! when phase 1 itself was not asked to be reported.

mod broadcast;
mod connect;
mod file;
mod join;
mod offered;
mod peer;
mod saturation;
mod storm;

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use super::{
    args::Settings, cpu, proc, progress::Progress, report::TargetReport, stats::Sink,
    target::Target,
};

/// What every phase of one target works with.
pub(crate) struct Ctx<'a, T: Target> {
    pub(crate) target: Arc<T>,
    pub(crate) settings: &'a Settings,
    pub(crate) progress: Progress,
    pub(crate) sink: Arc<Sink>,
    /// Connected and subscribed by phase 1; index i is `settings.user(i)`.
    pub(crate) users: Vec<Arc<T::User>>,
}

impl<T: Target> Ctx<'_, T> {
    /// The server's memory and CPU now, when its pid is known and readable.
    fn server(&self) -> Option<proc::Sample> {
        self.target.pid().and_then(|pid| proc::sample(pid).ok())
    }

    /// CPU so far of every process serving the target, by part.
    fn cpu(&self) -> Option<cpu::Ticks> {
        self.target.processes().sample()
    }
}

/// The load generator's own memory and CPU now.
fn bench() -> Option<proc::Sample> {
    proc::sample(std::process::id()).ok()
}

/// CPU seconds between two samples.
fn cpu_seconds(before: Option<proc::Sample>, after: Option<proc::Sample>) -> Option<f64> {
    let (b, a) = (before?, after?);
    Some(a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / proc::clk_tck() as f64)
}

/// Runs the phases `settings` selects on `target`.
///
/// # Errors
/// A phase could not run (the server is unreachable, refuses logins, …).
pub(crate) async fn run<T: Target>(
    target: Arc<T>,
    settings: &Settings,
    progress: Progress,
) -> anyhow::Result<TargetReport> {
    let confab = target.confab_url().is_some();
    let runs = |n: u8| settings.runs(n) && (confab || n <= 4 || n == 8);
    let mut report = TargetReport::new(target.name());
    let mut ctx = Ctx {
        target,
        settings,
        progress,
        sink: Sink::new(),
        users: Vec::new(),
    };
    if (1..=5).any(runs) {
        let (users, connected) = connect::run(&ctx).await?;
        ctx.users = users;
        if runs(1) {
            report.connect = Some(connected);
        }
    }
    if runs(2) {
        let label = format!("{} 2 offered", ctx.target.name());
        report.offered = Some(offered::run(&ctx, &label, offered::Path::Unary).await?);
        if confab {
            let label = format!("{} 2 offered, SendStream", ctx.target.name());
            report.offered_stream = Some(offered::run(&ctx, &label, offered::Path::Stream).await?);
        }
    }
    if runs(3) {
        report.saturation = saturation::run(&ctx).await?;
    }
    if runs(4) {
        report.broadcast = Some(broadcast::run(&ctx).await?);
    }
    if runs(5) {
        report.storm = Some(storm::run(&ctx).await?);
    }
    if runs(6) {
        report.peer = Some(peer::run(&ctx).await?);
    }
    if runs(7) {
        report.file = Some(file::run(&ctx).await?);
    }
    if runs(8) {
        report.join = Some(join::run(&ctx).await?);
    }
    report.sessions_ended_by_server = ctx.sink.ended();
    report.stray_messages = ctx.sink.stray();
    (report.streams_lost, report.first_stream_loss) = ctx.sink.lost();
    Ok(report)
}

/// Failed operations of a phase: how many, and the first reason (they are usually all alike).
#[derive(Default)]
pub(crate) struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    fn add(&self, error: &anyhow::Error) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!("{error:#}"));
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn first(&self) -> Option<String> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs `f(0..n)` with at most `concurrency` in flight; the results in index order. `done`
/// counts completions for the progress line.
async fn parallel<R, F, Fut>(
    n: usize,
    concurrency: usize,
    done: Arc<AtomicUsize>,
    f: F,
) -> anyhow::Result<Vec<R>>
where
    R: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<R>> + Send,
{
    // Workers take the next index rather than one task per item: bounded, and no semaphore.
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (next, done, f) = (next.clone(), done.clone(), f.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(out);
                }
                out.push((i, f(i).await?));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(worker) = workers.join_next().await {
        all.extend(worker??);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

/// Two different users out of `n` (n ≥ 2) on different nodes of `nodes`, uniformly.
fn pair(rng: &mut impl rand::Rng, n: usize, nodes: usize) -> (usize, usize) {
    let from = rng.gen_range(0..n);
    (from, other(rng, from, n, nodes))
}

/// A recipient for `from` out of `n` users (n ≥ 2), uniformly among those on another node
/// (user i is on node i mod `nodes`; with one node, among all the others).
fn other(rng: &mut impl rand::Rng, from: usize, n: usize, nodes: usize) -> usize {
    // Users 0 and 1 are on different nodes, so someone qualifies; with N nodes a draw lands on
    // another node (N-1)/N of the time.
    loop {
        let to = rng.gen_range(0..n - 1);
        let to = if to >= from { to + 1 } else { to };
        if nodes <= 1 || to % nodes != from % nodes {
            return to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn pairs_never_send_to_themselves_and_cover_everyone() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [0u32; 5];
        for _ in 0..1000 {
            let (from, to) = pair(&mut rng, 5, 1);
            assert_ne!(from, to);
            seen[to] += 1;
            assert_ne!(other(&mut rng, from, 5, 1), from);
        }
        assert!(seen.iter().all(|&c| c > 100), "{seen:?}");
    }

    #[test]
    fn across_nodes_every_recipient_is_on_another_node() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut seen = [0u32; 7];
        for _ in 0..3000 {
            let (from, to) = pair(&mut rng, 7, 3);
            assert_ne!(from % 3, to % 3, "{from} → {to} stay on one node");
            seen[to] += 1;
        }
        assert!(seen.iter().all(|&c| c > 100), "{seen:?}");
        // Fewer users than nodes, and the only other user on another node.
        for from in 0..2 {
            assert_eq!(other(&mut rng, from, 2, 3), 1 - from);
        }
    }

    #[tokio::test]
    async fn parallel_keeps_order_and_bounds_concurrency() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let out = parallel(50, 4, done.clone(), move |i| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(i * 2)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert_eq!(done.load(Ordering::SeqCst), 50);
    }

    #[tokio::test]
    async fn parallel_stops_at_the_first_error() {
        let err = parallel(10, 2, Arc::default(), |i| async move {
            if i == 3 {
                anyhow::bail!("item 3 failed")
            }
            Ok(i)
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("item 3"));
    }
}
