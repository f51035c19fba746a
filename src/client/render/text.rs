//! How an [`Item`] reads for people: one sentence (or a few lines) each, in the words of the
//! commands they typed. Other people's text is made safe for the terminal here.

use super::{Item, Via};
use crate::{now_ms, types::human_duration};

impl Item {
    /// The line(s) a person reads, or `None` for items only programs care about.
    pub(crate) fn human(&self) -> Option<String> {
        let text = match self {
            Item::File(item) => return item.human(),
            Item::LoggedIn {
                user,
                fingerprint,
                again: false,
                ..
            } => {
                format!("logged in as {user} (your key {fingerprint}); type help for the commands")
            }
            Item::LoggedIn {
                user,
                fingerprint,
                server: None,
                ..
            } => format!(
                "logged in again as {user} with a new key ({fingerprint}); addresses you held \
                 before must be asked for again"
            ),
            Item::LoggedIn {
                user,
                fingerprint,
                server: Some(server),
                ..
            } => format!(
                "logged in again at {server} as {user} with a new key ({fingerprint}); \
                 addresses you held before must be asked for again"
            ),
            Item::Connected {
                replayed: 0,
                resumed: false,
            } => return None,
            Item::Connected {
                replayed,
                resumed: false,
            } => format!(
                "({replayed} {} arrived while you were away)",
                plural(*replayed, "message")
            ),
            Item::Connected {
                replayed: 0,
                resumed: true,
            } => "reconnected".into(),
            Item::Connected { replayed, .. } => format!(
                "reconnected ({replayed} {} arrived meanwhile)",
                plural(*replayed, "message")
            ),
            Item::Disconnected {
                error,
                next_server: None,
            } => format!("{error}; reconnecting…"),
            Item::Disconnected {
                error,
                next_server: Some(next),
            } => format!("{error}; trying {next}…"),
            Item::Reconnecting {
                attempt,
                error,
                retry_in_ms,
                ..
            } => {
                // Once the first quick retries have failed, then about every half minute:
                // enough to know it is still trying, not a line every few seconds.
                if *attempt != 3 && attempt % 6 != 0 {
                    return None;
                }
                format!(
                    "still reconnecting: {error}; next try in {}",
                    human_duration(std::time::Duration::from_millis(*retry_in_ms))
                )
            }
            Item::SessionEnded { text, .. } => format!("the session has ended: {text}"),
            Item::Fatal { error } => format!("cannot log in again: {error}"),
            Item::Message {
                from,
                body,
                via: Via::Direct,
                sent_at_ms,
                ..
            } => format!("{} {from} (private): {}", clock(*sent_at_ms), clean(body)),
            Item::Message {
                from,
                body,
                replayed: true,
                sent_at_ms,
                ..
            } => format!("{from} ({}): {}", ago(*sent_at_ms), clean(body)),
            Item::Message {
                from,
                body,
                sent_at_ms,
                ..
            } => format!("{} {from}: {}", clock(*sent_at_ms), clean(body)),
            Item::Broadcast {
                from,
                body,
                sent_at_ms,
            } => format!(
                "{} {from} (to everyone): {}",
                clock(*sent_at_ms),
                clean(body)
            ),
            Item::Presence { user, online: true } => format!("* {user} is online"),
            Item::Presence {
                user,
                online: false,
            } => format!("* {user} went offline"),
            Item::AddressRequest {
                from, fingerprint, ..
            } => format!(
                "{from} asks for your address (their key {fingerprint}): accept {from} / deny \
                 {from} (y/n)"
            ),
            Item::AddressRequestEnded { user, reason } => match reason.as_str() {
                "TIMEOUT" => format!(
                    "{user}'s address request timed out unanswered; {user} was told (they can ask \
                     again)"
                ),
                _ => format!("{user} went offline; their address request is withdrawn"),
            },
            Item::AddressGranted {
                user, fingerprint, ..
            } => format!(
                "{user} gave you their address: private {user} <text> now goes straight to them \
                 (their key {fingerprint})"
            ),
            Item::AddressDenied { user, reason } => match reason.as_str() {
                "TIMEOUT" => format!("{user} did not answer your address request in time"),
                "OFFLINE" => format!("{user} went offline before answering your address request"),
                _ => format!("{user} declined your address request"),
            },
            Item::AddressRevoked { user } => {
                format!("the direct link with {user} has ended; getaddress {user} to ask again")
            }
            Item::LoginFailed {
                failed_attempts,
                locked_until_ms,
                source,
            } => {
                let mut s = format!(
                    "warning: somebody at {source} failed to log in as you ({failed_attempts} \
                     failed {} in a row)",
                    plural(u64::from(*failed_attempts), "attempt")
                );
                if *locked_until_ms > 0 {
                    let left = (*locked_until_ms - now_ms()).max(0) as u64;
                    s.push_str(&format!(
                        "; new logins are locked for {}",
                        human_duration(std::time::Duration::from_millis(left))
                    ));
                }
                s
            }
            Item::PasswordChanged => {
                "your password is changed; the next login needs the new one".into()
            }
            Item::Sent {
                to,
                status,
                duplicate,
                fallback,
                ..
            } => {
                let mut s = match status.as_str() {
                    "DIRECT" => format!("sent to {to} directly"),
                    "STORED" => format!("{to} is offline: stored, they get it at their next login"),
                    _ => format!("delivered to {to}"),
                };
                if *duplicate {
                    s.push_str(" (the server had it already)");
                }
                match fallback {
                    Some(why) => format!(
                        "could not reach {to} directly ({why}); sent via the server instead: {s}"
                    ),
                    None => s,
                }
            }
            Item::BroadcastSent {
                delivered: 0,
                withheld: 0,
            } => "nobody else is online: the broadcast reached no one".into(),
            Item::BroadcastSent {
                delivered,
                withheld,
            } => {
                let mut s = format!(
                    "broadcast to {delivered} {}",
                    plural(u64::from(*delivered), "user")
                );
                if *withheld > 0 {
                    s.push_str("; your message could not be delivered to some recipients");
                }
                s
            }
            Item::Online {
                since_seconds: None,
                users,
            } => {
                if users.is_empty() {
                    "nobody else is online".into()
                } else {
                    let names: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
                    format!("online: {}", names.join(", "))
                }
            }
            Item::Online {
                since_seconds: Some(secs),
                users,
            } => {
                // As the user wrote it: "1h", not "1h 0m".
                let window = humantime::format_duration(std::time::Duration::from_secs(*secs));
                if users.is_empty() {
                    format!("nobody else logged in within {window}")
                } else {
                    let names: Vec<String> = users
                        .iter()
                        .map(|u| {
                            if u.online {
                                format!("{} (online)", u.user)
                            } else {
                                format!("{} (last login {})", u.user, ago(u.last_login_ms))
                            }
                        })
                        .collect();
                    format!("logged in within {window}: {}", names.join(", "))
                }
            }
            Item::Blocked { user } => format!(
                "blocked {user}: they can no longer message you, see you online or get your address"
            ),
            Item::Unblocked { user } => format!("unblocked {user}"),
            Item::BlockedList { users } if users.is_empty() => "you block nobody".into(),
            Item::BlockedList { users } => format!("you block: {}", users.join(", ")),
            Item::AddressRequestSent { user, .. } => {
                format!("asked {user} for their address; you will see their answer here")
            }
            Item::Answered { user, accept, auto } => {
                let auto = if *auto { " (automatic answer)" } else { "" };
                if *accept {
                    format!("gave {user} your address{auto}")
                } else {
                    format!("refused {user} your address{auto}")
                }
            }
            Item::Fingerprint {
                user,
                fingerprint,
                source,
            } => {
                let from = match source.as_str() {
                    "granted" => "from the address they gave you",
                    "accepted" => "from their request, which you accepted",
                    _ => "from their request, not answered yet",
                };
                format!("{user}'s key: {fingerprint} ({from})")
            }
            Item::Whoami {
                user,
                fingerprint,
                peer_port,
            } => format!("you are {user}; your key: {fingerprint} (peer port {peer_port})"),
            Item::Help { text } => text.clone(),
            Item::LoggedOut => "logged out".into(),
            Item::Error { error, .. } => error.clone(),
        };
        Some(text)
    }
}

