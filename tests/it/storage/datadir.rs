//! The data directory is private whatever the umask, and locked by the server using it.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Stdio},
};

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `confab serve` under `umask 022`, logging warnings to `log`; returns it and its URL.
fn serve_with_umask(data: &Path, log: &Path) -> (Child, String) {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_confab"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bench-fast-hash",
            "--data-dir",
        ])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("confab listening on ")
        .unwrap_or_else(|| panic!("{line:?}: {}", std::fs::read_to_string(log).unwrap()));
    let url = format!("http://{addr}");
    (child, url)
}

#[tokio::test]
async fn files_are_private_under_umask_022_and_loose_modes_are_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let (mut child, url) = serve_with_umask(&data, &log);
    // A write, so the log and its index exist.
    Remote { url }.register("alice").await;
    for (file, want) in [
        ("", 0o700),
        ("confab.db", 0o600),
        ("confab.db-wal", 0o600),
        ("confab.db-shm", 0o600),
        ("admin.token", 0o600),
        ("confab.lock", 0o600),
    ] {
        assert_eq!(mode(&data.join(file)), want, "{file:?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    for (file, loose) in [("", 0o755), ("confab.db", 0o644), ("admin.token", 0o644)] {
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(loose)).unwrap();
    }
    let (mut child, _url) = serve_with_umask(&data, &log);
    for (file, want) in [
        ("", 0o700),
        ("confab.db", 0o600),
        ("confab.db-wal", 0o600),
        ("admin.token", 0o600),
    ] {
        assert_eq!(mode(&data.join(file)), want, "{file:?} tightened at start");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("readable by other users (mode 755)")
            && said.contains("readable by other users (mode 644)"),
        "the log says what was tightened: {said}"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = start(&data, &[]).await;
    let said = refused(&data, &[]);
    assert!(
        said.contains(&format!("the data directory {} is in use", data.display()))
            && said.contains(&format!("process {}", first.pid())),
        "{said}"
    );
    // Offline tools do not run beside a live server either.
    let check = admin("check", &data);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("is in use"));
    // The first one is unaffected, and once it stops the directory is free again.
    Remote::new(&first).register("alice").await;
    stop(first).await;
    let again = start(&data, &[]).await;
    let remote = Remote::new(&again);
    remote.login("alice").await;
}
