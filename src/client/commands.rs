//! What a typed line means: one line of input → one [`Command`], or a usage sentence.
//!
//! Pure: no I/O, no session, no server. The REPL decides what a command does; this module only
//! decides whether the words make sense, so every spelling rule is unit-tested here.

use std::time::Duration;

use crate::types::check_username;

/// One thing the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `message <user> <text>`: a direct message through the server.
    Message { to: String, text: String },
    /// `broadcast <text>`: to everyone online who has not blocked us.
    Broadcast { text: String },
    /// `online [--since 1h]`: who is online now, or who logged in within `since`.
    Online { since: Option<Duration> },
    /// `block <user>`.
    Block { user: String },
    /// `unblock <user>`.
    Unblock { user: String },
    /// `blocked`: the users we block.
    Blocked,
    /// `getaddress <user>`: ask for `user`'s peer address (they are asked for consent).
    GetAddress { user: String },
    /// `private <user> <text>`: straight to the peer, falling back to the server.
    Private { to: String, text: String },
    /// `sendfile <user> <path>`: a file straight to the peer (the path is the rest of the line).
    SendFile { to: String, path: String },
    /// `accept <user>` / `deny <user>`, or `y` / `n` (`user: None`) for the single outstanding
    /// address request.
    Answer { user: Option<String>, accept: bool },
    /// `fingerprint <user>`: the fingerprint of the peer key we hold for `user`.
    Fingerprint { user: String },
    /// `whoami`: our name and our own key's fingerprint.
    Whoami,
    /// `password`: change our own password (asked for without echo, never on the line).
    Password,
    /// `help`.
    Help,
    /// `logout` (also `quit`, `exit`).
    Logout,
    /// A blank line: nothing to do.
    Nothing,
}

impl Command {
    /// The command's name as typed, for error lines (`{"type":"error","command":…}`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Message { .. } => "message",
            Command::Broadcast { .. } => "broadcast",
            Command::Online { .. } => "online",
            Command::Block { .. } => "block",
            Command::Unblock { .. } => "unblock",
            Command::Blocked => "blocked",
            Command::GetAddress { .. } => "getaddress",
            Command::Private { .. } => "private",
            Command::SendFile { .. } => "sendfile",
            Command::Answer { accept: true, .. } => "accept",
            Command::Answer { accept: false, .. } => "deny",
            Command::Fingerprint { .. } => "fingerprint",
            Command::Whoami => "whoami",
            Command::Password => "password",
            Command::Help => "help",
            Command::Logout => "logout",
            Command::Nothing => "",
        }
    }
}

/// The `help` text: one line per command, in the order people need them.
pub(crate) const HELP: &str = "\
commands:
  message <user> <text>     send a message through the server (kept until they read it)
  broadcast <text>          send a message to everyone online
  online [--since 1h]       who is online now, or who logged in within a time
  block <user>              stop a user from messaging you or seeing you
  unblock <user>            lift a block
  blocked                   the users you block
  getaddress <user>         ask a user for their address, for private messages
  private <user> <text>     send a message straight to a user (after getaddress)
  sendfile <user> <path>    send a file straight to a user (after getaddress)
  accept <user>             give your address to a user who asked for it, or take the file
                            they offer (or: y)
  deny <user>               refuse (or: n)
  fingerprint <user>        the fingerprint of the key you hold for a user
  whoami                    your name and your own key's fingerprint
  password                  change your password (asked for, not typed on the line)
  help                      this list
  logout                    log out and quit (also: end of input, Ctrl-D)";

