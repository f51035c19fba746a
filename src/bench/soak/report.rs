//! The soak's samples and counters, and what it prints: start, end, maximum and the last
//! third's slope of the server's memory and open files, the message and login counts, and the
//! verdict.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use serde::Serialize;

use super::{
    MAX_ERROR_FRACTION,
    growth::{Tolerance, Trend},
};
use crate::bench::{args::Soak, proc};

/// Memory may climb this much over the last third (of its level, and at least [`RSS_FLOOR_MIB`]).
const RSS_TOLERANCE: f64 = 0.05;
const RSS_FLOOR_MIB: f64 = 8.0;
/// Open files likewise: connections come and go with the churn.
const FD_TOLERANCE: f64 = 0.02;
const FD_FLOOR: f64 = 32.0;

/// What happened, counted as it happens.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) sent: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) logins: AtomicU64,
    pub(super) logouts: AtomicU64,
    pub(super) kills: AtomicU64,
    pub(super) churn_errors: AtomicU64,
    /// The first failure of each kind, to say what went wrong.
    first_error: Mutex<Option<String>>,
}

impl Counts {
    pub(super) fn failed(&self, status: &tonic::Status) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
        self.remember(format!(
            "a send failed: {}",
            crate::client::api::sentence(status)
        ));
    }

    pub(super) fn churn_failed(&self, e: &anyhow::Error) {
        self.churn_errors.fetch_add(1, Ordering::Relaxed);
        self.remember(format!("a logout or login failed: {e:#}"));
    }

    fn remember(&self, what: String) {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(what);
    }
}

/// The server's memory and open files over time.
#[derive(Debug, Default)]
pub(super) struct Samples(Mutex<Vec<Sample>>);

#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    fds: f64,
}

impl Samples {
    /// Reads `pid`'s memory and open files now.
    ///
    /// # Errors
    /// The server is gone.
    pub(super) fn take(&self, pid: u32, at: Duration) -> anyhow::Result<()> {
        let rss = proc::sample(pid)
            .context("the server stopped during the soak")?
            .rss_kib;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("counting /proc/{pid}/fd"))?
            .count();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Sample {
                at_s: at.as_secs_f64(),
                rss_mib: rss as f64 / 1024.0,
                fds: fds as f64,
            });
        Ok(())
    }

    fn series(&self, value: fn(&Sample) -> f64) -> Vec<(f64, f64)> {
        let samples = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().map(|s| (s.at_s, value(s))).collect()
    }
}

/// What `--soak` prints (`--json`: this, as JSON).
#[derive(Debug, Serialize)]
pub(super) struct SoakReport {
    users: usize,
    duration_s: f64,
    rate: f64,
    churn: f64,
    sent: u64,
    acknowledged: usize,
    lost: usize,
    send_errors: u64,
    logins: u64,
    logouts: u64,
    kills: u64,
    churn_errors: u64,
    first_error: Option<String>,
    /// `None` when the soak was too short to judge.
    rss_mib: Option<Trend>,
    fds: Option<Trend>,
    samples: usize,
}

