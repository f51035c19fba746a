//! The commands that are one plain call to the server: `message`, `broadcast`, `online`,
//! `block`, `unblock`, `blocked`. Each shows the answer, or the failure in words; none changes
//! the client's state.

use std::time::Duration;

use super::{Done, Pending, new_message_id};
use crate::{
    client::{
        call::{failed, timed},
        link::Link,
        login::Live,
        render::{Item, OnlineUser, Via},
        retry,
    },
    pb::{self, DeliveryStatus},
};

/// `message <user> <text>`, under a fresh message id (kept for the retries a rate limit asks
/// for, and for sending it again once a lost connection is back).
pub(super) fn message(live: &Live, link: &Link, to: String, text: String) -> Pending {
    let login = live.number;
    let route = retry::Route::new(live.chat.clone(), link);
    Box::pin(async move {
        let message_id = new_message_id();
        let request = pb::SendMessageRequest {
            to: to.clone(),
            body: text,
            message_id: message_id.clone(),
        };
        let item = match retry::send_message(route, request).await {
            Ok((r, attempts)) => sent(to, message_id, &r, None).attempted(attempts),
            Err(status) => failed("message", &status),
        };
        Done::show(login, item)
    })
}

/// `broadcast <text>`.
pub(super) fn broadcast(live: &Live, text: String) -> Pending {
    let (login, chat) = (live.number, live.chat.clone());
    Box::pin(async move {
        let item = match retry::broadcast(chat, pb::BroadcastRequest { body: text }).await {
            Ok(r) => Item::BroadcastSent {
                delivered: r.delivered,
                withheld: r.withheld,
            },
            Err(status) => failed("broadcast", &status),
        };
        Done::show(login, item)
    })
}

/// `online [--since <duration>]`.
pub(super) fn online(live: &Live, since: Option<Duration>) -> Pending {
    let (login, mut chat) = (live.number, live.chat.clone());
    Box::pin(async move {
        let since_seconds = since.map(|d| d.as_secs());
        let request = pb::ListOnlineRequest {
            since_seconds: since_seconds.unwrap_or(0),
        };
        let item = match timed(chat.list_online(request)).await {
            Ok(r) => Item::Online {
                since_seconds,
                users: r
                    .into_inner()
                    .users
                    .into_iter()
                    .map(|u| OnlineUser {
                        user: u.username,
                        online: u.online,
                        last_login_ms: u.last_login_ms,
                    })
                    .collect(),
            },
            Err(status) => failed("online", &status),
        };
        Done::show(login, item)
    })
}

/// `block <user>`.
pub(super) fn block(live: &Live, user: String) -> Pending {
    let (login, mut chat) = (live.number, live.chat.clone());
    Box::pin(async move {
        let item = match timed(chat.block(pb::BlockRequest { user: user.clone() })).await {
            Ok(_) => Item::Blocked { user },
            Err(status) => failed("block", &status),
        };
        Done::show(login, item)
    })
}

/// `unblock <user>`.
pub(super) fn unblock(live: &Live, user: String) -> Pending {
    let (login, mut chat) = (live.number, live.chat.clone());
    Box::pin(async move {
        let request = pb::UnblockRequest { user: user.clone() };
        let item = match timed(chat.unblock(request)).await {
            Ok(_) => Item::Unblocked { user },
            Err(status) => failed("unblock", &status),
        };
        Done::show(login, item)
    })
}

/// `blocked`: the users we block.
pub(super) fn blocked(live: &Live) -> Pending {
    let (login, mut chat) = (live.number, live.chat.clone());
    Box::pin(async move {
        let item = match timed(chat.list_blocked(pb::ListBlockedRequest {})).await {
            Ok(r) => Item::BlockedList {
                users: r.into_inner().users,
            },
            Err(status) => failed("blocked", &status),
        };
        Done::show(login, item)
    })
}

/// The server's answer to a send, as shown: its delivery status in the proto's words
/// (`DELIVERED`, `STORED`), and, after a failed direct attempt, why it went this way.
pub(super) fn sent(
    to: String,
    message_id: String,
    r: &pb::SendMessageResponse,
    fallback: Option<String>,
) -> Item {
    let status = DeliveryStatus::try_from(r.status)
        .unwrap_or(DeliveryStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("DELIVERY_STATUS_")
        .to_owned();
    Item::Sent {
        to,
        status,
        message_id,
        seq: Some(r.seq),
        duplicate: r.duplicate,
        via: Via::Server,
        fallback,
        attempts: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: i32) -> pb::SendMessageResponse {
        pb::SendMessageResponse {
            status,
            seq: 7,
            duplicate: true,
        }
    }

    #[test]
    fn a_send_shows_the_delivery_status_in_the_protos_words() {
        let delivered = response(DeliveryStatus::Delivered as i32);
        match sent("bob".into(), "m1".into(), &delivered, None) {
            Item::Sent {
                to,
                status,
                message_id,
                seq,
                duplicate,
                via,
                fallback,
                ..
            } => {
                assert_eq!((to.as_str(), status.as_str()), ("bob", "DELIVERED"));
                assert_eq!((message_id.as_str(), seq, duplicate), ("m1", Some(7), true));
                assert_eq!((via, fallback), (Via::Server, None));
            }
            other => panic!("{other:?}"),
        }
        let stored = response(DeliveryStatus::Stored as i32);
        let why = Some("connection refused".to_owned());
        match sent("bob".into(), "m1".into(), &stored, why.clone()) {
            Item::Sent {
                status, fallback, ..
            } => assert_eq!((status.as_str(), fallback), ("STORED", why)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_status_this_client_does_not_know_reads_as_unspecified() {
        match sent("bob".into(), "m1".into(), &response(99), None) {
            Item::Sent { status, .. } => assert_eq!(status, "UNSPECIFIED"),
            other => panic!("{other:?}"),
        }
    }
}
