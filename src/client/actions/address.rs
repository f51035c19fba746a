//! The consent handshake from our side: asking for a user's address (`getaddress`), answering
//! somebody's request (`accept`/`deny`, by hand or by `--auto-accept`/`--auto-deny`), and
//! keeping a grant when one arrives.

use super::{Done, Effect, Pending};
use crate::{
    client::{
        call::{failed, timed},
        grants::{Allowlist, Grants, Request},
        login::Live,
        render::Item,
    },
    pb,
    types::fingerprint,
};

/// `getaddress <user>`: asks the server, which asks `user`; the grant, if any, arrives later as
/// an event. A grant still valid from earlier comes back at once and nobody is asked again.
pub(super) fn get(live: &Live, user: String) -> Pending {
    let login = live.number;
    let mut chat = live.chat.clone();
    Box::pin(async move {
        let request = pb::RequestAddressRequest { user: user.clone() };
        match timed(chat.request_address(request)).await {
            Ok(r) => match r.into_inner() {
                pb::RequestAddressResponse {
                    grant: Some(grant), ..
                } => Done {
                    login,
                    items: Vec::new(),
                    effects: vec![Effect::Granted(grant)],
                },
                pb::RequestAddressResponse { request_id, .. } => {
                    Done::show(login, Item::AddressRequestSent { user, request_id })
                }
            },
            Err(status) => Done::show(login, failed("getaddress", &status)),
        }
    })
}

/// Answers an address request (`auto` when `--auto-accept`/`--auto-deny` did). Accepting allows
/// the requester's key on the listener first, so its first connection cannot beat the
/// allowlist; if the server then refuses, the [`Done`] takes it back out.
pub(crate) fn answer<A: Allowlist>(
    live: &Live,
    grants: &mut Grants<A>,
    request: Request,
    accept: bool,
    auto: bool,
) -> Pending {
    if accept {
        grants.accept(&request);
    }
    let login = live.number;
    let mut chat = live.chat.clone();
    Box::pin(async move {
        let respond = pb::RespondAddressRequestRequest {
            request_id: request.id,
            accept,
        };
        match timed(chat.respond_address_request(respond)).await {
            Ok(_) => Done::show(
                login,
                Item::Answered {
                    user: request.from,
                    accept,
                    auto,
                },
            ),
            Err(status) => Done {
                login,
                items: vec![failed(if accept { "accept" } else { "deny" }, &status)],
                effects: if accept {
                    vec![Effect::UndoAccept { user: request.from }]
                } else {
                    Vec::new()
                },
            },
        }
    })
}

/// Keeps an `AddressGranted` (from the stream, or from `getaddress` directly) and says so, or
/// says why it cannot be used.
pub(crate) fn granted<A: Allowlist>(grants: &mut Grants<A>, g: &pb::AddressGranted) -> Item {
    match grants.granted(g) {
        Ok(grant) => Item::AddressGranted {
            user: grant.user,
            host: grant.host,
            port: grant.port,
            fingerprint: fingerprint(&grant.key),
        },
        Err(why) => Item::refused("getaddress", why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::grants::testing::{Recorded, granted as grant};

    #[test]
    fn an_unusable_grant_is_refused_in_words_and_not_kept() {
        let mut grants = Grants::new(Recorded::default());
        let mut g = grant("bob", 1);
        g.port = 0;
        match granted(&mut grants, &g) {
            Item::Error {
                command,
                code,
                error,
            } => {
                assert_eq!((command.as_str(), code.as_str()), ("getaddress", "CLIENT"));
                assert_eq!(error, "bob was granted without a usable port");
            }
            other => panic!("{other:?}"),
        }
        assert!(grants.outbound("bob").is_none());
    }

    #[tokio::test]
    async fn getaddress_without_a_server_says_so_and_changes_nothing() {
        let live = Live::unreachable("alice", 1024);
        let mut grants = Grants::new(Recorded::default());
        let items = get(&live, "bob".into())
            .await
            .apply(live.number, &mut grants);
        match &items[..] {
            [Item::Error { command, code, .. }] => {
                assert_eq!(
                    (command.as_str(), code.as_str()),
                    ("getaddress", "UNAVAILABLE")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(grants.outbound("bob").is_none());
    }
}
