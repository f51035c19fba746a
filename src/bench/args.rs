//! `confab bench` flags, raw, and the checked [`Settings`] the phases read.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::relay_server::RelayServerArgs;
use crate::types::MAX_USERNAME_LEN;

/// `confab bench`: drives a server with simulated users and prints what it measured.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) command: Option<BenchCommand>,
    /// The server to measure. Start it with --bench-fast-hash and raised --login-rate,
    /// --login-burst, --send-rate and --send-burst (or use --spawn-server). Several URLs
    /// (comma-separated or repeated) are the nodes of one cluster: users are spread over them
    /// round-robin and every direct message goes to a user on another node.
    #[arg(long, env = "CONFAB_SERVER", value_delimiter = ',',
          default_value = crate::types::DEFAULT_SERVER_URL)]
    server: Vec<String>,
    /// The server's process id: memory and CPU figures come from /proc/PID.
    #[arg(long, env = "CONFAB_BENCH_SERVER_PID")]
    server_pid: Option<u32>,
    /// Start `confab serve` (this executable, a temporary data directory, a free port, bench
    /// limits) for the run instead of using --server. It inherits the environment, so with
    /// `CONFAB_STORE` set it keeps its data in that PostgreSQL database.
    #[arg(long, conflicts_with_all = ["server", "server_pid"], env = "CONFAB_BENCH_SPAWN_SERVER")]
    spawn_server: bool,
    /// Start PostgreSQL and nats-server (scripts/postgres.sh and scripts/nats.sh, in a temporary
    /// directory) and measure, one after the other: one node on SQLite, one node on PostgreSQL,
    /// and a cluster of N nodes on both, with server CPU summed over every process of each.
    /// Everything started is stopped at the end, also on an error or Ctrl-C.
    #[arg(long, value_name = "N", env = "CONFAB_BENCH_SPAWN_CLUSTER",
          conflicts_with_all = ["server", "server_pid", "spawn_server", "baseline", "soak", "stream_rounds"])]
    spawn_cluster: Option<usize>,
    /// --spawn-cluster: use this running PostgreSQL server (a database of the run is created on
    /// it and dropped afterwards) instead of starting one. Its CPU is then not measured.
    #[arg(long, value_name = "URL", requires_all = ["spawn_cluster", "cluster_nats"],
          env = "CONFAB_BENCH_CLUSTER_POSTGRES")]
    cluster_postgres: Option<String>,
    /// --spawn-cluster: use this running nats-server instead of starting one (its CPU is then not
    /// measured).
    #[arg(long, value_name = "URL", requires_all = ["spawn_cluster", "cluster_postgres"],
          env = "CONFAB_BENCH_CLUSTER_NATS")]
    cluster_nats: Option<String>,
    /// Also run phases 1–4 against a bare tonic relay (no auth, no storage) started for the run,
    /// and show its figures beside confab's.
    #[arg(long, env = "CONFAB_BENCH_BASELINE")]
    baseline: bool,
    /// With --baseline: measure a relay already running at this URL (`confab bench relay-server`)
    /// instead of starting one.
    #[arg(long, requires = "baseline", env = "CONFAB_BENCH_RELAY")]
    relay: Option<String>,
    /// The running relay's process id, for its memory and CPU figures.
    #[arg(long, requires = "relay", env = "CONFAB_BENCH_RELAY_PID")]
    relay_pid: Option<u32>,
    /// Phases to run: 1 connect/login, 2 offered-rate latency, 3 saturation, 4 broadcast,
    /// 5 login storm, 6 peer path, 7 a file over the peer path (two `confab chat`s, scp as the
    /// anchor; not run unless asked for: it writes --file-bytes three times to disk), 8 --users
    /// more users joining while the others are online (presence to everyone already there).
    /// [default: 1,2,3,4,5,6; 1,2,3 against a cluster, where only 1–4 run]
    #[arg(long, value_delimiter = ',',
          value_parser = clap::value_parser!(u8).range(1..=8), env = "CONFAB_BENCH_PHASES")]
    phases: Option<Vec<u8>>,
    /// Simulated users, each with its own connection and stream [default: 1000; 10000 with
    /// --soak].
    #[arg(long, env = "CONFAB_BENCH_USERS")]
    users: Option<usize>,
    /// Offered load of phases 2 and 5, messages per second [default: 4000; 2000 against a
    /// cluster].
    #[arg(long, env = "CONFAB_BENCH_RATE")]
    rate: Option<f64>,
    /// How long each measuring phase (or window) runs.
    #[arg(long, default_value = "10s", value_parser = crate::types::parse_duration, env = "CONFAB_BENCH_DURATION")]
    duration: Duration,
    /// Phase 3: users that send (the first N).
    #[arg(long, default_value_t = 100, env = "CONFAB_BENCH_SENDERS")]
    senders: usize,
    /// Phase 3: sends each sender keeps outstanding.
    #[arg(long, default_value_t = 8, env = "CONFAB_BENCH_WINDOW")]
    window: usize,
    /// Phase 4: broadcasts (the median time to the last delivery is reported).
    #[arg(long, default_value_t = 5, env = "CONFAB_BENCH_BROADCASTS")]
    broadcasts: usize,
    /// Phase 5: extra accounts that log in and out as fast as they can during the storm.
    #[arg(long, default_value_t = 200, env = "CONFAB_BENCH_STORM_USERS")]
    storm_users: usize,
    /// Phase 6: peer-path messages (fewer if --duration runs out first).
    #[arg(long, default_value_t = 2000, env = "CONFAB_BENCH_PEER_MESSAGES")]
    peer_messages: usize,
    /// Phase 7: the file's size in bytes (default 1 GiB).
    #[arg(long, default_value_t = 1 << 30, env = "CONFAB_BENCH_FILE_BYTES")]
    file_bytes: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64, env = "CONFAB_BENCH_BODY_BYTES")]
    body_bytes: usize,
    /// Logins (and registrations) in flight at once while connecting users.
    #[arg(long, default_value_t = 64, env = "CONFAB_BENCH_CONCURRENCY")]
    concurrency: usize,
    /// How long to wait for messages still in flight at the end of a phase.
    #[arg(long, default_value = "5s", value_parser = crate::types::parse_duration, env = "CONFAB_BENCH_GRACE")]
    grace: Duration,
    /// Usernames are PREFIX00000, PREFIX00001, …; reruns against one server reuse them.
    #[arg(long, default_value = "bench", env = "CONFAB_BENCH_PREFIX")]
    prefix: String,
    /// Instead of the phases, a soak this long (`10m`, `1h`): --users stay connected, send, log
    /// out and in at a steady rate while the server's memory and open files are sampled. Fails
    /// if either keeps growing at the end or an acknowledged message is lost.
    #[arg(long, value_parser = crate::types::parse_duration, env = "CONFAB_BENCH_SOAK")]
    soak: Option<Duration>,
    /// --soak: direct messages a second.
    #[arg(long, default_value_t = 100.0, env = "CONFAB_BENCH_SOAK_RATE")]
    soak_rate: f64,
    /// --soak: users a second that log out and in again (every fourth as a killed client).
    #[arg(long, default_value_t = 1.0, env = "CONFAB_BENCH_SOAK_CHURN")]
    soak_churn: f64,
    /// --soak: time between two samples of the server's memory and open files.
    #[arg(long, default_value = "5s", value_parser = crate::types::parse_duration, env = "CONFAB_BENCH_SOAK_SAMPLE")]
    soak_sample: Duration,
    /// Instead of the phases, this many connections one after another, each opening --streams
    /// `SendStream`s at once and closing: the server's memory before, at each peak and after
    /// each close.
    #[arg(long, conflicts_with = "soak", env = "CONFAB_BENCH_STREAM_ROUNDS")]
    stream_rounds: Option<usize>,
    /// --stream-rounds: streams per connection (the server's --max-streams-per-connection).
    #[arg(long, default_value_t = 128, env = "CONFAB_BENCH_STREAMS")]
    streams: usize,
    /// How confab users take presence: `batched` (as `confab chat` does: one `PresenceBatch` per
    /// window), `single` (one event per change, as a client that does not ask for batches) or
    /// `none` (`no_presence`, as a bot: the cost of everything but presence).
    #[arg(long, value_enum, default_value_t = PresenceEvents::Batched, env = "CONFAB_BENCH_PRESENCE_EVENTS")]
    presence_events: PresenceEvents,
    /// Print the summary as JSON instead of a table.
    #[arg(long, env = "CONFAB_BENCH_JSON")]
    json: bool,
    /// An earlier run's `--json` output: print every figure both runs have, with the ratio
    /// new ÷ old (on stderr with --json, so stdout stays JSON).
    #[arg(long, value_name = "FILE.json", env = "CONFAB_BENCH_COMPARE")]
    compare: Option<std::path::PathBuf>,
}

