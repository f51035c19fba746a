//! `confab bench` (SPEC §10): a load generator that drives a server the way real clients do —
//! one gRPC connection per simulated user, real logins, live `Subscribe` streams that are read
//! and acknowledged — and reports the figures issue 6 sets targets for, optionally beside a bare
//! tonic relay measured in the same run.
//!
//! - `args.rs`: flags → checked `Settings`.
//! - `target.rs`: the `Target`/`User` traits the phases drive. `confab.rs` implements them for
//!   confab (with `send_stream.rs`, its streaming send path); `relay.rs` for the baseline that
//!   `relay_server.rs` serves.
//! - `phases/`: one file per phase, written once against the traits.
//! - `stats.rs`: one clock, bodies that carry their scheduled send time, histograms;
//!   `schedule.rs`: the open-loop pacer.
//! - `proc.rs`: server memory and CPU from /proc, the open-file limit; `spawn.rs`: servers
//!   started for the run; `cpu.rs`: CPU summed over every process of a server (a cluster's
//!   nodes, PostgreSQL, NATS).
//! - `cluster/`: several `--server` URLs or `--spawn-cluster`, with the SQLite and PostgreSQL
//!   single nodes beside the cluster.
//! - `soak/`: `--soak`, a long run at a steady load that watches the server's memory and open
//!   files instead of the phases.
//! - `streams.rs`: `--stream-rounds`, what connections that open the most streams leave behind.
//! - `report.rs`: the table and the JSON; `compare.rs`: ratios against an earlier run's JSON;
//!   `progress.rs`: the progress line on stderr.
//!
//! Deliberately a client only: it knows the server through `proto/chat.proto` and /proc, never
//! through `crate::server`, so it measures exactly what any other client would meet.

mod args;
mod cluster;
mod compare;
mod confab;
mod cpu;
mod phases;
mod proc;
mod progress;
mod relay;
mod relay_server;
mod report;
mod schedule;
mod send_stream;
mod soak;
mod spawn;
mod stats;
mod streams;
mod target;

use std::sync::Arc;

pub(crate) use args::BenchArgs;

use self::{
    args::{BenchCommand, ServerSource, Settings},
    confab::ConfabTarget,
    progress::Progress,
    relay::RelayTarget,
    report::{Machine, Report},
};

/// File descriptors the bench needs besides its users' connections (and a spawned server's
/// listener, store and log).
const SPARE_FDS: u64 = 256;

/// Runs `confab bench`.
///
/// # Errors
/// Bad flags, a server that cannot be started or reached, or a phase that could not run.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchCommand::RelayServer(relay)) = args.command {
        return relay_server::run(relay).await;
    }
    let settings = Settings::new(args)?;
    let progress = Progress::new();
    // One connection per user; phase 8's users join while phase 1's stay online, and the
    // storm's come on top. A spawned server inherits the raised limit and needs as many.
    // Checked before anything runs, so a run that cannot finish says so at once.
    let online_first = (1..=5).any(|n| settings.runs(n));
    let mut connections = settings.users;
    if online_first && settings.runs(8) {
        connections += settings.users;
    }
    if settings.runs(5) {
        connections += settings.storm_users;
    }
    let needed = connections as u64 + SPARE_FDS;
    let limit = proc::raise_fd_limit(needed)?;
    if settings.users > 2000 && matches!(settings.server, ServerSource::External { .. }) {
        progress.note(&format!(
            "note: the server needs an open-file limit above {needed} too (this process has {limit})"
        ));
    }

    if let Some(soak) = &settings.soak {
        return soak::run(&settings, soak, progress).await;
    }
    if let Some((rounds, streams)) = settings.stream_rounds {
        return streams::run(&settings, rounds, streams).await;
    }

    if let Some(cluster) = &settings.cluster {
        let (targets, ratios) = cluster::run(&settings, cluster, progress).await?;
        return print(Report {
            machine: Machine::probe(),
            settings,
            targets,
            cluster: ratios,
        });
    }

    let mut targets = Vec::new();
    let (url, pid, spawned) = match &settings.server {
        ServerSource::Spawn => {
            let server = spawn::confab().await?;
            (server.url.clone(), Some(server.pid), Some(server))
        }
        ServerSource::External { url, pid } => (url.clone(), *pid, None),
    };
    if pid.is_none() {
        progress.note(
            "note: without --server-pid (or --spawn-server) there are no memory or CPU figures",
        );
    }
    let confab = Arc::new(ConfabTarget::new(url, pid).presence(settings.presence_events));
    let measured = phases::run(confab.clone(), &settings, progress).await;
    // Users' connections close before the server stops, and before the relay starts: the two
    // servers never share the machine during a measurement.
    drop(confab);
    if let Some(server) = spawned {
        server.stop().await;
    }
    targets.push(measured?);

    if settings.baseline {
        let (url, pid, spawned) = match &settings.relay {
            Some((url, pid)) => (url.clone(), *pid, None),
            None => {
                let server = spawn::relay().await?;
                (server.url.clone(), Some(server.pid), Some(server))
            }
        };
        let relay = Arc::new(RelayTarget::new(url, pid));
        let measured = phases::run(relay.clone(), &settings, progress).await;
        drop(relay);
        if let Some(server) = spawned {
            server.stop().await;
        }
        targets.push(measured?);
    }

    print(Report {
        machine: Machine::probe(),
        settings,
        targets,
        cluster: None,
    })
}

/// Prints `report` as a table or JSON, and beside `--compare`'s run.
fn print(report: Report) -> anyhow::Result<()> {
    if report.settings.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(old) = &report.settings.compare {
        let new: serde_json::Value = serde_json::from_str(&report.json())?;
        let table = format!(
            "\ncompared with --compare (new ÷ old)\n{}",
            compare::table(old, &new)
        );
        if report.settings.json {
            eprint!("{table}");
        } else {
            print!("{table}");
        }
    }
    Ok(())
}
