//! Opening the server's storage: the locked, private data directory and the checked store in
//! it, repaired first when asked (`--repair`). Also the offline `confab admin check` and
//! `confab admin repair`, which take the same lock, so they never run beside a live server.

use std::{path::Path, sync::Arc};

use super::{
    Config,
    datadir::DataDir,
    store::{
        Store,
        check::{self, Health},
        salvage::{self, Salvaged},
        sqlite::{SCHEMA_VERSION, SqliteStore},
    },
};

/// The data directory (locked while this lives) and the store opened in it.
pub struct Storage {
    /// Holds the directory's lock: keep it for as long as the server runs.
    pub dir: DataDir,
    /// The store.
    pub store: Arc<dyn Store>,
}

/// Locks and opens `config.data_dir` and its store, repairing a store that fails its checks if
/// `config.repair` is set.
///
/// # Errors
/// The directory is in use or cannot be made private, or the store cannot be trusted (and no
/// repair was asked for) or opened.
pub fn open(config: &Config) -> anyhow::Result<Storage> {
    let dir = DataDir::open(&config.data_dir)?;
    if config.repair {
        repair_locked(&dir)?;
    }
    let store = SqliteStore::open_with(&dir.db_path()?, config.sync)?;
    Ok(Storage {
        dir,
        store: Arc::new(store),
    })
}

/// Runs every check on the store in `data_dir`, which must not be in use.
///
/// # Errors
/// The directory is missing or in use, or a file cannot be read.
pub fn check(data_dir: &Path) -> anyhow::Result<Health> {
    let dir = DataDir::lock_existing(data_dir)?;
    check::inspect(&dir.path().join(super::datadir::DB_FILE))
}

/// Repairs the store in `data_dir` if it fails its checks; `None` if it did not need it.
///
/// # Errors
/// The directory is in use or cannot be made private, or the repair failed.
pub fn repair(data_dir: &Path) -> anyhow::Result<Option<Salvaged>> {
    repair_locked(&DataDir::open(data_dir)?)
}

fn repair_locked(dir: &DataDir) -> anyhow::Result<Option<Salvaged>> {
    let db = dir.path().join(super::datadir::DB_FILE);
    let health = check::inspect(&db)?;
    if health.problems.is_empty() {
        tracing::info!("the store passed its checks; nothing to repair");
        return Ok(None);
    }
    if health.schema_version.unwrap_or(0) > SCHEMA_VERSION {
        // Not damage: a newer confab's data, which a repair by this one would throw away.
        anyhow::bail!("{}", health.problems.join("; "));
    }
    for problem in &health.problems {
        tracing::warn!("repairing: {problem}");
    }
    let salvaged = salvage::repair(&db)?;
    tracing::warn!(
        users = salvaged.users,
        messages = salvaged.messages,
        blocks = salvaged.blocks,
        orphaned = salvaged.orphaned,
        skipped_ranges = salvaged.skipped_ranges,
        aside = %salvaged.aside.display(),
        "repaired the store: recovered what was readable into a fresh database"
    );
    Ok(Some(salvaged))
}
