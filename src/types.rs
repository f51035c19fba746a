//! Rules and newtypes that the server and the client share.

use std::fmt;

/// SPEC §1: the port a server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 4119;
/// The server clients (chat, admin, bench) talk to unless told otherwise.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:4119";

/// Longest username, in characters (all ASCII).
pub const MAX_USERNAME_LEN: usize = 32;
/// Shortest password `Register` accepts.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted anywhere, in bytes; bounds the hashing work one request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest `message_id`, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 64;
/// Longest device ticket (SPEC §2) a login may present: what a server hands out is 32 hex digits.
pub const MAX_DEVICE_TICKET_BYTES: usize = 128;

/// Checks a username against SPEC §2: 1–32 characters of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// A sentence saying what is wrong with the name.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a username cannot be empty".into());
    }
    if name.len() > MAX_USERNAME_LEN {
        return Err(format!(
            "a username has at most {MAX_USERNAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "a username may contain only letters, digits, '_', '.' and '-', not {c:?}"
        ));
    }
    Ok(())
}

/// The key under which a username is unique: `Bob` and `bob` are one user.
pub fn username_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A secret string (password or token) whose `Debug` and `Display` never show it, so it cannot
/// leak into a log line through `?request` or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A short, human-comparable fingerprint of a peer's static public key: the first 10 bytes of its
/// SHA-256 in hex, grouped by four (`1a2b 3c4d …`).
pub fn fingerprint(key: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Formats a duration as people read it: `59s`, `4m 10s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ if secs % 3600 < 60 => format!("{}h", secs / 3600),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// Parses a duration as people write it on a command line: `60s`, `5m`, `1h30m`. Shared by every
/// subcommand's flags (`serve`, `bench`).
///
/// # Errors
/// A sentence naming the mistake and how durations are written.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 60s, 5m or 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_spec() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("A.b-c_9").is_ok());
        assert!(check_username(&"x".repeat(32)).is_ok());
        assert!(check_username("").is_err());
        assert!(check_username(&"x".repeat(33)).is_err());
        assert!(check_username("bob smith").is_err());
        assert!(check_username("bøb").is_err());
        assert_eq!(username_key("Bob"), username_key("bOB"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        use std::time::Duration;
        assert_eq!(human_duration(Duration::from_millis(59_400)), "1m");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h 30m");
    }

    #[test]
    fn durations_parse_as_people_write_them_and_mistakes_say_how() {
        use std::time::Duration;
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        for bad in ["", "5", "five minutes", "-5s"] {
            let why = parse_duration(bad).expect_err(bad);
            assert!(
                why.ends_with("(write durations like 60s, 5m or 1h)"),
                "{bad:?}: {why}"
            );
        }
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        let f = fingerprint(&[7u8; 32]);
        assert_eq!(f.len(), 24);
        assert_eq!(f, fingerprint(&[7u8; 32]));
        assert_ne!(f, fingerprint(&[8u8; 32]));
    }
}
