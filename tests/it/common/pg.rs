//! PostgreSQL for the tests: the server `scripts/test.sh` starts (its URL in
//! `CONFAB_TEST_POSTGRES`), a fresh database per test on it, and private servers for tests that
//! stop and start PostgreSQL itself.

use std::{
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

/// The shared test server's URL. Tests that need PostgreSQL fail (they do not pass silently)
/// when it is missing.
pub fn server_url() -> String {
    std::env::var("CONFAB_TEST_POSTGRES").expect(
        "CONFAB_TEST_POSTGRES is not set: start a server with `scripts/postgres.sh start DIR` and \
         export the URL it prints (scripts/test.sh does both)",
    )
}

/// Whether the integration suite's servers keep their data in PostgreSQL
/// (`CONFAB_TEST_STORE=postgres`) instead of SQLite.
pub fn selected() -> bool {
    std::env::var("CONFAB_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (server, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{db}")
}

/// Runs `sql` on `url` with its own connection on a runtime of its own, on a thread of its own,
/// so it works from any context, and returns the messages PostgreSQL answered.
fn simple_query(url: &str, sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"));
            tokio::spawn(conn);
            client.simple_query(&sql).await.unwrap()
        })
    })
    .join()
    .unwrap()
}

/// Runs `sql` on `url`.
pub fn execute(url: &str, sql: &str) {
    simple_query(url, sql);
}

/// The first column of the first row of `sql` on `url`, as text.
pub fn query_text(url: &str, sql: &str) -> String {
    simple_query(url, sql)
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("NULL").to_owned())
            }
            _ => None,
        })
        .expect("a row")
}

/// A new, empty database on the shared server; its URL.
pub fn fresh_database() -> String {
    fresh_database_on(&server_url())
}

/// A new, empty database on the server at `url`; its URL.
pub fn fresh_database_on(url: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "confab_t{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    execute(url, &format!("CREATE DATABASE {name}"));
    with_database(url, &name)
}

/// The database a test server whose data lives in `dir` uses: created on first use, the same
/// one for every later server on `dir` (so a restart finds its data).
pub fn database_for(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("test-store-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return url;
    }
    let url = fresh_database();
    std::fs::write(&file, &url).unwrap();
    url
}

/// A PostgreSQL server of the test's own, for tests that stop and start it.
pub fn private_server() -> super::scripted::Scripted {
    super::scripted::Scripted::start("postgres.sh")
}
