//! The bus between the nodes of a cluster: what one node tells the others, and the two ways of
//! carrying it.
//!
//! A node always acts on its own streams directly; the bus carries only what *other* nodes must
//! act on (a committed message for a user whose stream is there, a presence batch, a consent
//! notice, a kick). So a lone `confab serve` has nothing to publish and no bus on its path.
//! [`InProcess`] connects nodes living in one process (no encoding, no network); `nats.rs`
//! connects processes through a NATS server. Both keep one publisher's events in the order they
//! were published, which the receivers rely on (a message after the presence that announced its
//! sender, a revoke after the grant).
//!
//! Events are protobuf messages (prost derive, no `.proto` file: the bus is internal to one
//! cluster of one confab version, and not part of the public API).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every other node.
    Others,
    /// One node, by name.
    Node(String),
}

/// Carries events to the other nodes of the cluster.
pub trait Bus: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;
    /// Sends `event` along `route` without waiting. Events of one publisher arrive in order.
    /// A bus that cannot reach the others keeps the event for as long as it can (NATS: its
    /// client's buffer) and drops it beyond that: nothing durable travels only on the bus.
    fn publish(&self, route: Route, event: Event);
    /// Resolves once what was published so far has left this node (or could not).
    fn flush(&self) -> BoxFuture<'_, ()>;
}

/// A boxed future, for the object-safe [`Bus::flush`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One event between nodes, with its sender and addressee.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// The publishing node.
    #[prost(string, tag = "1")]
    pub from: String,
    /// The node it is for; empty for every node.
    #[prost(string, tag = "2")]
    pub to: String,
    /// What happened.
    #[prost(message, optional, tag = "3")]
    pub event: Option<Event>,
}

/// What happened on the publishing node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// The kind of event.
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub kind: Option<Kind>,
}

/// The kinds of [`Event`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// Direct messages committed to the inboxes of users whose streams are elsewhere.
    #[prost(message, tag = "1")]
    Direct(DirectBatch),
    /// Logins and logouts on the publishing node during one presence window.
    #[prost(message, tag = "2")]
    Presence(PresenceBatch),
    /// An encoded client event for one session (a consent notice, a failed-login warning).
    #[prost(message, tag = "3")]
    Notice(Notice),
    /// A broadcast, to be fanned out to each node's own streams.
    #[prost(message, tag = "4")]
    Broadcast(Broadcast),
    /// The user logged in again elsewhere: the session with this epoch ends
    /// `LOGGED_IN_ELSEWHERE`.
    #[prost(message, tag = "5")]
    Kick(SessionRef),
    /// A session ended: grants and requests involving it end on every node.
    #[prost(message, tag = "6")]
    Ended(Ended),
    /// A block was added or removed.
    #[prost(message, tag = "7")]
    Block(BlockChange),
    /// An account was created or changed; the receivers refresh their copy from the store.
    #[prost(message, tag = "8")]
    Account(AccountChange),
    /// The target of a request made on another node answered it.
    #[prost(message, tag = "9")]
    Answer(Answer),
    /// An operator kicked the user: the session with this epoch ends `KICKED`.
    #[prost(message, tag = "10")]
    Kicked(SessionRef),
}

/// Committed direct messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DirectBatch {
    /// In commit order.
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Direct>,
    /// Sent where the directory, not the sender's mirror, placed the recipients: a node that
    /// does not hold them either does not look them up again.
    #[prost(bool, tag = "2")]
    pub looked_up: bool,
}

/// One committed direct message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Direct {
    /// Recipient's user id.
    #[prost(int64, tag = "1")]
    pub recipient: i64,
    /// Sender's name as registered.
    #[prost(string, tag = "2")]
    pub from: String,
    /// Inbox seq.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// The sender's id for it.
    #[prost(string, tag = "4")]
    pub message_id: String,
    /// Body.
    #[prost(string, tag = "5")]
    pub body: String,
    /// Send time, Unix ms.
    #[prost(int64, tag = "6")]
    pub sent_ms: i64,
}

/// The presence changes of one node during one window.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceBatch {
    /// In the order they happened.
    #[prost(message, repeated, tag = "1")]
    pub changes: Vec<PresenceChange>,
}

/// A login or logout.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceChange {
    /// Whose.
    #[prost(int64, tag = "1")]
    pub user: i64,
    /// Online or gone.
    #[prost(bool, tag = "2")]
    pub online: bool,
    /// The session's epoch (cluster-wide session id).
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// Login time, Unix ms.
    #[prost(int64, tag = "4")]
    pub since_ms: i64,
    /// Where the client takes direct connections (for logins with a peer listener).
    #[prost(message, optional, tag = "5")]
    pub peer: Option<Peer>,
    /// The gRPC client's address (for `Admin/ListSessions`).
    #[prost(string, tag = "6")]
    pub remote: String,
}

