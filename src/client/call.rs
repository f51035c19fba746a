//! One control call as the chat client makes it: under a deadline, and, when it fails, told the
//! way a user reads it.
//!
//! Shared by the event pump (login, subscribe, heartbeats) and the command actions. Knows
//! nothing of what a call is for; the caller names the command for the error line.

use std::time::Duration;

use tonic::{Code, Status};

use super::{api, render::Item};

/// How long one control call (login, heartbeat, subscribe, a command's call) may take before it
/// counts as failed.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A control call under [`CALL_TIMEOUT`].
pub(crate) async fn timed<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "the server did not answer within {}",
                crate::types::human_duration(CALL_TIMEOUT)
            )))
        })
}

/// True when a status was made by our side of the connection (refused, reset, timed out), not
/// sent by the server: then the server's sentence is not what the user needs.
pub(crate) fn is_connection_failure(status: &Status) -> bool {
    status.code() == Code::Unavailable
        || (status.code() == Code::Unknown && std::error::Error::source(status).is_some())
}

/// A failed call as the user reads it: the server's sentence, or, when the call never reached
/// the server, what is going on instead of a transport error's internals.
pub(crate) fn failed(command: &str, status: &Status) -> Item {
    let error = if is_connection_failure(status) {
        "cannot reach the server right now; the client keeps reconnecting, try again in a moment"
            .to_owned()
    } else {
        api::sentence(status)
    };
    Item::Error {
        command: command.into(),
        code: code_name(status.code()).into(),
        error,
    }
}

/// The canonical gRPC name of a code (`NOT_FOUND`), as grpcurl and the other languages say it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(item: Item) -> (String, String, String) {
        match item {
            Item::Error {
                command,
                code,
                error,
            } => (command, code, error),
            other => panic!("not an error line: {other:?}"),
        }
    }

    #[test]
    fn a_refusal_reads_as_the_servers_sentence_under_its_code() {
        let status = Status::not_found("there is no user called zed");
        assert_eq!(
            error_of(failed("message", &status)),
            (
                "message".into(),
                "NOT_FOUND".into(),
                "there is no user called zed".into()
            )
        );
    }

    #[test]
    fn an_unreachable_server_is_said_in_words_not_transport_internals() {
        let status = Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(is_connection_failure(&status));
        let (_, code, error) = error_of(failed("broadcast", &status));
        assert_eq!(code, "UNAVAILABLE");
        assert!(
            error.starts_with("cannot reach the server right now"),
            "{error}"
        );
        assert!(!error.contains("os error"), "{error}");
    }

    #[test]
    fn only_our_own_side_of_the_connection_counts_as_a_connection_failure() {
        // Sent by the server: its words are what the user needs.
        assert!(!is_connection_failure(&Status::unknown(
            "the server said so"
        )));
        assert!(!is_connection_failure(&Status::permission_denied(
            "blocked"
        )));
        // Made by our transport, with the I/O error as its source.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = Status::from_error(Box::new(io));
        assert_eq!(status.code(), Code::Unknown);
        assert!(is_connection_failure(&status));
    }

    #[test]
    fn every_code_has_its_grpc_name() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        // Each name is the one tonic's own `Code` parses back from its number.
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(
                code_name(code).replace('_', "").to_ascii_lowercase(),
                format!("{code:?}").to_ascii_lowercase(),
            );
        }
    }
}
