//! `confab admin` as an operator types it (the real binary against a real server): flags after
//! the subcommand, the admin token found through the data directory from any working
//! directory, tables with headers, and passwords from a pipe or the environment.

use std::{path::Path, process::Stdio};

use tokio::io::AsyncWriteExt;

use crate::common::*;

/// What a `confab` run printed and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `confab ARGS` in `cwd` with `env` (and no inherited `CONFAB_*`), `stdin` piped in.
async fn confab(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Ran {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    command.current_dir(cwd).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("CONFAB_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run confab");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = within("confab to exit", child.wait_with_output())
        .await
        .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn admin_flags_may_follow_the_subcommand_and_tables_have_headers() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let _alice = srv.login("alice").await.unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let data = srv.dir.path().to_str().unwrap();
    let ran = confab(
        elsewhere.path(),
        &[
            "admin",
            "sessions",
            "--server",
            &srv.url,
            "--data-dir",
            data,
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", ran.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["USER", "ADDRESS", "SINCE", "HEARTBEAT", "INBOX", "STREAM"]
    );
    assert!(lines[1].starts_with("alice "), "{}", ran.stdout);

    // The data directory may come from the environment too, as for `confab serve`.
    let ran = confab(
        elsewhere.path(),
        &["admin", "users", "--server", &srv.url],
        &[("CONFAB_DATA_DIR", data)],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let header: Vec<&str> = ran
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["USER", "ONLINE", "LAST", "LOGIN", "LOCKED", "DISABLED"]
    );
    assert!(ran.stdout.lines().nth(1).unwrap().starts_with("alice"));

    let ran = confab(
        elsewhere.path(),
        &[
            "admin",
            "stats",
            "--server",
            &srv.url,
            "--data-dir",
            data,
            "--json",
        ],
        &[],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let stats: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(stats["logins"], 1);
}

#[tokio::test]
async fn a_missing_admin_token_is_reported_with_the_full_path_looked_at() {
    let srv = TestServer::start().await;
    let empty = tempfile::tempdir().unwrap();
    let ran = confab(
        empty.path(),
        &["admin", "users", "--server", &srv.url],
        &[],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(1));
    let looked = empty.path().join("confab-data").join("admin.token");
    assert!(
        ran.stderr
            .contains(&format!("no admin token at {}", looked.display())),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("--data-dir"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("os error"), "{}", ran.stderr);
}

#[tokio::test]
async fn create_user_without_a_terminal_takes_the_password_from_a_pipe_or_the_environment() {
    let srv = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let data = srv.dir.path().to_str().unwrap();
    let args = |user: &'static str| {
        vec![
            "admin",
            "create-user",
            user,
            "--server",
            srv.url.as_str(),
            "--data-dir",
            data,
        ]
    };
    let ran = confab(cwd.path(), &args("piped"), &[], &format!("{PASSWORD}\n")).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "created piped");
    srv.login("piped").await.expect("the piped password works");

    let ran = confab(
        cwd.path(),
        &args("from-env"),
        &[("CONFAB_PASSWORD", PASSWORD)],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    srv.login("from-env")
        .await
        .expect("the password from CONFAB_PASSWORD works");

    let ran = confab(cwd.path(), &args("nothing"), &[], "").await;
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("no password: stdin is not a terminal"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("No such device"), "{}", ran.stderr);
    let names: Vec<String> = srv.users().await.into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["from-env", "piped"]);
}

#[tokio::test]
async fn operators_disable_enable_delete_and_reset_accounts_from_the_command_line() {
    let srv = TestServer::start().await;
    srv.register("bob").await;
    srv.register("carol").await;
    let cwd = tempfile::tempdir().unwrap();
    let data = srv.dir.path().to_str().unwrap();
    let admin = |args: &[&str]| {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", srv.url.as_str(), "--data-dir", data]);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, stdin: &'static str| {
        let cwd = cwd.path().to_owned();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            confab(&cwd, &args, &[], stdin).await
        }
    };
    let ran = run(admin(&["disable", "bob"]), "").await;
    assert_eq!(
        (ran.code, ran.stdout.trim()),
        (Some(0), "disabled bob"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        srv.login("bob").await.err().unwrap().code(),
        tonic::Code::PermissionDenied
    );
    let ran = run(admin(&["users"]), "").await;
    let bob_row = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("bob"))
        .unwrap()
        .to_owned();
    assert!(bob_row.trim_end().ends_with("yes"), "{}", ran.stdout);
    let ran = run(admin(&["enable", "bob"]), "").await;
    assert_eq!(ran.stdout.trim(), "enabled bob");
    srv.login("bob").await.expect("enabled");

    let ran = run(admin(&["set-password", "bob"]), "a new password\n").await;
    assert_eq!(
        ran.stdout.trim(),
        "set the password of bob",
        "{}",
        ran.stderr
    );
    srv.login_from("bob", "a new password", None)
        .await
        .expect("the new password");

    let ran = run(admin(&["delete", "carol"]), "").await;
    assert_eq!(ran.stdout.trim(), "deleted carol");
    let ran = run(admin(&["delete", "carol"]), "").await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("carol"), "{}", ran.stderr);
    let names: Vec<String> = srv.users().await.into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["bob"]);
}
