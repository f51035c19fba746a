//! The progress line on stderr: rewritten in place (`\r`) on a terminal, a plain line every few
//! seconds otherwise, so logs and CI output stay readable. stdout is kept for the summary.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    tty: bool,
}

impl Progress {
    /// Progress on this process's stderr.
    pub(crate) fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn every(self) -> Duration {
        if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        }
    }

    /// Shows `label` and `status()` (with the elapsed time) until [`Ticker::finish`].
    pub(crate) fn show(
        self,
        label: impl Into<String>,
        status: impl Fn() -> String + Send + 'static,
    ) -> Ticker {
        let label = label.into();
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(self.every());
                tick.tick().await;
                loop {
                    let done = tokio::select! {
                        () = stop.cancelled() => true,
                        _ = tick.tick() => false,
                    };
                    let line = format!(
                        "{label} [{:.1}s] {}",
                        started.elapsed().as_secs_f64(),
                        status()
                    );
                    self.print(&line, done);
                    if done {
                        return;
                    }
                }
            }
        });
        Ticker {
            task: Some(task),
            _stop: stop.drop_guard(),
        }
    }

    /// A line that stays (warnings, notes).
    pub(crate) fn note(self, line: &str) {
        self.print(line, true);
    }

    fn print(self, line: &str, last: bool) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            // Clear to the end of the line: the previous status may have been longer.
            write!(err, "\r{line}\x1b[K{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

/// A progress line being shown; dropping it stops it without the final line.
pub(crate) struct Ticker {
    task: Option<JoinHandle<()>>,
    _stop: DropGuard,
}

impl Ticker {
    /// Prints the final status and stops.
    pub(crate) async fn finish(mut self) {
        let task = self.task.take();
        drop(self);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
