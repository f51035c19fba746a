//! `confab chat`'s main loop: one `select!` over input lines, session notices, direct messages
//! from peers, the result of the command in flight, and a clock tick.
//!
//! Owns the client's state for the current login (grants, the ids already shown, the
//! acknowledgement mark) and changes it only here, between awaits, so nothing needs a lock.
//! Commands run one at a time, in the order typed, and a command that waits on the network (a
//! send, a direct connection) runs as a future the loop polls, so notifications keep appearing
//! meanwhile. What a command does is `actions/`; a future never touches the state: it returns a
//! [`Done`] whose effects the loop applies, checked against the login they were made in.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use tokio::{sync::mpsc, task::JoinSet};
use tonic::{Code, transport::Channel};

use super::{
    Config, Consent, SessionOver,
    actions::{self, Context, Done, Pending, Start},
    api,
    call::{failed, timed},
    commands::{self, Command},
    connect,
    editor::Names,
    events::{self, Events, Notice, reason_words},
    files::{self, Files},
    grants::Grants,
    input::{self, Input, Lines},
    login::{Live, SharedSecret, login},
    render::{Item, Printer, Via},
    seen::Seen,
};
use crate::{
    now_ms,
    pb::{self, DenyReason, Presence, event::Kind},
    peer::{
        Inbound, PeerKeys, PeerListener,
        file::{Downloads, FileEvent, FileLimits},
    },
    types::{Secret, fingerprint},
};

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
pub(crate) async fn run(mut config: Config, channel: Channel) -> anyhow::Result<()> {
    let (listener, peer_rx) = PeerListener::bind(config.peer_listen, PeerKeys::generate())
        .await
        .with_context(|| {
            format!(
                "cannot listen for direct messages on {} (--peer-listen)",
                config.peer_listen
            )
        })?;
    let file_rx = listener.receive_files(
        Downloads::new(&config.download_dir),
        FileLimits {
            max_bytes: config.max_file_bytes,
            ..FileLimits::default()
        },
    );
    let live = first_login(&mut config, &channel, &listener).await?;
    let live = Arc::new(live);
    let names = Names::default();
    let (lines, sink) = if config.terminal {
        seed_names(&live, names.clone());
        // A terminal the editor cannot drive (TERM=dumb, an odd emulator) still works line by
        // line, without editing.
        input::terminal(format!("{}> ", live.user), names.clone()).unwrap_or_else(|e| {
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
    let password = config.credentials.password.clone();
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
        files: Files::new(config.json, config.terminal, config.auto_accept_files),
        script: !config.terminal,
        failures: 0,
        names,
        password: password.clone(),
        secrets: None,
    };
    repl.run(lines, events, peer_rx, file_rx).await
}

/// The first login. A wrong password typed at a prompt is asked for again, as often as the
/// server allows before its lockout (which then ends it, with the server's sentence); a
/// connection that fails is said in one sentence.
async fn first_login(
    config: &mut Config,
    channel: &Channel,
    listener: &PeerListener,
) -> anyhow::Result<Live> {
    let mut asked = 1;
    loop {
        let status = match login(channel, &config.credentials, listener, 1).await {
            Ok(live) => return Ok(live),
            Err(status) => status,
        };
        if config.prompted && status.code() == Code::Unauthenticated && asked < MAX_PROMPTS {
            eprintln!("{}", api::sentence(&status));
            let prompt = format!("password for {}: ", config.credentials.user);
            let password = tokio::task::spawn_blocking(move || {
                rpassword::prompt_password(prompt).map(Secret::new)
            })
            .await
            .context("reading the password")?
            .context("reading the password")?;
            config.credentials.password.set(password);
            asked += 1;
            continue;
        }
        let why = connect::first_call_failed(&config.server, config.ca.as_deref(), &status);
        return Err(anyhow!(why.await));
    }
}

/// Fills `names` with who is online at login, for Tab completion; presence events keep it
/// current from then on. Nothing is shown: it is the editor's business only.
fn seed_names(live: &Live, names: Names) {
    let mut chat = live.chat.clone();
    tokio::spawn(async move {
        let request = pb::ListOnlineRequest { since_seconds: 0 };
        if let Ok(r) = timed(chat.list_online(request)).await {
            for user in r.into_inner().users {
                names.presence(&user.username, true);
            }
        }
    });
}

/// A bound on password prompts, whatever the server's lockout allows.
const MAX_PROMPTS: u32 = 10;

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
    /// File offers and transfers, both ways.
    files: Files,
    /// Commands come from a script, not a person: any failure makes the exit status non-zero.
    script: bool,
    /// Error lines shown so far (failed commands, refused messages).
    failures: u32,
    /// Who is online, for Tab completion.
    names: Names,
    /// The password automatic re-logins use (shared with the pump); `password` replaces it.
    password: SharedSecret,
    /// After `password` in a script: the secret lines collected so far.
    secrets: Option<Vec<Secret>>,
}

impl Repl {
    async fn run(
        mut self,
        mut lines: Lines,
        mut events: Events,
        mut peer_rx: mpsc::Receiver<Inbound>,
        mut file_rx: mpsc::Receiver<FileEvent>,
    ) -> anyhow::Result<()> {
        let mut inflight: Option<Pending> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut progress = tokio::time::interval(files::JSON_PROGRESS_EVERY / 2);
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
                    Input::Line(line) if self.secrets.is_some() => match self.secret_line(line) {
                        Some(pending) => inflight = Some(pending),
                        None => lines.ready(),
                    },
                    Input::Line(line) => match commands::parse(&line) {
                        Ok(Command::Logout) => break Exit::Logout,
                        Ok(command) => match self.start(command) {
                            Some(pending) => inflight = Some(pending),
                            None => lines.ready(),
                        },
                        Err(usage) => {
                            self.show(Item::usage(usage));
                            lines.ready();
                        }
                    },
                    Input::Eof | Input::Interrupted => break Exit::Logout,
                    Input::Failed(why) => {
                        self.show(Item::refused("", format!("cannot read input any more: {why}")));
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
                Some(event) = file_rx.recv() => {
                    for item in self.files.on_event(event) {
                        self.show(Item::File(item));
                    }
                }
                item = self.files.next_outgoing(), if self.files.sending() => {
                    self.show(Item::File(item));
                }
                _ = progress.tick(), if self.files.busy() => {
                    for item in self.files.tick(std::time::Instant::now()) {
                        self.show(Item::File(item));
                    }
                }
                _ = tick.tick() => {
                    for request in self.grants.expire(now_ms()) {
                        self.show(Item::AddressRequestEnded { user: request.from, reason: "TIMEOUT".into() });
                    }
                }
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
                    Ok(_) => self.show(Item::LoggedOut),
                    Err(status) => self.show(failed("logout", &status)),
                }
                // A script must not pass for successful when a line of it failed: its caller
                // only sees the exit status.
                match self.failures {
                    n if n > 0 && self.script => Err(anyhow!(
                        "{n} {} failed (see the error {} above)",
                        if n == 1 { "command" } else { "commands" },
                        if n == 1 { "line" } else { "lines" },
                    )),
                    _ => Ok(()),
                }
            }
            Exit::Over => Err(SessionOver.into()),
        };
        lines.finish();
        self.listener.shutdown();
        result
    }

    /// Handles `sendfile` and the answer to a file offer; any other command comes back.
    fn files_command(&mut self, command: Command) -> Option<Command> {
        let name = command.name();
        let item = match command {
            Command::Answer { user, accept }
                if self
                    .files
                    .answers_a_file(user.as_deref(), self.grants.requests_waiting()) =>
            {
                match self.files.answer(user.as_deref(), accept) {
                    Ok(item) => Item::File(item),
                    Err(why) => Item::refused(name, why),
                }
            }
            Command::SendFile { to, path } => match self.grants.outbound(&to) {
                None => Item::refused(
                    name,
                    format!("you have no address for {to}; run getaddress {to} first"),
                ),
                Some(grant) => {
                    let path = std::path::Path::new(&path);
                    match self
                        .files
                        .send(grant, &self.live.keys, &self.live.user, path)
                    {
                        Ok(item) => Item::File(item),
                        Err(why) => Item::refused(name, why),
                    }
                }
            },
            other => return Some(other),
        };
        self.show(item);
        None
    }

    /// `password`: at a terminal the passwords are asked for; a script's next two lines are
    /// taken as the current and the new password ([`Repl::secret_line`]).
    fn password(&mut self) -> Option<Pending> {
        if self.script {
            self.secrets = Some(Vec::new());
            return None;
        }
        Some(actions::ask_and_change(&self.live, self.password.clone()))
    }

    /// A line a script gave after `password`: kept as a secret, never parsed or shown; the
    /// second one starts the change.
    fn secret_line(&mut self, line: String) -> Option<Pending> {
        let secrets = self.secrets.as_mut()?;
        secrets.push(Secret::new(line));
        if secrets.len() < 2 {
            return None;
        }
        let mut two = self.secrets.take()?.into_iter();
        let (old, new) = (two.next()?, two.next()?);
        Some(actions::change_password(
            &self.live,
            self.password.clone(),
            old,
            new,
        ))
    }

    /// Starts what a typed command asks for: shows its answer at once, or returns the future
    /// that will.
    fn start(&mut self, command: Command) -> Option<Pending> {
        if command == Command::Password {
            return self.password();
        }
        // Files are the loop's own business (their transfers run beside it), not an action's.
        let command = self.files_command(command)?;
        let context = Context {
            live: &self.live,
            grants: &mut self.grants,
            peer_port: self.listener.local_addr().port(),
        };
        match actions::start(command, context) {
            Start::Nothing => None,
            Start::Show(item) => {
                self.show(item);
                None
            }
            Start::Wait(pending) => Some(pending),
        }
    }

    /// Applies a finished command's effects (if its login is still current) and shows it.
    fn finish(&mut self, done: Done) {
        for item in done.apply(self.live.number, &mut self.grants) {
            self.show(item);
        }
    }

    fn show(&mut self, item: Item) {
        match &item {
            Item::Error { .. } => self.failures += 1,
            Item::Presence { user, online } => self.names.presence(user, *online),
            Item::Online {
                since_seconds: None,
                users,
            } => self.names.replace(users.iter().map(|u| u.user.clone())),
            _ => {}
        }
        self.printer.show(&item);
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
            Kind::Presence(p) => {
                let online = p.presence == Presence::Online as i32;
                // The server drops a request whose asker left: so does the prompt.
                let withdrawn = if online {
                    None
                } else {
                    self.grants.withdrawn(&p.user)
                };
                self.show(Item::Presence {
                    user: p.user,
                    online,
                });
                if let Some(request) = withdrawn {
                    self.show(Item::AddressRequestEnded {
                        user: request.from,
                        reason: "WITHDRAWN".into(),
                    });
                }
            }
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
                    let pending =
                        actions::answer(&self.live, &mut self.grants, request, accept, true);
                    self.background.spawn(pending);
                }
            }
            Kind::AddressGranted(g) => {
                let item = actions::granted(&mut self.grants, &g);
                self.show(item);
            }
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
