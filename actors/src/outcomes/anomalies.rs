//! Anomalies in a subject's outcome history by robust statistics: an observation whose duration
//! or size lies far from the median in units of the median absolute deviation (the modified
//! z-score of Iglewicz and Hoaglin, `0.6745 (x - median) / MAD`, anomalous above 3.5 by
//! default; when more than half the values are equal the MAD is 0 and the mean absolute
//! deviation stands in, `(x - median) / (1.2533 MeanAD)`), and runs of consecutive failures at
//! least `min_streak` long. A pure function over the observations, so every node answers alike.

use serde::{Deserialize, Serialize};

use crate::model::Observation;

/// The defaults of [`Params`].
pub const DEFAULT_THRESHOLD: f64 = 3.5;
pub const DEFAULT_MIN_STREAK: usize = 3;
/// Fewer observations than this say nothing about what is normal: no anomalies are reported.
pub const MIN_OBSERVATIONS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// |modified z| above this is anomalous.
    pub threshold: f64,
    /// Consecutive failures that make a streak.
    pub min_streak: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { threshold: DEFAULT_THRESHOLD, min_streak: DEFAULT_MIN_STREAK }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!("threshold must be a positive number, got {}", self.threshold));
        }
        if self.min_streak < 2 {
            return Err(format!("min_streak must be at least 2, got {}", self.min_streak));
        }
        Ok(())
    }
}

/// Where a measure's normal lies.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    /// The median absolute deviation (0 when more than half the values are equal).
    pub mad: f64,
    /// The mean absolute deviation, used when `mad` is 0.
    pub mean_ad: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let median = median_of(values.to_vec());
        let deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        let mean_ad = deviations.iter().sum::<f64>() / values.len().max(1) as f64;
        Spread { median, mad: median_of(deviations), mean_ad }
    }

    /// The modified z-score of `x`; 0 when every value is the median.
    fn z(&self, x: f64) -> f64 {
        if self.mad > 0.0 {
            0.6745 * (x - self.median) / self.mad
        } else if self.mean_ad > 0.0 {
            (x - self.median) / (1.253314 * self.mean_ad)
        } else {
            0.0
        }
    }
}

fn median_of(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    pub id: u64,
    pub recorded_ms: u64,
    pub success: bool,
    pub duration_ms: u64,
    pub bytes: u64,
    /// The largest |modified z| of its measures, or for a streak `threshold x length /
    /// min_streak` (a streak of the minimum length scores at the threshold).
    pub score: f64,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Observations looked at (the newest of the subject, up to the request's window).
    pub observations: usize,
    pub duration_ms: Spread,
    pub bytes: Spread,
    /// Most anomalous first (ties: newest first).
    pub anomalies: Vec<Anomaly>,
    pub params: Params,
    /// Set when there were too few observations to judge.
    pub note: Option<String>,
}

/// The anomalies among `observations` (any order; streaks follow their ids, which grow with
/// time).
pub fn find(observations: &[Observation], params: Params) -> Report {
    let mut ordered: Vec<&Observation> = observations.iter().collect();
    ordered.sort_by_key(|o| o.id);
    let durations: Vec<f64> = ordered.iter().map(|o| o.duration_ms as f64).collect();
    let sizes: Vec<f64> = ordered.iter().map(|o| o.bytes as f64).collect();
    let (duration, bytes) = (Spread::of(&durations), Spread::of(&sizes));
    let mut report = Report {
        observations: ordered.len(),
        duration_ms: duration,
        bytes,
        anomalies: Vec::new(),
        params,
        note: None,
    };
    if ordered.len() < MIN_OBSERVATIONS {
        report.note = Some(format!(
            "{} observations: at least {MIN_OBSERVATIONS} are needed to say what is normal",
            ordered.len()
        ));
        return report;
    }
    let streaks = failure_streaks(&ordered, params.min_streak);
    for (i, o) in ordered.iter().enumerate() {
        let mut reasons = Vec::new();
        let mut score: f64 = 0.0;
        for (what, unit, x, spread) in
            [("duration", " ms", o.duration_ms as f64, &duration), ("size", " bytes", o.bytes as f64, &bytes)]
        {
            let z = spread.z(x);
            if z.abs() > params.threshold {
                let side = if z > 0.0 { "above" } else { "below" };
                reasons.push(format!(
                    "{what} {x}{unit} is {:.1} robust deviations {side} the median {}{unit}",
                    z.abs(),
                    spread.median
                ));
                score = score.max(z.abs());
            }
        }
        if let Some(&(start, len)) = streaks.iter().find(|(start, len)| (*start..start + len).contains(&i)) {
            reasons.push(format!(
                "failure {} of a streak of {len} failures in a row (from observation {})",
                i - start + 1,
                ordered[start].id
            ));
            score = score.max(params.threshold * len as f64 / params.min_streak as f64);
        }
        if !reasons.is_empty() {
            report.anomalies.push(Anomaly {
                id: o.id,
                recorded_ms: o.recorded_ms,
                success: o.success,
                duration_ms: o.duration_ms,
                bytes: o.bytes,
                score,
                reasons,
            });
        }
    }
    report.anomalies.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.id.cmp(&a.id)));
    report
}