/// Hidden helpers of `confab bench`.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Serve the bare tonic relay the baseline is measured on.
    #[command(hide = true)]
    RelayServer(RelayServerArgs),
}

/// `--presence-events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PresenceEvents {
    Single,
    Batched,
    None,
}

/// Where the confab server comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ServerSource {
    /// `--spawn-server`.
    Spawn,
    /// `--server`, with `--server-pid` if given.
    External { url: String, pid: Option<u32> },
}

/// A cluster to measure instead of one server.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClusterSource {
    /// Several `--server` URLs: nodes the bench did not start, so it knows no process of theirs.
    External { urls: Vec<String> },
    /// `--spawn-cluster N`, on PostgreSQL and NATS it starts, or on `--cluster-postgres` and
    /// `--cluster-nats` (URLs kept out of the report: they may hold a password).
    Spawn {
        nodes: usize,
        #[serde(skip)]
        engines: Option<(String, String)>,
    },
}

/// `--soak` and its own flags, checked.
#[derive(Debug, Clone)]
pub(crate) struct Soak {
    pub(crate) duration: Duration,
    pub(crate) rate: f64,
    pub(crate) churn: f64,
    pub(crate) sample_every: Duration,
}

/// Checked settings.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) server: ServerSource,
    /// Several `--server` URLs or `--spawn-cluster`: when set, `server` is not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<ClusterSource>,
    pub(crate) baseline: bool,
    /// `--relay` and `--relay-pid`: a running relay; `None` starts one.
    pub(crate) relay: Option<(String, Option<u32>)>,
    pub(crate) phases: BTreeSet<u8>,
    pub(crate) users: usize,
    pub(crate) rate: f64,
    #[serde(serialize_with = "secs")]
    pub(crate) duration: Duration,
    pub(crate) senders: usize,
    pub(crate) window: usize,
    pub(crate) broadcasts: usize,
    pub(crate) storm_users: usize,
    pub(crate) peer_messages: usize,
    pub(crate) file_bytes: u64,
    pub(crate) body_bytes: usize,
    pub(crate) concurrency: usize,
    #[serde(serialize_with = "secs")]
    pub(crate) grace: Duration,
    pub(crate) prefix: String,
    pub(crate) presence_events: PresenceEvents,
    #[serde(skip)]
    pub(crate) json: bool,
    /// `--compare`: the earlier run, read and parsed before anything is measured.
    #[serde(skip)]
    pub(crate) compare: Option<serde_json::Value>,
    /// `--soak`: a soak instead of the phases.
    #[serde(skip)]
    pub(crate) soak: Option<Soak>,
    /// `--stream-rounds` and `--streams`: the stream-memory rounds instead of the phases.
    #[serde(skip)]
    pub(crate) stream_rounds: Option<(usize, usize)>,
}

