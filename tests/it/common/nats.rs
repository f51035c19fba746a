//! NATS for the cluster tests: the server `scripts/test.sh` starts (its URL in
//! `CONFAB_TEST_NATS`), and private servers for tests that stop and start NATS itself.

/// The shared test server's URL. The cluster tests fail (they do not pass silently) when it is
/// missing.
pub fn server_url() -> String {
    std::env::var("CONFAB_TEST_NATS").expect(
        "CONFAB_TEST_NATS is not set: start a server with `scripts/nats.sh start DIR` and export \
         the URL it prints (scripts/test.sh does both)",
    )
}

/// A nats-server of the test's own, for tests that stop and start it.
pub fn private_server() -> super::scripted::Scripted {
    super::scripted::Scripted::start("nats.sh")
}

/// A nats-server of the test's own, started with extra `args` (credentials, TLS) on a free
/// loopback port; killed when dropped.
pub struct Configured {
    child: std::process::Child,
    pub port: u16,
}

impl Configured {
    pub fn start(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("nats-server")
            .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (Debian: apt-get install nats-server; scripts/test.sh does)");
        // Ready when it accepts connections, as scripts/nats.sh waits too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Configured { child, port }
    }
}

impl Drop for Configured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