/// Parses one line.
///
/// # Errors
/// A sentence saying what is wrong and how the command is written.
pub(crate) fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim_start();
    let (word, rest) = split_word(line);
    let command = match word.to_ascii_lowercase().as_str() {
        "" => Command::Nothing,
        "message" | "msg" => {
            let (to, text) = user_and_text(rest, "message <user> <text>")?;
            Command::Message { to, text }
        }
        "private" => {
            let (to, text) = user_and_text(rest, "private <user> <text>")?;
            Command::Private { to, text }
        }
        "sendfile" => {
            let (to, path) = user_and_text(rest, "sendfile <user> <path>")?;
            // Spaces inside a path are kept; trailing ones are a typing accident.
            let path = path.trim_end().to_owned();
            Command::SendFile { to, path }
        }
        "broadcast" => Command::Broadcast {
            text: text(rest, "broadcast <text>")?,
        },
        "online" => Command::Online {
            since: since(rest)?,
        },
        "block" => Command::Block {
            user: one_user(rest, "block <user>")?,
        },
        "unblock" => Command::Unblock {
            user: one_user(rest, "unblock <user>")?,
        },
        "blocked" => no_args(rest, "blocked", Command::Blocked)?,
        "getaddress" => Command::GetAddress {
            user: one_user(rest, "getaddress <user>")?,
        },
        "accept" => Command::Answer {
            user: Some(one_user(rest, "accept <user>")?),
            accept: true,
        },
        "deny" => Command::Answer {
            user: Some(one_user(rest, "deny <user>")?),
            accept: false,
        },
        "y" | "yes" => no_args(
            rest,
            "y",
            Command::Answer {
                user: None,
                accept: true,
            },
        )?,
        "n" | "no" => no_args(
            rest,
            "n",
            Command::Answer {
                user: None,
                accept: false,
            },
        )?,
        "fingerprint" => Command::Fingerprint {
            user: one_user(rest, "fingerprint <user>")?,
        },
        "whoami" => no_args(rest, "whoami", Command::Whoami)?,
        // Never on the line: it would be seen, and kept in the history.
        "password" => no_args(
            rest,
            "password (then asked for the passwords)",
            Command::Password,
        )?,
        "help" | "?" => Command::Help,
        "logout" | "quit" | "exit" => no_args(rest, "logout", Command::Logout)?,
        _ => {
            return Err(format!(
                "there is no command {word:?}; type help for the list"
            ));
        }
    };
    Ok(command)
}

/// The first whitespace-separated word and the rest, with the rest's leading space removed.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

fn usage(form: &str) -> String {
    format!("usage: {form}")
}

fn user(word: &str, form: &str) -> Result<String, String> {
    if word.is_empty() {
        return Err(usage(form));
    }
    check_username(word).map_err(|why| format!("{why} (usage: {form})"))?;
    Ok(word.to_owned())
}

fn one_user(rest: &str, form: &str) -> Result<String, String> {
    let (word, extra) = split_word(rest);
    if !extra.trim().is_empty() {
        return Err(usage(form));
    }
    user(word, form)
}

/// The text of a message: everything after the command (and user), spacing kept.
fn text(rest: &str, form: &str) -> Result<String, String> {
    if rest.trim().is_empty() {
        return Err(format!("a message cannot be empty (usage: {form})"));
    }
    Ok(rest.trim_end_matches(['\r', '\n']).to_owned())
}

fn user_and_text(rest: &str, form: &str) -> Result<(String, String), String> {
    let (word, rest) = split_word(rest);
    let to = user(word, form)?;
    Ok((to, text(rest, form)?))
}

fn no_args(rest: &str, form: &str, command: Command) -> Result<Command, String> {
    if rest.trim().is_empty() {
        Ok(command)
    } else {
        Err(usage(form))
    }
}

