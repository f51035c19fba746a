//! Measuring delivery: one clock for the whole process, message bodies that carry the time their
//! send was *scheduled*, and the histograms and counters the readers record into.
//!
//! Latency is taken from the body, not from a map of outstanding sends: the reader of the
//! recipient's stream parses the scheduled time out of the body and subtracts it from the
//! arrival time on the same clock. So a late send (the load generator fell behind) counts
//! against the latency instead of hiding it (no coordinated omission), and readers share no
//! state with senders beyond the current [`Recorder`].

use std::{
    sync::{
        Arc, LazyLock, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

/// The process's time origin; every `_ns` value in the bench is measured from it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since [`EPOCH`] now.
pub(crate) fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// Nanoseconds from [`EPOCH`] to `t` (0 for a `t` before it).
pub(crate) fn ns_at(t: Instant) -> u64 {
    // u64 nanoseconds last 584 years.
    t.saturating_duration_since(*EPOCH).as_nanos() as u64
}

/// The body of a measured message: the recorder's tag and the scheduled send time, padded with
/// `x` to `len` bytes (a body is never shorter than its header).
pub(crate) fn body(tag: u64, sched_ns: u64, len: usize) -> String {
    let mut body = format!("{tag:016x} {sched_ns} ");
    if body.len() < len {
        body.extend(std::iter::repeat_n('x', len - body.len()));
    }
    body
}

/// The (tag, scheduled ns) of a body made by [`body`]; `None` for anything else.
pub(crate) fn parse_body(body: &str) -> Option<(u64, u64)> {
    let mut parts = body.splitn(3, ' ');
    let tag = parts.next()?;
    if tag.len() != 16 {
        return None;
    }
    let tag = u64::from_str_radix(tag, 16).ok()?;
    let sched = parts.next()?.parse().ok()?;
    Some((tag, sched))
}

/// A latency histogram in nanoseconds, 3 significant digits, up to an hour.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600 * 1_000_000_000, 3).expect("static histogram bounds")
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Latency {
    /// Samples.
    pub(crate) count: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
}

impl Latency {
    /// The summary of `h` (all zero when empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// What one measurement (a phase, a broadcast round) received: every arrival whose body carries
/// this recorder's tag.
pub(crate) struct Recorder {
    /// Random, so bodies of an earlier run or phase still in flight (or replayed from an inbox)
    /// are never counted here.
    tag: u64,
    latency: Mutex<Histogram<u64>>,
    received: AtomicU64,
    max_ns: AtomicU64,
    /// How many arrivals a waiter in [`wait_for`](Self::wait_for) needs; readers wake it then.
    want: AtomicU64,
    arrived: Notify,
}

impl Recorder {
    /// A recorder with a fresh tag.
    pub(crate) fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            tag: rand::random(),
            latency: Mutex::new(histogram()),
            received: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            want: AtomicU64::new(u64::MAX),
            arrived: Notify::new(),
        })
    }

    /// The tag bodies must carry to count here.
    pub(crate) fn tag(&self) -> u64 {
        self.tag
    }

    /// A body scheduled at `sched_ns`, `len` bytes long.
    pub(crate) fn body(&self, sched_ns: u64, len: usize) -> String {
        body(self.tag, sched_ns, len)
    }

    fn record(&self, latency_ns: u64) {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(latency_ns.max(1));
        self.max_ns.fetch_max(latency_ns, Ordering::Relaxed);
        let received = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        if received >= self.want.load(Ordering::Acquire) {
            self.arrived.notify_waiters();
        }
    }

    /// Arrivals so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// The slowest arrival so far (for a broadcast: the last delivery).
    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// The latency percentiles so far.
    pub(crate) fn latency(&self) -> Latency {
        Latency::of(&self.latency.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until `n` arrivals were recorded or `timeout` passed; whether they were.
    pub(crate) async fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        self.want.store(n, Ordering::Release);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Enabled before the check, so an arrival between the check and the await still
            // wakes this waiter.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.received() >= n {
                return true;
            }
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep_until(deadline) => return self.received() >= n,
            }
        }
    }
}

