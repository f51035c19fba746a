//! One `SendStream`: many sends on one HTTP/2 stream with one answer each, in order — confab's
//! streaming send path, which the saturation phase measures beside unary `SendMessage`.

use anyhow::{Context, anyhow};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::{client::api, pb};

/// One `SendStream`: many sends on one HTTP/2 stream, one answer each, in order.
pub(crate) struct StreamSender {
    tx: mpsc::Sender<pb::SendStreamRequest>,
    responses: Streaming<pb::SendStreamResponse>,
}

impl StreamSender {
    /// A stream whose requests go into `tx` and whose answers come from `responses`.
    pub(crate) fn new(
        tx: mpsc::Sender<pb::SendStreamRequest>,
        responses: Streaming<pb::SendStreamResponse>,
    ) -> Self {
        StreamSender { tx, responses }
    }

    /// Queues one send on the stream.
    ///
    /// # Errors
    /// The stream has closed.
    pub(crate) async fn send(
        &self,
        to: &str,
        message_id: String,
        body: String,
    ) -> anyhow::Result<()> {
        self.tx
            .send(pb::SendStreamRequest {
                message: Some(pb::SendMessageRequest {
                    to: to.to_owned(),
                    body,
                    message_id,
                }),
            })
            .await
            .map_err(|_| anyhow!("the SendStream closed"))
    }

    /// The next answer: `Ok(Ok(()))` for a stored message, `Ok(Err(sentence))` for a refused one.
    ///
    /// # Errors
    /// The stream failed or ended.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Result<(), String>> {
        let response = self
            .responses
            .message()
            .await
            .map_err(|s| anyhow!("SendStream: {}", api::sentence(&s)))?
            .context("the SendStream ended")?;
        Ok(if response.code == 0 {
            Ok(())
        } else {
            Err(response.error)
        })
    }
}
