//! What happens to direct messages after their commit on this node: each goes onto its
//! recipient's live stream, if the recipient has one here.
//!
//! The writer calls [`Local`] through [`Deliver`] without knowing what it does, which is where a
//! bus between nodes plugs in: a cluster node publishes the committed batch instead.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::histogram::Histogram;

use super::{
    backlog::Backlog,
    session::{Outbound, Pushed, Sessions},
    stats,
};
use crate::server::{
    wire,
    writer::{Committed, Deliver, Reach},
};

/// Delivery to this node's own streams.
pub struct Local {
    sessions: Arc<Sessions>,
    /// Send-to-delivery latency of the messages that went out live (`Stats::send_to_delivery`).
    latency: Histogram,
    /// Marked with each committed message before it is pushed (see [`Backlog`]).
    backlog: Arc<Backlog>,
}

impl Local {
    /// Delivers through `sessions`, recording each live delivery's latency in `latency` and
    /// each stored message in `backlog`.
    pub fn new(sessions: Arc<Sessions>, latency: Histogram, backlog: Arc<Backlog>) -> Self {
        Local {
            sessions,
            latency,
            backlog,
        }
    }
}

impl Deliver for Local {
    fn deliver(&self, batch: &[Committed<'_>]) -> Vec<Reach> {
        self.live(batch).into_iter().map(Reach::Now).collect()
    }
}

impl Local {
    /// Pushes each message onto its recipient's stream on this node; whether each was queued
    /// live (see [`Local::one`]).
    pub(super) fn live(&self, batch: &[Committed<'_>]) -> Vec<bool> {
        // Marked before any is pushed: a stream that attaches meanwhile sees the mark or gets
        // the message live.
        self.backlog.appended(
            batch
                .iter()
                .filter(|m| !m.duplicate)
                .map(|m| (m.recipient, m.seq)),
        );
        batch.iter().map(|m| self.one(m)).collect()
    }

    /// Pushes one message onto its recipient's stream. Whether it was queued live; for a
    /// duplicate, whether the recipient has a stream, since it has or will get the first copy.
    fn one(&self, m: &Committed<'_>) -> bool {
        let Some(session) = self.sessions.by_user(m.recipient) else {
            return false;
        };
        if m.duplicate {
            return session.subscribed();
        }
        let event = wire::direct(m.seq, m.from, m.body, m.message_id, m.sent_ms);
        let queued = session.push(Outbound::stored(m.seq, event)) == Pushed::Queued;
        if queued {
            // The send time is wall-clock milliseconds taken on this node; a clock step
            // backwards would make it negative, which is recorded as zero.
            let ms = u64::try_from(crate::now_ms() - m.sent_ms).unwrap_or(0);
            stats::observe(&self.latency, Duration::from_millis(ms));
        }
        queued
    }
}