/// Where every simulated user's reader reports arrivals: to the recorder of the measurement in
/// progress, if the body is one of its messages.
#[derive(Default)]
pub(crate) struct Sink {
    current: RwLock<Option<Arc<Recorder>>>,
    /// Arrivals that belonged to no current measurement (late ones from an earlier phase).
    stray: AtomicU64,
    /// Sessions the server ended under the bench (e.g. `TOO_SLOW`); should stay 0.
    ended: AtomicU64,
    /// Presence events read by every stream so far.
    presence: AtomicU64,
    /// Streams that ended without `SessionEnded` (an error status, or closed), and the first
    /// reason: their users silently stop receiving, which shows up as undelivered messages.
    lost: AtomicU64,
    first_loss: Mutex<Option<String>>,
}

impl Sink {
    /// An empty sink.
    pub(crate) fn new() -> Arc<Sink> {
        Arc::new(Sink::default())
    }

    /// Makes `recorder` the one arrivals count towards (`None`: none do).
    pub(crate) fn measure(&self, recorder: Option<Arc<Recorder>>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = recorder;
    }

    /// A reader got a message with `body`, now.
    pub(crate) fn deliver(&self, body: &str) {
        let arrival = now_ns();
        let Some((tag, sched)) = parse_body(body) else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let current = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(r) if r.tag == tag => r.record(arrival.saturating_sub(sched)),
            _ => {
                self.stray.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A reader got `changes` presence changes (one event, or one batch).
    pub(crate) fn presence_changed(&self, changes: usize) {
        self.presence.fetch_add(changes as u64, Ordering::Relaxed);
    }

    /// Presence changes read so far.
    pub(crate) fn presence(&self) -> u64 {
        self.presence.load(Ordering::Relaxed)
    }

    /// The server ended a simulated user's session.
    pub(crate) fn session_ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions the server has ended so far.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Arrivals outside any measurement so far.
    pub(crate) fn stray(&self) -> u64 {
        self.stray.load(Ordering::Relaxed)
    }

    /// A simulated user's stream ended without `SessionEnded`, for `why`.
    pub(crate) fn stream_lost(&self, why: String) {
        if self.lost.fetch_add(1, Ordering::Relaxed) == 0 {
            *self
                .first_loss
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(why);
        }
    }

    /// Streams lost so far, and why the first was.
    pub(crate) fn lost(&self) -> (u64, Option<String>) {
        let first = self
            .first_loss
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.lost.load(Ordering::Relaxed), first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_its_tag_and_schedule_and_has_the_asked_length() {
        let b = body(0xdead_beef, 123_456_789, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b), Some((0xdead_beef, 123_456_789)));
        // Too short a length still gives a parseable body.
        let short = body(7, 9, 3);
        assert_eq!(parse_body(&short), Some((7, 9)));
    }

    #[test]
    fn foreign_bodies_are_not_parsed() {
        assert_eq!(parse_body("hello there"), None);
        assert_eq!(parse_body(""), None);
        assert_eq!(parse_body("00000000000000zz 5 "), None);
        assert_eq!(parse_body("0000000000000001 notanumber"), None);
    }

    #[test]
    fn percentiles_are_ordered_and_in_microseconds() {
        let mut h = histogram();
        for ns in 1..=10_000u64 {
            h.record(ns * 1_000).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 10_000);
        assert!((l.p50_us - 5_000.0).abs() < 10.0, "{l:?}");
        assert!((l.p99_us - 9_900.0).abs() < 20.0, "{l:?}");
        assert!(l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us);
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_sink_counts_lost_streams_and_keeps_the_first_reason() {
        let sink = Sink::new();
        assert_eq!(sink.lost(), (0, None));
        sink.stream_lost("a's stream: first".into());
        sink.stream_lost("b's stream: second".into());
        assert_eq!(sink.lost(), (2, Some("a's stream: first".into())));
    }

    #[tokio::test]
    async fn the_sink_counts_only_the_current_recorders_messages() {
        let sink = Sink::new();
        let (a, b) = (Recorder::new(), Recorder::new());
        sink.measure(Some(a.clone()));
        sink.deliver(&a.body(now_ns(), 40));
        sink.deliver(&b.body(now_ns(), 40));
        sink.deliver("not ours");
        assert_eq!((a.received(), b.received(), sink.stray()), (1, 0, 2));
        assert!(a.wait_for(1, Duration::ZERO).await);
        assert!(!a.wait_for(2, Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_last_arrival_is_recorded() {
        let sink = Sink::new();
        let r = Recorder::new();
        sink.measure(Some(r.clone()));
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_for(3, Duration::from_secs(30)).await }
        });
        for _ in 0..3 {
            sink.deliver(&r.body(now_ns(), 40));
        }
        assert!(waiter.await.unwrap());
    }
}
