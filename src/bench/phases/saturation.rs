//! Phase 3: saturation, closed loop. The first `--senders` users each keep `--window` sends
//! outstanding to random recipients for `--duration`: as soon as one is answered the next goes.
//! Reported: delivered messages per second, latency (send → arrival), and the server's CPU time
//! (utime + stime from /proc) from the phase's start until the last delivery, per message —
//! summed over every process of the server the bench knows (a cluster's nodes, PostgreSQL and
//! NATS), with each part shown too. Against a cluster recipients are on another node.
//!
//! Two rows, measured one after the other on the same users: unary `SendMessage` (a task per
//! outstanding send) and, where the target has one, the streaming path `SendStream` (one
//! long-lived stream per sender, `--window` requests in flight on it, answers in order).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio_util::sync::CancellationToken;

use super::{Ctx, Failures, bench, cpu_seconds, other};
use crate::bench::{
    cpu,
    report::Saturation,
    stats::{Recorder, now_ns},
    target::{Target, User},
};

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>) -> anyhow::Result<Vec<Saturation>> {
    let mut rows = Vec::new();
    for path in [Path::Unary, Path::Stream] {
        rows.extend(measure(ctx, path).await?);
    }
    Ok(rows)
}

#[derive(Clone, Copy)]
enum Path {
    Unary,
    Stream,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Unary => "unary",
            Path::Stream => "stream",
        }
    }
}

/// What the sending tasks of one row share.
struct Load {
    recorder: Arc<Recorder>,
    failures: Failures,
    sent: AtomicU64,
    stop: CancellationToken,
    names: Vec<Arc<str>>,
    /// Recipients are on another node than their sender (see `Target::nodes`).
    nodes: usize,
    body_bytes: usize,
}

impl Load {
    /// The next message from sender `from`: (recipient, id, body).
    fn next(&self, from: usize, seq: u64) -> (Arc<str>, String, String) {
        let to = other(&mut rand::thread_rng(), from, self.names.len(), self.nodes);
        let id = format!("{:016x}-{from}-{seq}", self.recorder.tag());
        (
            self.names[to].clone(),
            id,
            self.recorder.body(now_ns(), self.body_bytes),
        )
    }
}

/// One row; `None` for the streaming path of a target without one.
async fn measure<T: Target>(ctx: &Ctx<'_, T>, path: Path) -> anyhow::Result<Option<Saturation>> {
    let s = ctx.settings;
    // Streams are opened before the clock starts: opening is not what is measured.
    let mut streams = Vec::new();
    if let Path::Stream = path {
        for user in &ctx.users[..s.senders] {
            match user.open_stream().await? {
                Some(stream) => streams.push(stream),
                None => return Ok(None),
            }
        }
    }
    let load = Arc::new(Load {
        recorder: Recorder::new(),
        failures: Failures::default(),
        sent: AtomicU64::new(0),
        stop: CancellationToken::new(),
        names: ctx.users.iter().map(|u| Arc::from(u.name())).collect(),
        nodes: ctx.target.nodes(),
        body_bytes: s.body_bytes,
    });
    ctx.sink.measure(Some(load.recorder.clone()));
    let label = format!("{} 3 saturation {}", ctx.target.name(), path.name());
    let ticker = ctx.progress.show(label, {
        let load = load.clone();
        move || {
            format!(
                "sent {} delivered {} errors {}",
                load.sent.load(Ordering::Relaxed),
                load.recorder.received(),
                load.failures.count()
            )
        }
    });

    let (server_before, bench_before) = (ctx.cpu(), bench());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match path {
        Path::Unary => {
            for from in 0..s.senders {
                for lane in 0..s.window {
                    let (load, user) = (load.clone(), ctx.users[from].clone());
                    let window = s.window as u64;
                    tasks.spawn(async move {
                        // Ids stay unique across lanes: lane + k × window.
                        let mut seq = lane as u64;
                        while !load.stop.is_cancelled() {
                            let (to, id, body) = load.next(from, seq);
                            seq += window;
                            match user.send(&to, id, body).await {
                                Ok(()) => load.sent.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    load.failures.add(&e);
                                    0
                                }
                            };
                        }
                    });
                }
            }
        }
        Path::Stream => {
            for (from, mut stream) in streams.into_iter().enumerate() {
                let (load, window) = (load.clone(), s.window);
                tasks.spawn(async move {
                    let mut seq = 0u64;
                    let mut in_flight = 0usize;
                    loop {
                        while in_flight < window && !load.stop.is_cancelled() {
                            let (to, id, body) = load.next(from, seq);
                            seq += 1;
                            if let Err(e) = stream.send(&to, id, body).await {
                                load.failures.add(&e);
                                return;
                            }
                            in_flight += 1;
                        }
                        if in_flight == 0 {
                            return;
                        }
                        match stream.next().await {
                            Ok(Ok(())) => {
                                load.sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(refused)) => load.failures.add(&anyhow::anyhow!(refused)),
                            Err(e) => {
                                load.failures.add(&e);
                                return;
                            }
                        }
                        in_flight -= 1;
                    }
                });
            }
        }
    }

    tokio::time::sleep(s.duration).await;
    load.stop.cancel();
    let delivered_in_time = load.recorder.received();
    let seconds = started.elapsed().as_secs_f64();
    while let Some(task) = tasks.join_next().await {
        task?;
    }
    let sent = load.sent.load(Ordering::Relaxed);
    load.recorder.wait_for(sent, s.grace).await;
    let (server_after, bench_after) = (ctx.cpu(), bench());
    ticker.finish().await;
    ctx.sink.measure(None);

    let delivered = load.recorder.received();
    let per_msg = |cpu: Option<f64>| {
        cpu.filter(|_| delivered > 0)
            .map(|c| c * 1e6 / delivered as f64)
    };
    let server_cpu = cpu::per_message(server_before.as_ref(), server_after.as_ref(), delivered);
    // The total over every part, when none is missing.
    let server_cpu_per_msg_us = server_cpu.as_ref().and_then(|c| c.total_us);
    Ok(Some(Saturation {
        path: path.name(),
        senders: s.senders,
        window: s.window,
        seconds,
        sent,
        delivered,
        errors: load.failures.count(),
        msgs_per_s: delivered_in_time as f64 / seconds,
        latency: load.recorder.latency(),
        server_cpu_s: server_cpu_per_msg_us.map(|us| us * delivered as f64 / 1e6),
        server_cpu_per_msg_us,
        server_cpu,
        bench_cpu_per_msg_us: per_msg(cpu_seconds(bench_before, bench_after)),
        first_error: load.failures.first(),
    }))
}
