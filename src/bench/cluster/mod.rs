//! `confab bench` against a cluster (issue 13): several `--server` URLs, or `--spawn-cluster N`.
//!
//! Users are spread round-robin over the nodes and every direct message goes to a user on
//! another node (see `Target::nodes`), so what is measured is the cross-node path: the sender's
//! node commits to PostgreSQL, publishes on NATS, the recipient's node pushes onto its stream.
//!
//! `--spawn-cluster N` measures three targets one after the other in the same run, so their
//! ratios compare like with like on a shared machine: `sqlite` (one node, today's default),
//! `postgres` (one node on PostgreSQL, in-process bus) and `cluster` (N nodes on PostgreSQL and
//! NATS). Server CPU is summed over every process of each — nodes, the postmaster and its
//! children, nats-server — and [`Ratios`] sets the two against the SQLite node. Against URLs it
//! did not start the bench knows no process, and says so instead of guessing.

mod engines;

use std::{fmt::Write as _, sync::Arc};

use anyhow::bail;
use serde::Serialize;

use self::engines::Engines;
use super::{
    args::{ClusterSource, Settings},
    confab::ConfabTarget,
    cpu::{Part, Processes},
    phases,
    progress::Progress,
    report::{Saturation, TargetReport},
    spawn::{self, Spawned},
};

/// Measures the cluster `source` names: the targets' reports, and for `--spawn-cluster` the
/// ratios against the SQLite node.
///
/// # Errors
/// A server could not be started or reached, or a phase could not run.
pub(crate) async fn run(
    settings: &Settings,
    source: &ClusterSource,
    progress: Progress,
) -> anyhow::Result<(Vec<TargetReport>, Option<Ratios>)> {
    match source {
        ClusterSource::External { urls } => {
            progress.note(
                "note: the bench did not start these nodes, so their CPU and memory are not \
                 available (--spawn-cluster measures them)",
            );
            let processes = Processes {
                nodes: Vec::new(),
                postgres: Part::Unknown,
                nats: Part::Unknown,
            };
            let target = ConfabTarget::nodes("cluster", urls.clone(), processes);
            let report = measure(target, settings, progress).await?;
            Ok((vec![report], None))
        }
        ClusterSource::Spawn { nodes, engines } => {
            // Registered before anything starts: an interrupted run drops the future below,
            // and with it every server it started.
            let mut signals = crate::signal::Signals::new();
            tokio::select! {
                result = spawned(settings, *nodes, engines.clone(), progress) => result,
                () = signals.recv() => bail!("interrupted; every server the run started is stopped"),
            }
        }
    }
}

/// `--spawn-cluster`: the SQLite node, the PostgreSQL node, then the cluster.
async fn spawned(
    settings: &Settings,
    nodes: usize,
    running: Option<(String, String)>,
    progress: Progress,
) -> anyhow::Result<(Vec<TargetReport>, Option<Ratios>)> {
    let mut engines = match running {
        Some((postgres, nats)) => Engines::running(postgres, nats),
        None => {
            progress.note("starting PostgreSQL and nats-server");
            Engines::start().await?
        }
    };
    let mut targets = Vec::new();

    let node = spawn::confab_node(&[]).await?;
    let processes = Processes::single(Some(node.pid));
    targets.push(run_on("sqlite", vec![node], processes, settings, progress).await?);

    let store = engines.database("single").await?;
    let node = spawn::confab_node(&["--store".into(), store]).await?;
    let processes = Processes {
        nodes: vec![node.pid],
        postgres: engines.postgres_part,
        nats: Part::Unused,
    };
    targets.push(run_on("postgres", vec![node], processes, settings, progress).await?);

    let store = engines.database("cluster").await?;
    let mut servers = Vec::new();
    for i in 1..=nodes {
        let flags = [
            "--store".into(),
            store.clone(),
            "--bus".into(),
            engines.nats.clone(),
            "--node-id".into(),
            format!("n{i}"),
        ];
        servers.push(spawn::confab_node(&flags).await?);
    }
    let processes = Processes {
        nodes: servers.iter().map(|s| s.pid).collect(),
        postgres: engines.postgres_part,
        nats: engines.nats_part,
    };
    targets.push(run_on("cluster", servers, processes, settings, progress).await?);

    engines.finish().await;
    let ratios = Ratios::new(&targets);
    Ok((targets, Some(ratios)))
}

