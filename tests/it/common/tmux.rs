//! A real terminal for what only a terminal shows: `confab chat` under a tmux server of the
//! test's own, read back as the screen a person would see.

use std::time::Duration;

use tokio::process::Command;

use super::{DEADLINE, within};

/// A tmux server of our own (its own socket), killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("confab-{name}-{}", std::process::id()),
        }
    }

    pub async fn run(&self, args: &[&str]) -> String {
        let out = within(
            "tmux",
            Command::new("tmux")
                .args(["-L", &self.socket, "-f", "/dev/null"])
                .args(args)
                .output(),
        )
        .await
        .expect("tmux runs (it is installed at /usr/bin/tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen, trailing blank lines dropped.
    pub async fn screen(&self) -> Vec<String> {
        self.screen_of("chat").await
    }

    /// The visible screen of the session or pane `target`, trailing blank lines dropped.
    pub async fn screen_of(&self, target: &str) -> Vec<String> {
        let text = self.run(&["capture-pane", "-p", "-t", target]).await;
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Polls the screen until `pred` holds, failing with the screen after [`DEADLINE`].
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        self.wait_in("chat", what, pred).await
    }

    /// [`Tmux::wait_for`] on the screen of `target`.
    pub async fn wait_in(
        &self,
        target: &str,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let screen = self.screen_of(target).await;
            if pred(&screen) {
                return screen;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{target}'s terminal never showed {what}; it shows:\n{}",
                    screen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}
