//! The server's errors: one enum, one sentence per case, one mapping to gRPC status codes.
//!
//! Handlers return [`Error`]; the `From<Error> for Status` below is the only place that decides
//! codes, so SPEC §11 ("the right code and a sentence a person can act on") is checked here.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::store::Unavailable;
use crate::types::human_duration;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input; `field` names the request field for `google.rpc.BadRequest`.
    #[error("{message}")]
    Invalid {
        /// The offending request field.
        field: &'static str,
        /// What is wrong, as a sentence.
        message: String,
    },
    /// The request's bytes are not a valid message of its type (a string that is not UTF-8,
    /// a truncated field); `field` is the path prost named, if any.
    #[error("{message}")]
    Undecodable {
        /// The offending field's path (`body`, `message.body`), for `google.rpc.BadRequest`.
        field: Option<String>,
        /// What is wrong, as a sentence.
        message: String,
    },
    /// No such user.
    #[error("there is no user called {0}")]
    NoSuchUser(String),
    /// The name is taken (ignoring case).
    #[error("the name {0} is already taken")]
    NameTaken(String),
    /// Wrong username or password.
    #[error("wrong username or password ({attempts_left} attempts left before a lockout)")]
    BadCredentials {
        /// Failures still allowed before the lockout.
        attempts_left: u32,
    },
    /// The username is locked after repeated failures.
    #[error(
        "too many failed logins for {user}: login is locked for {}",
        human_duration(*.left)
    )]
    LockedOut {
        /// The user, as typed.
        user: String,
        /// Time until the lock lifts.
        left: Duration,
    },
    /// The source address is over its login rate.
    #[error("too many login attempts from your address; try again in {}", human_duration(*.retry))]
    LoginThrottled {
        /// When a new attempt will be allowed.
        retry: Duration,
    },
    /// The session is over its send rate.
    #[error("you are sending too fast; try again in {}", human_duration(*.retry))]
    SendThrottled {
        /// When a new message will be allowed.
        retry: Duration,
    },
    /// Missing, unknown or ended token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Registration is off.
    #[error("registration is disabled on this server; ask an operator for an account")]
    RegistrationClosed,
    /// The recipient has blocked the caller.
    #[error("your message could not be delivered because {0} has blocked you")]
    BlockedMessage(String),
    /// The target of an address request has blocked the caller.
    #[error("{0} has blocked you")]
    BlockedAddress(String),
    /// The recipient's inbox is full.
    #[error("{0}'s inbox is full; try again once they have read their messages")]
    InboxFull(String),
    /// The target of an address request is offline.
    #[error("{0} is offline")]
    Offline(String),
    /// The target has no peer listener.
    #[error("{0}'s client does not accept direct connections")]
    NoPeerListener(String),
    /// Asked again too soon after a decline.
    #[error("{user} declined your request; you can ask again in {}", human_duration(*.retry))]
    Cooldown {
        /// The target.
        user: String,
        /// Time until the cooldown ends.
        retry: Duration,
    },
    /// The target has too many pending address requests.
    #[error("{0} has too many address requests waiting; try again later")]
    TooManyPending(String),
    /// No pending address request with this id.
    #[error(
        "there is no pending address request with that id (it was answered, withdrawn or has expired)"
    )]
    NoSuchRequest,
    /// The request was made to somebody else.
    #[error("that address request was made to somebody else")]
    NotYourRequest,
    /// An operator disabled the account.
    #[error("the account {0} is disabled; ask the server's operator to enable it")]
    AccountDisabled(String),
    /// The disk holding the store is full; nothing of this request was stored.
    #[error(
        "the server is out of disk space; nothing was stored, try again in {}",
        human_duration(DISK_FULL_RETRY)
    )]
    DiskFull,
    /// The server is going down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The store (PostgreSQL) cannot be reached; nothing was written. The cause is logged.
    #[error(
        "the server cannot reach its database right now, so nothing was saved; try again in a \
         few seconds"
    )]
    StoreUnavailable,
    /// A bug or a storage failure. The detail is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid { .. } | Error::Undecodable { .. } => Code::InvalidArgument,
            Error::NoSuchUser(_) | Error::NoSuchRequest => Code::NotFound,
            Error::NameTaken(_) => Code::AlreadyExists,
            Error::BadCredentials { .. } | Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::LockedOut { .. }
            | Error::RegistrationClosed
            | Error::BlockedMessage(_)
            | Error::BlockedAddress(_)
            | Error::NotYourRequest
            | Error::AccountDisabled(_) => Code::PermissionDenied,
            Error::LoginThrottled { .. }
            | Error::SendThrottled { .. }
            | Error::InboxFull(_)
            | Error::Cooldown { .. }
            | Error::TooManyPending(_)
            | Error::DiskFull => Code::ResourceExhausted,
            Error::Offline(_) | Error::NoPeerListener(_) => Code::FailedPrecondition,
            Error::ShuttingDown | Error::StoreUnavailable => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// How long a client should wait before trying again, when waiting can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::LockedOut { left: d, .. }
            | Error::LoginThrottled { retry: d }
            | Error::SendThrottled { retry: d }
            | Error::Cooldown { retry: d, .. } => Some(*d),
            Error::DiskFull => Some(DISK_FULL_RETRY),
            _ => None,
        }
    }
}

/// What a client is told to wait when the disk is full: long enough not to hammer a server
/// that is out of space, short enough to notice soon after an operator frees some.
const DISK_FULL_RETRY: Duration = Duration::from_secs(5);

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        if e.is::<crate::server::store::DiskFull>() {
            return Error::DiskFull;
        }
        match e.downcast_ref::<Unavailable>() {
            Some(cause) => {
                tracing::warn!("{cause}");
                Error::StoreUnavailable
            }
            None => Error::Internal(e),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        if let Error::Internal(cause) = &e {
            // The cause may name internals; the client gets a reference to find it in the log.
            let id: u32 = rand::random();
            tracing::error!(
                error_id = format_args!("{id:08x}"),
                "internal error: {cause:#}"
            );
            return Status::internal(format!("internal error (reference {id:08x})"));
        }
        let code = e.code();
        let message = e.to_string();
        if let Some(retry) = e.retry_after() {
            return Status::with_error_details(
                code,
                message,
                ErrorDetails::with_retry_info(Some(retry)),
            );
        }
        if let Error::Invalid { field, .. } = &e {
            let details = ErrorDetails::with_bad_request_violation(*field, message.clone());
            return Status::with_error_details(code, message, details);
        }
        if let Error::Undecodable { field, .. } = &e {
            // An empty field: the request as a whole (prost named no field).
            let field = field.clone().unwrap_or_default();
            let details = ErrorDetails::with_bad_request_violation(field, message.clone());
            return Status::with_error_details(code, message, details);
        }
        Status::new(code, message)
    }
}

/// Result of a handler step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
