//! What each command does: the network work of `message`, `getaddress`, `private`, … and the
//! answers the client gives by itself (`whoami`, `fingerprint`, `help`).
//!
//! The REPL owns the state; an action only reads it while it starts, and changes it in the one
//! case where the order matters (accepting allows the requester's key before the server hears
//! of it). Anything that waits on the network runs as a [`Pending`] future the REPL polls, which
//! never touches the state: it resolves to a [`Done`] whose [`Effect`]s the REPL applies with
//! [`Done::apply`], only if the login they were made in is still current. The parser
//! (`commands.rs`) decides what the words mean; this module decides what happens.
//!
//! Split by what a command talks to: `calls` (plain calls to the server), `address` (the
//! consent handshake from our side), `private` (the peer path and its fallback), `password`
//! (changing one's own).

mod address;
mod calls;
mod password;
mod private;

use std::pin::Pin;

pub(super) use address::{answer, granted};
pub(super) use password::{ask_and_change, change as change_password};

use super::{
    commands::{self, Command},
    grants::{Allowlist, Grants, KeySource},
    link::Link,
    login::Live,
    render::Item,
};
use crate::{now_ms, pb, types::fingerprint};

/// A command's network part, polled by the REPL.
pub(super) type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What a finished command (or automatic answer) asks the REPL to show and change.
pub(super) struct Done {
    /// The login the command ran under; effects of an older login are void.
    login: u64,
    items: Vec<Item>,
    effects: Vec<Effect>,
}

/// A state change a finished command asks for.
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    /// `getaddress` returned a grant we already held on the server's side.
    Granted(pb::AddressGranted),
    /// A direct send over this grant failed: drop it.
    ForgetGrant { user: String, key: Vec<u8> },
    /// The server refused our acceptance: take the key off the listener again.
    UndoAccept { user: String },
}

impl Done {
    /// Shows `item`, changes nothing.
    fn show(login: u64, item: Item) -> Done {
        Done {
            login,
            items: vec![item],
            effects: Vec::new(),
        }
    }

    /// Applies the effects to `grants` if `current` is still the login they were made in, and
    /// returns everything to show, in order: the command's own lines, then what applying said.
    pub(super) fn apply<A: Allowlist>(self, current: u64, grants: &mut Grants<A>) -> Vec<Item> {
        let mut items = self.items;
        if self.login != current {
            return items;
        }
        for effect in self.effects {
            match effect {
                Effect::Granted(g) => items.push(granted(grants, &g)),
                Effect::ForgetGrant { user, key } => grants.forget_outbound(&user, &key),
                Effect::UndoAccept { user } => grants.undo_accept(&user),
            }
        }
        items
    }
}

/// How a command started.
pub(super) enum Start {
    /// Nothing to do (a blank line).
    Nothing,
    /// Answered at once, without the network.
    Show(Item),
    /// Waits on the network: the REPL polls it and applies its [`Done`].
    Wait(Pending),
}

/// The REPL's state a command may look at (and, for `accept`, change) while it starts.
pub(super) struct Context<'a, A: Allowlist> {
    /// The current login: its calls, keys and limits.
    pub(super) live: &'a Live,
    /// Says when a lost connection is back, for sends to go again.
    pub(super) link: &'a Link,
    pub(super) grants: &'a mut Grants<A>,
    /// Our peer listener's port, for `whoami`.
    pub(super) peer_port: u16,
}

