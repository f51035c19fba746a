//! Sending a message (or a broadcast) until the server takes it: a send the server refused with a hint of when to
//! come back (`google.rpc.RetryInfo`, as its rate limit does) is sent again after that delay,
//! under the **same** `message_id`, so the server's duplicate check makes the retries
//! exactly-once. A script piping a hundred lines therefore loses none to the rate limit.
//!
//! A send that failed because the connection did (the server died, or the node of a cluster
//! the client was on) is sent again the same way once the client is connected again
//! ([`Link`]): to the same server, or to the next of a `--server` list. The first send may have
//! been committed before the connection broke; the duplicate check makes the second a no-op
//! then (`duplicate` in the answer).
//!
//! Bounded: at most [`MAX_ATTEMPTS`] sends, a hint longer than [`LONGEST_WAIT`] is not waited
//! for, and a connection is waited for at most [`RECONNECT_WAIT`]; then the last refusal is
//! returned, worded to say the client gave up.

use std::time::Duration;

use tonic::Status;
use tonic_types::StatusExt as _;

use super::{
    api::Authed,
    call::{is_connection_failure, timed},
    link::{Link, RECONNECT_WAIT},
};
use crate::pb::{self, chat_client::ChatClient};

/// How many times one message is sent at most.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// The longest hint the client waits out; beyond it the refusal is shown at once.
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// The delay the server asked for before trying again, if it asked.
pub(crate) fn retry_delay(status: &Status) -> Option<Duration> {
    let info = status.get_details_retry_info()?;
    info.retry_delay
}

/// Where a send goes: the login's calls, and the link that says when a lost connection is
/// back (with how many times it had been live when this send's login was current).
pub(crate) struct Route {
    pub(crate) chat: ChatClient<Authed>,
    pub(crate) link: Link,
    pub(crate) live_count: u64,
}

impl Route {
    /// A route through `chat` now, for `link`.
    pub(crate) fn new(chat: ChatClient<Authed>, link: &Link) -> Route {
        Route {
            chat,
            live_count: link.count(),
            link: link.clone(),
        }
    }
}

/// `SendMessage`, sent again after each refusal that carries a retry hint, and after a lost
/// connection is back (see the module docs).
///
/// The server's answer and how many sends it took.
///
/// # Errors
/// The first refusal without a hint, a connection that did not come back in time, or the last
/// refusal once the attempts are used up (its message then says how often it was tried).
pub(crate) async fn send_message(
    mut route: Route,
    request: pb::SendMessageRequest,
) -> Result<(pb::SendMessageResponse, u32), Status> {
    let mut attempt = 1;
    loop {
        let status = match timed(route.chat.send_message(request.clone())).await {
            Ok(response) => return Ok((response.into_inner(), attempt)),
            Err(status) => status,
        };
        if is_connection_failure(&status) {
            if attempt >= MAX_ATTEMPTS {
                return Err(gave_up(&status, attempt));
            }
            let Some(live) = route.link.live_after(route.live_count).await else {
                // A stopped pump means the client is ending: the plain failure will do.
                return Err(if route.link.stopped() {
                    status
                } else {
                    not_back()
                });
            };
            tracing::debug!(attempt, "connected again; sending the message again");
            route.live_count = route.link.count();
            route.chat = live.chat.clone();
            attempt += 1;
            continue;
        }
        wait_out(status, attempt).await?;
        attempt += 1;
    }
}

/// `Broadcast`, sent again after each refusal that carries a retry hint. Not after a lost
/// connection: a broadcast has no id by which the server could drop a second copy.
pub(crate) async fn broadcast(
    mut chat: ChatClient<Authed>,
    request: pb::BroadcastRequest,
) -> Result<pb::BroadcastResponse, Status> {
    let mut attempt = 1;
    loop {
        match timed(chat.broadcast(request.clone())).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => wait_out(status, attempt).await?,
        }
        attempt += 1;
    }
}

/// Waits out the delay `status` asks for before another try, or returns why not to try again:
/// the refusal has no hint, the hint is too long, or `attempt` was the last.
async fn wait_out(status: Status, attempt: u32) -> Result<(), Status> {
    let Some(delay) = retry_delay(&status) else {
        return Err(status);
    };
    if attempt >= MAX_ATTEMPTS || delay > LONGEST_WAIT {
        return Err(gave_up(&status, attempt));
    }
    tracing::debug!(attempt, ?delay, "refused for now; trying again");
    tokio::time::sleep(delay).await;
    Ok(())
}

/// A send whose connection did not come back within [`RECONNECT_WAIT`].
fn not_back() -> Status {
    Status::deadline_exceeded(format!(
        "no server answered within {}; the message may not have been delivered",
        crate::types::human_duration(RECONNECT_WAIT)
    ))
}

/// The last refusal, saying the client tried `attempts` times.
fn gave_up(status: &Status, attempts: u32) -> Status {
    let tries = if attempts == 1 {
        "once".to_owned()
    } else {
        format!("{attempts} times")
    };
    Status::new(
        status.code(),
        format!(
            "{} (sent {tries}; the message was not delivered)",
            status.message()
        ),
    )
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn the_servers_hint_is_read_from_the_status_details() {
        let hinted = Status::with_error_details(
            Code::ResourceExhausted,
            "you are sending too fast; try again in 20ms",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(20))),
        );
        assert_eq!(retry_delay(&hinted), Some(Duration::from_millis(20)));
        // Without a hint (a full inbox) there is nothing to wait for: no retry.
        let full = Status::resource_exhausted("bob's inbox is full");
        assert_eq!(retry_delay(&full), None);
    }

    #[test]
    fn giving_up_keeps_the_code_and_the_servers_words_and_says_how_often() {
        let status = Status::resource_exhausted("you are sending too fast; try again in 1s");
        let last = gave_up(&status, 8);
        assert_eq!(last.code(), Code::ResourceExhausted);
        assert_eq!(
            last.message(),
            "you are sending too fast; try again in 1s (sent 8 times; the message was not \
             delivered)"
        );
        assert!(gave_up(&status, 1).message().contains("(sent once;"));
    }
}
