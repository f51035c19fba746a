//! The line editor's behaviour at the chat prompt: Tab completes command names and the names of
//! users online, Ctrl-C clears a half-typed line (and only on an empty line asks to leave), and
//! the history is kept in the state directory across runs, without anything secret in it.
//!
//! Knows nothing of the server: the REPL keeps [`Names`] up to date from presence events and
//! `online` answers, and this module only reads it.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rustyline::{
    Cmd, ConditionalEventHandler, Context, Event, EventContext, EventHandler, KeyEvent, Movement,
    RepeatCount,
    completion::{Completer, Pair},
    highlight::Highlighter,
    hint::Hinter,
    validate::Validator,
};

use super::dirs;

/// The names of the users online, for completion; shared with the REPL, which updates it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names(Arc<Mutex<BTreeSet<String>>>);

impl Names {
    /// `user` came online (`true`) or went offline.
    pub(crate) fn presence(&self, user: &str, online: bool) {
        let mut names = self.lock();
        if online {
            names.insert(user.to_owned());
        } else {
            names.remove(user);
        }
    }

    /// Everybody online now, replacing what was known.
    pub(crate) fn replace(&self, users: impl IntoIterator<Item = String>) {
        *self.lock() = users.into_iter().collect();
    }

    fn starting_with(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_lowercase();
        self.lock()
            .iter()
            .filter(|n| n.to_lowercase().starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A panic elsewhere while holding the set leaves a set of names, still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The commands Tab completes, as typed.
const COMMANDS: &[&str] = &[
    "accept",
    "block",
    "blocked",
    "broadcast",
    "deny",
    "fingerprint",
    "getaddress",
    "help",
    "logout",
    "message",
    "online",
    "password",
    "private",
    "quit",
    "sendfile",
    "unblock",
    "whoami",
];

/// The commands whose first argument is a user name.
const TAKE_A_USER: &[&str] = &[
    "accept",
    "block",
    "deny",
    "fingerprint",
    "getaddress",
    "message",
    "private",
    "sendfile",
    "unblock",
];

/// Completes commands and online users' names.
pub(crate) struct Helper {
    names: Names,
}

impl Helper {
    pub(crate) fn new(names: Names) -> Self {
        Helper { names }
    }

    /// What completes the word ending at `pos`: where it starts, and the candidates.
    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let found = match earlier[..] {
            [] => COMMANDS
                .iter()
                .filter(|c| c.starts_with(&word.to_lowercase()))
                .map(|c| (*c).to_owned())
                .collect(),
            [command] if TAKE_A_USER.contains(&command.to_lowercase().as_str()) => {
                self.names.starting_with(word)
            }
            _ => Vec::new(),
        };
        (start, found)
    }
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.candidates(line, pos);
        let pairs = found
            .into_iter()
            .map(|c| Pair {
                replacement: format!("{c} "),
                display: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Helper {
    type Hint = String;
}

impl Highlighter for Helper {}

impl Validator for Helper {}

impl rustyline::Helper for Helper {}

/// Ctrl-C: a half-typed line is cleared (people press it to abandon what they typed); on an
/// empty line it interrupts, which leaves the chat.
struct CtrlC;

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext<'_>) -> Option<Cmd> {
        if ctx.line().is_empty() {
            Some(Cmd::Interrupt)
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// Binds Ctrl-C as [`CtrlC`] says.
pub(crate) fn bind_ctrl_c<H: rustyline::Helper, I: rustyline::history::History>(
    editor: &mut rustyline::Editor<H, I>,
) {
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(CtrlC)),
    );
}

/// The history file (`STATE_DIR/history`), made private before it is read or written; `None`
/// when there is no home to keep it in (history then lasts for this run only).
pub(crate) fn history_file() -> Option<PathBuf> {
    let dir = dirs::state_dir()?;
    let path = dir.join("history");
    match dirs::private_dir(&dir).and_then(|()| dirs::private_file(&path)) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!("no line history across runs: {}: {e}", path.display());
            None
        }
    }
}

/// Whether a typed line may be kept in the history: not blank, not starting with a space (the
/// shells' way to keep a line out), and nothing about passwords.
pub(crate) fn worth_keeping(line: &str) -> bool {
    !line.trim().is_empty()
        && !line.starts_with(' ')
        && !line.trim_start().to_lowercase().starts_with("password")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(names: &[&str]) -> Helper {
        let known = Names::default();
        known.replace(names.iter().map(|n| (*n).to_owned()));
        Helper::new(known)
    }

    #[test]
    fn the_first_word_completes_to_commands() {
        let h = helper(&[]);
        assert_eq!(h.candidates("me", 2), (0, vec!["message".to_owned()]));
        assert_eq!(
            h.candidates("bl", 2),
            (0, vec!["block".to_owned(), "blocked".to_owned()])
        );
        assert_eq!(h.candidates("zz", 2).1, Vec::<String>::new());
    }

    #[test]
    fn a_users_place_completes_to_names_online_whatever_their_case() {
        let h = helper(&["Bob", "bea", "carol"]);
        assert_eq!(
            h.candidates("message b", 9),
            (8, vec!["Bob".to_owned(), "bea".to_owned()])
        );
        assert_eq!(h.candidates("getaddress C", 12).1, vec!["carol".to_owned()]);
        // Not in the text of a message, nor after commands that take no user.
        assert!(h.candidates("message bob b", 13).1.is_empty());
        assert!(h.candidates("broadcast b", 11).1.is_empty());
    }

    #[test]
    fn presence_keeps_the_names_current() {
        let names = Names::default();
        names.presence("bob", true);
        names.presence("carol", true);
        names.presence("bob", false);
        assert_eq!(names.starting_with(""), vec!["carol".to_owned()]);
    }

    #[test]
    fn nothing_about_passwords_or_blank_lines_is_kept() {
        assert!(worth_keeping("message bob hi"));
        assert!(!worth_keeping("password"));
        assert!(!worth_keeping("  Password"));
        assert!(!worth_keeping(" message bob secret plans"));
        assert!(!worth_keeping("   "));
    }
}
