//! `confab chat` at a real terminal (tmux) and with its own files, as a person uses it day to
//! day: settings from `~/.config/confab/config.toml`, history kept across runs (private, nothing
//! secret in it), Tab completion of commands and names, Ctrl-C clearing a half-typed line, the
//! time on live messages, and `password`.

use std::os::unix::fs::PermissionsExt as _;

use tokio::process::Command;

use crate::common::{
    PASSWORD,
    chat::{Chat, server_with},
    login_at,
    process::{BIN, run_with_stdin},
    tmux::Tmux,
};

/// A home of the test's own: the config and state directories `confab chat` uses.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config")
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Writes `config/confab/config.toml`.
    fn write_config(&self, text: &str) {
        let dir = self.config().join("confab");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }

    fn history(&self) -> std::path::PathBuf {
        self.state().join("confab").join("history")
    }

    /// `env …` putting this home in place, for a tmux command line.
    fn env(&self) -> String {
        format!(
            "env XDG_CONFIG_HOME={} XDG_STATE_HOME={} CONFAB_PASSWORD='{PASSWORD}' RUST_LOG=warn",
            self.config().display(),
            self.state().display()
        )
    }

    fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .env("XDG_CONFIG_HOME", self.config())
            .env("XDG_STATE_HOME", self.state())
            .env_remove("CONFAB_SERVER")
            .env_remove("CONFAB_USER");
        command
    }
}

async fn keys(tmux: &Tmux, keys: &[&str]) {
    tmux.run(&[&["send-keys", "-t", "chat"][..], keys].concat())
        .await;
}

async fn type_text(tmux: &Tmux, text: &str) {
    tmux.run(&["send-keys", "-t", "chat", "-l", text]).await;
}

/// Starts alice's chat in tmux with only the config file saying where and who.
async fn start_alice(tmux: &Tmux, home: &Home) {
    start_alice_with(tmux, home, "").await;
}

/// [`start_alice`] with `extra` flags.
async fn start_alice_with(tmux: &Tmux, home: &Home, extra: &str) {
    let command = format!(
        "{} {BIN} chat --peer-listen 127.0.0.1:0 {extra}",
        home.env()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "150",
        "-y",
        "40",
        &command,
    ])
    .await;
    tmux.wait_for("the prompt", |s| s.last().is_some_and(|l| l == "alice>"))
        .await;
}

fn is_clock(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit())
}

/// Whether the terminal's bell rang in the chat's window (tmux keeps the flag until a client
/// looks at the window, and none ever does).
async fn rang(tmux: &Tmux) -> bool {
    let flag = tmux
        .run(&["display-message", "-p", "-t", "chat", "#{window_bell_flag}"])
        .await;
    flag.trim() == "1"
}

