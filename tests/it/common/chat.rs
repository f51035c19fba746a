//! `confab chat --json` as a child process, driven through stdin and read back one JSON line at
//! a time: what the end-to-end chat tests type and wait for.
//!
//! Nothing waits on a clock: every step waits (with a deadline) for the line that proves the
//! previous step happened. A thing that must *not* happen is checked after an ordering barrier:
//! something that must arrive after it, has.

use std::{path::Path, process::Stdio};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
};

use super::{
    DEADLINE, PASSWORD,
    process::{BIN, ServerProcess},
    within,
};

/// Flags of every chat test's server: the tests log in and send faster than people do, and the
/// rate limits are not what they test.
const GENEROUS_LIMITS: [&str; 8] = [
    "--login-rate",
    "1000",
    "--login-burst",
    "1000",
    "--send-rate",
    "10000",
    "--send-burst",
    "10000",
];

/// `confab serve` for chat tests on `listen` (a restart reuses the old address), with `extra`
/// flags.
pub async fn chat_server(dir: &Path, listen: &str, extra: &[&str]) -> ServerProcess {
    ServerProcess::on(dir, listen, &[&GENEROUS_LIMITS[..], extra].concat()).await
}

/// A chat test's server on a free port, with these users registered.
pub async fn server_with(dir: &Path, users: &[&str]) -> ServerProcess {
    let server = chat_server(dir, "127.0.0.1:0", &[]).await;
    for user in users {
        server.register(user).await;
    }
    server
}

/// A `confab chat --json` process.
pub struct Chat {
    user: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line received so far.
    seen: Vec<Value>,
    /// Lines before this index have been stepped over by `expect`.
    cursor: usize,
}

impl Chat {
    /// Starts `confab chat --json --password-stdin` for `user` and waits until its event stream
    /// is live.
    pub async fn start(server: &ServerProcess, user: &str, extra: &[&str]) -> Chat {
        let mut chat = Chat::spawn(server, user, extra).await;
        chat.expect("connected", |v| v["type"] == "connected").await;
        chat
    }

    /// Starts it without waiting for anything.
    pub async fn spawn(server: &ServerProcess, user: &str, extra: &[&str]) -> Chat {
        Chat::spawn_at(&server.url, user, extra, &[]).await
    }

    /// Starts it with `--server servers` (one URL or a list) and `env` added to its
    /// environment, without waiting for anything.
    pub async fn spawn_at(
        servers: &str,
        user: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Chat {
        let mut child = Command::new(BIN)
            .args(["chat", "--server", servers, "--user", user])
            .args(["--json", "--password-stdin", "--peer-listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .env_remove("CONFAB_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start confab chat");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut chat = Chat {
            user: user.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            cursor: 0,
        };
        chat.send(PASSWORD).await;
        chat
    }

    /// Types one command.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for the next line (after the last one expected) that matches `pred`.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen[self.cursor..].iter().position(&pred) {
            self.cursor += i + 1;
            return self.seen[self.cursor - 1].clone();
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v);
                    if pred(self.seen.last().unwrap()) {
                        self.cursor = self.seen.len();
                        return self.seen.last().unwrap().clone();
                    }
                }
                Ok(None) => panic!(
                    "{}'s chat ended while waiting for {what}; it printed:\n{}",
                    self.user,
                    self.dump()
                ),
                Err(_) => panic!(
                    "{}: no {what} within {DEADLINE:?}; it printed:\n{}",
                    self.user,
                    self.dump()
                ),
            }
        }
    }

    /// Waits for the result of a command: the next `sent`, `error`, … line.
    pub async fn expect_type(&mut self, ty: &str) -> Value {
        let what = format!("a {ty:?} line");
        self.expect(&what, |v| v["type"] == ty).await
    }

    /// Waits for one line of each type, in whatever order they come; returns them in the order
    /// asked. For results and events that race each other (a command's answer and the other
    /// side's automatic reaction to it).
    pub async fn expect_types<const N: usize>(&mut self, types: [&str; N]) -> [Value; N] {
        let start = self.cursor;
        let mut end = start;
        let mut found: Vec<Value> = Vec::with_capacity(N);
        for ty in types {
            self.cursor = start;
            let what = format!("a {ty:?} line");
            found.push(self.expect(&what, |v| v["type"] == ty).await);
            end = end.max(self.cursor);
        }
        self.cursor = end;
        found.try_into().expect("one line per type")
    }

    /// Waits for a message from `from` with `body`.
    pub async fn expect_message(&mut self, from: &str, body: &str) -> Value {
        let what = format!("the message {body:?} from {from}");
        self.expect(&what, |v| {
            v["type"] == "message" && v["from"] == from && v["body"] == body
        })
        .await
    }

    /// Every line received so far.
    pub fn lines(&self) -> &[Value] {
        &self.seen
    }

    /// How many lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.seen.iter().filter(|v| pred(v)).count()
    }

    /// Closes stdin (end of input: log out) and waits for the exit code.
    pub async fn finish(mut self) -> (i32, Chat) {
        self.stdin = None;
        let status = within("the chat to exit", self.child.wait()).await.unwrap();
        // Collect what it printed before exiting.
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        (status.code().unwrap_or(-1), self)
    }

    /// Waits for the process to exit by itself.
    pub async fn exit_code(&mut self) -> i32 {
        let status = within("the chat to exit", self.child.wait()).await.unwrap();
        status.code().unwrap_or(-1)
    }

    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        within("the chat to die", self.child.wait()).await.unwrap();
    }

    pub fn dump(&self) -> String {
        self.seen.iter().map(|v| format!("  {v}\n")).collect()
    }
}
