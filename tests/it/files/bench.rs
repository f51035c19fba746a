//! `confab bench --phases 7` on a small file: confab's figure, with the scp anchor when OpenSSH
//! is installed and, when it is not, the one sentence saying how to get it.

use std::process::Command;

use serde_json::Value;

/// Phase 7 with an 8 MiB file and `PATH` as given; the report's `file` section.
fn phase_7(path: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["bench", "--spawn-server", "--users", "2", "--phases", "7"])
        .args(["--file-bytes", &(8 << 20).to_string(), "--json"])
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run confab bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confab bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the JSON report");
    let file = report["targets"][0]["file"].clone();
    assert_eq!(file["bytes"], 8 << 20, "{report}");
    assert!(file["mb_per_s"].as_f64().unwrap() > 0.0, "{file}");
    file
}

#[test]
fn the_file_phase_measures_confab_and_says_how_to_get_a_missing_anchor() {
    // No PATH: scp and ssh-keygen are nowhere to be found.
    let alone = phase_7("");
    assert!(alone["scp_mb_per_s"].is_null(), "{alone}");
    let why = alone["scp_missing"].as_str().unwrap();
    assert!(why.contains("scp") && why.contains("ssh-keygen"), "{why}");
    assert!(
        why.contains("apt-get install openssh-server openssh-client"),
        "{why}"
    );

    // As the machine is: the anchor's figure when OpenSSH is all there, else the sentence.
    let here = phase_7(&std::env::var("PATH").unwrap_or_default());
    match here["scp_mb_per_s"].as_f64() {
        Some(mb) => assert!(mb > 0.0 && here["scp_missing"].is_null(), "{here}"),
        None => assert!(
            here["scp_missing"]
                .as_str()
                .unwrap()
                .contains("apt-get install"),
            "{here}"
        ),
    }
}