/// A message body made safe for a terminal: other people's text must not move the cursor,
/// change colours or clear the screen, so control characters are shown as escapes, and a
/// continuation line is indented so it cannot pass for a line of ours (`* bob is online`).
fn clean(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// "5m ago" for a Unix-milliseconds time.
/// A live message's time, short and local (`14:03`): when it was sent, or now if the sender's
/// clock said nothing.
fn clock(sent_at_ms: i64) -> String {
    let at = match jiff::Timestamp::from_millisecond(sent_at_ms) {
        Ok(t) if sent_at_ms > 0 => t,
        _ => jiff::Timestamp::now(),
    };
    at.to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%H:%M")
        .to_string()
}

fn ago(t_ms: i64) -> String {
    if t_ms <= 0 {
        return "earlier".into();
    }
    let secs = ((now_ms() - t_ms).max(0) / 1000) as u64;
    if secs < 5 {
        return "just now".into();
    }
    format!(
        "{} ago",
        human_duration(std::time::Duration::from_secs(secs))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_sentences() {
        let fallback = Item::Sent {
            to: "bob".into(),
            status: "STORED".into(),
            message_id: "m1".into(),
            seq: Some(3),
            duplicate: false,
            via: Via::Server,
            fallback: Some("could not connect to the peer".into()),
            attempts: 1,
        };
        let text = fallback.human().unwrap();
        assert!(text.contains("sent via the server"), "{text}");
        assert!(text.contains("stored"), "{text}");
        let prompt = Item::AddressRequest {
            from: "bob".into(),
            request_id: "r".into(),
            fingerprint: "aaaa".into(),
            expires_at_ms: 0,
        };
        assert!(
            prompt
                .human()
                .unwrap()
                .contains("accept bob / deny bob (y/n)")
        );
        let withheld = Item::BroadcastSent {
            delivered: 1,
            withheld: 1,
        };
        assert!(
            withheld
                .human()
                .unwrap()
                .contains("could not be delivered to some recipients")
        );
    }

    #[test]
    fn other_peoples_text_cannot_drive_the_terminal() {
        let item = Item::Message {
            from: "bob".into(),
            body: "hi\u{1b}[2J\r* carol is online\nsecond line".into(),
            message_id: "m".into(),
            seq: Some(1),
            sent_at_ms: 0,
            via: Via::Server,
            replayed: false,
        };
        let text = item.human().unwrap();
        let (time, rest) = text.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "bob: hi\\u{1b}[2J\\r* carol is online\n    second line"
        );
        assert!(is_clock(time), "{text}");
        // JSON escapes them by itself.
        assert!(!item.json().contains('\u{1b}'));
    }

    fn is_clock(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit())
    }

    #[test]
    fn live_messages_carry_the_local_time_they_were_sent() {
        let sent_at = jiff::civil::date(2026, 3, 1)
            .at(14, 3, 0, 0)
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .unwrap()
            .timestamp()
            .as_millisecond();
        let message = |via, replayed| Item::Message {
            from: "bob".into(),
            body: "hi".into(),
            message_id: "m".into(),
            seq: None,
            sent_at_ms: sent_at,
            via,
            replayed,
        };
        assert_eq!(
            message(Via::Server, false).human().unwrap(),
            "14:03 bob: hi"
        );
        assert_eq!(
            message(Via::Direct, false).human().unwrap(),
            "14:03 bob (private): hi"
        );
        let broadcast = Item::Broadcast {
            from: "bob".into(),
            body: "all".into(),
            sent_at_ms: sent_at,
        };
        assert_eq!(broadcast.human().unwrap(), "14:03 bob (to everyone): all");
        // A replayed one says how long ago instead.
        assert!(
            !message(Via::Server, true)
                .human()
                .unwrap()
                .starts_with("14:03")
        );
    }

    #[test]
    fn a_quiet_first_connect_prints_nothing_for_people() {
        assert!(
            Item::Connected {
                replayed: 0,
                resumed: false
            }
            .human()
            .is_none()
        );
        assert_eq!(
            Item::Connected {
                replayed: 0,
                resumed: true
            }
            .human()
            .unwrap(),
            "reconnected"
        );
    }

    #[test]
    fn moving_to_another_node_names_it_and_staying_reads_as_before() {
        let lost = |next_server: Option<&str>| {
            Item::Disconnected {
                error: "lost the connection to the server".into(),
                next_server: next_server.map(Into::into),
            }
            .human()
            .unwrap()
        };
        assert_eq!(
            lost(None),
            "lost the connection to the server; reconnecting…"
        );
        assert_eq!(
            lost(Some("http://b:4119")),
            "lost the connection to the server; trying http://b:4119…"
        );
        let again = |server: Option<&str>| {
            Item::LoggedIn {
                user: "alice".into(),
                fingerprint: "ab12".into(),
                peer_port: 1,
                again: true,
                server: server.map(Into::into),
            }
            .human()
            .unwrap()
        };
        assert!(again(None).starts_with("logged in again as alice with a new key"));
        assert!(
            again(Some("http://b:4119")).starts_with("logged in again at http://b:4119 as alice")
        );
        // The JSON line names the server only when it changed.
        let json: serde_json::Value = serde_json::from_str(
            &Item::LoggedIn {
                user: "alice".into(),
                fingerprint: "ab12".into(),
                peer_port: 1,
                again: true,
                server: None,
            }
            .json(),
        )
        .unwrap();
        assert!(json.get("server").is_none(), "{json}");
    }
}
