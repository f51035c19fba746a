//! A running transfer as a person at a terminal sees it: one bar line with how far it has
//! come, the rate over the last few seconds and the time left. Pure: the caller samples the
//! byte count and says when; `client/files.rs` keeps one [`Rate`] per transfer and the printer
//! (`render/printer.rs`) draws the lines above the prompt.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks: long enough to be steady, short enough to follow a change.
const WINDOW: Duration = Duration::from_secs(3);
/// Columns of the bar itself, between the brackets.
const BAR: usize = 20;

/// Byte counts sampled over the last [`WINDOW`], for the rate.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Notes that `bytes` were done at `now`.
    pub(crate) fn sample(&mut self, now: Instant, bytes: u64) {
        self.samples.push_back((now, bytes));
        // Keep one sample at least WINDOW old, so the rate spans the whole window.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the samples, once they span a moment.
    pub(crate) fn per_second(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.samples.front()?, self.samples.back()?);
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs >= 0.2).then(|| b1.saturating_sub(b0) as f64 / secs)
    }
}

/// `name → bob [=====>      ] 12.0 MiB/48.0 MiB 4.0 MiB/s ETA 9s`, cut to `width` columns
/// (the name gives way first) so that it never wraps: the printer redraws it in place.
pub(crate) fn bar_line(
    arrow: &str,
    done: u64,
    size: u64,
    rate: Option<f64>,
    width: usize,
) -> String {
    let filled = if size == 0 {
        BAR
    } else {
        usize::try_from(u128::from(done.min(size)) * BAR as u128 / u128::from(size)).unwrap_or(BAR)
    };
    let mut bar = "=".repeat(filled);
    if filled < BAR {
        bar.push('>');
        bar.push_str(&" ".repeat(BAR - filled - 1));
    }
    let (speed, eta) = match rate {
        Some(rate) if rate >= 1.0 => (
            format!("{}/s", bytes(rate as u64)),
            eta(Duration::from_secs_f64(
                size.saturating_sub(done) as f64 / rate,
            )),
        ),
        Some(_) => ("0 B/s".to_owned(), "--".to_owned()),
        None => ("--/s".to_owned(), "--".to_owned()),
    };
    let tail = format!(" [{bar}] {}/{} {speed} ETA {eta}", bytes(done), bytes(size));
    let room = width.saturating_sub(console::measure_text_width(&tail));
    if room >= 8 {
        format!("{}{tail}", console::truncate_str(arrow, room, "…"))
    } else {
        console::truncate_str(&format!("{arrow}{tail}"), width, "").into_owned()
    }
}

fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// `9s`, `3m 07s`, `2h 05m`.
fn eta(left: Duration) -> String {
    let s = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_the_last_few_seconds() {
        let t = Instant::now();
        let mut rate = Rate::default();
        assert_eq!(rate.per_second(), None);
        rate.sample(t, 0);
        assert_eq!(rate.per_second(), None, "one sample is no rate");
        rate.sample(t + Duration::from_secs(1), 1000);
        assert_eq!(rate.per_second(), Some(1000.0));
        // A stall: the window moves on and the rate falls to what the last seconds did.
        for s in 2..=10 {
            rate.sample(t + Duration::from_secs(s), 1000);
        }
        assert_eq!(rate.per_second(), Some(0.0));
    }

    #[test]
    fn a_bar_shows_progress_rate_and_time_left_and_never_outgrows_the_width() {
        let mib = 1 << 20;
        let line = bar_line(
            "f.bin → bob",
            12 * mib,
            48 * mib,
            Some(4.0 * mib as f64),
            100,
        );
        assert_eq!(
            line,
            "f.bin → bob [=====>              ] 12.00 MiB/48.00 MiB 4.00 MiB/s ETA 9s"
        );
        let line = bar_line("f.bin → bob", 0, 48 * mib, None, 100);
        assert!(
            line.ends_with("[>                   ] 0 B/48.00 MiB --/s ETA --"),
            "{line}"
        );
        let done = bar_line("f.bin → bob", 48 * mib, 48 * mib, Some(1.0), 100);
        assert!(done.contains(&format!("[{}]", "=".repeat(BAR))), "{done}");
        let long = format!("{} → bob", "x".repeat(300));
        for width in [20, 60, 80, 200] {
            let line = bar_line(&long, mib, 48 * mib, Some(mib as f64), width);
            assert!(
                console::measure_text_width(&line) <= width,
                "{width}: {line}"
            );
        }
        assert!(
            bar_line(&long, 0, 1, None, 80).contains('…'),
            "the name gives way"
        );
    }

    #[test]
    fn times_left_read_like_a_clock() {
        assert_eq!(eta(Duration::from_millis(300)), "1s");
        assert_eq!(eta(Duration::from_secs(59)), "59s");
        assert_eq!(eta(Duration::from_secs(187)), "3m 07s");
        assert_eq!(eta(Duration::from_secs(7500)), "2h 05m");
    }
}
