//! `sendfile` and the file offers `confab chat` receives (SPEC §13): the offers waiting for the
//! user's answer, the transfers running in both directions, their progress, and what is shown.
//!
//! Owns no socket and no file: the transfers run in [`crate::peer::file`], each in a task of
//! its own, so answering, transferring and showing progress never hold up the prompt or other
//! messages. The loop calls in here between awaits, so nothing needs a lock.
//!
//! Progress: on a terminal, a bar per running transfer (rate, ETA; `client/progress.rs`) that
//! the printer keeps above the prompt; nothing at all when stdout is not a terminal; with
//! `--json`, `file_progress` lines at most [`JSON_PROGRESS_EVERY`] apart per transfer, and a
//! `file_sent` / `file_received` line with the SHA-256 at the end.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::grants::Grant;
use super::progress::{Rate, bar_line};
use super::render::{Direction, FileItem};
use crate::peer::PeerKeys;
use crate::peer::file::{
    FileError, FileEvent, FileSent, FileToSend, IncomingFile, Progress, Saved, hex, send_file,
};
use crate::types::fingerprint;

/// How often `--json` reports a running transfer, at most.
pub(crate) const JSON_PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// One running transfer's progress, for the bar or the JSON lines.
struct Running {
    direction: Direction,
    user: String,
    name: String,
    size: u64,
    progress: Arc<Progress>,
    /// Recent byte counts, for the terminal bar's rate.
    rate: Rate,
    /// When and where the last JSON line was, for the rate.
    last: (Instant, u64),
}

/// The result of a `send_file` task.
pub(crate) struct Outgoing {
    id: u64,
    result: Result<FileSent, FileError>,
}

/// The file side of one `confab chat`.
pub(crate) struct Files {
    json: bool,
    auto_accept: bool,
    /// `--max-file-rate`: bytes per second each file is sent at, at most.
    max_rate: Option<u64>,
    /// Draw bars: a terminal, and not `--json`.
    bars: bool,
    /// Offers waiting for the user's answer, oldest first.
    waiting: VecDeque<IncomingFile>,
    /// Transfers in either direction, by a local id (receiving: the listener's offer id;
    /// sending: our own, counting down from `u64::MAX` so the two never meet).
    running: HashMap<u64, Running>,
    next_send: u64,
    /// The `send_file` tasks; the loop awaits [`Files::next_outgoing`].
    outgoing: JoinSet<Outgoing>,
}

impl Files {
    /// `terminal`: draw bars (only if `json` is off).
    pub(crate) fn new(
        json: bool,
        terminal: bool,
        auto_accept: bool,
        max_rate: Option<u64>,
    ) -> Files {
        Files {
            json,
            auto_accept,
            max_rate,
            bars: terminal && !json,
            waiting: VecDeque::new(),
            running: HashMap::new(),
            next_send: u64::MAX,
            outgoing: JoinSet::new(),
        }
    }

    /// `sendfile <user> <path>` over `grant`: checks the file and starts the transfer in the
    /// background. Returns what to show now.
    pub(crate) fn send(
        &mut self,
        grant: &Grant,
        keys: &PeerKeys,
        from: &str,
        path: &Path,
    ) -> Result<FileItem, String> {
        let file = FileToSend::open(path)
            .map_err(|e| format!("cannot send {}: {e}", path.display()))?
            .paced(self.max_rate);
        let id = self.next_send;
        self.next_send -= 1;
        let progress = Progress::new();
        self.track(
            id,
            Direction::Send,
            &grant.user,
            &file.name,
            file.size,
            &progress,
        );
        let item = FileItem::Offered {
            to: grant.user.clone(),
            name: file.name.clone(),
            size: file.size,
        };
        let (grant, keys, from) = (grant.clone(), keys.clone(), from.to_owned());
        self.outgoing.spawn(async move {
            let result = send_file(
                &grant.host,
                grant.port,
                &grant.key,
                &keys,
                &from,
                &grant.user,
                &file,
                progress,
            )
            .await;
            Outgoing { id, result }
        });
        Ok(item)
    }

    /// The next finished `send_file`, shown as an item; pending forever when none runs (for
    /// `select!`).
    pub(crate) async fn next_outgoing(&mut self) -> FileItem {
        let Some(Ok(done)) = self.outgoing.join_next().await else {
            return std::future::pending().await;
        };
        let running = self.untrack(done.id);
        let (user, name) = running.map(|r| (r.user, r.name)).unwrap_or_default();
        match done.result {
            Ok(sent) => FileItem::Sent {
                to: user,
                name,
                size: sent.size,
                resumed_from: sent.offset,
                sha256: hex(&sent.sha256),
            },
            Err(e) => FileItem::Failed {
                direction: Direction::Send,
                user,
                name,
                error: e.to_string(),
            },
        }
    }

