//! Everything the chat client shows, as one [`Item`] type, and its `--json` form: one object per
//! line with a `"type"` field, for programs. How an item reads for people is `text.rs`; where
//! lines go (stdout, or the terminal under the line being typed) is `printer.rs`.
//!
//! Owns the wording and the JSON shape. Never prints secrets (there are none in an [`Item`]).

mod file;
mod printer;
mod text;

use serde::Serialize;

pub(crate) use file::{Direction, FileItem};
pub(crate) use printer::{Printer, Sink, Typing};

/// Which path brought or took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Via {
    /// Relayed by the server (`SendMessage`, `Subscribe`).
    Server,
    /// Over the peer path, never seen by the server.
    Direct,
}

/// A user in an `online` answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OnlineUser {
    pub(crate) user: String,
    pub(crate) online: bool,
    pub(crate) last_login_ms: i64,
}

/// One thing to show: an event from the server or a peer, or the result of a command.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Item {
    // -- the session ------------------------------------------------------------------------
    /// Logged in (`again` after an automatic re-login, with new keys; `server` when that
    /// login is at another server of the list than the one before).
    LoggedIn {
        user: String,
        fingerprint: String,
        peer_port: u16,
        again: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        server: Option<String>,
    },
    /// The event stream is live; `replayed` stored messages came first.
    Connected {
        replayed: u64,
        resumed: bool,
    },
    /// The connection to the server broke; reconnecting by itself, at `next_server` when it
    /// moves to another server of the list.
    Disconnected {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_server: Option<String>,
    },
    /// A reconnection attempt failed; the next comes after `retry_in_ms` (at `next_server`).
    Reconnecting {
        attempt: u32,
        error: String,
        retry_in_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_server: Option<String>,
    },
    /// The server ended the session for good.
    SessionEnded {
        reason: String,
        text: String,
    },
    /// Re-login was refused; the program ends.
    Fatal {
        error: String,
    },

    // -- events -----------------------------------------------------------------------------
    /// A message to us, through the server or directly.
    Message {
        from: String,
        body: String,
        message_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        sent_at_ms: i64,
        via: Via,
        /// Stored while we were away and replayed at login.
        replayed: bool,
    },
    Broadcast {
        from: String,
        body: String,
        sent_at_ms: i64,
    },
    Presence {
        user: String,
        online: bool,
    },
    /// Somebody asks for our address: the consent prompt.
    AddressRequest {
        from: String,
        request_id: String,
        fingerprint: String,
        expires_at_ms: i64,
    },
    /// An address request to us ended unanswered: `TIMEOUT` (we did not answer in time; the
    /// asker was told) or `WITHDRAWN` (the asker went offline).
    AddressRequestEnded {
        user: String,
        reason: String,
    },
    AddressGranted {
        user: String,
        host: String,
        port: u16,
        fingerprint: String,
    },
    AddressDenied {
        user: String,
        reason: String,
    },
    AddressRevoked {
        user: String,
    },
    LoginFailed {
        failed_attempts: u32,
        locked_until_ms: i64,
        source: String,
    },

    // -- results ----------------------------------------------------------------------------
    /// A message went out. `status` is `DELIVERED`, `STORED` or `DIRECT`; `fallback` says why a
    /// `private` message went through the server instead.
    Sent {
        to: String,
        status: String,
        message_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        duplicate: bool,
        via: Via,
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
        /// How often it was sent: more than once when the server's rate limit asked the client
        /// to come back (same `message_id` each time, so it arrives once).
        #[serde(skip_serializing_if = "is_once")]
        attempts: u32,
    },
    BroadcastSent {
        delivered: u32,
        withheld: u32,
    },
    Online {
        #[serde(skip_serializing_if = "Option::is_none")]
        since_seconds: Option<u64>,
        users: Vec<OnlineUser>,
    },
    Blocked {
        user: String,
    },
    Unblocked {
        user: String,
    },
    BlockedList {
        users: Vec<String>,
    },
    AddressRequestSent {
        user: String,
        request_id: String,
    },
    Answered {
        user: String,
        accept: bool,
        auto: bool,
    },
    Fingerprint {
        user: String,
        fingerprint: String,
        source: String,
    },
    Whoami {
        user: String,
        fingerprint: String,
        peer_port: u16,
    },
    Help {
        text: String,
    },
    LoggedOut,
    /// `password` worked: the next login needs the new one.
    PasswordChanged,
    /// A command failed. `code` is the gRPC code name for a server refusal, `USAGE` for a
    /// mistyped command, `CLIENT` for what the client refuses itself (no grant, too long…).
    Error {
        command: String,
        code: String,
        error: String,
    },
    /// Files (`sendfile`, offers, progress): worded in `files.rs`, each with a `type` of its
    /// own.
    #[serde(untagged)]
    File(FileItem),
}

/// `attempts` is only worth a field when it is not the usual single send.
fn is_once(attempts: &u32) -> bool {
    *attempts == 1
}

impl Item {
    /// A usage error.
    pub(crate) fn usage(error: String) -> Item {
        Item::Error {
            command: String::new(),
            code: "USAGE".into(),
            error,
        }
    }

    /// A refusal by the client itself.
    pub(crate) fn refused(command: &str, error: String) -> Item {
        Item::Error {
            command: command.into(),
            code: "CLIENT".into(),
            error,
        }
    }

    /// A `Sent` item that took `n` sends.
    pub(crate) fn attempted(mut self, n: u32) -> Item {
        if let Item::Sent { attempts, .. } = &mut self {
            *attempts = n;
        }
        self
    }

    /// The `--json` line.
    pub(crate) fn json(&self) -> String {
        // Serializing plain strings and numbers cannot fail; keep a line anyway if it does.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"code\":\"CLIENT\",\"error\":\"{e}\"}}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(item: &Item) -> serde_json::Value {
        serde_json::from_str(&item.json()).unwrap()
    }

    #[test]
    fn json_lines_carry_a_type() {
        let v = json(&Item::Sent {
            to: "bob".into(),
            status: "DIRECT".into(),
            message_id: "m1".into(),
            seq: None,
            duplicate: false,
            via: Via::Direct,
            fallback: None,
            attempts: 1,
        });
        assert_eq!(v["type"], "sent");
        assert_eq!(v["status"], "DIRECT");
        assert_eq!(v["via"], "direct");
        assert!(v.get("seq").is_none());
        assert_eq!(json(&Item::LoggedOut)["type"], "logged_out");
        assert_eq!(
            json(&Item::usage("usage: block <user>".into()))["code"],
            "USAGE"
        );
    }
}