/// Runs the phases on the nodes `servers`, then stops them.
async fn run_on(
    name: &'static str,
    servers: Vec<Spawned>,
    processes: Processes,
    settings: &Settings,
    progress: Progress,
) -> anyhow::Result<TargetReport> {
    let urls = servers.iter().map(|s| s.url.clone()).collect();
    let measured = measure(
        ConfabTarget::nodes(name, urls, processes),
        settings,
        progress,
    )
    .await;
    // The users' connections are closed by now; the next target never shares the machine
    // with these nodes.
    for server in servers {
        server.stop().await;
    }
    measured
}

async fn measure(
    target: ConfabTarget,
    settings: &Settings,
    progress: Progress,
) -> anyhow::Result<TargetReport> {
    let target = Arc::new(target.presence(settings.presence_events));
    let report = phases::run(target.clone(), settings, progress).await;
    drop(target);
    report
}

/// The PostgreSQL node and the cluster, each ÷ the SQLite node of the same run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratios {
    pub(crate) postgres: Versus,
    pub(crate) cluster: Versus,
}

/// One figure of [`Versus`].
type Figure = fn(&Versus) -> Option<f64>;

/// One target's figures ÷ the SQLite node's; `None` where either lacks the figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Versus {
    /// Phase 2: p99 at the offered rate (issue 13: the cluster's ≤ 2×).
    pub(crate) offered_p99: Option<f64>,
    /// Phase 2: server CPU per message, every process (issue 13: the cluster's ≤ 3×).
    pub(crate) offered_cpu: Option<f64>,
    /// Phase 3: delivered messages per second.
    pub(crate) unary_msgs_per_s: Option<f64>,
    pub(crate) stream_msgs_per_s: Option<f64>,
    /// Phase 3: server CPU per message, every process.
    pub(crate) unary_cpu: Option<f64>,
    pub(crate) stream_cpu: Option<f64>,
}

impl Ratios {
    fn new(targets: &[TargetReport]) -> Ratios {
        let find = |name: &str| targets.iter().find(|t| t.target == name);
        let versus = |name: &str| Versus::new(find(name), find("sqlite"));
        Ratios {
            postgres: versus("postgres"),
            cluster: versus("cluster"),
        }
    }

    /// Lines under the bench's table.
    pub(crate) fn table(&self) -> String {
        let rows: [(&str, Figure, &str); 6] = [
            ("p99 at the offered rate", |v| v.offered_p99, "cluster ≤ 2×"),
            ("server CPU / msg there", |v| v.offered_cpu, "cluster ≤ 3×"),
            ("SendMessage msgs/s", |v| v.unary_msgs_per_s, ""),
            ("SendMessage server CPU / msg", |v| v.unary_cpu, ""),
            ("SendStream msgs/s", |v| v.stream_msgs_per_s, ""),
            ("SendStream server CPU / msg", |v| v.stream_cpu, ""),
        ];
        let ratio = |r: Option<f64>| r.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
        let mut out = format!(
            "\n{:<30}  {:>8}  {:>8}  target (issue 13)\n",
            "÷ sqlite, same run", "postgres", "cluster"
        );
        for (name, figure, target) in rows {
            let line = format!(
                "  {name:<28}  {:>8}  {:>8}  {target}",
                ratio(figure(&self.postgres)),
                ratio(figure(&self.cluster))
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

fn path<'a>(r: &'a TargetReport, path: &str) -> Option<&'a Saturation> {
    r.saturation.iter().find(|s| s.path == path)
}

impl Versus {
    fn new(this: Option<&TargetReport>, sqlite: Option<&TargetReport>) -> Versus {
        let ratio = |f: &dyn Fn(&TargetReport) -> Option<f64>| {
            let (a, b) = (f(this?)?, f(sqlite?)?);
            (b > 0.0).then(|| a / b)
        };
        Versus {
            offered_p99: ratio(&|r| r.offered.as_ref().map(|o| o.latency.p99_us)),
            offered_cpu: ratio(&|r| r.offered.as_ref()?.server_cpu.as_ref()?.total_us),
            unary_msgs_per_s: ratio(&|r| path(r, "unary").map(|s| s.msgs_per_s)),
            stream_msgs_per_s: ratio(&|r| path(r, "stream").map(|s| s.msgs_per_s)),
            unary_cpu: ratio(&|r| path(r, "unary")?.server_cpu_per_msg_us),
            stream_cpu: ratio(&|r| path(r, "stream")?.server_cpu_per_msg_us),
        }
    }
}
