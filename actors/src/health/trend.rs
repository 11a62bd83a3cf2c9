//! The health score and its trend. A run's score is in [0, 1]: each check counts by its weight
//! (probe checks, which can take the node out of rotation, weigh twice a component check), a
//! healthy check earns its weight, a degraded one half, an unhealthy one nothing. The monitor
//! keeps the last [`HISTORY`] scores; the trend compares the mean of the newest
//! [`TREND_RUNS`] with the mean of all the remembered runs before them: is the node worse now
//! than over the last few minutes? (Scores move only when a verdict changes, so even one
//! component check turning degraded shows.)

use std::collections::VecDeque;

use serde::Serialize;

use super::check::Probe;

/// Runs remembered (five minutes at the default five-second interval).
pub const HISTORY: usize = 60;
/// Runs on each side of the trend's comparison.
pub const TREND_RUNS: usize = 5;
/// A change of the mean score smaller than this is no trend.
const TREND_STEP: f64 = 0.01;

/// Where the score is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Fewer than 2 x TREND_RUNS runs so far.
    Unknown,
    Improving,
    Steady,
    Worsening,
}

/// The score of one run over (probe, level) pairs; 1 when there are no checks.
pub fn score(checks: impl IntoIterator<Item = (Probe, u8)>) -> f64 {
    let (mut earned, mut total) = (0.0, 0.0);
    for (probe, level) in checks {
        let weight = if probe == Probe::Report { 1.0 } else { 2.0 };
        total += weight;
        earned += weight
            * match level {
                0 => 1.0,
                1 => 0.5,
                _ => 0.0,
            };
    }
    if total == 0.0 {
        1.0
    } else {
        earned / total
    }
}

/// One remembered run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub checked_ms: u64,
    pub score: f64,
}

/// The last [`HISTORY`] runs' scores, oldest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, checked_ms: u64, score: f64) {
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { checked_ms, score });
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }

    pub fn trend(&self) -> Trend {
        let n = self.samples.len();
        if n < 2 * TREND_RUNS {
            return Trend::Unknown;
        }
        let mean = |from: usize, to: usize| {
            self.samples.range(from..to).map(|s| s.score).sum::<f64>() / (to - from) as f64
        };
        let (before, newest) = (mean(0, n - TREND_RUNS), mean(n - TREND_RUNS, n));
        if newest < before - TREND_STEP {
            Trend::Worsening
        } else if newest > before + TREND_STEP {
            Trend::Improving
        } else {
            Trend::Steady
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_checks_weigh_twice_and_degraded_counts_half() {
        assert_eq!(score([]), 1.0);
        assert_eq!(score([(Probe::Readiness, 0), (Probe::Report, 0)]), 1.0);
        // 2 x 0.5 + 1 x 1 over 3.
        assert_eq!(score([(Probe::Readiness, 1), (Probe::Report, 0)]), 2.0 / 3.0);
        assert_eq!(score([(Probe::Liveness, 2), (Probe::Report, 0)]), 1.0 / 3.0);
        assert_eq!(score([(Probe::Report, 2)]), 0.0);
    }

    #[test]
    fn the_trend_compares_the_newest_runs_with_the_ones_before() {
        let mut h = History::default();
        for i in 0..9 {
            h.push(i, 1.0);
        }
        assert_eq!(h.trend(), Trend::Unknown);
        h.push(9, 1.0);
        assert_eq!(h.trend(), Trend::Steady);
        for i in 10..13 {
            h.push(i, 0.5);
        }
        assert_eq!(h.trend(), Trend::Worsening);
        // Still worse than the remembered runs, until they are forgotten.
        for i in 13..25 {
            h.push(i, 0.5);
        }
        assert_eq!(h.trend(), Trend::Worsening);
        for i in 25..100 {
            h.push(i, 0.5);
        }
        assert_eq!(h.trend(), Trend::Steady);
        for i in 100..103 {
            h.push(i, 1.0);
        }
        assert_eq!(h.trend(), Trend::Improving);
        // One degraded component check among 16 weights shows.
        let mut h = History::default();
        for i in 0..30 {
            h.push(i, 1.0);
        }
        h.push(30, 31.0 / 32.0);
        h.push(31, 31.0 / 32.0);
        assert_eq!(h.trend(), Trend::Worsening);
        for i in 100..200 {
            h.push(i, 1.0);
        }
        assert_eq!(h.samples().len(), HISTORY);
        assert_eq!(h.samples()[0].checked_ms, 200 - HISTORY as u64);
    }
}
