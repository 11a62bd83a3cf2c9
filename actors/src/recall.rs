//! Hybrid recall: one ranking from recall by association (spreading activation) and recall by
//! meaning (cosine to the query's embedding). Pure functions, shared by `POST /v1/recall` and
//! the recall benchmark, so what the benchmark measures is what the endpoint ranks by.
//!
//! A candidate's spread part is its activation relative to the spread's highest, on a log scale (see [`spread_part`]: a spread's scale depends on its parameters and sources,
//! its ranking does not); its similarity part is its cosine, floored at 0. The score is the
//! weighted sum.
//! Exact name matches rank before everything else (embeddings confuse "raft consensus" with
//! "rubber raft"; the graph does not), then the score, then the lower id.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::model::AtomId;

/// How much each kind of recall counts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub spread: f64,
    pub similarity: f64,
}

/// The weights tuned on MEN with a spread threshold of 1e-4 over 3 hops (`cograft bench recall
/// --embeddings`; README, "Figures").
pub const DEFAULT_WEIGHTS: Weights = Weights { spread: 0.21, similarity: 0.79 };

impl Weights {
    pub fn validate(&self) -> Result<(), String> {
        let ok = |w: f64| w.is_finite() && (0.0..=1e6).contains(&w);
        if !ok(self.spread) || !ok(self.similarity) || self.spread + self.similarity == 0.0 {
            return Err(format!(
                "weights.spread and weights.similarity must be in 0..=1e6 and not both 0, got {} and {}",
                self.spread, self.similarity
            ));
        }
        Ok(())
    }

    /// The score of parts already normalised (see the module's doc).
    pub fn score(&self, spread: f64, similarity: f64) -> f64 {
        self.spread * spread + self.similarity * similarity.max(0.0)
    }
}

/// Relative activation at which the spread part reaches 0: a spread's activations span orders
/// of magnitude (each hop multiplies by decay, link weight and fan share), so the part is
/// logarithmic in `activation / top`, from 1 at the top down to 0 at this fraction of it.
pub const SPREAD_FLOOR: f64 = 1e-4;

/// The spread part of an atom with `activation`, when the spread's highest is `top`.
pub fn spread_part(activation: f64, top: f64) -> f64 {
    if activation <= 0.0 || top <= 0.0 {
        return 0.0;
    }
    (1.0 + (activation / top).ln() / (1.0 / SPREAD_FLOOR).ln()).clamp(0.0, 1.0)
}

/// What is known of one candidate before ranking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: AtomId,
    /// Its name equals the query's text.
    pub exact: bool,
    /// Its activation in the spread (0 when not reached).
    pub activation: f64,
    /// Its cosine to the query's embedding (`None`: it has no vector of the model).
    pub similarity: Option<f32>,
}

/// One ranked candidate with its score and the parts of it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ranked {
    pub id: AtomId,
    pub exact: bool,
    pub score: f64,
    /// Activation over the highest activation among the candidates.
    pub spread: f64,
    pub similarity: f64,
}

/// The best `top_k` of `candidates`, best first (exact matches, then score, then id); `top` is
/// the spread's highest activation (of all it reached, before any filter: a filter selects
/// candidates, it does not re-score them).
pub fn rank(candidates: &[Candidate], top: f64, weights: Weights, top_k: usize) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = candidates
        .iter()
        .map(|c| {
            let spread = spread_part(c.activation, top);
            let similarity = c.similarity.map_or(0.0, |s| f64::from(s).max(0.0));
            Ranked { id: c.id, exact: c.exact, score: weights.score(spread, similarity), spread, similarity }
        })
        .collect();
    ranked.sort_by(order);
    ranked.truncate(top_k);
    ranked
}

fn order(a: &Ranked, b: &Ranked) -> Ordering {
    b.exact.cmp(&a.exact).then(b.score.total_cmp(&a.score)).then(a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: AtomId, exact: bool, activation: f64, similarity: Option<f32>) -> Candidate {
        Candidate { id, exact, activation, similarity }
    }

    #[test]
    fn exact_matches_come_first_then_the_weighted_parts() {
        let candidates = [
            candidate(1, false, 0.0, Some(0.95)), // "rubber raft": close in meaning only
            candidate(2, true, 0.0, Some(0.90)),  // "raft consensus" itself
            candidate(3, false, 0.8, Some(0.30)), // linked to it in the graph
            candidate(4, false, 0.4, None),       // linked, no vector
            candidate(5, false, 0.0, Some(-0.5)), // opposite: floored at 0
        ];
        let even = rank(&candidates, 0.8, Weights { spread: 0.5, similarity: 0.5 }, 10);
        assert_eq!(even.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 3, 1, 4, 5]);
        assert_eq!(even[1].spread, 1.0, "the top activation is the unit");
        assert!((even[1].score - (0.5 + 0.15)).abs() < 1e-6);
        assert_eq!(even[4].similarity, 0.0);
        // Meaning alone: the graph's atoms fall behind the close vector; exact still first.
        let meaning = rank(&candidates, 0.8, Weights { spread: 0.0, similarity: 1.0 }, 3);
        assert_eq!(meaning.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 1, 3]);
        // Association alone, ties (no activation) by id.
        let association = rank(&candidates, 0.8, Weights { spread: 1.0, similarity: 0.0 }, 10);
        assert_eq!(association.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 3, 4, 1, 5]);
        // The top is the spread's, not the candidates': leaving the top atom out re-scores nothing.
        let filtered = rank(&candidates[1..], 0.8, Weights { spread: 1.0, similarity: 0.0 }, 10);
        assert_eq!(filtered.iter().find(|r| r.id == 4).unwrap().spread, association[2].spread);
        let higher = rank(&candidates, 1.6, Weights { spread: 1.0, similarity: 0.0 }, 10);
        assert!(higher.iter().find(|r| r.id == 3).unwrap().spread < 1.0);
    }

    #[test]
    fn the_spread_part_is_logarithmic_from_the_top_down_to_the_floor() {
        assert_eq!(spread_part(0.8, 0.8), 1.0);
        assert_eq!(spread_part(0.0, 0.8), 0.0);
        assert_eq!(spread_part(0.5, 0.0), 0.0);
        assert!((spread_part(0.01, 1.0) - 0.5).abs() < 1e-12, "1e-2 of the top is half way to 1e-4");
        assert_eq!(spread_part(SPREAD_FLOOR / 10.0, 1.0), 0.0, "below the floor counts as unreached");
        assert!(spread_part(0.3, 1.0) > spread_part(0.2, 1.0));
    }

    #[test]
    fn weights_are_checked() {
        assert!(DEFAULT_WEIGHTS.validate().is_ok());
        assert!(Weights { spread: 0.0, similarity: 0.0 }.validate().is_err());
        assert!(Weights { spread: -1.0, similarity: 1.0 }.validate().is_err());
        assert!(Weights { spread: f64::NAN, similarity: 1.0 }.validate().is_err());
        assert!(Weights { spread: 0.0, similarity: 2.0 }.validate().is_ok());
    }
}
