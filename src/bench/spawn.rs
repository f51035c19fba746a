//! Starting the servers a bench run measures as child processes of this same executable:
//! `confab serve` for `--spawn-server` and `confab bench relay-server` for `--baseline`.
//!
//! Each child gets a fresh data directory under the system temp dir (removed afterwards), listens
//! on a port the system picks, and announces it with its first stdout line. Children are stopped
//! with SIGTERM (SIGKILL after a few seconds, or when the handle is dropped), so a failed run
//! never leaves a server behind.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// How long a child may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `confab serve` flags of a server being benchmarked: the production defaults except what
/// would turn the bench into a test of the limits — a cheap password hash (10 000 accounts in
/// seconds), per-address login and per-session send rates the load is allowed to exceed, an
/// inbox large enough for the acknowledgement lag of a saturated run, and connection caps above
/// 10 000 users all coming from 127.0.0.1.
pub(crate) const CONFAB_FLAGS: &[&str] = &[
    "--bench-fast-hash",
    "--login-rate",
    "1000000000",
    "--login-burst",
    "1000000000",
    "--send-rate",
    "1000000000",
    "--send-burst",
    "1000000000",
    "--max-inbox",
    "1000000",
    "--max-connections",
    "1000000",
    "--max-connections-per-address",
    "1000000",
];

/// A server process this bench started.
pub(crate) struct Spawned {
    child: Child,
    /// `http://ADDR`.
    pub(crate) url: String,
    /// The process id, for /proc.
    pub(crate) pid: u32,
    dir: Option<PathBuf>,
    /// Kept open: a server that writes to a closed stdout would get EPIPE.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Spawned {
    /// Stops the server: SIGTERM, then SIGKILL if it is not gone within [`STOP_TIMEOUT`].
    pub(crate) async fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // `kill_on_drop` takes care of the process.
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts `confab serve` on a free loopback port with a fresh data directory.
///
/// `CONFAB_BENCH_SERVER_LOG` sets the server's `RUST_LOG` (default `info`, as in production:
/// login lines are part of what a login costs). Its log is `server.log` in the data directory,
/// shown if it fails to start.
///
/// # Errors
/// The server did not start.
pub(crate) async fn confab() -> anyhow::Result<Spawned> {
    serve(&[], false).await
}

/// Starts `confab serve` as [`confab`] does, with `extra` flags (`--store`, `--bus`,
/// `--node-id`) and none of those settings taken from the environment: a node of a measured
/// cluster, or a lone node on SQLite that must not pick up `CONFAB_STORE`.
///
/// # Errors
/// The server did not start.
pub(crate) async fn confab_node(extra: &[String]) -> anyhow::Result<Spawned> {
    serve(extra, true).await
}

async fn serve(extra: &[String], only_flags: bool) -> anyhow::Result<Spawned> {
    let dir = temp_dir("confab")?;
    let mut command = Command::new(std::env::current_exe()?);
    if only_flags {
        for var in ["CONFAB_STORE", "CONFAB_BUS", "CONFAB_NODE_ID"] {
            command.env_remove(var);
        }
    }
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(CONFAB_FLAGS)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("CONFAB_BENCH_SERVER_LOG").unwrap_or_else(|_| "info".into()),
        );
    start(command, dir, "confab listening on ").await
}

/// Starts the bare relay on a free loopback port.
///
/// # Errors
/// The relay did not start.
pub(crate) async fn relay() -> anyhow::Result<Spawned> {
    let dir = temp_dir("relay")?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["bench", "relay-server", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    start(command, dir, "relay listening on ").await
}

async fn start(mut command: Command, dir: PathBuf, announce: &str) -> anyhow::Result<Spawned> {
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            // Nothing started: the fresh directory goes with the error.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(anyhow::Error::new(e).context("starting the server process"));
        }
    };
    let pid = child.id().context("the server exited at once")?;
    let mut stdout = BufReader::new(child.stdout.take().context("the server's stdout")?).lines();
    let first = tokio::time::timeout(START_TIMEOUT, stdout.next_line()).await;
    let addr = match first {
        Ok(Ok(Some(line))) => line.strip_prefix(announce).map(str::to_owned),
        _ => None,
    };
    let Some(addr) = addr else {
        let _ = child.kill().await;
        let log = tail(&log_path);
        let _ = std::fs::remove_dir_all(&dir);
        bail!("the server did not start; its log ends with:\n{log}");
    };
    Ok(Spawned {
        child,
        url: format!("http://{addr}"),
        pid,
        dir: Some(dir),
        _stdout: stdout,
    })
}

/// A fresh directory `confab-bench-KIND-PID-NANOS` under the system temp dir.
pub(crate) fn temp_dir(kind: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "confab-bench-{kind}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
