//! What the file side of `confab chat` shows (SPEC §13): one [`FileItem`] per event, its JSON
//! `type`, and how it reads for people. The transfers themselves are `client/files.rs`.

use serde::Serialize;

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Direction {
    Send,
    Receive,
}

/// What the file side shows; one JSON `type` each.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FileItem {
    /// We offered a file; the receiver is being asked.
    #[serde(rename = "file_offered")]
    Offered { to: String, name: String, size: u64 },
    /// Somebody offers us a file: the prompt.
    #[serde(rename = "file_offer")]
    Offer {
        from: String,
        name: String,
        size: u64,
        fingerprint: String,
        /// Bytes kept from an earlier attempt; the transfer resumes there.
        resume_from: u64,
    },
    /// We answered an offer (`auto` with `--auto-accept-files`).
    #[serde(rename = "file_answered")]
    Answered {
        from: String,
        name: String,
        accept: bool,
        auto: bool,
    },
    /// A running transfer (`--json` only).
    #[serde(rename = "file_progress")]
    Progress {
        direction: Direction,
        user: String,
        name: String,
        bytes: u64,
        size: u64,
        bytes_per_second: u64,
    },
    #[serde(rename = "file_sent")]
    Sent {
        to: String,
        name: String,
        size: u64,
        /// Bytes the receiver already held, not sent again.
        resumed_from: u64,
        sha256: String,
    },
    #[serde(rename = "file_received")]
    Received {
        from: String,
        name: String,
        path: String,
        size: u64,
        sha256: String,
    },
    /// A transfer did not complete; `error` says why and whether sending again resumes.
    #[serde(rename = "file_failed")]
    Failed {
        direction: Direction,
        user: String,
        name: String,
        error: String,
    },
}

impl FileItem {
    /// The line a person reads, or `None` for items only programs care about.
    pub(crate) fn human(&self) -> Option<String> {
        Some(match self {
            FileItem::Offered { to, name, size } => {
                format!(
                    "offering {name} ({}) to {to}; waiting for their answer",
                    bytes(*size)
                )
            }
            FileItem::Offer {
                from,
                name,
                size,
                fingerprint,
                resume_from,
            } => {
                let resume = if *resume_from > 0 {
                    format!(", resuming after {}", bytes(*resume_from))
                } else {
                    String::new()
                };
                format!(
                    "{from} (key {fingerprint}) offers you a file: {name} ({}{resume}). \
                     accept {from} / deny {from} (or y / n)",
                    bytes(*size)
                )
            }
            FileItem::Answered {
                from,
                name,
                accept: true,
                auto,
            } => format!(
                "receiving {name} from {from}{}",
                if *auto { " (--auto-accept-files)" } else { "" }
            ),
            FileItem::Answered { from, name, .. } => format!("declined {name} from {from}"),
            FileItem::Progress { .. } => return None,
            FileItem::Sent {
                to,
                name,
                size,
                resumed_from,
                sha256,
            } => {
                let resumed = if *resumed_from > 0 {
                    format!(", resumed after {}", bytes(*resumed_from))
                } else {
                    String::new()
                };
                format!(
                    "sent {name} ({}) to {to}{resumed}; sha256 {sha256}",
                    bytes(*size)
                )
            }
            FileItem::Received {
                from,
                path,
                size,
                sha256,
                ..
            } => format!(
                "received {path} ({}) from {from}; sha256 {sha256}",
                bytes(*size)
            ),
            FileItem::Failed {
                direction: Direction::Send,
                user,
                name,
                error,
            } => format!("{name} was not sent to {user}: {error}"),
            FileItem::Failed {
                direction: Direction::Receive,
                user,
                name,
                error,
            } => format!("{name} from {user} was not received: {error}"),
        })
    }
}

/// `1234567` → `1.2 MiB`.
fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::render::Item;

    #[test]
    fn file_items_carry_their_own_json_type_and_progress_is_for_programs_only() {
        let sent = Item::File(FileItem::Sent {
            to: "bob".into(),
            name: "a.txt".into(),
            size: 3,
            resumed_from: 0,
            sha256: "ab".into(),
        });
        let v: serde_json::Value = serde_json::from_str(&sent.json()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["sha256"].as_str()),
            (Some("file_sent"), Some("ab"))
        );
        assert_eq!(sent.human().unwrap(), "sent a.txt (3 B) to bob; sha256 ab");
        let progress = Item::File(FileItem::Progress {
            direction: Direction::Receive,
            user: "alice".into(),
            name: "a.txt".into(),
            bytes: 1,
            size: 3,
            bytes_per_second: 1,
        });
        let v: serde_json::Value = serde_json::from_str(&progress.json()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["direction"].as_str()),
            (Some("file_progress"), Some("receive"))
        );
        assert!(progress.human().is_none());
    }
}