/// A session's peer listener.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// Host to dial.
    #[prost(string, tag = "1")]
    pub host: String,
    /// Port (0: a key but no listener).
    #[prost(uint32, tag = "2")]
    pub port: u32,
    /// X25519 public key.
    #[prost(bytes = "vec", tag = "3")]
    pub public_key: Vec<u8>,
}

/// An encoded event for one session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Notice {
    /// The user.
    #[prost(int64, tag = "1")]
    pub user: i64,
    /// The session (epoch); 0: whichever session the user has.
    #[prost(uint64, tag = "2")]
    pub session: u64,
    /// The `confab.v1.Event`, encoded.
    #[prost(bytes = "bytes", tag = "3")]
    pub event: bytes::Bytes,
    /// For an address request: who asked, so the target's node can route the answer back.
    #[prost(message, optional, tag = "4")]
    pub asked: Option<Asked>,
}

/// An address request made on another node, as the target's node needs it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Asked {
    /// The request's id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The requester's session (epoch): a grant ends with it.
    #[prost(uint64, tag = "2")]
    pub requester_session: u64,
    /// The requester's name.
    #[prost(string, tag = "3")]
    pub requester: String,
}

/// A session that ended.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ended {
    /// The user.
    #[prost(int64, tag = "1")]
    pub user: i64,
    /// The session's epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Its node died, and the node that noticed says so on its behalf: grants that node
    /// held for the session's user were not revoked by it.
    #[prost(bool, tag = "3")]
    pub node_died: bool,
}

/// A broadcast.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Broadcast {
    /// Sender's user id (its blockers are skipped).
    #[prost(int64, tag = "1")]
    pub from_user: i64,
    /// The `confab.v1.Event`, encoded.
    #[prost(bytes = "bytes", tag = "2")]
    pub event: bytes::Bytes,
}

/// One session of one user.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionRef {
    /// The user.
    #[prost(int64, tag = "1")]
    pub user: i64,
    /// The session's epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
}

/// A block added or removed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockChange {
    /// Who blocks.
    #[prost(int64, tag = "1")]
    pub blocker: i64,
    /// Who is blocked.
    #[prost(int64, tag = "2")]
    pub blocked: i64,
    /// Added (true) or removed.
    #[prost(bool, tag = "3")]
    pub added: bool,
}

/// An account that changed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AccountChange {
    /// Its id.
    #[prost(int64, tag = "1")]
    pub user: i64,
}

/// An answer to an address request, for the node that holds the request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Answer {
    /// The request.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The answering user.
    #[prost(int64, tag = "2")]
    pub user: i64,
    /// Its session (epoch).
    #[prost(uint64, tag = "3")]
    pub session: u64,
    /// Accepted.
    #[prost(bool, tag = "4")]
    pub accept: bool,
}

impl Event {
    /// An event of `kind`.
    pub fn new(kind: Kind) -> Self {
        Event { kind: Some(kind) }
    }
}

/// Nodes in one process, connected by channels: a node's events reach the others in the order
/// it published them, without encoding.
#[derive(Default)]
pub struct InProcess {
    nodes: Mutex<Vec<(String, mpsc::UnboundedSender<Envelope>)>>,
}

/// One node's end of an [`InProcess`] bus.
pub struct InProcessNode {
    hub: Arc<InProcess>,
    name: String,
}

impl InProcess {
    /// A bus with no nodes yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Adds node `name`; the receiver yields what the other nodes publish to it.
    pub fn join(
        self: &Arc<Self>,
        name: &str,
    ) -> (Arc<InProcessNode>, mpsc::UnboundedReceiver<Envelope>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), tx));
        let node = InProcessNode {
            hub: self.clone(),
            name: name.to_owned(),
        };
        (Arc::new(node), rx)
    }
}

impl Bus for InProcessNode {
    fn node(&self) -> &str {
        &self.name
    }

    fn publish(&self, route: Route, event: Event) {
        let to = match &route {
            Route::Others => String::new(),
            Route::Node(n) => n.clone(),
        };
        let envelope = Envelope {
            from: self.name.clone(),
            to,
            event: Some(event),
        };
        let mut nodes = self.hub.nodes.lock().unwrap_or_else(|p| p.into_inner());
        // A node whose receiver is gone has left.
        nodes.retain(|(_, tx)| !tx.is_closed());
        for (name, tx) in nodes.iter() {
            let wanted = match &route {
                Route::Others => *name != self.name,
                Route::Node(n) => name == n,
            };
            if wanted {
                let _ = tx.send(envelope.clone());
            }
        }
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        // Sent is delivered: the channels hold it.
        Box::pin(std::future::ready(()))
    }
}
