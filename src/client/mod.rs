//! The client side of confab: the typed gRPC client library ([`api`], with `tls` for the
//! trust `--ca` gives) shared by the chat program, `confab admin`, the load generator and the
//! tests, and `confab chat` itself.
//!
//! `confab chat` is split by concern (private modules, so named rather than linked here):
//! `commands` parses a typed line and `actions` does what it asks; `repl` runs the one loop that
//! owns the client's state; `servers` reads the `--server` list and connects to the first that
//! answers; `login` logs in with fresh peer keys, `events` keeps the session and its event
//! stream alive (heartbeats, acknowledgements, reconnecting, moving to the next server of the
//! list) by the rules of `reconnect`, and `link` lets a call that lost its connection wait for
//! it to be back; `call` puts one call under a deadline and words its failure; `grants` knows
//! who may talk to whom directly, `seen` shows each message once; `render` decides how things
//! look and where they are printed, `input` reads lines from a terminal or a script, and
//! `files` runs `sendfile` and the file offers. The peer path itself lives in
//! [`crate::peer`]; this module glues it to the server's events.

pub(crate) mod actions;
pub mod api;
pub(crate) mod call;
pub(crate) mod commands;
pub mod connect;
pub(crate) mod dirs;
pub(crate) mod editor;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod grants;
pub(crate) mod input;
pub(crate) mod link;
pub(crate) mod login;
pub(crate) mod progress;
pub(crate) mod reconnect;
pub(crate) mod render;
pub(crate) mod repl;
pub(crate) mod retry;
pub(crate) mod seen;
pub(crate) mod servers;
pub(crate) mod ticket;
pub(crate) mod tls;

use std::{net::SocketAddr, path::PathBuf};

pub(crate) use repl::run;

/// `confab chat`'s settings, checked: what the command line asked for.
#[derive(Debug)]
pub(crate) struct Config {
    /// CA to trust for `https`.
    pub(crate) ca: Option<PathBuf>,
    /// Who to log in as, and at which servers (kept for automatic re-logins).
    pub(crate) credentials: login::Credentials,
    /// Where the peer listener binds.
    pub(crate) peer_listen: SocketAddr,
    /// One JSON object per line instead of text.
    pub(crate) json: bool,
    /// How address requests are answered.
    pub(crate) consent: Consent,
    /// Line editor on a terminal (true) or plain lines from stdin.
    pub(crate) terminal: bool,
    /// Where received files go (`--download-dir`).
    pub(crate) download_dir: PathBuf,
    /// The largest file accepted (`--max-file-bytes`).
    pub(crate) max_file_bytes: u64,
    /// Accept every file offer without asking (`--auto-accept-files`).
    pub(crate) auto_accept_files: bool,
    /// Bytes per second files are sent at, at most (`--max-file-rate`); `None`: unpaced.
    pub(crate) max_file_rate: Option<u64>,
    /// The password was typed at a prompt: a wrong one is asked for again.
    pub(crate) prompted: bool,
    /// Ring the terminal's bell for a message when no line was entered for this long
    /// (`--bell-after`); `None`: never (`--no-bell`).
    pub(crate) bell_after: Option<std::time::Duration>,
}

/// How address requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consent {
    /// Show a prompt; the user answers with accept/deny or y/n.
    Ask,
    /// `--auto-accept`.
    Accept,
    /// `--auto-deny`.
    Deny,
}

/// The server ended the session (kicked, logged in elsewhere, re-login refused). It has been
/// shown already; the program only has to exit with a failure status.
#[derive(Debug, thiserror::Error)]
#[error("the session has ended")]
pub(crate) struct SessionOver;