impl SoakReport {
    pub(super) fn new(
        users: usize,
        soak: &Soak,
        counts: &Counts,
        acknowledged: usize,
        lost: usize,
        samples: &Samples,
    ) -> SoakReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rss = Tolerance {
            fraction: RSS_TOLERANCE,
            floor: RSS_FLOOR_MIB,
        };
        let fds = Tolerance {
            fraction: FD_TOLERANCE,
            floor: FD_FLOOR,
        };
        SoakReport {
            users,
            duration_s: soak.duration.as_secs_f64(),
            rate: soak.rate,
            churn: soak.churn,
            sent: get(&counts.sent),
            acknowledged,
            lost,
            send_errors: get(&counts.send_errors),
            logins: get(&counts.logins),
            logouts: get(&counts.logouts),
            kills: get(&counts.kills),
            churn_errors: get(&counts.churn_errors),
            first_error: counts
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            rss_mib: Trend::of(&samples.series(|s| s.rss_mib), rss),
            fds: Trend::of(&samples.series(|s| s.fds), fds),
            samples: samples.series(|s| s.fds).len(),
        }
    }

    /// Why the soak failed, as the sentence to exit with; `None` if it passed.
    pub(super) fn failure(&self) -> Option<String> {
        if self.lost > 0 {
            return Some(format!(
                "{} of {} acknowledged messages never reached their recipient",
                self.lost, self.acknowledged
            ));
        }
        if self.acknowledged == 0 {
            return Some("no message was acknowledged: the soak measured nothing".into());
        }
        let errors = self.send_errors + self.churn_errors;
        if errors as f64 > MAX_ERROR_FRACTION * (self.sent + self.logins) as f64 {
            return Some(format!(
                "{errors} sends, logouts or logins failed, more than {}% (first: {})",
                MAX_ERROR_FRACTION * 100.0,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        let (Some(rss), Some(fds)) = (&self.rss_mib, &self.fds) else {
            return Some(format!(
                "{} samples are too few to tell growth from noise: soak longer or sample more \
                 often (--soak-sample)",
                self.samples
            ));
        };
        if rss.growing() {
            return Some(format!(
                "the server's memory kept growing: +{:.1} MiB over the last third ({:.2} MiB/min), \
                 more than the {:.1} MiB allowed",
                rss.last_third_growth, rss.slope_per_min, rss.allowed_growth
            ));
        }
        if fds.growing() {
            return Some(format!(
                "the server's open files kept growing: +{:.0} over the last third ({:.1}/min), \
                 more than the {:.0} allowed",
                fds.last_third_growth, fds.slope_per_min, fds.allowed_growth
            ));
        }
        None
    }

    /// The summary as text.
    pub(super) fn table(&self) -> String {
        let mut out = format!(
            "soak: {} users for {:.0}s, {}/s messages, {}/s logouts and logins\n\
             messages: {} sent, {} acknowledged, {} lost, {} failed\n\
             sessions: {} logins, {} logouts, {} killed clients, {} failed\n",
            self.users,
            self.duration_s,
            self.rate,
            self.churn,
            self.sent,
            self.acknowledged,
            self.lost,
            self.send_errors,
            self.logins,
            self.logouts,
            self.kills,
            self.churn_errors,
        );
        for (what, trend, unit) in [
            ("server RSS", &self.rss_mib, "MiB"),
            ("server fds", &self.fds, ""),
        ] {
            match trend {
                Some(t) => out.push_str(&format!(
                    "{what}: start {:.1}{unit}, end {:.1}{unit}, max {:.1}{unit}, last third \
                     {:+.2}{unit}/min ({:+.1}{unit}, {:.1}{unit} allowed)\n",
                    t.start, t.end, t.max, t.slope_per_min, t.last_third_growth, t.allowed_growth
                )),
                None => out.push_str(&format!("{what}: too few samples ({})\n", self.samples)),
            }
        }
        out.push_str(&match self.failure() {
            Some(why) => format!("FAILED: {why}\n"),
            None => "passed: memory and open files flat at the end, nothing lost\n".into(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend(growth: f64) -> Option<Trend> {
        Some(Trend {
            start: 100.0,
            end: 100.0 + growth,
            max: 100.0 + growth,
            slope_per_min: growth,
            last_third_growth: growth,
            allowed_growth: 8.0,
        })
    }

    fn passing() -> SoakReport {
        SoakReport {
            users: 10,
            duration_s: 60.0,
            rate: 10.0,
            churn: 1.0,
            sent: 600,
            acknowledged: 600,
            lost: 0,
            send_errors: 0,
            logins: 70,
            logouts: 45,
            kills: 15,
            churn_errors: 0,
            first_error: None,
            rss_mib: trend(1.0),
            fds: trend(0.0),
            samples: 30,
        }
    }

    #[test]
    fn a_flat_soak_without_losses_passes() {
        let report = passing();
        assert_eq!(report.failure(), None);
        assert!(report.table().contains("passed"), "{}", report.table());
    }

    #[test]
    fn each_rule_fails_the_soak_with_its_own_sentence() {
        type Spoil = fn(&mut SoakReport);
        let cases: [(Spoil, &str); 6] = [
            (
                |r| r.lost = 3,
                "3 of 600 acknowledged messages never reached",
            ),
            (|r| r.acknowledged = 0, "no message was acknowledged"),
            (|r| r.send_errors = 10, "10 sends, logouts or logins failed"),
            (|r| r.rss_mib = trend(9.0), "memory kept growing: +9.0 MiB"),
            (|r| r.fds = trend(40.0), "open files kept growing: +40"),
            (|r| r.fds = None, "30 samples are too few"),
        ];
        for (spoil, sentence) in cases {
            let mut report = passing();
            spoil(&mut report);
            let failure = report.failure().expect("a failure");
            assert!(failure.contains(sentence), "{failure:?} lacks {sentence:?}");
            assert!(report.table().contains("FAILED"));
        }
    }
}
