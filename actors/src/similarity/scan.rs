//! Plain Rust for the similarity scans: the reference matrix product the ggml one is tested
//! against (and the product a build without the `inference` feature uses), normalisation,
//! and the top-k selection every scan ends with.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Matrix;
use crate::model::AtomId;

/// `out[q * base.rows + r] = dot(queries row q, base row r)`, one pair at a time.
pub fn dot_products(base: Matrix<'_>, queries: Matrix<'_>, out: &mut [f32]) {
    assert_eq!(base.cols, queries.cols, "the reference product needs equal columns");
    assert_eq!(out.len(), base.rows * queries.rows, "the reference product's output size");
    for (q, query) in queries.data.chunks_exact(queries.cols).enumerate() {
        for (r, row) in base.data.chunks_exact(base.cols).enumerate() {
            out[q * base.rows + r] = row.iter().zip(query).map(|(a, b)| a * b).sum();
        }
    }
}

/// `v / |v|` (the caller has refused zero vectors), so a dot product is a cosine.
pub fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

/// One candidate: its score and atom. Ordered so that the heap's top is the worst kept one
/// (lowest score, then highest id): ties always resolve to the lower id, so an answer depends
/// neither on how the scan was chunked nor on where a replica's index keeps the rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub id: AtomId,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `k` of a stream of scores.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK { k, heap: BinaryHeap::with_capacity(k + 1) }
    }

    pub fn offer(&mut self, candidate: Scored) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(worst) = self.heap.peek() {
            if candidate < *worst {
                self.heap.pop();
                self.heap.push(candidate);
            }
        }
    }

    /// A score below this cannot enter (the worst kept one once `k` are kept): the scan's fast
    /// path skips it without a heap comparison. An equal score may still enter by its id.
    pub fn floor(&self) -> f32 {
        match self.heap.peek() {
            Some(worst) if self.heap.len() == self.k => worst.score,
            _ if self.k == 0 => f32::INFINITY,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_and_breaks_ties_by_id() {
        let mut top = TopK::new(3);
        for (id, score) in [0.1, 0.9, 0.5, 0.9, -1.0, 0.5].into_iter().enumerate() {
            top.offer(Scored { score, id: id as AtomId });
        }
        assert_eq!(top.floor(), 0.5);
        let ids: Vec<AtomId> = top.into_sorted().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert_eq!(TopK::new(2).floor(), f32::NEG_INFINITY, "not full: anything enters");
        let mut none = TopK::new(0);
        none.offer(Scored { score: 1.0, id: 0 });
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn the_reference_product_and_normalisation() {
        let base = [1.0, 0.0, 0.0, 2.0, 3.0, 4.0];
        let q = [1.0, 1.0];
        let mut out = [0.0; 3];
        dot_products(
            Matrix { data: &base, rows: 3, cols: 2 },
            Matrix { data: &q, rows: 1, cols: 2 },
            &mut out,
        );
        assert_eq!(out, [1.0, 2.0, 7.0]);
        let n = normalised(&[3.0, 4.0]);
        assert!((n[0] - 0.6).abs() < 1e-7 && (n[1] - 0.8).abs() < 1e-7);
    }
}
