//! Where command lines come from: a line editor on a terminal, or plain stdin for scripts.
//!
//! Both read on a plain thread (reading a terminal or a pipe blocks) and feed a channel the
//! REPL selects on. On a terminal, rustyline gives line editing and history, and its external
//! printer (handed to [`render`](super::render)) lets notifications appear above the line being
//! typed without garbling it. The editor prompts for the next line only when the REPL says it is
//! ready, so a result is printed before the next prompt and the terminal is never left in raw
//! mode by a REPL that stopped asking.
//!
//! Plain stdin goes through `std::io::stdin()`, the same buffered reader `--password-stdin` read
//! the password with, so lines a script wrote together with the password are not lost.

use std::{
    io::{BufRead as _, Write as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
};

use anyhow::{Context, anyhow};
use rustyline::{Editor, error::ReadlineError, history::DefaultHistory};
use tokio::sync::mpsc;

use super::{
    editor::{self, Helper, Names},
    render::{Sink, Typing},
};

/// One thing the user did at the input.
#[derive(Debug)]
pub(crate) enum Input {
    /// A line, without its line ending.
    Line(String),
    /// End of input (Ctrl-D, or the end of a script).
    Eof,
    /// Ctrl-C at the prompt.
    Interrupted,
    /// The input cannot be read any more.
    Failed(String),
}

/// The stream of input lines.
pub(crate) struct Lines {
    rx: mpsc::Receiver<Input>,
    /// Terminal only: lets the editor prompt for one more line (`false`: stop).
    permit: Option<std_mpsc::Sender<bool>>,
    /// Terminal only: true while the editor holds the terminal in raw mode.
    reading: Arc<AtomicBool>,
    /// Terminal only: `stty -g` from before the editor started, to put back if we must quit
    /// while the editor is still reading.
    saved_tty: Option<String>,
}

impl Lines {
    /// The next input. After `Eof`, `Interrupted` or `Failed` nothing more comes.
    pub(crate) async fn recv(&mut self) -> Input {
        self.rx.recv().await.unwrap_or(Input::Eof)
    }

    /// The REPL has finished with the last line: prompt for the next one (terminal only; plain
    /// input is read ahead).
    pub(crate) fn ready(&self) {
        if let Some(permit) = &self.permit {
            let _ = permit.send(true);
        }
    }

    /// The REPL is quitting. If the editor is waiting for a permit it stops; if it is in the
    /// middle of reading a line (the server ended the session under the user's fingers), the
    /// terminal settings from before are put back so the shell is not left in raw mode.
    pub(crate) fn finish(self) {
        if let Some(permit) = &self.permit {
            let _ = permit.send(false);
        }
        if self.reading.load(Ordering::SeqCst) {
            if let Some(saved) = &self.saved_tty {
                let _ = std::process::Command::new("stty")
                    .arg(saved)
                    .stdin(std::process::Stdio::inherit())
                    .status();
            }
            let _ = writeln!(std::io::stdout());
        }
    }
}

/// Reads plain lines from stdin.
pub(crate) fn plain() -> (Lines, Sink) {
    let (tx, rx) = mpsc::channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            loop {
                let mut buf = Vec::new();
                let input = match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) => Input::Eof,
                    Ok(_) => {
                        // A stray non-UTF-8 byte should not end the session.
                        let line = String::from_utf8_lossy(&buf);
                        Input::Line(line.trim_end_matches(['\r', '\n']).to_owned())
                    }
                    Err(e) => Input::Failed(e.to_string()),
                };
                let last = !matches!(input, Input::Line(_));
                if tx.blocking_send(input).is_err() || last {
                    return;
                }
            }
        })
        .expect("spawning the stdin reader thread");
    let lines = Lines {
        rx,
        permit: None,
        reading: Arc::new(AtomicBool::new(false)),
        saved_tty: None,
    };
    (lines, Sink::Stdout)
}

/// Starts the line editor with `prompt`, completing the commands and the `names` online, with
/// the history of earlier runs; the sink prints above the line being typed.
///
/// # Errors
/// The terminal cannot be set up for editing.
pub(crate) fn terminal(prompt: String, names: Names) -> anyhow::Result<(Lines, Sink)> {
    let saved_tty = std::process::Command::new("stty")
        .arg("-g")
        .stdin(std::process::Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned());
    let (tx, rx) = mpsc::channel(16);
    let (permit_tx, permit_rx) = std_mpsc::channel::<bool>();
    let (printer_tx, printer_rx) = std_mpsc::sync_channel(1);
    let reading = Arc::new(AtomicBool::new(false));
    let reading_flag = reading.clone();
    let typing = Arc::new(Typing::new());
    let typed = typing.clone();
    std::thread::Builder::new()
        .name("readline".into())
        .spawn(move || {
            // Lines are added to the history by hand, so nothing secret gets in.
            let config = rustyline::Config::builder()
                .auto_add_history(false)
                .max_history_size(1000)
                .map(|b| b.completion_type(rustyline::CompletionType::List).build())
                .unwrap_or_default();
            let mut editor = match Editor::<Helper, DefaultHistory>::with_config(config) {
                Ok(editor) => editor,
                Err(e) => {
                    let _ = printer_tx.send(Err(e.to_string()));
                    return;
                }
            };
            editor.set_helper(Some(Helper::new(names)));
            editor::bind_ctrl_c(&mut editor);
            let history = editor::history_file();
            if let Some(path) = &history
                && let Err(e) = editor.load_history(path)
            {
                tracing::debug!("history not loaded from {}: {e}", path.display());
            }
            let printer = editor
                .create_external_printer()
                .map(|p| Box::new(p) as Box<dyn rustyline::ExternalPrinter + Send>)
                .map_err(|e| e.to_string());
            if printer_tx.send(printer).is_err() {
                return;
            }
            // Prompt only when the REPL has finished with the previous line.
            while let Ok(true) = permit_rx.recv() {
                reading_flag.store(true, Ordering::SeqCst);
                let read = editor.readline(&prompt);
                reading_flag.store(false, Ordering::SeqCst);
                // The printer's status block is now above the entered line.
                typed.line_entered();
                let input = match read {
                    Ok(line) => {
                        if editor::worth_keeping(&line) && editor.add_history_entry(&line).is_ok() {
                            // Appended at once: a crash or a kill keeps what was typed.
                            if let Some(path) = &history
                                && let Err(e) = editor.append_history(path)
                            {
                                tracing::debug!("history not saved to {}: {e}", path.display());
                            }
                        }
                        Input::Line(line)
                    }
                    Err(ReadlineError::Eof) => Input::Eof,
                    Err(ReadlineError::Interrupted) => Input::Interrupted,
                    Err(e) => Input::Failed(e.to_string()),
                };
                let last = !matches!(input, Input::Line(_));
                if tx.blocking_send(input).is_err() || last {
                    return;
                }
            }
        })
        .context("starting the line editor")?;
    let printer = printer_rx
        .recv()
        .map_err(|_| anyhow!("the line editor stopped"))?
        .map_err(|e| anyhow!("cannot set up the terminal for line editing: {e}"))?;
    let lines = Lines {
        rx,
        permit: Some(permit_tx),
        reading,
        saved_tty,
    };
    lines.ready();
    Ok((lines, Sink::Terminal { printer, typing }))
}
