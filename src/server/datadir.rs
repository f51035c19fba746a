//! The data directory: created private (0700), its files kept private (0600), and locked by the
//! one process using it.
//!
//! The database holds password hashes and message bodies, so neither the directory nor any file
//! in it may be readable by other users, whatever the umask. SQLite gives `-wal` and `-shm` the
//! database file's mode, so the database file is created here, 0600, before SQLite opens it.
//!
//! The lock is an advisory `flock` on `confab.lock`, held for as long as the [`DataDir`] lives:
//! two servers (or a server and `confab admin repair`) writing one database would each keep
//! in-memory inbox counters the other does not see. The lock file holds the owner's process id,
//! so a refusal can name it; the lock itself, not the file, is what counts, so a file left by a
//! crashed server is no obstacle.

use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// The database file's name in the data directory.
pub const DB_FILE: &str = "confab.db";
/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "confab.lock";
/// Files in the data directory that must be private, besides the database's own.
const PRIVATE_FILES: &[&str] = &["admin.token", "confab.db-wal", "confab.db-shm"];

/// A locked, private data directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the `flock`; closing it releases the lock.
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed, makes it and its files private, and locks it.
    ///
    /// # Errors
    /// The directory cannot be created or made private, or another process holds the lock.
    pub fn open(path: &Path) -> anyhow::Result<DataDir> {
        private_dir(path)?;
        let lock = lock(path)?;
        for name in [DB_FILE].iter().chain(PRIVATE_FILES) {
            tighten(&path.join(name))?;
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// Locks an existing directory without changing anything else in it (`confab admin check`).
    ///
    /// # Errors
    /// The directory does not exist, or another process holds the lock.
    pub fn lock_existing(path: &Path) -> anyhow::Result<DataDir> {
        if !path.is_dir() {
            bail!("there is no data directory {}", path.display());
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock(path)?,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file, created empty with mode 0600 if it did not exist (see the module doc).
    /// Not when a log is there without it: the store's checks must see that it is missing.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn db_path(&self) -> anyhow::Result<PathBuf> {
        let db = self.path.join(DB_FILE);
        if !self.path.join("confab.db-wal").exists() {
            private_file(&db)?;
        }
        Ok(db)
    }
}

/// Creates `path` with mode 0700, or tightens an existing directory to it.
fn private_dir(path: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Parents are created as usual; the data directory itself is private.
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(path))
                .with_context(|| format!("creating the data directory {}", path.display()))?;
            return Ok(());
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("creating the data directory {}", path.display()));
        }
    }
    tighten(path)
}

/// Creates `path` empty with mode 0600 unless it exists.
fn private_file(path: &Path) -> anyhow::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => tighten(path),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Removes group and other permissions from `path` if it exists and has any, and says so.
fn tighten(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private = mode & 0o700;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))
        .with_context(|| format!("making {} private", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "{} was readable by other users (mode {mode:o}); made it private (mode {private:o})",
        if meta.is_dir() { "the data directory" } else { "a data file" }
    );
    Ok(())
}

/// Takes the directory's lock and writes this process's id into the lock file.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = match owner.trim().parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_owned(),
            };
            bail!(
                "the data directory {} is in use by {owner} (another confab server?); stop it \
                 first, or give this one its own --data-dir",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_with_its_owner_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let refusal = DataDir::open(dir.path()).unwrap_err().to_string();
        assert!(
            refusal.contains(&dir.path().display().to_string())
                && refusal.contains(&format!("process {}", std::process::id())),
            "{refusal}"
        );
        drop(first);
        DataDir::open(dir.path()).expect("the lock is released with the DataDir");
    }

    #[test]
    fn loose_modes_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(data.join("admin.token"), "x").unwrap();
        std::fs::set_permissions(
            data.join("admin.token"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let d = DataDir::open(&data).unwrap();
        let db = d.db_path().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("admin.token")), 0o600);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&data.join(LOCK_FILE)), 0o600);
    }
}
