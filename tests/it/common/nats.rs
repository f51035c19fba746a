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
