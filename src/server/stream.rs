//! The `Subscribe` stream: replay the unacknowledged inbox, mark its end, then live events until
//! the session ends or a newer stream replaces this one.
//!
//! Live events come from two places: the session's queue (direct messages, broadcasts, consent,
//! login failures) and the presence feed, read at the stream's own turn after the feed wakes it
//! (once per window; the turns of all streams spread over the window) and, before each queued
//! item, up to the point where that item was pushed, so the two keep the order in which things
//! happened.

use std::{sync::Arc, time::Duration};

use tokio::time::{Instant, sleep_until};
use tokio_stream::Stream;
use tonic::Status;

use super::{
    core::{Core, EndReason, Outbound, Session, feed},
    error::Error,
    wire,
};
use crate::pb::{self, event::Kind};

/// Messages read from the store per page while replaying.
const REPLAY_PAGE: usize = 256;

/// What woke the live loop.
enum Next {
    Item(Option<Outbound>),
    /// The feed has news; read it at this stream's turn.
    Woken,
    /// This stream's turn to read the feed.
    Presence,
}

/// How long after the feed's wake-up this session's stream reads it: a fixed share of the
/// window per session, so the streams woken together do not all read, encode and flush in the
/// same instant (1 000 streams at once held up every message behind them for tens of
/// milliseconds); together they spread evenly over the window.
fn turn(session_id: u64) -> Duration {
    // Fibonacci hashing spreads consecutive ids evenly.
    let spread = session_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let window = feed::WINDOW.as_micros() as u64;
    Duration::from_micros((spread * window) >> 32)
}

/// Detaches the stream when tonic drops it (client gone or replaced).
struct Detach {
    session: Arc<Session>,
    generation: u64,
}

impl Drop for Detach {
    fn drop(&mut self) {
        self.session.detach(self.generation);
    }
}

/// The event stream of `session`, replaying stored messages after `resume_after`; with
/// `presence` false (bots, bridges) it carries no presence changes.
pub fn subscribe(
    core: Arc<Core>,
    session: Arc<Session>,
    resume_after: u64,
    presence: bool,
) -> impl Stream<Item = Result<wire::EncodedEvent, Status>> + Send + 'static {
    core.ack(&session, resume_after);
    // Presence from now on: changes before this stream are not its business.
    let mut woken = core.presence_wakeups();
    let mut cursor = core.presence_position();
    // Attach before reading the inbox: a message committed meanwhile is then either in the
    // replay or in the queue (or both, and the seq check below drops the second copy).
    let (generation, mut rx) = session.attach(core.config().stream_queue);
    async_stream::stream! {
        let _detach = Detach { session: session.clone(), generation };
        // Acknowledgements (this one and earlier heartbeats') are committed before the replay
        // reads, so nothing acknowledged is shown again.
        if let Err(e) = core.writer.flush().await {
            yield Err(Error::from(e).into());
            return;
        }
        let mut last = resume_after;
        loop {
            let (store, user) = (core.store.clone(), session.user_id());
            let after = last;
            let page = tokio::task::spawn_blocking(move || store.inbox_page(user, after, REPLAY_PAGE)).await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    yield Err(Error::from(e).into());
                    return;
                }
                Err(e) => {
                    yield Err(Error::Internal(e.into()).into());
                    return;
                }
            };
            let full = page.len() == REPLAY_PAGE;
            for row in page {
                last = row.seq;
                yield Ok(wire::direct(row.seq, &row.sender, &row.body, &row.message_id, row.sent_ms));
            }
            if !full {
                break;
            }
        }
        yield Ok(wire::encode(Kind::BacklogEnd(pb::BacklogEnd { last_seq: last })));
        // Live events until the queue closes: the session ended (say so) or a newer stream
        // replaced this one (end quietly).
        let turn = turn(session.id);
        // Set while the feed has news this stream has not read yet.
        let mut due: Option<Instant> = None;
        loop {
            let next = tokio::select! {
                biased;
                item = rx.recv() => Next::Item(item),
                () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => Next::Presence,
                Ok(()) = woken.changed(), if presence && due.is_none() => Next::Woken,
            };
            let (upto, item) = match next {
                Next::Item(None) => break,
                Next::Item(Some(item)) => (item.presence_mark, Some(item)),
                Next::Woken => {
                    due = Some(Instant::now() + turn);
                    continue;
                }
                Next::Presence => {
                    due = None;
                    (*woken.borrow_and_update(), None)
                }
            };
            if presence {
                match core.presence_since(&mut cursor, upto, &session) {
                    Ok(events) => {
                        for event in events {
                            yield Ok(event);
                        }
                    }
                    Err(_lagged) => {
                        core.end_session(&session, EndReason::TooSlow);
                        yield Ok(wire::session_ended(EndReason::TooSlow));
                        return;
                    }
                }
            }
            if let Some(item) = item
                && (item.seq == 0 || item.seq > last)
            {
                yield Ok(item.event);
            }
        }
        if let Some(reason) = session.end_reason().filter(|_| !session.replaced(generation)) {
            yield Ok(wire::session_ended(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_fall_inside_the_window_and_spread_over_it() {
        let mut tenths = [0u32; 10];
        for id in 1..=1000 {
            let t = turn(id);
            assert!(t < feed::WINDOW, "{t:?}");
            tenths[(t.as_micros() * 10 / feed::WINDOW.as_micros()) as usize] += 1;
        }
        // Consecutive session ids (as the table hands them out) land in every tenth evenly.
        assert!(
            tenths.iter().all(|&n| (80..=120).contains(&n)),
            "{tenths:?}"
        );
    }
}
