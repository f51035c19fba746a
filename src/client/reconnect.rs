//! When the event pump tries again, and where: what follows a stream's end or a failed login
//! or subscription (the same step, a new login, or — with a `--server` list — the next node),
//! which session ends are recovered from, and the pause between attempts. Pure, so the rules
//! are tested without a server; `events.rs` runs them.

use std::time::Duration;

use tonic::{Code, Status};

use super::{api, call::is_connection_failure};
use crate::pb::SessionEndReason;

/// First pause before a reconnection attempt; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest pause between reconnection attempts.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream that ends sooner than this after opening counts as a failed attempt.
pub(super) const SHORT_LIVED: Duration = Duration::from_secs(2);

/// How a stream ended.
#[derive(Debug)]
pub(super) enum StreamEnd {
    /// We were told to stop.
    Stopped,
    /// The server ended the session.
    Ended(SessionEndReason),
    /// The stream failed; `gone` when the connection itself did (or the server closed the
    /// stream without a word), not when the server answered with an error.
    Broken { why: String, gone: bool },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Log in again (the session is gone).
    Login,
    /// Subscribe again with the same token.
    Subscribe,
    /// Go to the next server of the list and log in there (this one is gone).
    Move,
}

/// What follows a stream's end, with `several` servers to choose from or one; `None` when
/// the pump stops (told to, or the session was ended on purpose).
pub(super) fn after_end(end: &StreamEnd, several: bool) -> Option<Next> {
    match *end {
        StreamEnd::Stopped => None,
        StreamEnd::Ended(SessionEndReason::ServerShutdown) if several => Some(Next::Move),
        StreamEnd::Ended(reason) if recoverable(reason) => Some(Next::Login),
        StreamEnd::Ended(_) => None,
        StreamEnd::Broken { gone: true, .. } if several => Some(Next::Move),
        StreamEnd::Broken { .. } => Some(Next::Subscribe),
    }
}

/// What follows a failed login or subscription that was to be `next`: the next server when
/// this one cannot be reached (or does not answer in time) and there is another, else the
/// same step again.
pub(super) fn after_failure(next: Next, status: &Status, several: bool) -> Next {
    let gone = is_connection_failure(status) || status.code() == Code::DeadlineExceeded;
    if gone && several { Next::Move } else { next }
}

/// A failed call in words: the server's sentence, or that it cannot be reached.
pub(super) fn words(status: &Status) -> String {
    if is_connection_failure(status) {
        "the server cannot be reached".to_owned()
    } else {
        api::sentence(status)
    }
}

/// Session ends the pump recovers from by logging in again.
pub(super) fn recoverable(reason: SessionEndReason) -> bool {
    match reason {
        SessionEndReason::TimedOut
        | SessionEndReason::TooSlow
        | SessionEndReason::ServerShutdown
        | SessionEndReason::Unspecified => true,
        SessionEndReason::LoggedOut
        | SessionEndReason::LoggedInElsewhere
        | SessionEndReason::Kicked => false,
    }
}

/// A login failure that retrying cannot fix: the credentials or our request are wrong.
/// (A lockout or a rate limit passes, an unreachable server comes back.)
pub(super) fn login_refused_for_good(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::InvalidArgument | Code::NotFound
    )
}

/// Why a session ended, in words.
pub(crate) fn reason_words(reason: SessionEndReason) -> &'static str {
    match reason {
        SessionEndReason::LoggedOut => "you logged out",
        SessionEndReason::LoggedInElsewhere => "you logged in somewhere else",
        SessionEndReason::TimedOut => "no heartbeat reached the server in time",
        SessionEndReason::Kicked => "an operator ended your session",
        SessionEndReason::TooSlow => "this client fell behind reading events",
        SessionEndReason::ServerShutdown => "the server is shutting down",
        SessionEndReason::Unspecified => "no reason given",
    }
}

/// The pause before attempt `n` (1-based): 250 ms doubling to 5 s, ±20 % so a restarted server
/// is not hit by every client in the same instant.
pub(super) fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.4 + 0.8;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        assert!(backoff(1) <= Duration::from_millis(300));
        assert!(backoff(1) >= Duration::from_millis(200));
        assert!(backoff(3) >= Duration::from_millis(800));
        for n in [6, 10, 40, u32::MAX] {
            assert!(backoff(n) <= BACKOFF_MAX.mul_f64(1.2));
            assert!(backoff(n) >= BACKOFF_MAX.mul_f64(0.8));
        }
    }

    #[test]
    fn only_deliberate_ends_stop_the_client() {
        assert!(!recoverable(SessionEndReason::Kicked));
        assert!(!recoverable(SessionEndReason::LoggedInElsewhere));
        assert!(!recoverable(SessionEndReason::LoggedOut));
        assert!(recoverable(SessionEndReason::ServerShutdown));
        assert!(recoverable(SessionEndReason::TimedOut));
        assert!(recoverable(SessionEndReason::TooSlow));
    }

    #[test]
    fn a_lost_node_is_left_for_the_next_only_when_there_is_one() {
        let gone = StreamEnd::Broken {
            why: String::new(),
            gone: true,
        };
        assert_eq!(after_end(&gone, true), Some(Next::Move));
        assert_eq!(after_end(&gone, false), Some(Next::Subscribe));
        // The server answered with an error: it is there; subscribe again.
        let answered = StreamEnd::Broken {
            why: String::new(),
            gone: false,
        };
        assert_eq!(after_end(&answered, true), Some(Next::Subscribe));
        let shutdown = StreamEnd::Ended(SessionEndReason::ServerShutdown);
        assert_eq!(after_end(&shutdown, true), Some(Next::Move));
        assert_eq!(after_end(&shutdown, false), Some(Next::Login));
        let timed_out = StreamEnd::Ended(SessionEndReason::TimedOut);
        assert_eq!(after_end(&timed_out, true), Some(Next::Login));
        assert_eq!(after_end(&StreamEnd::Stopped, true), None);
    }

    #[test]
    fn a_session_ended_on_purpose_never_moves_to_another_node() {
        for reason in [
            SessionEndReason::LoggedInElsewhere,
            SessionEndReason::Kicked,
            SessionEndReason::LoggedOut,
        ] {
            assert_eq!(
                after_end(&StreamEnd::Ended(reason), true),
                None,
                "{reason:?}"
            );
        }
    }

    #[test]
    fn only_an_unreachable_server_is_left_for_the_next() {
        let down = Status::unavailable("tcp connect error");
        let slow = Status::deadline_exceeded("the server did not answer within 10s");
        let locked = Status::permission_denied("locked");
        assert_eq!(after_failure(Next::Login, &down, true), Next::Move);
        assert_eq!(after_failure(Next::Subscribe, &slow, true), Next::Move);
        assert_eq!(after_failure(Next::Login, &down, false), Next::Login);
        assert_eq!(
            after_failure(Next::Subscribe, &down, false),
            Next::Subscribe
        );
        assert_eq!(after_failure(Next::Login, &locked, true), Next::Login);
    }

    #[test]
    fn a_wrong_password_is_not_retried_but_a_lockout_is() {
        assert!(login_refused_for_good(&Status::unauthenticated("wrong")));
        assert!(!login_refused_for_good(&Status::permission_denied(
            "locked"
        )));
        assert!(!login_refused_for_good(&Status::unavailable("down")));
        assert!(!login_refused_for_good(&Status::resource_exhausted(
            "slow down"
        )));
    }
}
