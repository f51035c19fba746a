//! What the phases need from a server under test, so the same phase code measures confab and the
//! bare relay baseline side by side.
//!
//! A [`Target`] makes accounts and connects users; a [`User`] is one simulated client with its
//! own connection. Readers report every arrival to a [`Sink`]; nothing else flows back. Abilities
//! only confab has are reached through [`Target::confab_url`] (the phases that speak confab's
//! own protocol: the login storm, the peer path) and [`User::open_stream`] (the streaming send
//! path) rather than by widening the trait. Knows no implementation: `confab.rs` and `relay.rs`
//! depend on this module, never the other way round.

use std::{future::Future, sync::Arc};

use super::{cpu::Processes, send_stream::StreamSender, stats::Sink};

/// A server the bench can drive.
pub(crate) trait Target: Send + Sync + 'static {
    /// One simulated user of this server.
    type User: User;

    /// A short name for reports: `confab` or `relay`.
    fn name(&self) -> &'static str;

    /// The server's process id, when known: memory and CPU figures need it.
    fn pid(&self) -> Option<u32>;

    /// The nodes users are spread over: the user at index i of a [`Target::register`] call
    /// lives on node i mod `nodes()`, and phases send only between users on different nodes.
    fn nodes(&self) -> usize {
        1
    }

    /// Every process that serves this target, for CPU figures summed over all of them.
    fn processes(&self) -> Processes {
        Processes::single(self.pid())
    }

    /// Makes sure an account exists for each of `names` (an existing one is fine), with at most
    /// `concurrency` requests in flight.
    fn register(
        &self,
        names: &[String],
        concurrency: usize,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Opens `name`'s own connection and logs in; not yet subscribed.
    fn connect(&self, name: &str) -> impl Future<Output = anyhow::Result<Self::User>> + Send;

    /// The server's URL when it is a confab server, for the phases that make confab clients
    /// of their own (logins, the peer path); `None` for a server that only has these traits.
    fn confab_url(&self) -> Option<&str> {
        None
    }
}

/// One simulated user.
pub(crate) trait User: Send + Sync + 'static {
    /// The username.
    fn name(&self) -> &str;

    /// Opens the user's event stream, returns once it is live, and reads it in a task of its
    /// own from then on, reporting messages and broadcasts to `sink`.
    fn subscribe(&self, sink: Arc<Sink>) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Sends one direct message and waits for the server's answer.
    fn send(
        &self,
        to: &str,
        message_id: String,
        body: String,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Sends `body` to every other connected user.
    fn broadcast(&self, body: String) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Opens a stream that carries many sends with per-message answers, where the server has one.
    fn open_stream(&self) -> impl Future<Output = anyhow::Result<Option<StreamSender>>> + Send;
}
