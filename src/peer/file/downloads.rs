//! The download directory: where received files go, and the only place they may go.
//!
//! Owns the receiver's safety rules (SPEC §13): an offered name is reduced to a plain file name;
//! content is written to a `.part` file named after the sender and the transfer, so a second
//! offer of the same file resumes it; the `.part` becomes a file under the plain name only after
//! the checksum matched, and never over an existing file (a ` (1)`, ` (2)`, … suffix instead).
//!
//! Knows files, never sockets or Noise. Every path it builds is `dir` joined with one name it
//! made itself, none containing a separator, so nothing is ever written outside `dir`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

/// The longest plain name kept, in bytes; leaves room for a suffix and `.part` under the 255
/// bytes most file systems allow.
const MAX_NAME: usize = 200;
/// The name used when nothing is left of the offered one.
const FALLBACK_NAME: &str = "download";
/// How many ` (n)` suffixes are tried before giving up on a name.
const MAX_SUFFIX: u32 = 1000;

/// The download directory, shared by every transfer the listener runs.
#[derive(Debug)]
pub struct Downloads {
    dir: PathBuf,
    /// `.part` files being written right now: a second offer of one of them is told to wait.
    active: Mutex<HashSet<PathBuf>>,
}

impl Downloads {
    /// Saves into `dir`, which is created (with its parents) at the first offer, not before.
    pub fn new(dir: &Path) -> Arc<Downloads> {
        Arc::new(Downloads {
            dir: dir.to_path_buf(),
            active: Mutex::new(HashSet::new()),
        })
    }

    /// The directory files are saved in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims the `.part` file for `from`'s transfer `transfer_id` of the file offered as
    /// `name`; `None` if that transfer is already being received.
    pub(crate) fn claim(
        self: &Arc<Self>,
        from: &str,
        transfer_id: &str,
        name: &str,
    ) -> Option<Part> {
        let plain = plain_name(name);
        let mut key = Sha256::new();
        key.update(from.to_ascii_lowercase().as_bytes());
        key.update([0]);
        key.update(transfer_id.as_bytes());
        let key = key.finalize();
        let tag: String = key[..6].iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(format!("{plain}.{tag}.part"));
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if !active.insert(path.clone()) {
            return None;
        }
        Some(Part {
            downloads: self.clone(),
            plain,
            path,
        })
    }
}

/// One transfer's `.part` file, claimed until dropped.
#[derive(Debug)]
pub(crate) struct Part {
    downloads: Arc<Downloads>,
    /// The plain name the file will be saved under (before any suffix).
    pub(crate) plain: String,
    path: PathBuf,
}

impl Part {
    /// How many bytes an earlier attempt left for a file of `size` bytes, with the SHA-256
    /// state over them, ready to go on. A `.part` longer than the file is stale and emptied.
    pub(crate) fn resume(&self, size: u64) -> io::Result<(u64, Sha256)> {
        fs::create_dir_all(&self.downloads.dir)?;
        let mut hash = Sha256::new();
        let held = match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a regular file",
                    self.path.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, hash)),
            Err(e) => return Err(e),
        };
        if held > size {
            fs::remove_file(&self.path)?;
            return Ok((0, hash));
        }
        let mut file = File::open(&self.path)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        Ok((held, hash))
    }

    /// The `.part` file opened for appending, created if missing.
    pub(crate) fn append(&self) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }

    /// Removes what was received: it cannot be trusted (a checksum or size lie).
    pub(crate) fn discard(&self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Moves the complete `.part` to the plain name, or to the first free `name (n).ext`; never
    /// replaces an existing file. Returns where it went.
    pub(crate) fn finish(self) -> io::Result<PathBuf> {
        for n in 0..=MAX_SUFFIX {
            let candidate = self.downloads.dir.join(with_suffix(&self.plain, n));
            // Reserve the name first: create_new fails if anything exists there, so the rename
            // below only ever replaces the empty file made here.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&candidate)
            {
                Ok(_) => {
                    if let Err(e) = fs::rename(&self.path, &candidate) {
                        let _ = fs::remove_file(&candidate);
                        return Err(e);
                    }
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{MAX_SUFFIX} files named like {} exist already",
            self.plain
        )))
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.downloads
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.path);
    }
}