    /// Whether a `send_file` task is running (the loop polls [`Files::next_outgoing`] then).
    pub(crate) fn sending(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Something from the listener: an offer (answered now with `--auto-accept-files`, else
    /// kept for the user) or the end of a transfer.
    pub(crate) fn on_event(&mut self, event: FileEvent) -> Vec<FileItem> {
        match event {
            FileEvent::Offered(offer) => {
                let prompt = FileItem::Offer {
                    from: offer.from.clone(),
                    name: offer.name.clone(),
                    size: offer.size,
                    fingerprint: fingerprint(&offer.from_key),
                    resume_from: offer.offset,
                };
                if self.auto_accept {
                    return vec![prompt, self.answer_offer(offer, true, true)];
                }
                self.waiting.push_back(offer);
                vec![prompt]
            }
            FileEvent::Finished { id, outcome } => {
                let running = self.untrack(id);
                let (user, name) = running.map(|r| (r.user, r.name)).unwrap_or_default();
                vec![match outcome {
                    Ok(Saved { path, size, sha256 }) => FileItem::Received {
                        from: user,
                        name,
                        path: path.display().to_string(),
                        size,
                        sha256: hex(&sha256),
                    },
                    Err(error) => FileItem::Failed {
                        direction: Direction::Receive,
                        user,
                        name,
                        error,
                    },
                }]
            }
        }
    }

    /// Whether `accept`/`deny` (for `user`, or `y`/`n` for `None`) is about a file offer rather
    /// than an address request: a waiting offer from `user`, or for `y`/`n` any waiting offer
    /// when no address request is (`requests_waiting`).
    pub(crate) fn answers_a_file(&mut self, user: Option<&str>, requests_waiting: bool) -> bool {
        self.waiting.retain(|offer| !offer.is_closed());
        match user {
            Some(user) => self
                .waiting
                .iter()
                .any(|o| o.from.eq_ignore_ascii_case(user)),
            None => !self.waiting.is_empty() && !requests_waiting,
        }
    }

    /// `accept`/`deny` for the oldest waiting offer from `user` (or the single waiting offer).
    pub(crate) fn answer(&mut self, user: Option<&str>, accept: bool) -> Result<FileItem, String> {
        let position = match user {
            Some(user) => self
                .waiting
                .iter()
                .position(|o| o.from.eq_ignore_ascii_case(user))
                .ok_or_else(|| format!("{user} is not offering you a file"))?,
            None if self.waiting.len() == 1 => 0,
            None if self.waiting.is_empty() => return Err("nobody is offering you a file".into()),
            None => {
                let mut names: Vec<&str> = self.waiting.iter().map(|o| o.from.as_str()).collect();
                names.dedup();
                return Err(format!(
                    "{} files are waiting for an answer (from {}); type accept <user> or deny \
                     <user>",
                    self.waiting.len(),
                    names.join(", ")
                ));
            }
        };
        let offer = self.waiting.remove(position).expect("position is in range");
        Ok(self.answer_offer(offer, accept, false))
    }

    fn answer_offer(&mut self, offer: IncomingFile, accept: bool, auto: bool) -> FileItem {
        let (id, from, name, size) = (offer.id, offer.from.clone(), offer.name.clone(), offer.size);
        let progress = offer.progress.clone();
        if !offer.answer(accept) {
            return FileItem::Failed {
                direction: Direction::Receive,
                user: from,
                name,
                error: "the offer expired before the answer".into(),
            };
        }
        if accept {
            self.track(id, Direction::Receive, &from, &name, size, &progress);
        }
        FileItem::Answered {
            from,
            name,
            accept,
            auto,
        }
    }

    /// The `--json` progress lines that are due.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<FileItem> {
        let mut due = Vec::new();
        for running in self.running.values_mut() {
            let done = running.progress.done();
            if !self.json || now.duration_since(running.last.0) < JSON_PROGRESS_EVERY {
                continue;
            }
            let (then, before) = running.last;
            let secs = now.duration_since(then).as_secs_f64();
            let rate = (done.saturating_sub(before)) as f64 / secs.max(1e-3);
            running.last = (now, done);
            due.push(FileItem::Progress {
                direction: running.direction,
                user: running.user.clone(),
                name: running.name.clone(),
                bytes: done,
                size: running.size,
                bytes_per_second: rate as u64,
            });
        }
        due
    }

    /// Whether anything is running, so the loop ticks only then.
    pub(crate) fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// The terminal's bars, one line each (at most `width` columns), for the transfers the
    /// peer accepted; none without a terminal or with `--json`. Samples the rates: call it
    /// every tick.
    pub(crate) fn bars(&mut self, now: Instant, width: usize) -> Vec<String> {
        if !self.bars {
            return Vec::new();
        }
        let mut running: Vec<(&u64, &mut Running)> = self
            .running
            .iter_mut()
            .filter(|(_, r)| r.progress.started())
            .collect();
        // Oldest first, in both directions: the order they were started in.
        running.sort_by_key(|(id, r)| (r.direction == Direction::Send, **id));
        running
            .into_iter()
            .map(|(_, r)| {
                let done = r.progress.done();
                r.rate.sample(now, done);
                let arrow = match r.direction {
                    Direction::Send => format!("{} → {}", r.name, r.user),
                    Direction::Receive => format!("{} ← {}", r.name, r.user),
                };
                bar_line(&arrow, done, r.size, r.rate.per_second(), width)
            })
            .collect()
    }

    fn track(
        &mut self,
        id: u64,
        direction: Direction,
        user: &str,
        name: &str,
        size: u64,
        progress: &Arc<Progress>,
    ) {
        self.running.insert(
            id,
            Running {
                direction,
                user: user.to_owned(),
                name: name.to_owned(),
                size,
                progress: progress.clone(),
                rate: Rate::default(),
                last: (Instant::now(), progress.done()),
            },
        );
    }

    fn untrack(&mut self, id: u64) -> Option<Running> {
        self.running.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_y_is_about_a_file_only_when_no_address_request_waits() {
        let mut files = Files::new(false, false, false, None);
        assert!(!files.answers_a_file(None, false), "nothing waits");
        assert_eq!(
            files.answer(None, true).unwrap_err(),
            "nobody is offering you a file"
        );
        assert!(!files.answers_a_file(Some("bob"), false));
    }
}
