//! `confab chat`'s main loop: one `select!` over input lines, session notices, direct messages
//! from peers, the result of the command in flight, and a clock tick.
//!
//! Owns the client's state for the current login (grants, the ids already shown, the
//! acknowledgement mark) and changes it only here, between awaits, so nothing needs a lock.
//! Commands run one at a time, in the order typed, and a command that waits on the network (a
//! send, a direct connection) runs as a future the loop polls, so notifications keep appearing
//! meanwhile. A future never touches the state: it returns a [`Done`] whose effects the loop
//! applies, checked against the login they were made in.

use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, anyhow};
use tokio::{sync::mpsc, task::JoinSet};
use tonic::{Code, Status};

use super::{
    Config, Consent, SessionOver, api,
    commands::{self, Command},
    events::{self, Events, Live, Notice, Seen, is_connection_failure, reason_words, timed},
    grants::{Grants, KeySource, Request},
    input::{self, Input, Lines},
    render::{Item, OnlineUser, Printer, Via},
};
use crate::{
    now_ms,
    pb::{self, DeliveryStatus, DenyReason, Presence, event::Kind},
    peer::{self, Inbound, PeerKeys, PeerListener},
    types::fingerprint,
};

/// How long a direct send may take before the message goes through the server instead.
const PRIVATE_DEADLINE: Duration = Duration::from_secs(2);

/// A command's network part, polled by the loop.
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What a finished command (or automatic answer) asks the loop to show and change.
struct Done {
    /// The login the command ran under; effects of an older login are void.
    login: u64,
    items: Vec<Item>,
    effects: Vec<Effect>,
}

/// A state change a finished command asks for.
enum Effect {
    /// `getaddress` returned a grant we already held on the server's side.
    Granted(pb::AddressGranted),
    /// A direct send over this grant failed: drop it.
    ForgetGrant { user: String, key: Vec<u8> },
    /// The server refused our acceptance: take the key off the listener again.
    UndoAccept { user: String },
}

/// Why the loop stopped.
enum Exit {
    /// `logout`, end of input, Ctrl-C, SIGTERM: log out cleanly.
    Logout,
    /// The session is over already (kicked, logged in elsewhere, login refused).
    Over,
}

/// Runs `confab chat` until logout or end of input.
///
/// # Errors
/// The server cannot be reached, the login is refused (the server's sentence), or the session
/// was ended by the server ([`SessionOver`], already shown).
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let channel = api::connect(&config.server, config.ca.as_deref()).await?;
    let (listener, peer_rx) = PeerListener::bind(config.peer_listen, PeerKeys::generate())
        .await
        .with_context(|| {
            format!(
                "cannot listen for direct messages on {} (--peer-listen)",
                config.peer_listen
            )
        })?;
    let live = events::login(&channel, &config.credentials, &listener, 1)
        .await
        .map_err(|status| {
            if is_connection_failure(&status) {
                anyhow!("cannot reach the confab server at {}", config.server)
            } else {
                anyhow!(api::sentence(&status))
            }
        })?;
    let live = Arc::new(live);
    let (lines, sink) = if config.terminal {
        // A terminal the editor cannot drive (TERM=dumb, an odd emulator) still works line by
        // line, without editing.
        input::terminal(format!("{}> ", live.user)).unwrap_or_else(|e| {
            tracing::debug!("no line editing: {e:#}");
            input::plain()
        })
    } else {
        input::plain()
    };
    let mut printer = Printer::new(config.json, sink);
    printer.show(&Item::LoggedIn {
        user: live.user.clone(),
        fingerprint: fingerprint(live.keys.public()),
        peer_port: listener.local_addr().port(),
        again: false,
    });
    let events = events::start(channel, config.credentials, listener.clone(), live.clone());
    let repl = Repl {
        printer,
        shown: events.shown.clone(),
        live,
        grants: Grants::new(listener.clone()),
        seen: Seen::default(),
        listener,
        consent: config.consent,
        background: JoinSet::new(),
    };
    repl.run(lines, events, peer_rx).await
}

struct Repl {
    printer: Printer,
    /// The current login; replaced when the pump logs in again.
    live: Arc<Live>,
    grants: Grants<PeerListener>,
    /// Message ids already shown, across both paths.
    seen: Seen,
    /// Shared with the pump: the highest seq shown, which it acknowledges.
    shown: Arc<std::sync::atomic::AtomicU64>,
    listener: PeerListener,
    consent: Consent,
    /// Automatic consent answers, which must not wait for the user's command in flight.
    background: JoinSet<Done>,
}

