//! Where the chat client's lines go: plain stdout for scripts and pipes, or, on a terminal,
//! rustyline's external printer, which clears the prompt, prints, and redraws the prompt with
//! the half-typed line, so a notification never writes over the line being typed.
//!
//! On a terminal it also keeps a status block, the running transfers' bars, right above the
//! prompt, and redraws it in place: every message it hands the external printer first moves up
//! over the block's rows and clears them, then prints the new line (if any) and the block again.
//! Once the user has entered a line, the block is above that line and is left as history. With
//! plain stdout there is no block and never an escape sequence.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::Item;

/// The terminal's bell: a message arriving while the person is away.
const BELL: &str = "\x07";

/// What the line editor tells the printer about the person at the keyboard.
#[derive(Debug)]
pub(crate) struct Typing {
    /// Lines entered so far.
    entered: AtomicU64,
    /// When the last line was entered (or the editor started), wall-clock milliseconds.
    last_ms: AtomicI64,
}

impl Typing {
    /// Nothing entered yet, as of now.
    pub(crate) fn new() -> Typing {
        Typing {
            entered: AtomicU64::new(0),
            last_ms: AtomicI64::new(crate::now_ms()),
        }
    }

    /// A line was entered (or the prompt left with Ctrl-C/Ctrl-D).
    pub(crate) fn line_entered(&self) {
        self.last_ms.store(crate::now_ms(), Ordering::SeqCst);
        self.entered.fetch_add(1, Ordering::SeqCst);
    }

    fn idle_for(&self) -> Duration {
        let ms = crate::now_ms() - self.last_ms.load(Ordering::SeqCst);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// Where lines go: plain stdout (scripts, pipes) or the terminal's external printer.
pub(crate) enum Sink {
    /// Plain lines on stdout.
    Stdout,
    /// rustyline's external printer: clears the prompt, prints, redraws the typed line.
    Terminal {
        printer: Box<dyn rustyline::ExternalPrinter + Send>,
        /// Lines the user has entered so far, and when (kept by the editor).
        typing: Arc<Typing>,
    },
}

/// Shows items in the chosen format on the chosen sink.
pub(crate) struct Printer {
    json: bool,
    sink: Sink,
    /// The status block's lines (terminal only).
    status: Vec<String>,
    /// Rows of the block drawn right above the prompt by the last message.
    drawn: usize,
    /// `entered` when the block was last drawn: a line entered since sits below it.
    entered_at: u64,
    /// Ring the bell for news after this long without a line entered (terminal only).
    bell_after: Option<Duration>,
}

/// Up one row, to its start, and clear it.
const ERASE_ROW_ABOVE: &str = "\x1b[A\r\x1b[K";

impl Printer {
    /// A printer writing `--json` lines or text to `sink`.
    pub(crate) fn new(json: bool, sink: Sink) -> Self {
        Printer {
            json,
            sink,
            status: Vec::new(),
            drawn: 0,
            entered_at: 0,
            bell_after: None,
        }
    }

    /// Rings the terminal's bell for news that arrives after `after` without a line entered.
    pub(crate) fn with_bell(mut self, after: Option<Duration>) -> Self {
        self.bell_after = after;
        self
    }

    /// Whether `item` is news to ring the bell for now: something a person was sent, arriving
    /// while they are away from the keyboard.
    fn rings(&self, item: &Item) -> bool {
        let Sink::Terminal { typing, .. } = &self.sink else {
            return false;
        };
        let news = matches!(
            item,
            Item::Message {
                replayed: false,
                ..
            } | Item::Broadcast { .. }
                | Item::AddressRequest { .. }
        );
        news && self
            .bell_after
            .is_some_and(|after| typing.idle_for() >= after)
    }

    /// Columns of the terminal, when lines go to one.
    pub(crate) fn width(&self) -> Option<usize> {
        match self.sink {
            Sink::Terminal { .. } => Some(usize::from(console::Term::stdout().size().1)),
            Sink::Stdout => None,
        }
    }

    /// Shows one item.
    pub(crate) fn show(&mut self, item: &Item) {
        let line = if self.json {
            item.json()
        } else {
            match item.human() {
                Some(text) => text,
                None => return,
            }
        };
        if matches!(self.sink, Sink::Terminal { .. }) {
            let message = if self.rings(item) {
                self.redraw(Some(&format!("{BELL}{line}")))
            } else {
                self.redraw(Some(&line))
            };
            if self.print(message) {
                return;
            }
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout (the reader went away) is not worth a panic.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Replaces the status block (terminal only; lines no wider than [`Printer::width`]) and
    /// draws it now if `draw`, else with the next item shown. An empty block is always erased
    /// with the next item: a transfer's end always shows one.
    pub(crate) fn status(&mut self, lines: Vec<String>, draw: bool) {
        if !matches!(self.sink, Sink::Terminal { .. }) || lines == self.status {
            return;
        }
        self.status = lines;
        if draw && !self.status.is_empty() {
            let message = self.redraw(None);
            self.print(message);
        }
    }

    /// The message that erases the block drawn last (unless a line entered since moved it into
    /// the history), prints `line`, and draws the block again below it.
    fn redraw(&mut self, line: Option<&str>) -> String {
        let Sink::Terminal { typing, .. } = &self.sink else {
            return String::new();
        };
        let entered = typing.entered.load(Ordering::SeqCst);
        let mut message = String::new();
        if entered == self.entered_at {
            message.push_str(&ERASE_ROW_ABOVE.repeat(self.drawn));
        }
        if let Some(line) = line {
            message.push_str(line);
            message.push('\n');
        }
        for bar in &self.status {
            message.push_str(bar);
            message.push('\n');
        }
        self.drawn = self.status.len();
        self.entered_at = entered;
        message
    }

    /// Hands `message` to the external printer; `false` (and plain stdout from now on) if the
    /// terminal is gone.
    fn print(&mut self, message: String) -> bool {
        let Sink::Terminal { printer, .. } = &mut self.sink else {
            return false;
        };
        if message.is_empty() || printer.print(message).is_ok() {
            return true;
        }
        self.sink = Sink::Stdout;
        false
    }
}
