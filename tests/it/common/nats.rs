//! NATS for the cluster tests: the server `scripts/test.sh` starts (its URL in
//! `CONFAB_TEST_NATS`), and private servers for tests that stop and start NATS itself.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The shared test server's URL. The cluster tests fail (they do not pass silently) when it is
/// missing.
pub fn server_url() -> String {
    std::env::var("CONFAB_TEST_NATS").expect(
        "CONFAB_TEST_NATS is not set: start a server with `scripts/nats.sh start DIR` and export \
         the URL it prints (scripts/test.sh does both)",
    )
}

/// A nats-server of the test's own, for tests that stop and start it.
pub struct PrivateNats {
    dir: tempfile::TempDir,
    pub url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nats.sh")
}

impl PrivateNats {
    pub fn start() -> Self {
        let mut server = PrivateNats {
            dir: tempfile::tempdir().unwrap(),
            url: String::new(),
        };
        server.url = server.run("start");
        server
    }

    fn run(&self, what: &str) -> String {
        let out = Command::new(script())
            .args([what, &self.dir.path().join("nats").display().to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/nats.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Kills it (SIGKILL).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        self.run("start");
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if !self.url.is_empty() {
            self.run("stop");
        }
    }
}
