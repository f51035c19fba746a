//! Whether the client is connected, for calls made outside the event pump: the login whose
//! event stream went live last, and how many times a stream has gone live.
//!
//! A command's call that fails because the connection did (the server died, the node of a
//! cluster was killed) waits here for the pump to be live again — at the same server, or at
//! the next one of a `--server` list — and goes again through the login the pump has then. So a
//! message typed while no server answers is sent as soon as one does, under its own
//! `message_id`, and the server's duplicate check keeps it exactly-once. Only the pump
//! publishes ([`LinkSender`]); everyone else reads ([`Link`]).

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::login::Live;

/// How long a call that lost its connection waits for the client to be connected again
/// before its failure is shown. Long enough for a node of a cluster to be replaced by
/// another or a restarted server to come back; short enough that a person is not left
/// without an answer.
pub(crate) const RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// What a stream going live publishes.
#[derive(Clone)]
struct Latest {
    /// How many times a stream has gone live (0 before the first).
    count: u64,
    login: Arc<Live>,
}

/// The pump's side: says a stream went live.
pub(crate) struct LinkSender(watch::Sender<Latest>);

/// Everyone else's side.
#[derive(Clone)]
pub(crate) struct Link(watch::Receiver<Latest>);

/// A link for `login`, not live yet.
pub(crate) fn link(login: Arc<Live>) -> (LinkSender, Link) {
    let (tx, rx) = watch::channel(Latest { count: 0, login });
    (LinkSender(tx), Link(rx))
}

impl LinkSender {
    /// A stream of `login` is live.
    pub(crate) fn live(&self, login: Arc<Live>) {
        self.0.send_modify(|l| {
            l.count += 1;
            l.login = login;
        });
    }
}

impl Link {
    /// How many times a stream has gone live so far: what a call remembers when it starts.
    pub(crate) fn count(&self) -> u64 {
        self.0.borrow().count
    }

    /// True once the pump has stopped: no stream will go live any more.
    pub(crate) fn stopped(&self) -> bool {
        self.0.has_changed().is_err()
    }

    /// The login of the first stream live after `count`, once there is one; `None` after
    /// [`RECONNECT_WAIT`] or when the pump has stopped.
    pub(crate) async fn live_after(&mut self, count: u64) -> Option<Arc<Live>> {
        let later = self.0.wait_for(|l| l.count > count);
        match tokio::time::timeout(RECONNECT_WAIT, later).await {
            Ok(Ok(l)) => Some(l.login.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
impl Link {
    /// A link whose pump is gone: nothing ever comes back (tests of the failure paths).
    pub(crate) fn never(login: Arc<Live>) -> Link {
        link(login).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_waits_for_the_next_live_stream_and_gets_its_login() {
        let first = Arc::new(Live::unreachable("alice", 10));
        let (tx, mut link) = super::link(first);
        let seen = link.count();
        let waiting = tokio::spawn(async move { link.live_after(seen).await });
        let second = Arc::new(Live::unreachable("alice", 20));
        tx.live(second);
        let got = waiting.await.unwrap().expect("the stream went live");
        assert_eq!(got.max_message_bytes, 20);
    }

    #[tokio::test]
    async fn a_stream_live_since_the_call_started_counts_at_once() {
        let (tx, mut link) = super::link(Arc::new(Live::unreachable("alice", 10)));
        let seen = link.count();
        tx.live(Arc::new(Live::unreachable("alice", 30)));
        assert_eq!(link.live_after(seen).await.unwrap().max_message_bytes, 30);
    }

    #[tokio::test]
    async fn nothing_comes_back_once_the_pump_is_gone() {
        let mut link = Link::never(Arc::new(Live::unreachable("alice", 10)));
        assert!(link.live_after(link.count()).await.is_none());
        assert!(link.stopped());
    }
}
