//! The chat client's command parser on any line a user (or a script fed to `confab chat`) can
//! type.

use crate::client::commands::{Command, parse};

/// Parses `data` as typed lines. Invariants: no panic; a parsed command other than a blank line
/// has a name, and a usage sentence is never empty.
pub fn chat_command(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    // The REPL hands the parser one line at a time, without its end.
    for line in line.lines() {
        match parse(line) {
            Ok(command) => {
                assert!(command == Command::Nothing || !command.name().is_empty());
                check_fields(line, &command);
            }
            Err(usage) => assert!(!usage.trim().is_empty(), "empty usage for {line:?}"),
        }
    }
}

/// Whatever a command carries was typed on the line: the parser never invents text.
fn check_fields(line: &str, command: &Command) {
    let typed = |s: &str| assert!(line.contains(s), "{s:?} is not part of {line:?}");
    match command {
        Command::Message { to, text } | Command::Private { to, text } => {
            typed(to);
            typed(text);
        }
        Command::SendFile { to, path } => {
            typed(to);
            typed(path);
        }
        Command::Broadcast { text } => typed(text),
        Command::Block { user }
        | Command::Unblock { user }
        | Command::GetAddress { user }
        | Command::Fingerprint { user } => typed(user),
        Command::Answer {
            user: Some(user), ..
        } => typed(user),
        _ => {}
    }
}
