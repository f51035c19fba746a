//! The `Subscribe` stream: replay the unacknowledged inbox, mark its end, then live events until
//! the session ends or a newer stream replaces this one.

use std::sync::Arc;

use tokio_stream::Stream;
use tonic::Status;

use super::{
    core::{Core, Outbound, Session},
    wire,
};
use crate::pb::{self, event::Kind};

/// Messages read from the store per page while replaying.
const REPLAY_PAGE: usize = 256;

/// Longest a presence event waits for others to share its write.
const LAZY_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Held presence events that force a write.
const MAX_HELD: usize = 256;

/// What woke the live loop.
enum Next {
    Item(Option<Outbound>),
    Flush,
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

/// The event stream of `session`, replaying stored messages after `resume_after`.
pub fn subscribe(
    core: Arc<Core>,
    session: Arc<Session>,
    resume_after: u64,
) -> impl Stream<Item = Result<wire::EncodedEvent, Status>> + Send + 'static {
    core.ack(&session, resume_after);
    // Attach before reading the inbox: a message committed meanwhile is then either in the
    // replay or in the queue (or both, and the seq check below drops the second copy).
    let (generation, mut rx) = session.attach(core.config().stream_queue);
    async_stream::stream! {
        let _detach = Detach { session: session.clone(), generation };
        // Acknowledgements (this one and earlier heartbeats') are committed before the replay
        // reads, so nothing acknowledged is shown again.
        if let Err(e) = core.writer.flush().await {
            yield Err(super::error::Error::Internal(e).into());
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
                    yield Err(super::error::Error::Internal(e).into());
                    return;
                }
                Err(e) => {
                    yield Err(super::error::Error::Internal(e.into()).into());
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
        // replaced this one (end quietly). Lazy events (presence) wait up to LAZY_DELAY for
        // company, so a burst of logins costs each stream one write, not one per login; any
        // other event takes the waiting ones along at once, in order.
        let mut held: Vec<wire::EncodedEvent> = Vec::new();
        let mut deadline = tokio::time::Instant::now();
        loop {
            let next = if held.is_empty() {
                Next::Item(rx.recv().await)
            } else {
                tokio::select! {
                    biased;
                    item = rx.recv() => Next::Item(item),
                    () = tokio::time::sleep_until(deadline) => Next::Flush,
                }
            };
            let item = match next {
                Next::Flush => {
                    for event in held.drain(..) {
                        yield Ok(event);
                    }
                    continue;
                }
                Next::Item(None) => break,
                Next::Item(Some(item)) => item,
            };
            if item.seq != 0 && item.seq <= last {
                continue;
            }
            if item.lazy && held.len() < MAX_HELD {
                if held.is_empty() {
                    deadline = tokio::time::Instant::now() + LAZY_DELAY;
                }
                held.push(item.event);
                continue;
            }
            for event in held.drain(..) {
                yield Ok(event);
            }
            yield Ok(item.event);
        }
        for event in held.drain(..) {
            yield Ok(event);
        }
        if let Some(reason) = session.end_reason().filter(|_| !session.replaced(generation)) {
            yield Ok(wire::session_ended(reason));
        }
    }
}
