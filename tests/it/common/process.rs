//! The real `confab serve` as a child process, for what only the binary shows: crash recovery,
//! signals, what it logs, grpcurl, the CLI's own commands, and `confab chat` talking to it.
//!
//! Started on a free loopback port (`127.0.0.1:0`, read back from its first line), so tests run
//! side by side; killed (and waited for) when dropped. Anything that waits has a deadline ([`within`]).

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdout, Command},
};

use super::{DEADLINE, PASSWORD, Session, login_at, register_at, within};

/// The `confab` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_confab");

/// A `confab serve` child process.
pub struct ServerProcess {
    child: Child,
    /// Kept open: the server must not get EPIPE if it prints again.
    _stdout: ChildStdout,
    /// `host:port` it listens on.
    pub addr: String,
    pub url: String,
    /// Its data dir (the store, `admin.token`).
    pub dir: PathBuf,
}

impl Drop for ServerProcess {
    /// SIGKILL, and wait until the process is gone: the next server a test starts on the same
    /// data directory must not meet this one still holding it.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // `Drop` cannot await; the exit of a killed process is a matter of milliseconds.
        while let Ok(None) = self.child.try_wait() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl ServerProcess {
    /// `confab serve` on a free loopback port with its data in `dir` and `extra` flags, logging
    /// warnings to the test's stderr.
    pub async fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::on(dir, "127.0.0.1:0", extra).await
    }

    /// As [`ServerProcess::start`], on `listen` (a restart reuses the old address).
    pub async fn on(dir: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::spawn(dir, listen, extra, "warn", Stdio::inherit()).await
    }

    /// As [`ServerProcess::start`], logging at `level` to `log`.
    pub async fn logging(dir: &Path, extra: &[&str], level: &str, log: Stdio) -> Self {
        Self::spawn(dir, "127.0.0.1:0", extra, level, log).await
    }

    async fn spawn(dir: &Path, listen: &str, extra: &[&str], level: &str, log: Stdio) -> Self {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--listen",
                listen,
                "--bench-fast-hash",
                "--data-dir",
            ])
            .arg(dir)
            .args(store_args(dir))
            .args(extra)
            .env("RUST_LOG", level)
            .stderr(log);
        Self::from_command(command, dir).await
    }

    /// Starts a `confab serve` command the caller prepared (under a wrapper that lowers a
    /// limit, say) with its data in `dir`, and waits for its listening line.
    pub async fn from_command(mut command: Command, dir: &Path) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start confab serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        within("the server's listening line", stdout.read_line(&mut line))
            .await
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("confab listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from confab serve: {line:?}"))
            .to_owned();
        ServerProcess {
            child,
            _stdout: stdout.into_inner(),
            url: format!("http://{addr}"),
            addr,
            dir: dir.to_owned(),
        }
    }

    /// The process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends `signal` (`-TERM`, `-KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself (after a signal).
    pub async fn exit_status(&mut self) -> ExitStatus {
        within("the server to exit", self.child.wait())
            .await
            .unwrap()
    }

    /// SIGKILL: no shutdown, no flush beyond what was committed.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        within("the server to die", self.child.wait())
            .await
            .unwrap();
    }

    /// Registers `name` with the tests' password, over gRPC.
    pub async fn register(&self, name: &str) {
        register_at(&self.url, name).await;
    }

    /// Logs `name` in over gRPC; not subscribed.
    pub async fn login(&self, name: &str) -> Session {
        login_at(&self.url, name, PASSWORD, None)
            .await
            .unwrap_or_else(|s| panic!("logging {name} in: {s:?}"))
    }

    /// `confab admin ARGS` against this server with its admin token; its stdout.
    pub async fn admin(&self, args: &[&str]) -> Vec<u8> {
        let token = self.dir.join("admin.token");
        let out = within(
            "confab admin",
            Command::new(BIN)
                .args(["admin", "--server", &self.url, "--token-file"])
                .arg(&token)
                .args(args)
                .output(),
        )
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "confab admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The address of `user`'s session once it has a live event stream, polling
    /// `confab admin --json sessions`; a session at `other_than` (an earlier one of the same
    /// user, perhaps not yet replaced) does not count.
    pub async fn subscribed_from(&self, user: &str, other_than: Option<&str>) -> String {
        within(&format!("{user}'s stream to be live"), async {
            loop {
                let out = self.admin(&["--json", "sessions"]).await;
                let found = String::from_utf8_lossy(&out)
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|s| {
                        s["username"] == user
                            && s["subscribed"] == true
                            && Some(s["address"].as_str().unwrap_or_default()) != other_than
                    });
                if let Some(session) = found {
                    return session["address"].as_str().unwrap_or_default().to_owned();
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// `confab admin --json stats`.
    pub async fn stats(&self) -> Value {
        let out = self.admin(&["--json", "stats"]).await;
        serde_json::from_slice(&out).expect("stats are JSON")
    }

    /// `confab admin --json sessions`: one object per live session.
    pub async fn sessions(&self) -> Vec<Value> {
        let out = self.admin(&["--json", "sessions"]).await;
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("sessions are JSON lines"))
            .collect()
    }

    /// Polls the sessions until `pred` holds for `user`'s, failing after [`DEADLINE`]. (The
    /// server announces no such change: polling its admin view is the only way to see it.)
    pub async fn wait_for_session(
        &self,
        user: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let sessions = self.sessions().await;
            if let Some(s) = sessions.iter().find(|s| s["username"] == user && pred(s)) {
                return s.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{user}'s session never showed {what}: {sessions:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `command` to the end with `input` on its stdin; its output.
pub async fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A command may end before it reads all of it (it refused to start, say): its output and
    // exit status tell the test why, so a closed pipe is not the test's failure.
    match stdin.write_all(input.as_bytes()).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing the command's stdin: {e}"),
    }
    drop(stdin);
    within("the command to finish", child.wait_with_output())
        .await
        .unwrap()
}

/// `--store URL` when the suite runs on PostgreSQL: one database per data dir, so a restart on
/// the same dir finds its data.
fn store_args(dir: &Path) -> Vec<String> {
    if super::pg::selected() {
        vec!["--store".into(), super::pg::database_for(dir)]
    } else {
        vec![]
    }
}
