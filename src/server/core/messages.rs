//! SPEC §4: direct messages (durable, through the writer) and broadcasts (live only).

use std::{sync::Arc, time::Instant};

use super::{
    Core,
    session::Session,
    stats::{self, add, bump},
};
pub use crate::server::domain::Delivery;
use crate::{
    now_ms,
    server::{
        accounts::Account,
        cluster::bus::{self, Kind},
        error::{Error, Result},
        store::{WriteOp, WriteOutcome},
        wire,
    },
    types::MAX_MESSAGE_ID_BYTES,
};

/// A direct message as its sender wrote it.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// Recipient's username.
    pub to: String,
    /// UTF-8 body.
    pub body: String,
    /// The sender's id for it, used to drop duplicates.
    pub message_id: String,
}

/// The outcome of a direct send.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Delivered live or stored.
    pub delivery: Delivery,
    /// Inbox seq.
    pub seq: u64,
    /// The message id was stored already.
    pub duplicate: bool,
}

/// A validated direct message, ready for the writer.
pub struct Outgoing {
    recipient: Arc<Account>,
    op: WriteOp,
}

impl Core {
    fn check_body(&self, body: &str) -> Result<()> {
        if body.is_empty() {
            return Err(Error::invalid("body", "a message cannot be empty"));
        }
        if body.len() > self.config.max_message_bytes {
            return Err(Error::invalid(
                "body",
                format!(
                    "the message is {} bytes; the limit is {} bytes",
                    body.len(),
                    self.config.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    fn rate(&self, session: &Session) -> Result<()> {
        session
            .send_bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
            .map_err(|retry| Error::SendThrottled { retry })
    }

    /// Checks a direct message against every rule before it is stored.
    pub fn prepare(&self, from: &Session, draft: Draft) -> Result<Outgoing> {
        self.check_body(&draft.body)?;
        if draft.message_id.is_empty() || draft.message_id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(Error::invalid(
                "message_id",
                format!("message_id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes"),
            ));
        }
        let recipient = self.other(from, &draft.to, "to", "message")?;
        if self.blocks.blocks(recipient.id, from.user_id()) {
            return Err(Error::BlockedMessage(recipient.name.to_string()));
        }
        self.rate(from)?;
        Ok(Outgoing {
            op: WriteOp::Append {
                recipient: recipient.id,
                sender: from.user_id(),
                message_id: draft.message_id,
                body: draft.body,
                sent_ms: now_ms(),
                max_inbox: self.config.max_inbox,
            },
            recipient,
        })
    }

    /// Hands a prepared message to the writer; the returned future resolves after the commit
    /// and its delivery.
    pub async fn submit(
        self: &Arc<Self>,
        from: &Session,
        out: Outgoing,
    ) -> Result<impl Future<Output = Result<Sent>> + Send + 'static> {
        let rx = self
            .writer
            .submit(out.op, Some(from.user.name.clone()))
            .await?;
        let core = self.clone();
        let recipient = out.recipient;
        let started = Instant::now();
        Ok(async move {
            let written = rx
                .await
                .map_err(|_| Error::Internal(anyhow::anyhow!("the writer dropped a request")))??;
            match written.outcome {
                WriteOutcome::Appended { seq, duplicate } => {
                    if !duplicate {
                        stats::observe(&core.stats.send_to_commit, started.elapsed());
                    }
                    let live = written.reach.reached().await;
                    if !duplicate {
                        bump(&core.stats.messages_relayed);
                        if live {
                            bump(&core.stats.messages_delivered_live);
                        }
                    }
                    let delivery = if live {
                        Delivery::Delivered
                    } else {
                        Delivery::Stored
                    };
                    Ok(Sent {
                        delivery,
                        seq,
                        duplicate,
                    })
                }
                WriteOutcome::InboxFull => Err(Error::InboxFull(recipient.name.to_string())),
                other => Err(Error::Internal(anyhow::anyhow!("append: {other:?}"))),
            }
        })
    }

    /// Stores and delivers one direct message.
    pub async fn send(self: &Arc<Self>, from: &Session, draft: Draft) -> Result<Sent> {
        self.learn(&draft.to).await?;
        let out = self.prepare(from, draft)?;
        self.submit(from, out).await?.await
    }

    /// Sends `body` to every online user except `from` and those blocking it.
    /// Returns (delivered, withheld).
    pub fn broadcast(&self, from: &Session, body: String) -> Result<(u32, u32)> {
        self.check_body(&body)?;
        self.rate(from)?;
        let blockers = self.blocks.blockers_of(from.user_id());
        let event = wire::broadcast(from.name(), body, now_ms());
        let mut delivered = self.fan_out(from.user_id(), &blockers, &event);
        let mut withheld = self
            .sessions
            .all()
            .iter()
            .filter(|s| blockers.contains(&s.user_id()))
            .count() as u32;
        if let Some(cluster) = self.cluster() {
            // Each node fans it out to its own streams; counted here from the directory's
            // mirror, as the others do not answer.
            for (user, _) in cluster.remote.all() {
                if user == from.user_id() || self.sessions.by_user(user).is_some() {
                    continue;
                }
                if blockers.contains(&user) {
                    withheld += 1;
                } else {
                    delivered += 1;
                }
            }
            self.publish(Kind::Broadcast(bus::Broadcast {
                from_user: from.user_id(),
                event: event.bytes().clone(),
            }));
        }
        bump(&self.stats.broadcasts);
        add(&self.stats.broadcast_deliveries, u64::from(delivered));
        Ok((delivered, withheld))
    }
}