/// The offered name reduced to a plain file name: what follows the last `/` or `\`, without
/// control characters (NUL included) and leading dots or spaces, at most [`MAX_NAME`] bytes,
/// and [`FALLBACK_NAME`] when nothing is left. So never a separator, `.` or `..`.
pub(crate) fn plain_name(offered: &str) -> String {
    let last = offered.rsplit(['/', '\\']).next().unwrap_or_default();
    let kept: String = last.chars().filter(|c| !c.is_control()).collect();
    let kept = kept.trim_start_matches(['.', ' ']).trim_end();
    let mut end = kept.len().min(MAX_NAME);
    while !kept.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &kept[..end];
    if kept.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        kept.to_owned()
    }
}

/// `report.pdf` → `report (2).pdf` for `n` = 2; `n` = 0 is the name itself.
fn with_suffix(plain: &str, n: u32) -> String {
    if n == 0 {
        return plain.to_owned();
    }
    match plain.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{plain} ({n})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_names_become_plain_names() {
        let cases = [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("/etc/shadow", "shadow"),
            ("C:\\Windows\\win.ini", "win.ini"),
            ("..", "download"),
            (".", "download"),
            ("a/..", "download"),
            ("", "download"),
            ("/", "download"),
            (".bashrc", "bashrc"),
            ("nul\0byte", "nulbyte"),
            ("esc\x1b[2Jape\n\r\t", "esc[2Jape"),
            ("  spaced  ", "spaced"),
        ];
        for (offered, plain) in cases {
            assert_eq!(plain_name(offered), plain, "offered {offered:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(500);
        let plain = plain_name(&long);
        assert!(plain.len() <= MAX_NAME && plain.len() >= MAX_NAME - 1);
        assert!(plain.chars().all(|c| c == 'é'));
    }

    #[test]
    fn suffixes_go_before_the_extension() {
        assert_eq!(with_suffix("a.txt", 0), "a.txt");
        assert_eq!(with_suffix("a.txt", 2), "a (2).txt");
        assert_eq!(with_suffix("archive.tar.gz", 1), "archive.tar (1).gz");
        assert_eq!(with_suffix("README", 1), "README (1)");
    }

    #[test]
    fn a_finished_part_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::new(dir.path());
        fs::write(dir.path().join("a.txt"), b"mine").unwrap();
        let part = downloads.claim("alice", "t1", "../a.txt").unwrap();
        fs::write(&part.path, b"theirs").unwrap();
        let saved = part.finish().unwrap();
        assert_eq!(saved, dir.path().join("a (1).txt"));
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"mine");
        assert_eq!(fs::read(saved).unwrap(), b"theirs");
    }

    #[test]
    fn a_transfer_is_claimed_once_and_free_again_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::new(dir.path());
        let part = downloads.claim("alice", "t1", "a").unwrap();
        assert!(
            downloads.claim("ALICE", "t1", "a").is_none(),
            "same sender, any case"
        );
        assert!(
            downloads.claim("bob", "t1", "a").is_some(),
            "another sender's part"
        );
        drop(part);
        assert!(downloads.claim("alice", "t1", "a").is_some());
    }

    #[test]
    fn resume_reports_what_is_held_and_drops_a_stale_part() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::new(dir.path());
        let part = downloads.claim("alice", "t1", "a").unwrap();
        assert_eq!(part.resume(10).unwrap().0, 0);
        fs::write(&part.path, b"hello").unwrap();
        let (held, hash) = part.resume(10).unwrap();
        assert_eq!(held, 5);
        assert_eq!(hash.finalize()[..], Sha256::digest(b"hello")[..]);
        assert_eq!(part.resume(3).unwrap().0, 0, "longer than the file: stale");
        assert!(!part.path.exists());
    }
}