/// Starts `command`. `logout` is the REPL's own business and starts nothing here.
pub(super) fn start<A: Allowlist>(command: Command, cx: Context<'_, A>) -> Start {
    let name = command.name();
    let live = cx.live;
    match command {
        // Logout is the loop's; sendfile (and answers to file offers) go to `files.rs` first.
        // Password changes need secrets from the input: the loop's too.
        Command::Nothing | Command::Logout | Command::SendFile { .. } | Command::Password => {
            Start::Nothing
        }
        Command::Help => Start::Show(Item::Help {
            text: commands::HELP.into(),
        }),
        Command::Whoami => Start::Show(Item::Whoami {
            user: live.user.clone(),
            fingerprint: fingerprint(live.keys.public()),
            peer_port: cx.peer_port,
        }),
        Command::Fingerprint { user } => Start::Show(fingerprint_of(cx.grants, user)),
        Command::Answer { user, accept } => {
            match cx.grants.take_request(user.as_deref(), now_ms()) {
                Ok(request) => Start::Wait(answer(live, cx.grants, request, accept, false)),
                Err(why) => Start::Show(Item::refused(name, why)),
            }
        }
        Command::Private { to, text } => match private::check(cx.grants, live, &to, &text) {
            Ok(grant) => Start::Wait(private::send(live, cx.link, grant, text)),
            Err(refused) => Start::Show(refused),
        },
        Command::GetAddress { user } => Start::Wait(address::get(live, user)),
        Command::Message { to, text } => Start::Wait(calls::message(live, cx.link, to, text)),
        Command::Broadcast { text } => Start::Wait(calls::broadcast(live, text)),
        Command::Online { since } => Start::Wait(calls::online(live, since)),
        Command::Block { user } => Start::Wait(calls::block(live, user)),
        Command::Unblock { user } => Start::Wait(calls::unblock(live, user)),
        Command::Blocked => Start::Wait(calls::blocked(live)),
    }
}

/// `fingerprint <user>`: the key we hold for `user` and where it came from.
fn fingerprint_of<A: Allowlist>(grants: &Grants<A>, user: String) -> Item {
    match grants.fingerprint_of(&user) {
        Some((fingerprint, source)) => Item::Fingerprint {
            user,
            fingerprint,
            source: match source {
                KeySource::Granted => "granted",
                KeySource::Accepted => "accepted",
                KeySource::Requested => "requested",
            }
            .into(),
        },
        None => Item::refused(
            "fingerprint",
            format!(
                "you hold no key for {user}: it comes with getaddress {user}, or with their \
                 request for your address"
            ),
        ),
    }
}

