//! A server of a test's own, started and stopped through one of the repository's scripts
//! (`scripts/postgres.sh`, `scripts/nats.sh`: `start DIR` prints its URL, `stop DIR` kills it),
//! for tests that stop and start the engine itself.

use std::{path::Path, process::Command};

/// The server; stopped when dropped.
pub struct Scripted {
    script: &'static str,
    dir: tempfile::TempDir,
    pub url: String,
}

impl Scripted {
    /// Starts one with `scripts/<script>` in a temporary directory.
    pub fn start(script: &'static str) -> Self {
        let mut server = Scripted {
            script,
            dir: tempfile::tempdir().unwrap(),
            url: String::new(),
        };
        server.url = server.run("start");
        server
    }

    fn run(&self, what: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(self.script);
        let out = Command::new(script)
            .args([what, &self.dir.path().join("data").display().to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/{} {what}: {}",
            self.script,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Stops it the way a crash would (SIGKILL, PostgreSQL's immediate shutdown).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts it again, on the same port with the same data.
    pub fn restart(&self) {
        self.run("start");
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if !self.url.is_empty() {
            self.run("stop");
        }
    }
}