/// Checks `--soak` and its flags.
fn soak(duration: Duration, args: &BenchArgs) -> anyhow::Result<Soak> {
    if duration.is_zero() {
        bail!("--soak must be longer than 0s");
    }
    if !(args.soak_rate.is_finite() && args.soak_rate > 0.0) {
        bail!("--soak-rate must be a positive number of messages per second");
    }
    if !(args.soak_churn.is_finite() && args.soak_churn >= 0.0) {
        bail!("--soak-churn must be 0 or a positive number of users per second");
    }
    if args.soak_sample.is_zero() || args.soak_sample * 12 > duration {
        bail!("--soak-sample must be above 0s and leave at least 12 samples in --soak");
    }
    Ok(Soak {
        duration,
        rate: args.soak_rate,
        churn: args.soak_churn,
        sample_every: args.soak_sample,
    })
}

/// Checks the flags that name a cluster: `--spawn-cluster` or several `--server` URLs.
fn cluster(args: &BenchArgs) -> anyhow::Result<Option<ClusterSource>> {
    if let Some(nodes) = args.spawn_cluster {
        if !(2..=16).contains(&nodes) {
            bail!("--spawn-cluster must be 2 to 16 nodes");
        }
        let engines = args.cluster_postgres.clone().zip(args.cluster_nats.clone());
        return Ok(Some(ClusterSource::Spawn { nodes, engines }));
    }
    if args.server.iter().any(|url| url.trim().is_empty()) {
        bail!("--server: an empty URL (two commas in a row?)");
    }
    if args.server.len() < 2 {
        return Ok(None);
    }
    if args.server_pid.is_some() {
        bail!(
            "--server-pid names one process; a cluster's CPU is summed over every node, PostgreSQL \
             and NATS, which only --spawn-cluster knows"
        );
    }
    if args.baseline || args.soak.is_some() || args.stream_rounds.is_some() {
        bail!("--baseline, --soak and --stream-rounds run against one --server, not a cluster");
    }
    let unique: BTreeSet<&String> = args.server.iter().collect();
    if unique.len() != args.server.len() {
        bail!("--server: a URL is given twice; each node of the cluster once");
    }
    Ok(Some(ClusterSource::External {
        urls: args.server.clone(),
    }))
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Settings {
    /// Checks `args`.
    ///
    /// # Errors
    /// A value out of range, with the flag to change.
    pub(crate) fn new(args: BenchArgs) -> anyhow::Result<Settings> {
        let users = args
            .users
            .unwrap_or(if args.soak.is_some() { 10_000 } else { 1000 });
        if users < 2 {
            bail!("--users must be at least 2: messages need a recipient");
        }
        let cluster = cluster(&args)?;
        let rate = args
            .rate
            .unwrap_or(if cluster.is_some() { 2000.0 } else { 4000.0 });
        let phases: BTreeSet<u8> = match (&args.phases, &cluster) {
            (Some(phases), _) => phases.iter().copied().collect(),
            (None, Some(_)) => BTreeSet::from([1, 2, 3]),
            (None, None) => BTreeSet::from([1, 2, 3, 4, 5, 6]),
        };
        if cluster.is_some() && phases.iter().any(|&p| p > 4) {
            bail!("--phases: against a cluster only phases 1 to 4 run (5 to 8 drive one server)");
        }
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
        if args.duration.is_zero() {
            bail!("--duration must be longer than 0s");
        }
        if args.senders == 0 || args.window == 0 || args.concurrency == 0 {
            bail!("--senders, --window and --concurrency must be at least 1");
        }
        if args.broadcasts == 0 || args.peer_messages == 0 {
            bail!("--broadcasts and --peer-messages must be at least 1");
        }
        if args.body_bytes == 0 || args.body_bytes > 4096 {
            bail!("--body-bytes must be 1 to 4096 (the server's default limit)");
        }
        // Usernames: PREFIX + 5 digits, PREFIX + "-s" + 5 digits, PREFIX + "-peer-a".
        crate::types::check_username(&format!("{}-peer-a", args.prefix))
            .ok()
            .with_context(|| {
                format!(
                    "--prefix {:?} must be letters, digits, '_', '.' or '-', at most {} long",
                    args.prefix,
                    MAX_USERNAME_LEN - "-peer-a".len()
                )
            })?;
        let soak = args
            .soak
            .map(|duration| soak(duration, &args))
            .transpose()?;
        let compare = args
            .compare
            .as_ref()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--compare: reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| {
                    format!(
                        "--compare: {} is not the JSON of `confab bench --json`",
                        path.display()
                    )
                })
            })
            .transpose()?;
        let server = if args.spawn_server {
            ServerSource::Spawn
        } else {
            ServerSource::External {
                url: args.server.first().cloned().unwrap_or_default(),
                pid: args.server_pid,
            }
        };
        Ok(Settings {
            server,
            cluster,
            baseline: args.baseline,
            relay: args.relay.map(|url| (url, args.relay_pid)),
            phases,
            users,
            rate,
            duration: args.duration,
            senders: args.senders.min(users),
            window: args.window,
            broadcasts: args.broadcasts,
            storm_users: args.storm_users,
            peer_messages: args.peer_messages,
            file_bytes: args.file_bytes,
            body_bytes: args.body_bytes,
            concurrency: args.concurrency,
            grace: args.grace,
            prefix: args.prefix,
            presence_events: args.presence_events,
            json: args.json,
            compare,
            soak,
            stream_rounds: args.stream_rounds.map(|rounds| (rounds, args.streams)),
        })
    }

    /// Whether phase `n` was asked for.
    pub(crate) fn runs(&self, n: u8) -> bool {
        self.phases.contains(&n)
    }

    /// The name of simulated user `i`.
    pub(crate) fn user(&self, i: usize) -> String {
        format!("{}{i:05}", self.prefix)
    }

    /// The name of phase 8's joining user `i`.
    pub(crate) fn join_user(&self, i: usize) -> String {
        format!("{}-j{i:05}", self.prefix)
    }

    /// The name of storm account `i`.
    pub(crate) fn storm_user(&self, i: usize) -> String {
        format!("{}-s{i:05}", self.prefix)
    }
}