/// `online`'s optional `--since <duration>` (also `--since=<duration>`).
fn since(rest: &str) -> Result<Option<Duration>, String> {
    const FORM: &str = "online [--since 1h]";
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(None);
    }
    let value = if let Some(v) = rest.strip_prefix("--since=") {
        v.trim()
    } else {
        let (flag, v) = split_word(rest);
        if flag != "--since" {
            return Err(usage(FORM));
        }
        v.trim()
    };
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(usage(FORM));
    }
    let d = humantime::parse_duration(value)
        .map_err(|_| format!("{value:?} is not a duration like 30m, 1h or 2d (usage: {FORM})"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("--since needs at least one second (usage: {FORM})"));
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line).unwrap_or_else(|e| panic!("{line:?} should parse, got {e:?}"))
    }

    fn err(line: &str) -> String {
        match parse(line) {
            Ok(c) => panic!("{line:?} should not parse, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn message_keeps_the_text_as_typed() {
        assert_eq!(
            ok("message bob hello   there "),
            Command::Message {
                to: "bob".into(),
                text: "hello   there ".into()
            }
        );
        assert_eq!(
            ok("  MESSAGE  Bob.x  hi"),
            Command::Message {
                to: "Bob.x".into(),
                text: "hi".into()
            }
        );
    }

    #[test]
    fn message_without_text_or_user_says_how_to_write_it() {
        assert_eq!(err("message"), "usage: message <user> <text>");
        assert!(err("message bob").contains("usage: message <user> <text>"));
        assert!(err("message bob    ").contains("cannot be empty"));
        assert!(err("message b@d hi").contains("only letters, digits"));
    }

    #[test]
    fn sendfile_takes_the_rest_of_the_line_as_the_path() {
        assert_eq!(
            ok("sendfile bob /tmp/my report.pdf  "),
            Command::SendFile {
                to: "bob".into(),
                path: "/tmp/my report.pdf".into()
            }
        );
        assert!(err("sendfile bob").contains("usage: sendfile <user> <path>"));
        assert!(err("sendfile").contains("usage: sendfile <user> <path>"));
    }

    #[test]
    fn private_and_broadcast_take_text() {
        assert_eq!(
            ok("private carol a b"),
            Command::Private {
                to: "carol".into(),
                text: "a b".into()
            }
        );
        assert_eq!(
            ok("broadcast hi all"),
            Command::Broadcast {
                text: "hi all".into()
            }
        );
        assert!(err("broadcast").contains("usage: broadcast <text>"));
        assert!(err("private carol").contains("usage: private <user> <text>"));
    }

    #[test]
    fn online_takes_an_optional_since() {
        assert_eq!(ok("online"), Command::Online { since: None });
        assert_eq!(
            ok("online --since 1h"),
            Command::Online {
                since: Some(Duration::from_secs(3600))
            }
        );
        assert_eq!(
            ok("online --since=30m"),
            Command::Online {
                since: Some(Duration::from_secs(1800))
            }
        );
        assert!(err("online --since").contains("usage: online [--since 1h]"));
        assert!(err("online --since soon").contains("not a duration"));
        assert!(err("online bob").contains("usage"));
        assert!(err("online --since 1h extra").contains("usage"));
    }

    #[test]
    fn single_user_commands_want_exactly_one_name() {
        assert_eq!(ok("block bob"), Command::Block { user: "bob".into() });
        assert_eq!(ok("unblock bob"), Command::Unblock { user: "bob".into() });
        assert_eq!(
            ok("getaddress bob"),
            Command::GetAddress { user: "bob".into() }
        );
        assert_eq!(
            ok("fingerprint bob"),
            Command::Fingerprint { user: "bob".into() }
        );
        assert_eq!(err("block"), "usage: block <user>");
        assert_eq!(err("block bob carol"), "usage: block <user>");
        assert_eq!(err("getaddress"), "usage: getaddress <user>");
    }

    #[test]
    fn answers_name_a_user_or_take_the_only_request() {
        assert_eq!(
            ok("accept bob"),
            Command::Answer {
                user: Some("bob".into()),
                accept: true
            }
        );
        assert_eq!(
            ok("deny bob"),
            Command::Answer {
                user: Some("bob".into()),
                accept: false
            }
        );
        assert_eq!(
            ok("y"),
            Command::Answer {
                user: None,
                accept: true
            }
        );
        assert_eq!(
            ok("N"),
            Command::Answer {
                user: None,
                accept: false
            }
        );
        assert_eq!(err("y bob"), "usage: y");
        assert_eq!(err("accept"), "usage: accept <user>");
    }

    #[test]
    fn bare_commands_refuse_arguments() {
        assert_eq!(ok("blocked"), Command::Blocked);
        assert_eq!(ok("whoami"), Command::Whoami);
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("logout"), Command::Logout);
        assert_eq!(ok("quit"), Command::Logout);
        assert_eq!(ok(""), Command::Nothing);
        assert_eq!(ok("   "), Command::Nothing);
        assert_eq!(err("logout now"), "usage: logout");
        assert_eq!(err("whoami x"), "usage: whoami");
    }

    #[test]
    fn unknown_commands_point_to_help() {
        assert_eq!(
            err("sned bob hi"),
            "there is no command \"sned\"; type help for the list"
        );
    }

    #[test]
    fn every_command_has_a_name() {
        assert_eq!(ok("y").name(), "accept");
        assert_eq!(ok("deny bob").name(), "deny");
        assert_eq!(ok("message a b").name(), "message");
    }
}