impl Repl {
    async fn run(
        mut self,
        mut lines: Lines,
        mut events: Events,
        mut peer_rx: mpsc::Receiver<Inbound>,
    ) -> anyhow::Result<()> {
        let mut inflight: Option<Pending> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // SIGINT and SIGTERM log out cleanly instead of killing the session mid-way. (On a
        // terminal the line editor reads Ctrl-C as a key and reports it as input instead.)
        let mut signals = crate::signal::Signals::new();
        let exit = loop {
            tokio::select! {
                done = async { inflight.as_mut().expect("guarded by is_some").await }, if inflight.is_some() => {
                    inflight = None;
                    self.finish(done);
                    lines.ready();
                }
                Some(joined) = self.background.join_next(), if !self.background.is_empty() => {
                    if let Ok(done) = joined {
                        self.finish(done);
                    }
                }
                input = lines.recv(), if inflight.is_none() => match input {
                    Input::Line(line) => match commands::parse(&line) {
                        Ok(Command::Logout) => break Exit::Logout,
                        Ok(command) => match self.start(command) {
                            Some(pending) => inflight = Some(pending),
                            None => lines.ready(),
                        },
                        Err(usage) => {
                            self.printer.show(&Item::usage(usage));
                            lines.ready();
                        }
                    },
                    Input::Eof | Input::Interrupted => break Exit::Logout,
                    Input::Failed(why) => {
                        self.printer.show(&Item::refused("", format!("cannot read input any more: {why}")));
                        break Exit::Logout;
                    }
                },
                notice = events.notices.recv() => match notice {
                    Some(notice) => if let Some(exit) = self.on_notice(notice) {
                        break exit;
                    },
                    None => break Exit::Over,
                },
                Some(inbound) = peer_rx.recv() => self.on_private(inbound),
                _ = tick.tick() => self.grants.expire(now_ms()),
                () = signals.recv() => break Exit::Logout,
            }
        };
        // A command still in flight is abandoned: its result has nowhere to go.
        drop(inflight);
        let last = events.stop().await.unwrap_or_else(|| self.live.clone());
        let result = match exit {
            Exit::Logout => {
                // Everything shown is acknowledged with the logout, so nothing shown now is
                // replayed at the next login.
                let ack_seq = self.shown.load(Ordering::Acquire);
                let mut chat = last.chat.clone();
                match timed(chat.logout(pb::LogoutRequest { ack_seq })).await {
                    Ok(_) => self.printer.show(&Item::LoggedOut),
                    Err(status) => self.printer.show(&failed("logout", &status)),
                }
                Ok(())
            }
            Exit::Over => Err(SessionOver.into()),
        };
        lines.finish();
        self.listener.shutdown();
        result
    }

    /// Applies a finished command's effects (if its login is still current) and shows it.
    fn finish(&mut self, done: Done) {
        let current = done.login == self.live.number;
        for item in &done.items {
            self.printer.show(item);
        }
        for effect in done.effects {
            if !current {
                continue;
            }
            match effect {
                Effect::Granted(g) => self.granted(&g),
                Effect::ForgetGrant { user, key } => self.grants.forget_outbound(&user, &key),
                Effect::UndoAccept { user } => self.grants.undo_accept(&user),
            }
        }
    }

