//! The values the core hands out that others translate: why a session ended, where a message
//! went, who is online. A leaf module, so `wire.rs` can turn them into protobuf without
//! depending on the core that produces them.

/// Why a session ended (SPEC §2–3); told to its stream as `SessionEnded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `Logout`.
    LoggedOut,
    /// A new login of the same user replaced it.
    LoggedInElsewhere,
    /// No call within the session timeout.
    TimedOut,
    /// An operator ended it.
    Kicked,
    /// Its stream's queue filled up: the client stopped reading.
    TooSlow,
    /// The server is stopping.
    ServerShutdown,
}

impl EndReason {
    /// The reason as the proto names it, for logs and sentences.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::LoggedOut => "LOGGED_OUT",
            EndReason::LoggedInElsewhere => "LOGGED_IN_ELSEWHERE",
            EndReason::TimedOut => "TIMED_OUT",
            EndReason::Kicked => "KICKED",
            EndReason::TooSlow => "TOO_SLOW",
            EndReason::ServerShutdown => "SERVER_SHUTDOWN",
        }
    }
}

/// Where a stored direct message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on the recipient's live stream.
    Delivered,
    /// The recipient has no live stream; it waits in the inbox.
    Stored,
}

/// A row of `ListOnline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineUser {
    /// The name as registered.
    pub name: String,
    /// Online now.
    pub online: bool,
    /// Last successful login, Unix ms.
    pub last_login_ms: i64,
}
