//! Whether a sampled quantity (the server's resident memory, its open files) grows without
//! bound: the rule `confab bench --soak` fails on, kept pure so it is tested on fixed series.
//!
//! The rule: fit a least-squares line through the last third of the samples (by time), after
//! start-up and the first churn have settled; the series is growing if that line climbs, over
//! the third's span, by more than `fraction` of the third's median level and more than `floor`.
//! A level that rose and then stayed flat passes; a leak, even a slow one, shows as a steady
//! climb at the end.

use serde::Serialize;

/// Fewest samples the last third needs for its line to mean anything.
const MIN_POINTS: usize = 4;

/// How much growth is tolerated before a series counts as growing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tolerance {
    /// Of the last third's median level.
    pub(super) fraction: f64,
    /// Absolute, in the series' unit.
    pub(super) floor: f64,
}

/// What a series did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Trend {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) max: f64,
    /// Slope of the last third's line, per minute.
    pub(super) slope_per_min: f64,
    /// The line's climb over the last third's span.
    pub(super) last_third_growth: f64,
    /// The most `last_third_growth` may be.
    pub(super) allowed_growth: f64,
}

impl Trend {
    /// The trend of `points` (seconds, value), in time order; `None` with too few of them.
    pub(super) fn of(points: &[(f64, f64)], tolerance: Tolerance) -> Option<Trend> {
        let (first, last) = (points.first()?, points.last()?);
        let cut = first.0 + (last.0 - first.0) * 2.0 / 3.0;
        let third: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= cut).collect();
        if third.len() < MIN_POINTS {
            return None;
        }
        let slope = slope(&third)?;
        let span = third.last()?.0 - third.first()?.0;
        let mut levels: Vec<f64> = third.iter().map(|p| p.1).collect();
        levels.sort_by(f64::total_cmp);
        let median = levels[levels.len() / 2];
        Some(Trend {
            start: first.1,
            end: last.1,
            max: points.iter().map(|p| p.1).fold(f64::MIN, f64::max),
            slope_per_min: slope * 60.0,
            last_third_growth: slope * span,
            allowed_growth: (median * tolerance.fraction).max(tolerance.floor),
        })
    }

    /// Whether the series kept growing at the end.
    pub(super) fn growing(&self) -> bool {
        self.last_third_growth > self.allowed_growth
    }
}

/// Least-squares slope of `points`, per second; `None` when they share one instant.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, v) in points {
        num += (t - mean_t) * (v - mean_v);
        den += (t - mean_t) * (t - mean_t);
    }
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: Tolerance = Tolerance {
        fraction: 0.05,
        floor: 8.0,
    };

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..60)
            .map(|i| (f64::from(i) * 5.0, f(f64::from(i) * 5.0)))
            .collect()
    }

    #[test]
    fn a_flat_line_after_a_rise_is_not_growth() {
        let trend = Trend::of(&series(|t| if t < 60.0 { t } else { 200.0 }), TOLERANCE).unwrap();
        assert!(!trend.growing(), "{trend:?}");
        assert_eq!((trend.start, trend.end, trend.max), (0.0, 200.0, 200.0));
        assert!(trend.slope_per_min.abs() < 1e-9);
    }

    #[test]
    fn a_steady_climb_at_the_end_is_growth_even_a_slow_one() {
        // 100 units plus 0.1 a second: +10 over the last third, more than the floor of 8 and 5%.
        let trend = Trend::of(&series(|t| 100.0 + t * 0.1), TOLERANCE).unwrap();
        assert!(trend.growing(), "{trend:?}");
        assert!((trend.slope_per_min - 6.0).abs() < 1e-9);
    }

    #[test]
    fn noise_around_a_level_is_not_growth() {
        let trend = Trend::of(
            &series(|t| {
                1000.0
                    + if (t as u64 / 5).is_multiple_of(2) {
                        6.0
                    } else {
                        -6.0
                    }
            }),
            TOLERANCE,
        )
        .unwrap();
        assert!(!trend.growing(), "{trend:?}");
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        assert_eq!(
            Trend::of(&[(0.0, 1.0), (5.0, 2.0), (10.0, 3.0)], TOLERANCE),
            None
        );
        assert_eq!(Trend::of(&[], TOLERANCE), None);
    }
}
