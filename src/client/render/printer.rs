//! Where the chat client's lines go: plain stdout for scripts and pipes, or, on a terminal,
//! rustyline's external printer, which clears the prompt, prints, and redraws the prompt with
//! the half-typed line, so a notification never writes over the line being typed.

use std::io::Write as _;

use super::Item;

/// Where lines go: plain stdout (scripts, pipes) or the terminal's external printer.
pub(crate) enum Sink {
    /// Plain lines on stdout.
    Stdout,
    /// rustyline's external printer: clears the prompt, prints, redraws the typed line.
    Terminal(Box<dyn rustyline::ExternalPrinter + Send>),
}

/// Shows items in the chosen format on the chosen sink.
pub(crate) struct Printer {
    json: bool,
    sink: Sink,
}

impl Printer {
    /// A printer writing `--json` lines or text to `sink`.
    pub(crate) fn new(json: bool, sink: Sink) -> Self {
        Printer { json, sink }
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
        if let Sink::Terminal(printer) = &mut self.sink {
            if printer.print(format!("{line}\n")).is_ok() {
                return;
            }
            // The terminal is gone; plain stdout is all that is left.
            self.sink = Sink::Stdout;
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout (the reader went away) is not worth a panic.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
