//! The open-loop send schedule: send `i` is due at `start + i / rate`, whatever happened to the
//! sends before it.
//!
//! The pacing runs on its own OS thread with `std::thread::sleep` (nanosecond timers, tens of
//! microseconds of slack) rather than tokio's timer, whose millisecond wheel would add up to a
//! millisecond of the load generator's own lateness to every latency — more than the targets
//! being measured. When the thread falls behind it issues everything already due at once, and
//! since latency is measured from the *scheduled* time that lateness shows in the results; the
//! lateness itself is recorded too ([`OpenLoop::lag`]) so a reader can tell the bench's share.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use super::stats::{self, Latency};

/// Sends at a fixed rate from a start time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    interval_ns: f64,
}

impl Schedule {
    /// `rate` sends per second (must be positive and finite).
    pub(crate) fn new(rate: f64) -> Schedule {
        assert!(rate.is_finite() && rate > 0.0, "rate must be positive");
        Schedule {
            interval_ns: 1e9 / rate,
        }
    }

    /// When send `i` is due, counted from the start.
    pub(crate) fn at(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * self.interval_ns).round() as u64)
    }

    /// How many sends are due within the first `span` (those with `at(i) < span`).
    pub(crate) fn count_within(&self, span: Duration) -> u64 {
        let n = (span.as_nanos() as f64 / self.interval_ns).ceil() as u64;
        // Rounding in `at` can put the boundary send on either side; settle it exactly.
        if n > 0 && self.at(n - 1) >= span {
            n - 1
        } else if self.at(n) < span {
            n + 1
        } else {
            n
        }
    }
}

/// One paced run: how many sends it issued and how late the pacing thread was.
pub(crate) struct OpenLoop {
    /// Sends issued.
    pub(crate) issued: u64,
    lag: Arc<Mutex<Histogram<u64>>>,
}

impl OpenLoop {
    /// How late sends were issued relative to their schedule (the load generator's own delay,
    /// already included in every measured latency).
    pub(crate) fn lag(&self) -> Latency {
        Latency::of(&self.lag.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Calls `issue(i, scheduled)` for every send due within `span` of now (plus a short lead), on
/// a dedicated thread, at its scheduled time. `issue` must not block: it should hand the send to
/// the async runtime and return.
///
/// # Errors
/// The pacing thread could not be started or panicked.
pub(crate) async fn run(
    schedule: Schedule,
    span: Duration,
    mut issue: impl FnMut(u64, Instant) + Send + 'static,
) -> anyhow::Result<OpenLoop> {
    let lag = Arc::new(Mutex::new(stats::histogram()));
    let thread_lag = lag.clone();
    // A little lead so the first send is not already late when the thread starts.
    let start = Instant::now() + Duration::from_millis(5);
    let total = schedule.count_within(span);
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let stopped = stop.0.clone();
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let mut lag = stats::histogram();
            for i in 0..total {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let due = start + schedule.at(i);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let late = Instant::now().saturating_duration_since(due);
                lag.saturating_record(late.as_nanos() as u64 + 1);
                issue(i, due);
            }
            *thread_lag.lock().unwrap_or_else(PoisonError::into_inner) = lag;
        })?;
    // Joined off the runtime's threads: the pacer runs for the whole phase.
    tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    drop(stop);
    Ok(OpenLoop { issued: total, lag })
}

/// Stops the pacer when the phase is dropped half-way (an interrupted run), so the process
/// does not wait out the phase for sends nobody measures any more.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_evenly_spaced_from_the_start() {
        let s = Schedule::new(4000.0);
        assert_eq!(s.at(0), Duration::ZERO);
        assert_eq!(s.at(1), Duration::from_micros(250));
        assert_eq!(s.at(4000), Duration::from_secs(1));
    }

    #[test]
    fn the_count_within_a_span_excludes_its_end() {
        let s = Schedule::new(4000.0);
        assert_eq!(s.count_within(Duration::from_secs(1)), 4000);
        assert_eq!(s.count_within(Duration::from_micros(251)), 2);
        assert_eq!(s.count_within(Duration::ZERO), 0);
        // A rate that does not divide a second evenly.
        let s = Schedule::new(3.0);
        assert_eq!(s.count_within(Duration::from_secs(1)), 3);
        assert_eq!(s.count_within(Duration::from_millis(1001)), 4);
        for n in [1u64, 7, 1000, 12_345] {
            let span = Duration::from_millis(n);
            let c = s.count_within(span);
            assert!(c == 0 || s.at(c - 1) < span);
            assert!(s.at(c) >= span);
        }
    }

    #[tokio::test]
    async fn the_pacer_issues_every_send_in_order_no_earlier_than_due() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let started = Instant::now();
        let run = run(
            Schedule::new(1000.0),
            Duration::from_millis(50),
            move |i, due| {
                assert!(Instant::now() >= due);
                record.lock().unwrap().push((i, due));
            },
        )
        .await
        .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(run.issued, 50);
        assert_eq!(seen.len(), 50);
        assert!(seen.iter().enumerate().all(|(n, (i, _))| n as u64 == *i));
        assert!(
            seen.windows(2)
                .all(|w| w[1].1 - w[0].1 == Duration::from_millis(1))
        );
        assert!(seen[0].1 >= started);
        assert_eq!(run.lag().count, 50);
    }
}
