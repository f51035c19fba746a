//! The device ticket (SPEC §2) this client keeps per server and user, so that strangers typing
//! wrong passwords for our name cannot lock *us* out: `STATE_DIR/tickets/<server>/<user>`,
//! mode 0600 (it is a credential). Read before each login, replaced when the server hands out
//! another. Without a state directory there is no ticket, and the login is judged like anyone's.

use std::path::PathBuf;

use super::dirs;
use crate::types::username_key;

/// Where one server's ticket for one user lives.
#[derive(Debug, Clone)]
pub(crate) struct TicketFile(Option<PathBuf>);

impl TicketFile {
    /// The file for `user` at `server` (a URL), in the state directory.
    pub(crate) fn new(server: &str, user: &str) -> TicketFile {
        let server: String = server
            .chars()
            .map(|c| match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' => c,
                _ => '_',
            })
            .collect();
        TicketFile(
            dirs::state_dir().map(|d| d.join("tickets").join(server).join(username_key(user))),
        )
    }

    /// A file at `path` (tests).
    #[cfg(test)]
    fn at(path: PathBuf) -> TicketFile {
        TicketFile(Some(path))
    }

    /// The ticket kept, or empty.
    pub(crate) fn read(&self) -> String {
        self.0
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    /// Keeps `ticket` (the server's answer to a login) if it is new.
    pub(crate) fn keep(&self, ticket: &str) {
        let Some(path) = &self.0 else { return };
        if ticket.is_empty() || ticket == self.read() {
            return;
        }
        let stored = path
            .parent()
            .map_or(Ok(()), dirs::private_dir)
            .and_then(|()| dirs::write_private(path, ticket.as_bytes()));
        if let Err(e) = stored {
            tracing::warn!(
                "the device ticket could not be kept in {}: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_ticket_is_kept_privately_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets/https___h_4119/alice");
        let file = TicketFile::at(path.clone());
        assert_eq!(file.read(), "");
        file.keep("");
        assert!(!path.exists(), "nothing to keep");
        file.keep("abc123");
        assert_eq!(file.read(), "abc123");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        file.keep("def456");
        assert_eq!(file.read(), "def456");
    }
}
