//! Where the client keeps things between runs, after the XDG base directories: its config file
//! (`$XDG_CONFIG_HOME/confab/config.toml`, else `~/.config/confab/config.toml`) and its state
//! (`$XDG_STATE_HOME/confab/`, else `~/.local/state/confab/`: line history, device tickets).
//!
//! State files are private to the user: the directory is made 0700 and each file 0600 before
//! anything is written into it, because history shows whom one talks to and a device ticket
//! is a credential.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// `$XDG_<var>` if set to an absolute path (the spec says relative ones are ignored), else
/// `$HOME/<fallback>`.
fn base(var: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(var).map(PathBuf::from)
        && dir.is_absolute()
    {
        return Some(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    home.is_absolute().then(|| home.join(fallback))
}

/// The client's config file, whether or not it exists.
pub(crate) fn config_file() -> Option<PathBuf> {
    base("XDG_CONFIG_HOME", ".config").map(|d| d.join("confab").join("config.toml"))
}

/// The client's state directory, whether or not it exists.
pub(crate) fn state_dir() -> Option<PathBuf> {
    base("XDG_STATE_HOME", ".local/state").map(|d| d.join("confab"))
}

/// Makes `dir` (and its parents) if missing; `dir` itself only its owner may enter.
///
/// # Errors
/// It cannot be made.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Makes sure `path` exists with mode 0600 (an existing file is narrowed to it), so what is
/// written into it afterwards is never readable by others, not even for a moment.
///
/// # Errors
/// It cannot be created or its mode set.
pub(crate) fn private_file(path: &Path) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// Replaces `path`'s content with `data`, the file private (0600) from its first byte.
///
/// # Errors
/// It cannot be written.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_and_dirs_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b/confab");
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        let history = state.join("history");
        fs::write(&history, "old").unwrap();
        fs::set_permissions(&history, fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&history).unwrap();
        assert_eq!(mode(&history), 0o600);
        assert_eq!(fs::read_to_string(&history).unwrap(), "old", "kept");
        let ticket = state.join("ticket");
        write_private(&ticket, b"secret").unwrap();
        write_private(&ticket, b"newer").unwrap();
        assert_eq!(mode(&ticket), 0o600);
        assert_eq!(fs::read(&ticket).unwrap(), b"newer");
    }
}
