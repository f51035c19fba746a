//! The device ticket (SPEC §2) this client keeps per server and user, so that strangers typing
//! wrong passwords for our name cannot lock *us* out: `STATE_DIR/tickets/<server>/<user>`,
//! mode 0600 (it is a credential). Read before each login, replaced when the server hands out
//! another. Without a state directory there is no ticket, and the login is judged like anyone's.
//!
//! A `--server` list names the nodes of one cluster, which share one store and so honour each
//! other's tickets: a login at a node presents that node's ticket, or, when this device has none
//! for it yet, the one it holds for another node of the list ([`Tickets`]). The node hands a
//! valid ticket back, and it is kept for that node too, so a failover to a node never used
//! before is still judged as this device, not as a stranger.

use std::path::PathBuf;

use super::dirs;
use crate::types::{MAX_DEVICE_TICKET_BYTES, username_key};

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

    /// The ticket kept, or empty (also for a file too long to hold one: presenting it would
    /// only get the login refused as malformed).
    pub(crate) fn read(&self) -> String {
        self.0
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| t.len() <= MAX_DEVICE_TICKET_BYTES)
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

/// This device's tickets for one user at each server of a `--server` list (see the module
/// docs).
#[derive(Debug, Clone)]
pub(crate) struct Tickets(Vec<TicketFile>);

impl Tickets {
    /// The files for `user` at each of `servers` (URLs), in the list's order.
    pub(crate) fn new(servers: &[String], user: &str) -> Tickets {
        Tickets(servers.iter().map(|s| TicketFile::new(s, user)).collect())
    }

    /// The ticket to present at server `at`: its own, else the first other server's that this
    /// device holds.
    pub(crate) fn read(&self, at: usize) -> String {
        let own = self.0.get(at).map(TicketFile::read).unwrap_or_default();
        if !own.is_empty() {
            return own;
        }
        self.0
            .iter()
            .map(TicketFile::read)
            .find(|t| !t.is_empty())
            .unwrap_or_default()
    }

    /// Keeps `ticket`, handed out by server `at`, for that server.
    pub(crate) fn keep(&self, at: usize, ticket: &str) {
        if let Some(file) = self.0.get(at) {
            file.keep(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_node_without_a_ticket_of_its_own_is_shown_another_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let tickets = Tickets(
            ["a", "b", "c"]
                .iter()
                .map(|n| TicketFile::at(dir.path().join(n).join("alice")))
                .collect(),
        );
        assert_eq!(tickets.read(1), "", "nothing held anywhere");
        tickets.keep(2, "from-c");
        assert_eq!(tickets.read(0), "from-c");
        assert_eq!(tickets.read(1), "from-c");
        // Node b hands the ticket back (it shares c's store): kept for b too.
        tickets.keep(1, "from-c");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b/alice")).unwrap(),
            "from-c"
        );
        // A node's own ticket comes first; elsewhere the first held in the list's order.
        tickets.keep(0, "from-a");
        assert_eq!(tickets.read(0), "from-a");
        assert_eq!(tickets.read(2), "from-c");
        assert_eq!(
            tickets.read(7),
            "from-a",
            "a place past the list has no file of its own"
        );
    }

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
        std::fs::write(&path, "x".repeat(MAX_DEVICE_TICKET_BYTES + 1)).unwrap();
        assert_eq!(file.read(), "", "a damaged file is no ticket");
    }
}
