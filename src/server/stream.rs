//! The `Subscribe` stream: replay the unacknowledged inbox (skipped when the core knows nothing
//! is stored), mark its end, then live events until the session ends or a newer stream
//! replaces this one.
//!
//! Live events come from two places: the session's queue (direct messages, broadcasts, consent,
//! login failures) and the presence feed, read at the stream's own pace when the feed wakes it
//! (once per window) and, before each queued item, up to the point where that item was pushed, so
//! the two keep the order in which things happened.

use std::{pin::pin, sync::Arc};

use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

use super::{
    core::{Core, EndReason, Outbound, Session, Shape},
    error::Error,
    store::InboxRow,
    wire,
};
use crate::pb::{self, event::Kind};

/// Messages read from the store per page while replaying.
const REPLAY_PAGE: usize = 256;

/// What woke the live loop.
enum Next {
    Item(Option<Outbound>),
    Presence,
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

/// The event stream of `session`, replaying stored messages after `resume_after`; presence
/// comes in `shape`, or not at all with `None` (bots, bridges).
pub fn subscribe(
    core: Arc<Core>,
    session: Arc<Session>,
    resume_after: u64,
    shape: Option<Shape>,
) -> impl Stream<Item = Result<wire::EncodedEvent, Status>> + Send + 'static {
    core.ack(&session, resume_after);
    let presence = shape.is_some();
    // Presence from now on: changes before this stream are not its business.
    let mut woken = core.presence_wakeups();
    let mut cursor = core.presence_position();
    // Attach before reading the inbox: a message committed meanwhile is then either in the
    // replay or in the queue (or both, and the seq check below drops the second copy).
    let (generation, mut rx) = session.attach(core.config().stream_queue);
    // Looked at after attaching: a message committed since is marked or arrives live.
    let nothing_stored = core.nothing_stored_after(session.user_id(), resume_after);
    async_stream::stream! {
        let _detach = Detach { session: session.clone(), generation };
        // The highest seq shown: the replay's, then the live messages'.
        let mut last = resume_after;
        if !nothing_stored {
            // Acknowledgements (this one and earlier heartbeats') are committed before the
            // replay reads, so nothing acknowledged is shown again.
            if let Err(e) = core.writer.flush().await {
                yield Err(Error::from(e).into());
                return;
            }
            let mut replay = pin!(stored_between(core.clone(), session.clone(), last, u64::MAX));
            while let Some(row) = replay.next().await {
                match row {
                    Ok(row) => {
                        last = row.seq;
                        yield Ok(wire::direct(row.seq, &row.sender, &row.body, &row.message_id, row.sent_ms));
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
            }
            core.replayed(session.user_id(), last);
        }
        yield Ok(wire::encode(Kind::BacklogEnd(pb::BacklogEnd { last_seq: last })));
        // Live events until the queue closes: the session ended (say so) or a newer stream
        // replaced this one (end quietly).
        loop {
            let next = tokio::select! {
                biased;
                item = rx.recv() => Next::Item(item),
                Ok(()) = woken.changed(), if presence => Next::Presence,
            };
            let (upto, item) = match next {
                Next::Item(None) => break,
                Next::Item(Some(item)) => (item.presence_mark, Some(item)),
                Next::Presence => (*woken.borrow_and_update(), None),
            };
            if let Some(shape) = shape {
                match core.presence_since(&mut cursor, upto, &session, shape) {
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
            let Some(item) = item else { continue };
            if item.seq == 0 {
                yield Ok(item.event);
                continue;
            }
            if item.seq <= last {
                // Shown already: in the replay, or by a gap read below.
                continue;
            }
            // Messages are shown in seq order, so a client's cumulative acknowledgement never
            // covers one it has not seen. On one node they arrive in order; in a cluster a
            // message from another node can arrive after a later one, or not at all (the bus
            // may drop it): whatever lies between is committed (seqs are allocated in commit
            // order), so it is read from the store and shown first.
            if item.seq > last + 1 {
                let mut gap = pin!(stored_between(core.clone(), session.clone(), last, item.seq));
                while let Some(row) = gap.next().await {
                    match row {
                        Ok(row) => {
                            yield Ok(wire::direct(row.seq, &row.sender, &row.body, &row.message_id, row.sent_ms));
                        }
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                }
            }
            last = item.seq;
            yield Ok(item.event);
        }
        if let Some(reason) = session.end_reason().filter(|_| !session.replaced(generation)) {
            yield Ok(wire::session_ended(reason));
        }
    }
}

/// `session`'s stored messages with `after < seq < before`, in seq order, read a page of
/// [`REPLAY_PAGE`] at a time: the replay (up to `u64::MAX`) and a gap before a live message.
/// A seq not in the store (acknowledged, or never committed) is simply not there.
fn stored_between(
    core: Arc<Core>,
    session: Arc<Session>,
    mut after: u64,
    before: u64,
) -> impl Stream<Item = Result<InboxRow, Status>> + Send + 'static {
    async_stream::try_stream! {
        loop {
            let (store, user) = (core.store.clone(), session.user_id());
            let page = match tokio::task::spawn_blocking(move || {
                store.inbox_page(user, after, REPLAY_PAGE)
            })
            .await
            {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => Err(Status::from(Error::from(e)))?,
                Err(e) => Err(Status::from(Error::Internal(e.into())))?,
            };
            let full = page.len() == REPLAY_PAGE;
            for row in page {
                if row.seq >= before {
                    return;
                }
                after = row.seq;
                yield row;
            }
            if !full {
                return;
            }
        }
    }
}
