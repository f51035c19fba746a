//! The baseline target: users of the bare tonic relay (`benches/relay.proto`, served by
//! `confab bench relay-server`). Same shape as a confab user — own connection, live stream read
//! by its own task — minus everything the relay lacks: no login, no acknowledgements, no
//! streaming send path.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, anyhow};
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::Channel;

use super::{
    send_stream::StreamSender,
    stats::Sink,
    target::{Target, User},
};
use crate::client::api;

/// Code generated from `benches/relay.proto`.
#[allow(clippy::all, unreachable_pub, missing_docs)] // generated code; its style is not ours to fix
pub(crate) mod pb {
    tonic::include_proto!("confab.bench.relay.v1");
}

use pb::relay_client::RelayClient;

/// A relay reached at `url`.
pub(crate) struct RelayTarget {
    url: String,
    pid: Option<u32>,
}

impl RelayTarget {
    /// A relay at `url` whose process is `pid`.
    pub(crate) fn new(url: String, pid: Option<u32>) -> RelayTarget {
        RelayTarget { url, pid }
    }
}

impl Target for RelayTarget {
    type User = RelayUser;

    fn name(&self) -> &'static str {
        "relay"
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }

    async fn register(&self, _names: &[String], _concurrency: usize) -> anyhow::Result<()> {
        // The relay has no accounts.
        Ok(())
    }

    async fn connect(&self, name: &str) -> anyhow::Result<RelayUser> {
        // The same endpoint settings as confab's users (nodelay, keep-alive).
        let channel = api::connect(&self.url, None).await?;
        Ok(RelayUser {
            name: name.to_owned(),
            client: RelayClient::new(channel),
            reader: Mutex::new(None),
        })
    }
}

/// One simulated relay user.
pub(crate) struct RelayUser {
    name: String,
    client: RelayClient<Channel>,
    reader: Mutex<Option<AbortOnDropHandle<()>>>,
}

impl User for RelayUser {
    fn name(&self) -> &str {
        &self.name
    }

    async fn subscribe(&self, sink: Arc<Sink>) -> anyhow::Result<()> {
        // The relay registers the stream before it answers, so the stream is live on return.
        let mut stream = self
            .client
            .clone()
            .subscribe(pb::SubscribeRequest {
                user: self.name.clone(),
            })
            .await
            .map_err(|s| anyhow!("relay subscribe as {}: {}", self.name, s.message()))
            .context("is the relay running?")?
            .into_inner();
        let reader = tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                sink.deliver(&event.body);
            }
        });
        // Replacing (or dropping the user) aborts the previous reader.
        self.reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(AbortOnDropHandle::new(reader));
        Ok(())
    }

    async fn send(&self, to: &str, message_id: String, body: String) -> anyhow::Result<()> {
        self.client
            .clone()
            .send(pb::SendRequest {
                from: self.name.clone(),
                to: to.to_owned(),
                body,
                message_id,
            })
            .await
            .map(|_| ())
            .map_err(|s| anyhow!("relay send: {}", s.message()))
    }

    async fn broadcast(&self, body: String) -> anyhow::Result<()> {
        self.client
            .clone()
            .broadcast(pb::BroadcastRequest {
                from: self.name.clone(),
                body,
            })
            .await
            .map(|_| ())
            .map_err(|s| anyhow!("relay broadcast: {}", s.message()))
    }

    async fn open_stream(&self) -> anyhow::Result<Option<StreamSender>> {
        Ok(None)
    }
}
