//! `private`: straight to the peer over the grant we hold; on any failure the grant is dropped
//! and the same message (same id) goes through the server, so it is delivered either way and
//! shown once.

use std::time::Duration;

use super::{Done, Effect, Pending, calls::sent, new_message_id};
use crate::{
    client::{
        call::failed,
        grants::{Allowlist, Grant, Grants},
        link::Link,
        login::Live,
        render::{Item, Via},
        retry,
    },
    now_ms, pb, peer,
};

/// How long a direct send may take before the message goes through the server instead.
const PRIVATE_DEADLINE: Duration = Duration::from_secs(2);

/// Whether a `private` to `to` can start: the grant to send over, or the refusal to show.
///
/// The peer path has no server to enforce the body limit; it is held to the server's, so a
/// fallback cannot be refused for a length the peer accepted.
pub(super) fn check<A: Allowlist>(
    grants: &Grants<A>,
    live: &Live,
    to: &str,
    text: &str,
) -> Result<Grant, Item> {
    let Some(grant) = grants.outbound(to).cloned() else {
        return Err(Item::refused(
            "private",
            format!("you have no address for {to}; run getaddress {to} first"),
        ));
    };
    if text.len() > live.max_message_bytes {
        return Err(Item::refused(
            "private",
            format!(
                "the message is {} bytes; the limit is {} bytes",
                text.len(),
                live.max_message_bytes
            ),
        ));
    }
    Ok(grant)
}

/// Sends `text` to `grant`'s peer, falling back to the server with the same message id.
pub(super) fn send(live: &Live, link: &Link, grant: Grant, text: String) -> Pending {
    let login = live.number;
    let keys = live.keys.clone();
    let route = retry::Route::new(live.chat.clone(), link);
    let message = pb::PeerMessage {
        message_id: new_message_id(),
        from: live.user.clone(),
        to: grant.user.clone(),
        body: text,
        sent_at_ms: now_ms(),
    };
    Box::pin(async move {
        let direct = peer::send(
            &grant.host,
            grant.port,
            &grant.key,
            &keys,
            &message,
            PRIVATE_DEADLINE,
        )
        .await;
        let why = match direct {
            Ok(()) => {
                return Done::show(
                    login,
                    Item::Sent {
                        to: grant.user,
                        status: "DIRECT".into(),
                        message_id: message.message_id,
                        seq: None,
                        duplicate: false,
                        via: Via::Direct,
                        fallback: None,
                        attempts: 1,
                    },
                );
            }
            Err(e) => e.to_string(),
        };
        let forget = Effect::ForgetGrant {
            user: grant.user.clone(),
            key: grant.key.clone(),
        };
        let request = pb::SendMessageRequest {
            to: grant.user.clone(),
            body: message.body,
            message_id: message.message_id.clone(),
        };
        let item = match retry::send_message(route, request).await {
            Ok((r, attempts)) => {
                sent(grant.user, message.message_id, &r, Some(why)).attempted(attempts)
            }
            Err(status) => {
                let mut item = failed("private", &status);
                if let Item::Error { error, .. } = &mut item {
                    *error = format!(
                        "could not reach {} directly ({why}), and the server refused it too: \
                         {error}",
                        grant.user
                    );
                }
                item
            }
        };
        Done {
            login,
            items: vec![item],
            effects: vec![forget],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::grants::testing::{Recorded, granted};

    fn refusal(r: Result<Grant, Item>) -> String {
        match r {
            Err(Item::Error {
                command,
                code,
                error,
            }) => {
                assert_eq!((command.as_str(), code.as_str()), ("private", "CLIENT"));
                error
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn private_needs_a_grant_and_a_body_the_server_would_take() {
        let live = Live::unreachable("alice", 10);
        let mut grants = Grants::new(Recorded::default());
        assert_eq!(
            refusal(check(&grants, &live, "bob", "hi")),
            "you have no address for bob; run getaddress bob first"
        );
        grants.granted(&granted("Bob", 3)).unwrap();
        assert_eq!(
            refusal(check(&grants, &live, "bob", "eleven byte")),
            "the message is 11 bytes; the limit is 10 bytes"
        );
        let grant = check(&grants, &live, "BOB", "ten bytes!").expect("within the limit");
        assert_eq!((grant.user.as_str(), grant.key), ("Bob", vec![3; 32]));
    }

    #[tokio::test]
    async fn a_failed_direct_send_tries_the_server_and_drops_the_grant() {
        let live = Live::unreachable("alice", 1024);
        let mut grants = Grants::new(Recorded::default());
        // Nobody listens at the granted port either.
        let mut g = granted("bob", 3);
        g.port = u32::from(
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        );
        let grant = grants.granted(&g).unwrap();
        let link = Link::never(std::sync::Arc::new(Live::unreachable("alice", 1024)));
        let items = send(&live, &link, grant, "psst".into())
            .await
            .apply(live.number, &mut grants);
        match &items[..] {
            [
                Item::Error {
                    command,
                    code,
                    error,
                },
            ] => {
                assert_eq!(
                    (command.as_str(), code.as_str()),
                    ("private", "UNAVAILABLE")
                );
                assert!(
                    error.starts_with("could not reach bob directly ("),
                    "{error}"
                );
                assert!(
                    error.contains("and the server refused it too: cannot reach the server"),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            grants.outbound("bob").is_none(),
            "the failed grant was kept"
        );
    }
}
