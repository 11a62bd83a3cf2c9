//! Spherical k-means over unit vectors (cosine is the similarity): k-means++ seeding from a
//! seeded generator, then rounds of assignment (each point to its most similar centroid, the
//! scores from [`product`](super::product), i.e. ggml's matrix product in builds with the
//! `inference` feature) and update (each centroid the normalised mean of its points) until no
//! point moves, the round limit or the deadline (checked between rounds). A pure function of the points in the order given: callers
//! pass them in atom id order, so every replica clusters identically.

use std::time::Instant;

use super::{product, Matrix};

/// Points one assignment product covers (bounds the scores held at once to `CHUNK x k`).
const CHUNK: usize = 8192;
/// Most clusters one run may ask for.
pub const MAX_K: usize = 1000;
pub const DEFAULT_ITERATIONS: usize = 50;
pub const MAX_ITERATIONS: usize = 1000;

#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub k: usize,
    pub max_iterations: usize,
    pub seed: u64,
    /// No round starts after this (the clustering so far is the answer, and says so).
    pub deadline: Option<Instant>,
}

impl Params {
    pub fn validate(&self, points: usize) -> Result<(), String> {
        if self.k == 0 || self.k > MAX_K {
            return Err(format!("k must be in 1..={MAX_K}, got {}", self.k));
        }
        if self.k > points {
            return Err(format!("k is {} but there are only {points} vectors to cluster", self.k));
        }
        if self.max_iterations == 0 || self.max_iterations > MAX_ITERATIONS {
            return Err(format!(
                "max_iterations must be in 1..={MAX_ITERATIONS}, got {}",
                self.max_iterations
            ));
        }
        Ok(())
    }
}

/// A clustering of the points.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// The cluster of each point, in the points' order.
    pub assignment: Vec<u32>,
    /// `k` unit centroids of `dim`, row-major.
    pub centroids: Vec<f32>,
    /// Each point's cosine to its centroid.
    pub scores: Vec<f32>,
    pub iterations: usize,
    /// No point moved in the last round (else the round limit or the deadline stopped it).
    pub converged: bool,
    /// The deadline passed before the clustering converged.
    pub deadline_hit: bool,
}

impl Clustering {
    pub fn sizes(&self, k: usize) -> Vec<usize> {
        let mut sizes = vec![0; k];
        for c in &self.assignment {
            sizes[*c as usize] += 1;
        }
        sizes
    }

    /// Sum over the points of (1 - cosine to their centroid).
    pub fn inertia(&self) -> f64 {
        self.scores.iter().map(|s| 1.0 - f64::from(*s)).sum()
    }
}

/// The products a run computes with: `out[q * base.rows + r] = dot(queries q, base r)`.
pub trait Products: Fn(Matrix<'_>, Matrix<'_>, &mut [f32]) -> Result<(), String> {}
impl<F: Fn(Matrix<'_>, Matrix<'_>, &mut [f32]) -> Result<(), String>> Products for F {}

/// Clusters `points` (unit rows) with `params` (validated against `points.rows`), the
/// products on `threads` threads.
pub fn cluster(points: Matrix<'_>, params: &Params, threads: usize) -> Result<Clustering, String> {
    cluster_with(points, params, &|base, queries, out: &mut [f32]| product(base, queries, threads, out))
}

/// [`cluster`] with the products from `products` (the tests compare ggml's with plain Rust).
pub fn cluster_with(
    points: Matrix<'_>,
    params: &Params,
    products: &impl Products,
) -> Result<Clustering, String> {
    params.validate(points.rows)?;
    let (n, dim, k) = (points.rows, points.cols, params.k);
    let mut centroids = seed_centroids(points, params, products)?;
    let mut assignment = vec![u32::MAX; n];
    let mut scores = vec![0.0f32; n];
    let mut iterations = 0;
    let mut converged = false;
    let mut deadline_hit = false;
    while iterations < params.max_iterations {
        // At least one round runs, so every point has a cluster.
        if iterations > 0 && params.deadline.is_some_and(|d| Instant::now() >= d) {
            deadline_hit = true;
            break;
        }
        iterations += 1;
        let moved = assign(points, &centroids, k, products, &mut assignment, &mut scores)?;
        if moved == 0 {
            converged = true;
            break;
        }
        centroids = update(points, &assignment, &scores, k);
    }
    debug_assert_eq!(centroids.len(), k * dim);
    Ok(Clustering { assignment, centroids, scores, iterations, converged, deadline_hit })
}