/// A fresh message id: 128 random bits, so two clients never pick the same one.
fn new_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::grants::testing::{Recorded, granted as grant, requested};

    fn done(login: u64, effects: Vec<Effect>) -> Done {
        Done {
            login,
            items: vec![Item::LoggedOut],
            effects,
        }
    }

    #[test]
    fn effects_of_an_older_login_are_void_but_its_lines_are_shown() {
        let mut grants = Grants::new(Recorded::default());
        let items = done(1, vec![Effect::Granted(grant("bob", 7))]).apply(2, &mut grants);
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(matches!(items[0], Item::LoggedOut));
        assert!(grants.outbound("bob").is_none(), "a stale grant was kept");
    }

    #[test]
    fn a_grant_returned_by_getaddress_is_kept_and_shown_after_the_commands_lines() {
        let mut grants = Grants::new(Recorded::default());
        let items = done(3, vec![Effect::Granted(grant("Bob", 7))]).apply(3, &mut grants);
        assert!(matches!(items[0], Item::LoggedOut));
        match &items[1] {
            Item::AddressGranted {
                user,
                port,
                fingerprint,
                ..
            } => {
                assert_eq!((user.as_str(), *port), ("Bob", 4000));
                assert_eq!(*fingerprint, crate::types::fingerprint(&[7; 32]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(grants.outbound("bob").unwrap().key, vec![7; 32]);
    }

    #[test]
    fn a_failed_direct_send_forgets_only_the_grant_it_used() {
        let mut grants = Grants::new(Recorded::default());
        grants.granted(&grant("bob", 8)).unwrap();
        // A send over an older key failed after a newer grant arrived: the newer one stays.
        let forget_old = Effect::ForgetGrant {
            user: "bob".into(),
            key: vec![7; 32],
        };
        done(1, vec![forget_old]).apply(1, &mut grants);
        assert!(grants.outbound("bob").is_some());
        let forget = Effect::ForgetGrant {
            user: "BOB".into(),
            key: vec![8; 32],
        };
        done(1, vec![forget]).apply(1, &mut grants);
        assert!(grants.outbound("bob").is_none());
    }

    #[test]
    fn a_fingerprint_names_where_the_key_came_from_or_how_to_get_one() {
        let mut grants = Grants::new(Recorded::default());
        match fingerprint_of(&grants, "bob".into()) {
            Item::Error { command, error, .. } => {
                assert_eq!(command, "fingerprint");
                assert!(error.contains("getaddress bob"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        grants.granted(&grant("bob", 9)).unwrap();
        match fingerprint_of(&grants, "BOB".into()) {
            Item::Fingerprint {
                fingerprint,
                source,
                ..
            } => {
                assert_eq!(fingerprint, crate::types::fingerprint(&[9; 32]));
                assert_eq!(source, "granted");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_the_server_never_hears_takes_the_accepted_key_back() {
        let live = Live::unreachable("alice", 1024);
        let link = Link::never(std::sync::Arc::new(Live::unreachable("alice", 1024)));
        let allowlist = Recorded::default();
        let mut grants = Grants::new(allowlist.clone());
        grants.requested(&requested("carol", "r1", 5, 0));
        let context = Context {
            live: &live,
            link: &link,
            grants: &mut grants,
            peer_port: 0,
        };
        let command = Command::Answer {
            user: None,
            accept: true,
        };
        let Start::Wait(pending) = start(command, context) else {
            panic!("an answer goes to the server");
        };
        // Allowed before the server is told, so carol's first connection finds her key.
        assert_eq!(allowlist.0.borrow().get("carol"), Some(&vec![5; 32]));
        let items = pending.await.apply(live.number, &mut grants);
        match &items[..] {
            [Item::Error { command, code, .. }] => {
                assert_eq!((command.as_str(), code.as_str()), ("accept", "UNAVAILABLE"));
            }
            other => panic!("{other:?}"),
        }
        assert!(allowlist.0.borrow().is_empty(), "the key stayed allowed");
        // The request was answered (if unheard): nothing waits for `y` any more.
        let context = Context {
            live: &live,
            link: &link,
            grants: &mut grants,
            peer_port: 0,
        };
        match start(
            Command::Answer {
                user: None,
                accept: true,
            },
            context,
        ) {
            Start::Show(Item::Error { error, .. }) => {
                assert_eq!(error, "nobody is waiting for an answer");
            }
            _ => panic!("answered twice"),
        }
    }

    #[tokio::test]
    async fn commands_answered_by_the_client_itself_need_no_server() {
        let live = Live::unreachable("alice", 1024);
        let link = Link::never(std::sync::Arc::new(Live::unreachable("alice", 1024)));
        let mut grants = Grants::new(Recorded::default());
        let mut run = |command| {
            let context = Context {
                live: &live,
                link: &link,
                grants: &mut grants,
                peer_port: 4321,
            };
            match start(command, context) {
                Start::Show(item) => Some(item),
                Start::Nothing => None,
                Start::Wait(_) => panic!("went to the network"),
            }
        };
        match run(Command::Whoami) {
            Some(Item::Whoami {
                user,
                fingerprint,
                peer_port,
            }) => {
                assert_eq!((user.as_str(), peer_port), ("alice", 4321));
                assert_eq!(fingerprint, crate::types::fingerprint(live.keys.public()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(run(Command::Help), Some(Item::Help { .. })));
        assert!(run(Command::Nothing).is_none());
        assert!(run(Command::Logout).is_none(), "logout is the loop's");
    }

    #[test]
    fn message_ids_are_fresh_and_fit_the_servers_limit() {
        let (a, b) = (new_message_id(), new_message_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.len() <= crate::types::MAX_MESSAGE_ID_BYTES);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }
}
