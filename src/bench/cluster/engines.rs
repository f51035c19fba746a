//! PostgreSQL and nats-server for `--spawn-cluster`: started with the repository's
//! `scripts/postgres.sh` and `scripts/nats.sh` in a temporary directory (and then measured: the
//! postmaster's and nats-server's process ids come from their pid files), or servers already
//! running that the bench only uses (`--cluster-postgres`, `--cluster-nats`).
//!
//! Whatever was started is stopped when [`Engines`] is dropped — at the end, on an error, or
//! when the run is interrupted — so a run never leaves a server behind.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};

use crate::bench::cpu::Part;

/// The two servers a cluster (and the lone PostgreSQL node) stands on.
pub(crate) struct Engines {
    /// Where the started servers keep their data; `None` for servers the bench did not start.
    dir: Option<PathBuf>,
    scripts: PathBuf,
    /// `postgres://…/postgres`: the server, for creating the run's databases.
    postgres: String,
    pub(crate) nats: String,
    pub(crate) postgres_part: Part,
    pub(crate) nats_part: Part,
    /// Databases created on a server the bench did not start, dropped by [`Engines::finish`].
    created: Vec<String>,
}

impl Engines {
    /// Starts PostgreSQL and nats-server in a fresh temporary directory.
    ///
    /// # Errors
    /// The scripts are not found, or a server did not start (their message says why, e.g. the
    /// Debian package to install).
    pub(crate) async fn start() -> anyhow::Result<Engines> {
        let scripts = scripts_dir()?;
        let dir = super::super::spawn::temp_dir("cluster")?;
        // PostgreSQL runs as an unprivileged user when the bench runs as root: it must reach DIR.
        set_mode_755(&dir)?;
        // From here on, dropping `engines` stops whatever has started.
        let mut engines = Engines {
            dir: Some(dir.clone()),
            scripts,
            postgres: String::new(),
            nats: String::new(),
            postgres_part: Part::Unknown,
            nats_part: Part::Unknown,
            created: Vec::new(),
        };
        engines.postgres = engines
            .script("postgres.sh", "start", &dir.join("pg"))
            .await?;
        engines.postgres_part = Part::Pid(pid_file(&dir.join("pg/data/postmaster.pid"))?);
        engines.nats = engines
            .script("nats.sh", "start", &dir.join("nats"))
            .await?;
        engines.nats_part = Part::Pid(pid_file(&dir.join("nats/pid"))?);
        Ok(engines)
    }

    /// Servers already running at `postgres` and `nats`; their CPU is not known.
    pub(crate) fn running(postgres: String, nats: String) -> Engines {
        Engines {
            dir: None,
            scripts: PathBuf::new(),
            postgres,
            nats,
            postgres_part: Part::Unknown,
            nats_part: Part::Unknown,
            created: Vec::new(),
        }
    }

    /// A new, empty database for one target of the run; its URL.
    ///
    /// # Errors
    /// PostgreSQL cannot be reached or refuses.
    pub(crate) async fn database(&mut self, tag: &str) -> anyhow::Result<String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("confab_bench_{}_{nanos}_{tag}", std::process::id());
        self.sql(&format!("CREATE DATABASE {name}")).await?;
        if self.dir.is_none() {
            self.created.push(name.clone());
        }
        let (server, _) = self
            .postgres
            .rsplit_once('/')
            .context("the PostgreSQL URL names no database")?;
        Ok(format!("{server}/{name}"))
    }

    /// Drops the databases created on a server the bench did not start (their nodes are gone
    /// by now), then stops what the bench started.
    pub(crate) async fn finish(mut self) {
        for name in std::mem::take(&mut self.created) {
            if let Err(e) = self.sql(&format!("DROP DATABASE IF EXISTS {name}")).await {
                eprintln!("note: database {name} was left behind: {e:#}");
            }
        }
    }

    async fn sql(&self, sql: &str) -> anyhow::Result<()> {
        let (client, conn) = tokio_postgres::connect(&self.postgres, tokio_postgres::NoTls)
            .await
            .context("connecting to PostgreSQL")?;
        let conn = tokio::spawn(conn);
        let result = client
            .batch_execute(sql)
            .await
            .with_context(|| sql.to_owned());
        drop(client);
        let _ = conn.await;
        result
    }

    /// Runs `scripts/NAME ACTION DIR` and returns what it printed (a URL).
    async fn script(&self, name: &str, action: &str, dir: &Path) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(self.scripts.join(name))
            .arg(action)
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running scripts/{name}"))?;
        if !out.status.success() {
            bail!(
                "scripts/{name} {action} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // Blocking, on purpose: this also runs while the runtime unwinds an interrupted run,
        // and the servers must be gone before the process is.
        for (name, sub) in [("nats.sh", "nats"), ("postgres.sh", "pg")] {
            let _ = std::process::Command::new(self.scripts.join(name))
                .arg("stop")
                .arg(dir.join(sub))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The repository's `scripts/`: `CONFAB_BENCH_SCRIPTS`, else `scripts/` in the current
/// directory, else beside the build directory this executable runs from (`target/release/`).
fn scripts_dir() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CONFAB_BENCH_SCRIPTS") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from("scripts"));
    if let Ok(exe) = std::env::current_exe()
        && let Some(repo) = exe.parent().and_then(Path::parent).and_then(Path::parent)
    {
        candidates.push(repo.join("scripts"));
    }
    candidates
        .into_iter()
        .find(|d| d.join("postgres.sh").is_file() && d.join("nats.sh").is_file())
        .map(|d| std::path::absolute(&d).unwrap_or(d))
        .context(
            "--spawn-cluster starts PostgreSQL and NATS with scripts/postgres.sh and \
             scripts/nats.sh: run it from the repository's root or set CONFAB_BENCH_SCRIPTS=DIR",
        )
}

fn set_mode_755(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} readable", dir.display()))
}

/// The process id on the first line of a pid file.
fn pid_file(path: &Path) -> anyhow::Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("{} holds no process id", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postmaster.pid");
        std::fs::write(&path, "4242\n/var/lib/pg\n1700000000\n5432\n").unwrap();
        assert_eq!(pid_file(&path).unwrap(), 4242);
        std::fs::write(&path, "not a pid\n").unwrap();
        assert!(pid_file(&path).is_err());
        assert!(pid_file(&dir.path().join("missing")).is_err());
    }
}