    /// Starts a command: shows the result at once, or returns the future that will.
    fn start(&mut self, command: Command) -> Option<Pending> {
        let name = command.name();
        let login = self.live.number;
        let mut chat = self.live.chat.clone();
        let pending: Pending = match command {
            Command::Nothing | Command::Logout => return None,
            Command::Help => {
                self.show(Item::Help {
                    text: commands::HELP.into(),
                });
                return None;
            }
            Command::Whoami => {
                self.show(Item::Whoami {
                    user: self.live.user.clone(),
                    fingerprint: fingerprint(self.live.keys.public()),
                    peer_port: self.listener.local_addr().port(),
                });
                return None;
            }
            Command::Fingerprint { user } => {
                let item = match self.grants.fingerprint_of(&user) {
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
                        name,
                        format!(
                            "you hold no key for {user}: it comes with getaddress {user}, or with \
                             their request for your address"
                        ),
                    ),
                };
                self.show(item);
                return None;
            }
            Command::Answer { user, accept } => {
                match self.grants.take_request(user.as_deref(), now_ms()) {
                    Ok(request) => self.answer(request, accept, false),
                    Err(why) => {
                        self.show(Item::refused(name, why));
                        return None;
                    }
                }
            }
            Command::Private { to, text } => return self.private(to, text),
            Command::Message { to, text } => Box::pin(async move {
                let message_id = new_message_id();
                let request = pb::SendMessageRequest {
                    to: to.clone(),
                    body: text,
                    message_id: message_id.clone(),
                };
                let item = match timed(chat.send_message(request)).await {
                    Ok(r) => sent(to, message_id, &r.into_inner(), None),
                    Err(status) => failed(name, &status),
                };
                Done::show(login, item)
            }),
            Command::Broadcast { text } => Box::pin(async move {
                let item = match timed(chat.broadcast(pb::BroadcastRequest { body: text })).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        Item::BroadcastSent {
                            delivered: r.delivered,
                            withheld: r.withheld,
                        }
                    }
                    Err(status) => failed(name, &status),
                };
                Done::show(login, item)
            }),
            Command::Online { since } => Box::pin(async move {
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
                    Err(status) => failed(name, &status),
                };
                Done::show(login, item)
            }),
            Command::Block { user } => Box::pin(async move {
                let item = match timed(chat.block(pb::BlockRequest { user: user.clone() })).await {
                    Ok(_) => Item::Blocked { user },
                    Err(status) => failed(name, &status),
                };
                Done::show(login, item)
            }),
            Command::Unblock { user } => Box::pin(async move {
                let request = pb::UnblockRequest { user: user.clone() };
                let item = match timed(chat.unblock(request)).await {
                    Ok(_) => Item::Unblocked { user },
                    Err(status) => failed(name, &status),
                };
                Done::show(login, item)
            }),
            Command::Blocked => Box::pin(async move {
                let item = match timed(chat.list_blocked(pb::ListBlockedRequest {})).await {
                    Ok(r) => Item::BlockedList {
                        users: r.into_inner().users,
                    },
                    Err(status) => failed(name, &status),
                };
                Done::show(login, item)
            }),
            Command::GetAddress { user } => Box::pin(async move {
                let request = pb::RequestAddressRequest { user: user.clone() };
                match timed(chat.request_address(request)).await {
                    Ok(r) => match r.into_inner() {
                        // Granted earlier and still valid: nobody is asked again.
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
                    Err(status) => Done::show(login, failed(name, &status)),
                }
            }),
        };
        Some(pending)
    }

    /// `private`: straight to the peer; on any failure the grant is dropped and the same
    /// message (same id) goes through the server, so it is delivered either way.
    fn private(&mut self, to: String, text: String) -> Option<Pending> {
        let Some(grant) = self.grants.outbound(&to).cloned() else {
            self.show(Item::refused(
                "private",
                format!("you have no address for {to}; run getaddress {to} first"),
            ));
            return None;
        };
        // The peer path has no server to enforce the limit; hold it to the server's rules so a
        // fallback cannot be refused for a length the peer accepted.
        if text.len() > self.live.max_message_bytes {
            self.show(Item::refused(
                "private",
                format!(
                    "the message is {} bytes; the limit is {} bytes",
                    text.len(),
                    self.live.max_message_bytes
                ),
            ));
            return None;
        }
        let login = self.live.number;
        let keys = self.live.keys.clone();
        let mut chat = self.live.chat.clone();
        let message = pb::PeerMessage {
            message_id: new_message_id(),
            from: self.live.user.clone(),
            to: grant.user.clone(),
            body: text,
            sent_at_ms: now_ms(),
        };
        Some(Box::pin(async move {
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
            let item = match timed(chat.send_message(request)).await {
                Ok(r) => sent(grant.user, message.message_id, &r.into_inner(), Some(why)),
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
        }))
    }

    /// Answers an address request. Accepting allows the requester's key on the listener first,
    /// so its first connection cannot beat the allowlist.
    fn answer(&mut self, request: Request, accept: bool, auto: bool) -> Pending {
        if accept {
            self.grants.accept(&request);
        }
        let login = self.live.number;
        let mut chat = self.live.chat.clone();
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

    fn show(&mut self, item: Item) {
        self.printer.show(&item);
    }

    fn granted(&mut self, g: &pb::AddressGranted) {
        let item = match self.grants.granted(g) {
            Ok(grant) => Item::AddressGranted {
                user: grant.user,
                host: grant.host,
                port: grant.port,
                fingerprint: fingerprint(&grant.key),
            },
            Err(why) => Item::refused("getaddress", why),
        };
        self.show(item);
    }

    /// Handles a notice from the pump; `Some` when the loop must stop.
    fn on_notice(&mut self, notice: Notice) -> Option<Exit> {
        match notice {
            Notice::Event { kind, replayed } => self.on_event(kind, replayed),
            Notice::Connected { replayed, resumed } => {
                self.show(Item::Connected { replayed, resumed });
            }
            Notice::LoggedIn(live) => {
                self.grants.new_login();
                self.live = live;
                self.show(Item::LoggedIn {
                    user: self.live.user.clone(),
                    fingerprint: fingerprint(self.live.keys.public()),
                    peer_port: self.listener.local_addr().port(),
                    again: true,
                });
            }
            Notice::Lost { why } => self.show(Item::Disconnected { error: why }),
            Notice::Retrying {
                attempt,
                why,
                retry_in,
            } => self.show(Item::Reconnecting {
                attempt,
                error: why,
                retry_in_ms: retry_in.as_millis() as u64,
            }),
            Notice::Ended(reason) => {
                let name = reason
                    .as_str_name()
                    .trim_start_matches("SESSION_END_REASON_")
                    .to_owned();
                self.show(Item::SessionEnded {
                    reason: name,
                    text: reason_words(reason).into(),
                });
                return Some(Exit::Over);
            }
            Notice::Failed { why } => {
                self.show(Item::Fatal { error: why });
                return Some(Exit::Over);
            }
        }
        None
    }

    fn on_event(&mut self, kind: Kind, replayed: bool) {
        match kind {
            Kind::Message(m) => {
                if self.seen.first_time(&m.from, &m.message_id) {
                    self.show(Item::Message {
                        from: m.from,
                        body: m.body,
                        message_id: m.message_id,
                        seq: Some(m.seq),
                        sent_at_ms: m.sent_at_ms,
                        via: Via::Server,
                        replayed,
                    });
                }
                // Shown now, or shown before under the other path: either way it may go.
                self.shown.fetch_max(m.seq, Ordering::AcqRel);
            }
            Kind::Broadcast(b) => self.show(Item::Broadcast {
                from: b.from,
                body: b.body,
                sent_at_ms: b.sent_at_ms,
            }),
            Kind::Presence(p) => self.show(Item::Presence {
                user: p.user,
                online: p.presence == Presence::Online as i32,
            }),
            Kind::AddressRequested(r) => {
                let request = self.grants.requested(&r);
                let accept = match self.consent {
                    Consent::Ask => {
                        self.show(Item::AddressRequest {
                            fingerprint: fingerprint(&request.key),
                            from: request.from,
                            request_id: request.id,
                            expires_at_ms: request.expires_at_ms,
                        });
                        return;
                    }
                    Consent::Accept => true,
                    Consent::Deny => false,
                };
                if let Ok(request) = self.grants.take_request(Some(&request.from), now_ms()) {
                    let pending = self.answer(request, accept, true);
                    self.background.spawn(pending);
                }
            }
            Kind::AddressGranted(g) => self.granted(&g),
            Kind::AddressDenied(d) => {
                let reason = DenyReason::try_from(d.reason)
                    .unwrap_or(DenyReason::Unspecified)
                    .as_str_name()
                    .trim_start_matches("DENY_REASON_")
                    .to_owned();
                self.show(Item::AddressDenied {
                    user: d.user,
                    reason,
                });
            }
            Kind::AddressRevoked(r) => {
                self.grants.revoked(&r.user);
                self.show(Item::AddressRevoked { user: r.user });
            }
            Kind::LoginFailed(l) => self.show(Item::LoginFailed {
                failed_attempts: l.failed_attempts,
                locked_until_ms: l.locked_until_ms,
                source: l.source,
            }),
            // The pump turns these into notices of their own.
            Kind::SessionEnded(_) | Kind::BacklogEnd(_) => {}
        }
    }

    /// A message that came over the peer path (already acknowledged to its sender).
    fn on_private(&mut self, inbound: Inbound) {
        let m = inbound.message;
        if self.seen.first_time(&inbound.from, &m.message_id) {
            self.show(Item::Message {
                from: inbound.from,
                body: m.body,
                message_id: m.message_id,
                seq: None,
                sent_at_ms: m.sent_at_ms,
                via: Via::Direct,
                replayed: false,
            });
        }
    }
}

impl Done {
    fn show(login: u64, item: Item) -> Done {
        Done {
            login,
            items: vec![item],
            effects: Vec::new(),
        }
    }
}

/// A fresh message id: 128 random bits, so two clients never pick the same one.
fn new_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn sent(
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
    }
}

/// A failed call as the user reads it: the server's sentence, or, when the call never reached
/// the server, what is going on instead of a transport error's internals.
fn failed(command: &str, status: &Status) -> Item {
    let error = if is_connection_failure(status) {
        "cannot reach the server right now; the client keeps reconnecting, try again in a moment"
            .to_owned()
    } else {
        api::sentence(status)
    };
    Item::Error {
        command: command.into(),
        code: code_name(status.code()).into(),
        error,
    }
}

/// The canonical gRPC name of a code (`NOT_FOUND`), as grpcurl and the other languages say it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
