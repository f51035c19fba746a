//! Phase 6: the peer path. Two extra clients, each with a `PeerListener` and fresh keys, log in
//! with their listener's port and key; A asks the server for B's address, B accepts (allowing
//! A's key on its listener), A gets the grant. Then A sends `--peer-messages` private messages
//! one after another with `peer::send` — connect, Noise IK, message, ack, close — and each call
//! is timed. The server is not involved after the handshake.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use tonic::Streaming;

use super::{Ctx, Failures};
use crate::{
    bench::{
        confab::PASSWORD,
        report::Peer,
        stats::{Latency, histogram},
        target::Target,
    },
    client::api::{self, Authed},
    now_ms,
    pb::{self, chat_client::ChatClient, event::Kind},
    peer::{self, Inbound, PeerKeys, PeerListener},
};

/// How long a handshake event may take to arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// `peer::send`'s deadline per message.
const SEND_DEADLINE: Duration = Duration::from_secs(5);

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>) -> anyhow::Result<Peer> {
    let s = ctx.settings;
    let url = ctx
        .target
        .confab_url()
        .context("the peer path needs a confab server")?;
    let (a_name, b_name) = (
        format!("{}-peer-a", s.prefix),
        format!("{}-peer-b", s.prefix),
    );
    ctx.target
        .register(&[a_name.clone(), b_name.clone()], 2)
        .await?;
    let mut a = PeerClient::start(url, &a_name).await?;
    let mut b = PeerClient::start(url, &b_name).await?;

    // The consent handshake, through the server.
    let asked = a
        .chat
        .request_address(pb::RequestAddressRequest {
            user: b_name.clone(),
        })
        .await
        .map_err(|st| anyhow!("RequestAddress: {}", api::sentence(&st)))?
        .into_inner();
    if asked.grant.is_some() {
        // Fresh logins revoke every grant; one here means another client of these accounts.
        bail!("{a_name} already holds a grant for {b_name}: is another bench running?");
    }
    let requested = b
        .next_event("AddressRequested", |k| match k {
            Kind::AddressRequested(r) => Some(r),
            _ => None,
        })
        .await?;
    b.listener
        .allow(&requested.from, requested.from_public_key.clone());
    b.chat
        .respond_address_request(pb::RespondAddressRequestRequest {
            request_id: requested.request_id,
            accept: true,
        })
        .await
        .map_err(|st| anyhow!("RespondAddressRequest: {}", api::sentence(&st)))?;
    let grant = a
        .next_event("AddressGranted", |k| match k {
            Kind::AddressGranted(g) => Some(g),
            _ => None,
        })
        .await?;
    let port = u16::try_from(grant.port).context("the grant's port is not a port")?;

    // B's client takes what arrives, as the chat client's loop would.
    let mut inbound = b.inbound.take().context("B's inbound messages")?;
    let drain = tokio::spawn(async move { while inbound.recv().await.is_some() {} });

    let label = format!("{} 6 peer", ctx.target.name());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = ctx.progress.show(label, {
        let sent = sent.clone();
        move || format!("sent {}", sent.load(std::sync::atomic::Ordering::Relaxed))
    });
    let failures = Failures::default();
    let mut latency = histogram();
    let end = Instant::now() + s.duration;
    let body = "x".repeat(s.body_bytes);
    for i in 0..s.peer_messages {
        if Instant::now() >= end {
            break;
        }
        let message = pb::PeerMessage {
            message_id: format!("peer-{i}"),
            from: a_name.clone(),
            to: b_name.clone(),
            body: body.clone(),
            sent_at_ms: now_ms(),
        };
        let started = Instant::now();
        match peer::send(
            &grant.host,
            port,
            &grant.public_key,
            &a.keys,
            &message,
            SEND_DEADLINE,
        )
        .await
        {
            Ok(()) => {
                latency.saturating_record(started.elapsed().as_nanos() as u64);
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => failures.add(&e.into()),
        }
    }
    ticker.finish().await;
    drain.abort();
    a.logout().await;
    b.logout().await;
    Ok(Peer {
        messages: latency.len(),
        errors: failures.count(),
        latency: Latency::of(&latency),
        first_error: failures.first(),
    })
}

/// A client with a peer listener: what `confab chat` is, minus the terminal.
struct PeerClient {
    keys: PeerKeys,
    listener: PeerListener,
    inbound: Option<tokio::sync::mpsc::Receiver<Inbound>>,
    chat: ChatClient<Authed>,
    events: Streaming<pb::Event>,
}

impl PeerClient {
    async fn start(url: &str, name: &str) -> anyhow::Result<PeerClient> {
        let keys = PeerKeys::generate();
        let (listener, inbound) =
            PeerListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), keys.clone())
                .await
                .context("binding a peer listener")?;
        let channel = api::connect(url, None).await?;
        let login = api::auth(channel.clone())
            .login(pb::LoginRequest {
                username: name.to_owned(),
                password: PASSWORD.to_owned(),
                peer_port: u32::from(listener.local_addr().port()),
                peer_public_key: keys.public().to_vec(),
                peer_host: "127.0.0.1".into(),
                ..Default::default()
            })
            .await
            .map_err(|st| anyhow!("login as {name}: {}", api::sentence(&st)))?
            .into_inner();
        let mut chat = api::chat(channel, &login.token)?;
        let events = chat
            .subscribe(pb::SubscribeRequest::default())
            .await
            .map_err(|st| anyhow!("subscribe as {name}: {}", api::sentence(&st)))?
            .into_inner();
        Ok(PeerClient {
            keys,
            listener,
            inbound: Some(inbound),
            chat,
            events,
        })
    }

    /// The next event `pick` accepts, skipping the others (backlog, presence).
    async fn next_event<R>(
        &mut self,
        what: &str,
        pick: impl Fn(Kind) -> Option<R>,
    ) -> anyhow::Result<R> {
        let wait = async {
            loop {
                let event = self
                    .events
                    .message()
                    .await?
                    .with_context(|| format!("the stream ended before {what}"))?;
                if let Some(found) = event.kind.and_then(&pick) {
                    return anyhow::Ok(found);
                }
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, wait)
            .await
            .with_context(|| format!("no {what} within {EVENT_TIMEOUT:?}"))?
    }

    async fn logout(&mut self) {
        // Best effort: the session would time out anyway.
        let _ = self.chat.logout(pb::LogoutRequest { ack_seq: 0 }).await;
    }
}
