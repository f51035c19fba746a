//! SIGINT and SIGTERM, the two ways a person or a supervisor asks confab to stop.
//!
//! One helper for the server, the chat client and the load generator. It listens for SIGINT as a
//! signal rather than through `tokio::signal::ctrl_c` so that the chat client, whose line editor
//! reads Ctrl-C as a key on a terminal, gets the same handling as everybody else.

/// The stop signals, registered once and awaited as often as needed.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers for SIGINT and SIGTERM. A signal that cannot be registered is never reported.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.int) => {}
                () = next(&mut self.term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves at the first SIGINT or SIGTERM after the call.
pub async fn stop_requested() {
    Signals::new().recv().await;
}
