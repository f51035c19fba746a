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

use std::{path::Path, time::Duration};

use anyhow::Context;
use async_nats::ServerAddr;
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
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
    /// Connects node `node` of cluster `cluster` to the NATS server at `url` (credentials in
    /// the URL are sent as user and password, or a lone user part as a token), checking a TLS
    /// server's certificate against `ca` if given.
    ///
    /// # Errors
    /// The URL is malformed, the server cannot be reached within a few seconds, or it refuses
    /// the credentials or the TLS handshake.
    pub async fn connect(
        url: &str,
        ca: Option<&Path>,
        cluster: &str,
        node: &str,
    ) -> anyhow::Result<(Self, Incoming)> {
        let (address, credentials) = split_credentials(url)?;
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
        let options = match credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
        };
        let options = match ca {
            Some(ca) => {
                if !ca.is_file() {
                    anyhow::bail!("--bus-ca {}: no such file", ca.display());
                }
                options
                    .add_root_certificates(ca.to_owned())
                    .require_tls(true)
            }
            None => options,
        };
        let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, options.connect(address))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", CONNECT_TIMEOUT * 2))
            .and_then(|r| r.map_err(explain))
            .with_context(|| format!("connecting to the NATS bus at {}", redact(url)))?;
        let prefix = format!("confab.{cluster}");
        let mut all = client.subscribe(format!("{prefix}.all")).await?;
        let mut mine = client.subscribe(format!("{prefix}.node.{node}")).await?;
        // A round trip, so the server has the subscriptions before this node starts and no
        // event another node publishes from then on is missed. `flush` only writes them out:
        // a message to ourselves, which the server handles after them, comes back once they
        // are in place.
        let probe = client.new_inbox();
        let mut echo = client.subscribe(probe.clone()).await?;
        client.publish(probe, Default::default()).await?;
        tokio::time::timeout(CONNECT_TIMEOUT, echo.next())
            .await
            .ok()
            .flatten()
            .context("the NATS server did not confirm this node's subscriptions")?;
        drop(echo);
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

/// What the `--bus` URL says to authenticate with.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    UserPassword(String, String),
    /// `nats://TOKEN@host`, as NATS's own tools read it.
    Token(String),
}

/// The server's address without credentials (async-nats parses them from a URL but does not
/// send them, and its logs would show them), and the credentials, percent-decoded.
fn split_credentials(url: &str) -> anyhow::Result<(ServerAddr, Credentials)> {
    let invalid = || {
        format!(
            "--bus {} is not a NATS URL like nats://host:4222",
            redact(url)
        )
    };
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("nats://{url}")
    };
    let mut parsed = url::Url::parse(&with_scheme).with_context(invalid)?;
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => Credentials::None,
        (user, Some(password)) => Credentials::UserPassword(decode(user), decode(password)),
        (token, None) => Credentials::Token(decode(token)),
    };
    // Cannot fail on a URL with a host, which a NATS URL has.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let address = ServerAddr::from_url(parsed).with_context(invalid)?;
    Ok((address, credentials))
}

/// async-nats's error in a sentence an operator can act on.
fn explain(e: async_nats::ConnectError) -> anyhow::Error {
    use async_nats::ConnectErrorKind as K;
    let tls = |e: async_nats::ConnectError| {
        anyhow::anyhow!(
            "the TLS handshake with the NATS server failed ({e}); for a certificate signed by a \
             private CA, give that CA with --bus-ca"
        )
    };
    match e.kind() {
        K::AuthorizationViolation | K::Authentication => anyhow::anyhow!(
            "the NATS server refused this node's credentials (nats://user:password@host or \
             nats://token@host in --bus)"
        ),
        K::Tls => tls(e),
        // rustls's refusal of the server's certificate comes as an I/O error.
        K::Io if e.to_string().contains("certificate") => tls(e),
        _ => anyhow::Error::from(e),
    }
}

/// `url` without its credentials, for messages.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}…@{}", &url[..start], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_are_decoded() {
        let (address, credentials) =
            split_credentials("nats://confab:p%40ss@10.0.0.1:4222").unwrap();
        assert_eq!(address.host(), "10.0.0.1");
        assert!(!address.has_user_pass());
        assert_eq!(
            credentials,
            Credentials::UserPassword("confab".into(), "p@ss".into())
        );
        let (address, credentials) = split_credentials("tls://s3cret@h:4443").unwrap();
        assert!(address.tls_required());
        assert_eq!(credentials, Credentials::Token("s3cret".into()));
        let (address, credentials) = split_credentials("127.0.0.1:4222").unwrap();
        assert_eq!(address.port(), 4222);
        assert_eq!(credentials, Credentials::None);
    }

    #[test]
    fn a_malformed_url_is_refused_without_its_password() {
        let why = format!(
            "{:#}",
            split_credentials("http://u:hunter2@h:1").unwrap_err()
        );
        assert!(why.contains("not a NATS URL"), "{why}");
        assert!(!why.contains("hunter2"), "{why}");
    }

    #[test]
    fn messages_never_show_credentials() {
        assert_eq!(redact("nats://u:p@h:4222"), "nats://…@h:4222");
        assert_eq!(redact("u:p@h:4222"), "…@h:4222");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }
}