/// Each point to its most similar centroid (ties to the lower index); answers how many moved.
fn assign(
    points: Matrix<'_>,
    centroids: &[f32],
    k: usize,
    products: &impl Products,
    assignment: &mut [u32],
    scores: &mut [f32],
) -> Result<usize, String> {
    let dim = points.cols;
    let base = Matrix { data: centroids, rows: k, cols: dim };
    let mut out = Vec::new();
    let mut moved = 0;
    for start in (0..points.rows).step_by(CHUNK) {
        let rows = CHUNK.min(points.rows - start);
        let chunk = Matrix { data: &points.data[start * dim..(start + rows) * dim], rows, cols: dim };
        out.resize(rows * k, 0.0);
        products(base, chunk, &mut out)?;
        for (p, row) in out.chunks_exact(k).enumerate() {
            let (best, score) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(b, s), (c, x)| if *x > s { (c, *x) } else { (b, s) });
            let point = start + p;
            if assignment[point] != best as u32 {
                assignment[point] = best as u32;
                moved += 1;
            }
            scores[point] = score;
        }
    }
    Ok(moved)
}

/// Each centroid the normalised sum of its points; an empty cluster takes the point least
/// like its own centroid (the lowest score, ties to the first point), so `k` stay in use.
fn update(points: Matrix<'_>, assignment: &[u32], scores: &[f32], k: usize) -> Vec<f32> {
    let dim = points.cols;
    let mut sums = vec![0.0f64; k * dim];
    for (p, c) in assignment.iter().enumerate() {
        let row = &points.data[p * dim..(p + 1) * dim];
        for (s, x) in sums[*c as usize * dim..(*c as usize + 1) * dim].iter_mut().zip(row) {
            *s += f64::from(*x);
        }
    }
    let mut taken = vec![false; points.rows];
    let mut centroids = vec![0.0f32; k * dim];
    for c in 0..k {
        let sum = &sums[c * dim..(c + 1) * dim];
        let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
        let out = &mut centroids[c * dim..(c + 1) * dim];
        if norm > 0.0 {
            for (o, s) in out.iter_mut().zip(sum) {
                *o = (s / norm) as f32;
            }
            continue;
        }
        let worst = (0..points.rows)
            .filter(|p| !taken[*p])
            .min_by(|a, b| scores[*a].total_cmp(&scores[*b]))
            .unwrap_or(0);
        taken[worst] = true;
        out.copy_from_slice(&points.data[worst * dim..(worst + 1) * dim]);
    }
    centroids
}

/// k-means++: the first centroid a random point, each next one a point drawn with probability
/// proportional to its squared distance to the nearest centroid so far (for unit vectors
/// |a - b|^2 = 2 (1 - cosine), so the weight is 1 - cosine).
fn seed_centroids(points: Matrix<'_>, params: &Params, products: &impl Products) -> Result<Vec<f32>, String> {
    let (n, dim) = (points.rows, points.cols);
    let mut rng = Rng(params.seed ^ 0xC1A5_7E25);
    let mut centroids = Vec::with_capacity(params.k * dim);
    let mut chosen = (rng.next() % n as u64) as usize;
    let mut nearest = vec![f64::INFINITY; n];
    let mut out = Vec::new();
    for _ in 0..params.k {
        let centroid = &points.data[chosen * dim..(chosen + 1) * dim];
        centroids.extend_from_slice(centroid);
        let query = Matrix { data: centroid, rows: 1, cols: dim };
        for start in (0..n).step_by(CHUNK) {
            let rows = CHUNK.min(n - start);
            let chunk = Matrix { data: &points.data[start * dim..(start + rows) * dim], rows, cols: dim };
            out.resize(rows, 0.0);
            products(chunk, query, &mut out)?;
            for (p, score) in out.iter().enumerate() {
                let d2 = (1.0 - f64::from(*score)).max(0.0);
                if d2 < nearest[start + p] {
                    nearest[start + p] = d2;
                }
            }
        }
        let total: f64 = nearest.iter().sum();
        chosen = if total > 0.0 {
            let mut target = rng.unit() * total;
            // Where rounding runs past the end: the last point not on a centroid yet.
            let mut pick = nearest.iter().rposition(|d2| *d2 > 0.0).unwrap_or(n - 1);
            for (p, d2) in nearest.iter().enumerate() {
                if target < *d2 && *d2 > 0.0 {
                    pick = p;
                    break;
                }
                target -= d2;
            }
            pick
        } else {
            // Every point sits on a centroid already (fewer distinct points than k): the next
            // point in order, so the centroids are still k points.
            (chosen + 1) % n
        };
    }
    Ok(centroids)
}

/// xorshift64*: the seeding's draws, the same for a seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.max(1);
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[path = "kmeans_tests.rs"]
mod tests;
