//! `confab.v1.Chat`: everything a logged-in user does.

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{admit, bearer, services::chat_server::Chat};
use crate::{
    pb,
    server::{
        consent::Requested,
        core::{Core, EndReason, Sent, Session, Shape, messages::Draft},
        decode::SendStreamItem,
        error::{Error, Result as CoreResult},
        stream, wire,
    },
};

/// Sends a `SendStream` keeps in flight (stored or waiting for the commit) before it stops
/// reading more requests.
const SEND_STREAM_WINDOW: usize = 256;

/// The `Chat` service.
pub struct ChatService(pub Arc<Core>);

impl ChatService {
    fn session<T>(&self, request: &Request<T>) -> Result<Arc<Session>, Status> {
        let session = self.0.authenticate(bearer(request.metadata()))?;
        admit(request);
        Ok(session)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type SendFuture = Pin<Box<dyn Future<Output = CoreResult<Sent>> + Send + 'static>>;

#[tonic::async_trait]
impl Chat for ChatService {
    type SubscribeStream = BoxStream<wire::EncodedEvent>;
    type SendStreamStream = BoxStream<pb::SendStreamResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let session = self.session(&request)?;
        let req = request.into_inner();
        let shape = match (req.no_presence, req.presence_batches) {
            (true, _) => None,
            (false, false) => Some(Shape::Single),
            (false, true) => Some(Shape::Batched),
        };
        let events = stream::subscribe(self.0.clone(), session, req.resume_after, shape);
        Ok(Response::new(Box::pin(events)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let session = self.session(&request)?;
        self.0.ack(&session, request.into_inner().ack_seq);
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let session = self.session(&request)?;
        self.0.ack(&session, request.into_inner().ack_seq);
        // The acknowledgement is committed before the session is reported gone.
        self.0.writer.flush().await.map_err(Error::from)?;
        self.0.end_session(&session, EndReason::LoggedOut);
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let session = self.session(&request)?;
        let sent = self.0.send(&session, draft(request.into_inner())).await?;
        Ok(Response::new(pb::SendMessageResponse {
            status: wire::delivery(sent.delivery) as i32,
            seq: sent.seq,
            duplicate: sent.duplicate,
        }))
    }

    async fn send_stream(
        &self,
        request: Request<Streaming<SendStreamItem>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let session = self.session(&request)?;
        let mut inbound = request.into_inner();
        let core = self.0.clone();
        // Requests are validated and handed to the writer as they arrive; their results are
        // awaited in order by the response stream, so many commits are in flight at once.
        let (tx, mut rx) = mpsc::channel::<(String, SendFuture)>(SEND_STREAM_WINDOW);
        let reader_session = session.clone();
        let reader = tokio::spawn(async move {
            let mut ended = std::pin::pin!(reader_session.ended.cancelled());
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    () = &mut ended => return Ok(()),
                };
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(status),
                };
                reader_session.touch();
                let req = match req.decode() {
                    Ok(req) => req,
                    Err(rejected) => {
                        let answer: SendFuture = Box::pin(std::future::ready(Err(rejected.error)));
                        if tx.send((rejected.message_id, answer)).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                };
                let msg = draft(req.message.unwrap_or_default());
                let id = msg.message_id.clone();
                let known = core.learn(&msg.to).await;
                let fut: SendFuture = match known.and_then(|()| core.prepare(&reader_session, msg))
                {
                    Ok(out) => match core.submit(&reader_session, out).await {
                        Ok(fut) => Box::pin(fut),
                        Err(e) => Box::pin(std::future::ready(Err(e))),
                    },
                    Err(e) => Box::pin(std::future::ready(Err(e))),
                };
                if tx.send((id, fut)).await.is_err() {
                    return Ok(());
                }
            }
        });
        let responses = async_stream::stream! {
            while let Some((message_id, fut)) = rx.recv().await {
                yield Ok(response(message_id, fut.await));
            }
            match reader.await {
                Ok(Err(status)) => yield Err(status),
                Err(e) => yield Err(Error::Internal(e.into()).into()),
                Ok(Ok(())) => {
                    if let Some(reason) = session.end_reason() {
                        yield Err(Status::unauthenticated(format!(
                            "the session has ended ({})",
                            wire::end_reason(reason).as_str_name()
                        )));
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(responses)))
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let session = self.session(&request)?;
        let (delivered, withheld) = self.0.broadcast(&session, request.into_inner().body)?;
        Ok(Response::new(pb::BroadcastResponse {
            delivered,
            withheld,
        }))
    }

    async fn list_online(
        &self,
        request: Request<pb::ListOnlineRequest>,
    ) -> Result<Response<pb::ListOnlineResponse>, Status> {
        let session = self.session(&request)?;
        let since = Duration::from_secs(request.into_inner().since_seconds);
        Ok(Response::new(pb::ListOnlineResponse {
            users: self
                .0
                .online(&session, since)
                .into_iter()
                .map(wire::online_user)
                .collect(),
        }))
    }

    async fn block(
        &self,
        request: Request<pb::BlockRequest>,
    ) -> Result<Response<pb::BlockResponse>, Status> {
        let session = self.session(&request)?;
        self.0.block(&session, &request.into_inner().user).await?;
        Ok(Response::new(pb::BlockResponse {}))
    }

    async fn unblock(
        &self,
        request: Request<pb::UnblockRequest>,
    ) -> Result<Response<pb::UnblockResponse>, Status> {
        let session = self.session(&request)?;
        self.0.unblock(&session, &request.into_inner().user).await?;
        Ok(Response::new(pb::UnblockResponse {}))
    }

    async fn list_blocked(
        &self,
        request: Request<pb::ListBlockedRequest>,
    ) -> Result<Response<pb::ListBlockedResponse>, Status> {
        let session = self.session(&request)?;
        Ok(Response::new(pb::ListBlockedResponse {
            users: self.0.blocked(&session),
        }))
    }

    async fn request_address(
        &self,
        request: Request<pb::RequestAddressRequest>,
    ) -> Result<Response<pb::RequestAddressResponse>, Status> {
        let session = self.session(&request)?;
        let user = request.into_inner().user;
        self.0.learn(&user).await?;
        let response = match self.0.request_address(&session, &user)? {
            Requested::Granted(grant) => pb::RequestAddressResponse {
                request_id: String::new(),
                grant: Some(wire::grant(&grant)),
            },
            Requested::Pending { id, .. } => pb::RequestAddressResponse {
                request_id: id,
                grant: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn respond_address_request(
        &self,
        request: Request<pb::RespondAddressRequestRequest>,
    ) -> Result<Response<pb::RespondAddressRequestResponse>, Status> {
        let session = self.session(&request)?;
        let req = request.into_inner();
        self.0
            .respond_address(&session, &req.request_id, req.accept)?;
        Ok(Response::new(pb::RespondAddressRequestResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let session = self.session(&request)?;
        let req = request.into_inner();
        self.0
            .change_password(
                &session,
                crate::types::Secret::new(req.old_password),
                crate::types::Secret::new(req.new_password),
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }
}

fn draft(req: pb::SendMessageRequest) -> Draft {
    Draft {
        to: req.to,
        body: req.body,
        message_id: req.message_id,
    }
}

fn response(message_id: String, result: CoreResult<Sent>) -> pb::SendStreamResponse {
    match result {
        Ok(sent) => pb::SendStreamResponse {
            message_id,
            code: 0,
            error: String::new(),
            status: wire::delivery(sent.delivery) as i32,
            seq: sent.seq,
            duplicate: sent.duplicate,
            retry_after_ms: 0,
        },
        Err(e) => {
            let retry_after_ms = e.retry_after().map_or(0, |d| d.as_millis() as u64);
            let status = Status::from(e);
            pb::SendStreamResponse {
                message_id,
                code: status.code() as i32,
                error: status.message().to_owned(),
                retry_after_ms,
                ..Default::default()
            }
        }
    }
}
