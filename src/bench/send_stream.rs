//! One `SendStream`: many sends on one HTTP/2 stream with one answer each, in order — confab's
//! streaming send path, which the saturation phase measures beside unary `SendMessage`.

use anyhow::{Context, anyhow};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::{client::api, pb};

/// One `SendStream`: many sends on one HTTP/2 stream, one answer each, in order.
pub(crate) struct StreamSender {
    queue: StreamQueue,
    answers: StreamAnswers,
}

impl StreamSender {
    /// A stream whose requests go into `tx` and whose answers come from `responses`.
    pub(crate) fn new(
        tx: mpsc::Sender<pb::SendStreamRequest>,
        responses: Streaming<pb::SendStreamResponse>,
    ) -> Self {
        StreamSender {
            queue: StreamQueue(tx),
            answers: StreamAnswers(responses),
        }
    }

    /// Queues one send on the stream, waiting for room.
    ///
    /// # Errors
    /// The stream has closed.
    pub(crate) async fn send(
        &self,
        to: &str,
        message_id: String,
        body: String,
    ) -> anyhow::Result<()> {
        self.queue
            .0
            .send(request(to, message_id, body))
            .await
            .map_err(|_| anyhow!("the SendStream closed"))
    }

    /// The two halves, to send from one task and read the answers in another. The stream's
    /// request side ends once every clone of the [`StreamQueue`] is dropped, and the answers
    /// end after the last request's.
    pub(crate) fn split(self) -> (StreamQueue, StreamAnswers) {
        (self.queue, self.answers)
    }

    /// The next answer: `Ok(Ok(()))` for a stored message, `Ok(Err(sentence))` for a refused one.
    ///
    /// # Errors
    /// The stream failed or ended.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Result<(), String>> {
        self.answers.next().await?.context("the SendStream ended")
    }
}

/// One send on the stream.
fn request(to: &str, message_id: String, body: String) -> pb::SendStreamRequest {
    pb::SendStreamRequest {
        message: Some(pb::SendMessageRequest {
            to: to.to_owned(),
            body,
            message_id,
        }),
    }
}

/// The sending half of a [`StreamSender`].
#[derive(Clone)]
pub(crate) struct StreamQueue(mpsc::Sender<pb::SendStreamRequest>);

impl StreamQueue {
    /// Queues one send without waiting: an open-loop sender never waits for the server.
    ///
    /// # Errors
    /// The stream has closed, or has a full queue of sends it has not taken yet.
    pub(crate) fn try_send(
        &self,
        to: &str,
        message_id: String,
        body: String,
    ) -> anyhow::Result<()> {
        self.0
            .try_send(request(to, message_id, body))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    anyhow!("the SendStream's queue is full: the server is not taking sends")
                }
                mpsc::error::TrySendError::Closed(_) => anyhow!("the SendStream closed"),
            })
    }
}

/// The answering half of a [`StreamSender`].
pub(crate) struct StreamAnswers(Streaming<pb::SendStreamResponse>);

impl StreamAnswers {
    /// The next answer (`Ok(())` for a stored message, `Err(sentence)` for a refused one), or
    /// `None` once the stream ended normally.
    ///
    /// # Errors
    /// The stream failed.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Result<(), String>>> {
        let response = self
            .0
            .message()
            .await
            .map_err(|s| anyhow!("SendStream: {}", api::sentence(&s)))?;
        Ok(response.map(|r| if r.code == 0 { Ok(()) } else { Err(r.error) }))
    }
}
