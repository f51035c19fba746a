//! `confab bench relay-server`: the bare tonic relay of issue 6, the floor of a naive gRPC chat
//! design. A map from user to a bounded queue feeding that user's `Subscribe` stream; `Send`
//! looks the recipient up and queues one event; `Broadcast` queues a copy on every stream. No
//! accounts, no authentication, no storage, no acknowledgements — and nothing beyond what such a
//! relay would naturally be, so the comparison is honest: each event is a prost message encoded
//! by tonic per stream, as a plain tonic service does.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{PoisonError, RwLock},
};

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use super::relay::pb::{
    self,
    relay_server::{Relay, RelayServer},
};

/// Events queued per stream; the same default as confab's `--stream-queue`.
const QUEUE: usize = 1024;

/// `confab bench relay-server`.
#[derive(Debug, Args)]
pub(crate) struct RelayServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4120")]
    listen: SocketAddr,
}

type Queue = mpsc::Sender<Result<pb::Event, Status>>;

/// The relay: who is subscribed, and the queue of their stream.
#[derive(Default)]
struct RelayService {
    /// A std lock: every section is one map operation, never held across an `.await`.
    streams: RwLock<HashMap<String, Queue>>,
}

impl RelayService {
    fn queue(&self, user: &str) -> Option<Queue> {
        self.streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .cloned()
    }
}

#[tonic::async_trait]
impl Relay for RelayService {
    type SubscribeStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = request.into_inner().user;
        let (tx, rx) = mpsc::channel(QUEUE);
        // Registered before answering, so the client's stream is live once it has the headers.
        self.streams
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user, tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let req = request.into_inner();
        let queue = self
            .queue(&req.to)
            .ok_or_else(|| Status::not_found(format!("{} is not subscribed", req.to)))?;
        let event = pb::Event {
            from: req.from,
            body: req.body,
            message_id: req.message_id,
            sent_at_ms: crate::now_ms(),
        };
        queue
            .try_send(Ok(event))
            .map_err(|_| Status::resource_exhausted(format!("{}'s queue is full", req.to)))?;
        Ok(Response::new(pb::SendResponse {}))
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let req = request.into_inner();
        let queues: Vec<(String, Queue)> = self
            .streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(user, _)| **user != req.from)
            .map(|(user, q)| (user.clone(), q.clone()))
            .collect();
        let event = pb::Event {
            from: req.from,
            body: req.body,
            message_id: String::new(),
            sent_at_ms: crate::now_ms(),
        };
        let mut delivered = 0;
        for (_, queue) in queues {
            if queue.try_send(Ok(event.clone())).is_ok() {
                delivered += 1;
            }
        }
        Ok(Response::new(pb::BroadcastResponse { delivered }))
    }
}

/// Serves the relay until SIGINT or SIGTERM.
///
/// # Errors
/// The address cannot be bound.
pub(crate) async fn run(args: RelayServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Printed for the bench that starts the relay on port 0, as `confab serve` does.
    println!("relay listening on {}", listener.local_addr()?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = tonic::transport::Server::builder()
        .add_service(RelayServer::new(RelayService::default()))
        .serve_with_incoming(incoming);
    // No graceful shutdown: it would wait for every open Subscribe stream, and the relay keeps
    // nothing worth finishing.
    tokio::select! {
        served = serve => served.context("the relay failed")?,
        () = crate::signal::stop_requested() => {}
    }
    Ok(())
}
