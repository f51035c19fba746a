//! The bus over a NATS server (`--bus nats://…`).
//!
//! Each cluster has subjects of its own, `confab.<cluster>.all` (every node) and
//! `confab.<cluster>.node.<name>` (one node), where `<cluster>` is the id the shared database
//! was given when it was created: nodes on one database form one cluster, and two clusters
//! sharing a NATS server never see each other's events. A node publishes from one task, in
//! order, on one connection, and NATS keeps one connection's messages in order.
//!
//! The client reconnects by itself after NATS restarts, and subscriptions come back with it.
//! Events published while NATS is unreachable may be lost; nothing durable is (the inbox is in
//! PostgreSQL, replayed at the next `Subscribe`), and [`NatsBus::connect`]'s `reconnected`
//! channel lets the node catch up on the rest (who is online where) from the directory.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use super::bus::{BoxFuture, Bus, Envelope, Event, Route};

/// Events waiting for the publishing task. Beyond this (NATS unreachable for long, the client's
/// own buffer full too) new events are dropped with a warning rather than growing memory.
const QUEUE: usize = 64 * 1024;
/// How long connecting may take at start before the node refuses to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's connection to the NATS bus.
pub struct NatsBus {
    node: String,
    prefix: String,
    tx: mpsc::Sender<Out>,
}

/// Work for the publishing task.
enum Out {
    /// Publish on a subject.
    Publish(String, Envelope),
    /// Flush the client, then answer.
    Flush(oneshot::Sender<()>),
}

/// What [`NatsBus::connect`] hands back besides the bus.
pub struct Incoming {
    /// Events from the other nodes, in each publisher's order.
    pub events: mpsc::UnboundedReceiver<Envelope>,
    /// Bumped each time the connection comes back after a loss.
    pub reconnected: watch::Receiver<u64>,
}

impl NatsBus {
    /// Connects node `node` of cluster `cluster` to the NATS server at `url`.
    ///
    /// # Errors
    /// The URL is malformed or the server cannot be reached within a few seconds.
    pub async fn connect(url: &str, cluster: &str, node: &str) -> anyhow::Result<(Self, Incoming)> {
        let (reconnect_tx, reconnected) = watch::channel(0u64);
        let reconnect_tx = std::sync::Arc::new(reconnect_tx);
        let was_lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let options = async_nats::ConnectOptions::new()
            .name(format!("confab node {node}"))
            .connection_timeout(CONNECT_TIMEOUT)
            // Retry for ever: a NATS restart must not end the node's membership. Often, too:
            // the nodes' events wait meanwhile (the default backs off to several seconds).
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .event_callback(move |event| {
                let (reconnect_tx, was_lost) = (reconnect_tx.clone(), was_lost.clone());
                async move {
                    use std::sync::atomic::Ordering;
                    match event {
                        async_nats::Event::Disconnected => {
                            was_lost.store(true, Ordering::Relaxed);
                            tracing::warn!(
                                "lost the NATS bus: other nodes' events wait until it is back; \
                                 messages are still stored"
                            );
                        }
                        async_nats::Event::Connected => {
                            if was_lost.swap(false, Ordering::Relaxed) {
                                tracing::info!("the NATS bus is back");
                                reconnect_tx.send_modify(|n| *n += 1);
                            }
                        }
                        // Events the bus dropped: committed messages among them reach their
                        // recipients at their next Subscribe only, so say so where it shows.
                        async_nats::Event::SlowConsumer(_) => tracing::warn!(
                            "this node fell behind the NATS bus and events for it were dropped; \
                             direct messages among them wait in their recipients' inboxes"
                        ),
                        async_nats::Event::ServerError(e) => {
                            tracing::warn!(error = %e, "the NATS server reported an error");
                        }
                        other => tracing::debug!(event = %other, "NATS"),
                    }
                }
            });
        let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, options.connect(url))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", CONNECT_TIMEOUT * 2))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("connecting to the NATS bus at {}", redact(url)))?;
        let prefix = format!("confab.{cluster}");
        let mut all = client.subscribe(format!("{prefix}.all")).await?;
        let mut mine = client.subscribe(format!("{prefix}.node.{node}")).await?;
        // A round trip: the server has the subscriptions before anything else happens, so no
        // event another node publishes once this one has started is missed.
        client.flush().await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let me = node.to_owned();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    Some(m) = all.next() => m,
                    Some(m) = mine.next() => m,
                    else => break,
                };
                match Envelope::decode(message.payload) {
                    // Its own events come back on `all`.
                    Ok(e) if e.from == me => {}
                    Ok(e) => {
                        if events_tx.send(e).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "an undecodable event on the NATS bus"),
                }
            }
        });
        let (tx, mut rx) = mpsc::channel::<Out>(QUEUE);
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                match out {
                    Out::Publish(subject, envelope) => {
                        let payload = envelope.encode_to_vec();
                        if let Err(e) = client.publish(subject, payload.into()).await {
                            tracing::warn!(error = %e, "an event could not be published on the NATS bus");
                        }
                    }
                    Out::Flush(done) => {
                        let _ = tokio::time::timeout(CONNECT_TIMEOUT, client.flush()).await;
                        let _ = done.send(());
                    }
                }
            }
        });
        Ok((
            NatsBus {
                node: node.to_owned(),
                prefix,
                tx,
            },
            Incoming {
                events,
                reconnected,
            },
        ))
    }
}

impl Bus for NatsBus {
    fn node(&self) -> &str {
        &self.node
    }

    fn publish(&self, route: Route, event: Event) {
        let (subject, to) = match route {
            Route::Others => (format!("{}.all", self.prefix), String::new()),
            Route::Node(n) => (format!("{}.node.{n}", self.prefix), n),
        };
        let envelope = Envelope {
            from: self.node.clone(),
            to,
            event: Some(event),
        };
        if self.tx.try_send(Out::Publish(subject, envelope)).is_err() {
            tracing::warn!("the NATS bus has been unreachable too long: an event was dropped");
        }
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, flushed) = oneshot::channel();
            if self.tx.send(Out::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