/// (first index, length) of each run of at least `min` failures in a row.
fn failure_streaks(ordered: &[&Observation], min: usize) -> Vec<(usize, usize)> {
    let mut streaks = Vec::new();
    let mut start = None;
    for (i, o) in ordered.iter().enumerate() {
        match (o.success, start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                if i - s >= min {
                    streaks.push((s, i - s));
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if ordered.len() - s >= min {
            streaks.push((s, ordered.len() - s));
        }
    }
    streaks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: u64, success: bool, duration_ms: u64, bytes: u64) -> Observation {
        Observation {
            id,
            space: "default".into(),
            subject: "job".into(),
            success,
            duration_ms,
            bytes,
            features: serde_json::Value::Null,
            message: String::new(),
            recorded_ms: id * 1000,
        }
    }

    /// 60 ordinary runs (durations 100-139 ms, sizes 1000-1019) with planted outliers.
    fn history() -> Vec<Observation> {
        let mut h: Vec<Observation> =
            (1..=60).map(|i| obs(i, i % 7 != 0, 100 + (i * 13) % 40, 1000 + (i * 7) % 20)).collect();
        h[9].duration_ms = 5000; // id 10: very slow
        h[29].bytes = 1; // id 30: nearly empty
        for id in [41, 42, 43, 44] {
            h[id as usize - 1].success = false; // a streak of 4
        }
        h
    }

    #[test]
    fn planted_outliers_and_streaks_are_found_and_inliers_are_not() {
        let report = find(&history(), Params::default());
        let mut ids: Vec<u64> = report.anomalies.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        // 42 is a multiple of 7 anyway: the streak is 41-44.
        assert_eq!(ids, vec![10, 30, 41, 42, 43, 44], "{report:#?}");
        assert_eq!(report.anomalies[0].id, 10, "the slowest run is the most anomalous");
        assert!(report.anomalies[0].reasons[0].contains("duration 5000 ms"), "{:?}", report.anomalies[0]);
        let empty = report.anomalies.iter().find(|a| a.id == 30).unwrap();
        assert!(empty.reasons[0].contains("below the median"), "{empty:?}");
        let streak = report.anomalies.iter().find(|a| a.id == 43).unwrap();
        assert!(streak.reasons.iter().any(|r| r.contains("streak of 4")), "{streak:?}");
        assert!((streak.score - 3.5 * 4.0 / 3.0).abs() < 1e-9);
        // Isolated failures (every 7th) are not streaks.
        assert!(!ids.contains(&7) && !ids.contains(&14));
        assert!((report.duration_ms.median - 119.5).abs() < 20.0, "{:?}", report.duration_ms);
    }

    #[test]
    fn order_does_not_matter_and_a_streak_at_the_end_counts() {
        let mut h = history();
        h.reverse();
        assert_eq!(find(&h, Params::default()), find(&history(), Params::default()));
        let mut h = history();
        for o in h.iter_mut().rev().take(3) {
            o.success = false;
        }
        let ids: Vec<u64> = find(&h, Params::default()).anomalies.iter().map(|a| a.id).collect();
        assert!(ids.contains(&58) && ids.contains(&60), "{ids:?}");
    }

    #[test]
    fn equal_values_fall_back_to_the_mean_deviation_and_few_observations_say_so() {
        // 20 runs of exactly 100 ms and one of 400: MAD 0, the mean deviation finds it.
        let mut h: Vec<Observation> = (1..=20).map(|i| obs(i, true, 100, 10)).collect();
        h.push(obs(21, true, 400, 10));
        let report = find(&h, Params::default());
        assert_eq!(report.duration_ms.mad, 0.0);
        assert_eq!(report.anomalies.iter().map(|a| a.id).collect::<Vec<_>>(), vec![21]);
        // All equal: nothing is anomalous.
        let same: Vec<Observation> = (1..=20).map(|i| obs(i, true, 100, 10)).collect();
        assert!(find(&same, Params::default()).anomalies.is_empty());
        let few = find(&h[..5], Params::default());
        assert!(few.anomalies.is_empty() && few.note.unwrap().contains("at least 8"));
    }

    #[test]
    fn params_are_checked() {
        assert!(Params { threshold: 0.0, min_streak: 3 }.validate().is_err());
        assert!(Params { threshold: f64::NAN, min_streak: 3 }.validate().is_err());
        assert!(Params { threshold: 3.5, min_streak: 1 }.validate().is_err());
        Params::default().validate().unwrap();
    }
}
