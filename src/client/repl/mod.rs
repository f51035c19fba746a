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

use anyhow::anyhow;
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    Consent, SessionOver,
    actions::{self, Context, Done, Pending, Start},
    call::{failed, timed},
    commands::{self, Command},
    editor::Names,
    events::Events,
    files::{self, Files},
    grants::Grants,
    input::{Input, Lines},
    link::Link,
    login::{Live, SharedSecret},
    render::{Item, Printer},
    seen::Seen,
};
use crate::{
    now_ms,
    pb::{self},
    peer::{Inbound, PeerListener, file::FileEvent},
    types::Secret,
};

/// Why the loop stopped.
enum Exit {
    /// `logout`, end of input, Ctrl-C, SIGTERM: log out cleanly.
    Logout,
    /// The session is over already (kicked, logged in elsewhere, login refused).
    Over,
}

mod incoming;
mod start;

pub(crate) use start::run;

struct Repl {
    printer: Printer,
    /// The current login; replaced when the pump logs in again.
    live: Arc<Live>,
    grants: Grants<PeerListener>,
    /// Message ids already shown, across both paths.
    seen: Seen,
    /// Shared with the pump: the highest seq shown, which it acknowledges.
    shown: Arc<std::sync::atomic::AtomicU64>,
    /// From the pump: when a lost connection is back, for sends waiting to go again.
    link: Link,
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
                    self.refresh_bars(true);
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
            link: &self.link,
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

    /// Brings the terminal's transfer bars up to date; `draw` them now, or with the next line.
    fn refresh_bars(&mut self, draw: bool) {
        if let Some(width) = self.printer.width() {
            // One column spare: a line filling the last column would wrap on some terminals.
            let bars = self
                .files
                .bars(std::time::Instant::now(), width.saturating_sub(1));
            self.printer.status(bars, draw);
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
            // A transfer may have ended: its bar goes with this line.
            Item::File(_) => self.refresh_bars(false),
            _ => {}
        }
        self.printer.show(&item);
    }
}