/// A message that arrives while nobody has typed for `--bell-after` rings the terminal's bell;
/// one that arrives sooner does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_an_idle_terminal_rings_its_bell() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let home = Home::new();
    home.write_config(&format!("server = \"{}\"\nuser = \"alice\"\n", server.url));
    let mut bob = Chat::start(&server, "bob", &[]).await;

    // Just started: not idle for the default 30 s.
    let busy = Tmux::new("bell-busy");
    start_alice(&busy, &home).await;
    // Live before anything is sent: a message replayed at login is no news to ring for.
    let first = server.subscribed_from("alice", None).await;
    bob.send("message alice while you type").await;
    busy.wait_for("bob's message", |s| {
        s.iter().any(|l| l.ends_with(" bob: while you type"))
    })
    .await;
    assert!(!rang(&busy).await, "rang for someone at the keyboard");
    drop(busy);

    let idle = Tmux::new("bell-idle");
    start_alice_with(&idle, &home, "--bell-after 0s").await;
    server.subscribed_from("alice", Some(&first)).await;
    bob.send("message alice are you there").await;
    idle.wait_for("bob's message", |s| {
        s.iter().any(|l| l.ends_with(" bob: are you there"))
    })
    .await;
    assert!(rang(&idle).await, "no bell for an idle terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_completes_clears_on_ctrl_c_stamps_messages_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let home = Home::new();
    home.write_config(&format!("server = \"{}\"\nuser = \"alice\"\n", server.url));
    let mut bob = Chat::start(&server, "bob", &[]).await;
    let tmux = Tmux::new("terminal");
    start_alice(&tmux, &home).await;

    // Tab completes the command, then the name of a user online.
    type_text(&tmux, "mess").await;
    keys(&tmux, &["Tab"]).await;
    tmux.wait_for("the command completed", |s| {
        s.last().is_some_and(|l| l == "alice> message")
    })
    .await;
    type_text(&tmux, "b").await;
    keys(&tmux, &["Tab"]).await;
    tmux.wait_for("bob's name completed", |s| {
        s.last().is_some_and(|l| l == "alice> message bob")
    })
    .await;
    type_text(&tmux, "completed").await;
    keys(&tmux, &["Enter"]).await;
    bob.expect_message("alice", "completed").await;

    // Ctrl-C clears a half-typed line and leaves the chat running.
    type_text(&tmux, "message bob never sent").await;
    tmux.wait_for("the half-typed line", |s| {
        s.last()
            .is_some_and(|l| l == "alice> message bob never sent")
    })
    .await;
    keys(&tmux, &["C-c"]).await;
    tmux.wait_for("an empty prompt", |s| {
        s.last().is_some_and(|l| l == "alice>")
    })
    .await;
    type_text(&tmux, "message bob after ctrl-c").await;
    keys(&tmux, &["Enter"]).await;
    // The barrier: the next message bob gets is the one typed after Ctrl-C.
    let next = bob
        .expect("alice's next message", |v| v["type"] == "message")
        .await;
    assert_eq!(
        next["body"], "after ctrl-c",
        "the cleared line was sent: {next}"
    );

    // A live message carries the local time.
    bob.send("message alice ping").await;
    let screen = tmux
        .wait_for("bob's message", |s| {
            s.iter().any(|l| l.ends_with(" bob: ping"))
        })
        .await;
    let line = screen.iter().find(|l| l.ends_with(" bob: ping")).unwrap();
    assert!(is_clock(line.split(' ').next().unwrap()), "{line}");

    // Ctrl-D leaves; the history is private and holds what was sent, not what was cleared.
    keys(&tmux, &["C-d"]).await;
    bob.expect("alice going offline", |v| {
        v["type"] == "presence" && v["user"] == "alice" && v["online"] == false
    })
    .await;
    let mode = std::fs::metadata(home.history())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let history = std::fs::read_to_string(home.history()).unwrap();
    assert!(history.contains("message bob completed"), "{history}");
    assert!(history.contains("message bob after ctrl-c"), "{history}");
    assert!(!history.contains("never sent"), "{history}");

    // The next run remembers: Up brings back the last line.
    // (The chat has ended, and its tmux server with it.)
    drop(tmux);
    let tmux = Tmux::new("terminal-again");
    start_alice(&tmux, &home).await;
    keys(&tmux, &["Up"]).await;
    tmux.wait_for("the last line of the run before", |s| {
        s.last()
            .is_some_and(|l| l == "alice> message bob after ctrl-c")
    })
    .await;
    // Ctrl-C clears it; a second Ctrl-C on the empty line leaves.
    keys(&tmux, &["C-c"]).await;
    tmux.wait_for("an empty prompt", |s| {
        s.last().is_some_and(|l| l == "alice>")
    })
    .await;
    keys(&tmux, &["C-c"]).await;
    bob.expect("alice going offline again", |v| {
        v["type"] == "presence" && v["user"] == "alice" && v["online"] == false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_names_server_and_user_and_flags_beat_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice", "bob"]).await;
    let home = Home::new();
    home.write_config(&format!("server = \"{}\"\nuser = \"alice\"\n", server.url));
    let script = format!("{PASSWORD}\nwhoami\n");
    let whoami = |out: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["type"] == "whoami")
            .expect("a whoami line")["user"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let args = [
        "chat",
        "--password-stdin",
        "--json",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    let out = run_with_stdin(home.command().args(args), &script).await;
    assert_eq!(whoami(&out), "alice");
    let out = run_with_stdin(home.command().args(args).args(["--user", "bob"]), &script).await;
    assert_eq!(whoami(&out), "bob", "the flag beats the file");

    // Without the file, nobody is named: a sentence says how to name one.
    let out = run_with_stdin(Home::new().command().args(args), &script).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--user NAME"), "{stderr}");
    assert_ne!(out.status.code(), Some(0));

    // A key that is no flag of `confab chat` is refused with the file's name.
    home.write_config("sever = \"http://127.0.0.1:1\"\n");
    let out = run_with_stdin(home.command().args(args), &script).await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting `sever`"), "{stderr}");
    assert!(stderr.contains("config.toml"), "{stderr}");
}

/// `confab register` reads the settings it shares with the chat (server, user) from the same
/// file, and leaves the chat's own (`peer-listen`) alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_takes_server_and_user_from_the_chats_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &[]).await;
    let home = Home::new();
    home.write_config(&format!(
        "server = \"{}\"\nuser = \"erin\"\npeer-listen = \"127.0.0.1:0\"\n",
        server.url
    ));
    let out = run_with_stdin(
        home.command().args(["register", "--password-stdin"]),
        &format!("{PASSWORD}\n"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "registered erin");
    server.login("erin").await;

    // Nobody named anywhere: a sentence says how to name one.
    home.write_config(&format!("server = \"{}\"\n", server.url));
    let out = run_with_stdin(
        home.command().args(["register", "--password-stdin"]),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--user NAME"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_ones_own_password_without_it_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &["alice"]).await;
    let new = "a much better password";
    let chat = |script: String| {
        let url = server.url.clone();
        async move {
            run_with_stdin(
                Command::new(BIN).args([
                    "chat",
                    "--server",
                    &url,
                    "--user",
                    "alice",
                    "--password-stdin",
                    "--json",
                ]),
                &script,
            )
            .await
        }
    };
    // A wrong current password changes nothing and fails the script.
    let out = chat(format!("{PASSWORD}\npassword\nnot it\n{new}\n")).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"code\":\"INVALID_ARGUMENT\""), "{stdout}");
    assert!(
        !stdout.contains(new) && !stdout.contains("not it"),
        "{stdout}"
    );

    let out = chat(format!("{PASSWORD}\npassword\n{PASSWORD}\n{new}\nwhoami\n")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\"type\":\"password_changed\""), "{stdout}");
    assert!(
        stdout.contains("\"type\":\"whoami\""),
        "the script went on: {stdout}"
    );
    assert!(!stdout.contains(new), "{stdout}");
    assert!(
        login_at(&server.url, "alice", PASSWORD, None)
            .await
            .is_err()
    );
    assert!(login_at(&server.url, "alice", new, None).await.is_ok());
}
