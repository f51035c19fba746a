//! `contrib/`: the systemd unit, checked by systemd's own verifier, and the container file,
//! checked as far as a machine without a container daemon can (scripts/test.sh installs
//! Debian's systemd package for `systemd-analyze` when it is missing).

use std::{path::Path, process::Command};

fn contrib(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_is_hardened() {
    let unit = contrib("confab.service");
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=confab",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    // systemd checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let installed = unit.replace("/usr/local/bin/confab", env!("CARGO_BIN_EXE_confab"));
    let path = dir.path().join("confab.service");
    std::fs::write(&path, installed).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // Warnings also go to stderr with a zero exit; a clean unit produces none about itself.
    assert!(
        !said.contains("confab.service"),
        "systemd-analyze verify: {said}"
    );
    // The service's own invocation parses: the flags it passes exist.
    let help = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--config") && help.contains("--data-dir"));
}

#[test]
fn the_container_file_builds_in_a_separate_stage_and_runs_as_a_non_root_user_with_a_data_volume() {
    let file = contrib("Containerfile");
    let froms: Vec<&str> = file.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    // The toolchain image is at least the crate's rust-version.
    let manifest = include_str!("../../Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        froms[0].contains(&format!("rust:{rust_version}")),
        "{} vs rust-version {rust_version}",
        froms[0]
    );
    let user = file
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert!(file.contains("VOLUME /var/lib/confab"));
    assert!(file.contains("CONFAB_DATA_DIR=/var/lib/confab"));
    assert!(file.contains("COPY --from=build /src/target/release/confab /usr/local/bin/confab"));
    assert!(file.contains("ENTRYPOINT [\"/usr/local/bin/confab\"]"));
}
