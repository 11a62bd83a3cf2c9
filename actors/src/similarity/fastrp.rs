//! Structural embeddings: FastRP (Chen et al., "Fast and Accurate Network Embeddings via Very
//! Sparse Random Projection", 2019) over one space's incidence graph, a pure function of the
//! spreading index. Every live atom starts from a very sparse random vector drawn from a hash
//! of its id and the seed (so the same atom always gets the same start, on any node and in any
//! rebuild); each iteration replaces every atom's vector by the mean of its neighbours' (a hop
//! of the hypergraph is atom -> a link containing it, and link -> its members), normalised to
//! unit length; the embedding is the weighted sum of the iterations. Atoms with the same
//! surroundings end up close, so a community of densely linked atoms shares a direction.
//!
//! The propagation is a sparse product (the incidence rows of the index); ggml has no sparse
//! kernels and a dense adjacency would not fit memory, so it runs here in plain Rust, row
//! parallel over the given threads. Each row is summed in the index's id order by one thread,
//! so the result does not depend on the thread count.

use super::scan::normalised;
use crate::model::AtomId;
use crate::spreading::index::{Dense, SpaceIndex};

/// Most dimensions and iterations a build may ask for.
pub const MAX_DIM: usize = 1024;
pub const MAX_ITERATIONS: usize = 8;

/// The largest weight of one iteration (a sum of unit rows so weighted stays finite).
pub const MAX_WEIGHT: f32 = 1e6;

/// Every structural model id starts with this.
pub const MODEL_PREFIX: &str = "fastrp-";

/// The default weights of iterations 1..=4: the first (an atom's links alone) says little
/// about which atoms are alike; two hops and more do.
pub const DEFAULT_WEIGHTS: [f32; 4] = [0.0, 1.0, 1.0, 1.0];

/// What a build computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub dim: usize,
    /// One weight per iteration; their count is the number of iterations.
    pub weights: Vec<f32>,
    pub seed: u64,
}

impl Params {
    /// The model id the vectors are stored under: one per dimension, weights and seed, so two
    /// builds' vectors never mix in one model unless they are comparable.
    pub fn model_id(&self) -> String {
        let default_weights = self.weights == DEFAULT_WEIGHTS;
        match (default_weights, self.seed) {
            (true, 0) => format!("{MODEL_PREFIX}{}", self.dim),
            _ => {
                let mut h = blake3::Hasher::new();
                for w in &self.weights {
                    h.update(&w.to_le_bytes());
                }
                h.update(&self.seed.to_le_bytes());
                format!("{MODEL_PREFIX}{}-{}", self.dim, &h.finalize().to_hex()[..8])
            }
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_DIM).contains(&self.dim) {
            return Err(format!("dim must be in 2..={MAX_DIM}, got {}", self.dim));
        }
        if self.weights.is_empty() || self.weights.len() > MAX_ITERATIONS {
            return Err(format!(
                "weights holds one weight per iteration, 1..={MAX_ITERATIONS} of them, got {}",
                self.weights.len()
            ));
        }
        if self.weights.iter().any(|w| !(0.0..=MAX_WEIGHT).contains(w))
            || self.weights.iter().all(|w| *w == 0.0)
        {
            return Err(format!("weights must be in 0..={MAX_WEIGHT}, and not all zero"));
        }
        Ok(())
    }

    /// Bytes a build of `atoms` atoms holds at once, to refuse a build the node cannot afford
    /// before it starts: four matrices of `dim` f32 per atom at the peak (the current and next
    /// iteration, the sum, the output), the adjacency (a u32 per membership and direction, a
    /// usize offset per atom).
    pub fn memory_bytes(&self, atoms: usize, memberships: usize) -> usize {
        atoms
            .saturating_mul(self.dim)
            .saturating_mul(4 * 4)
            .saturating_add(memberships.saturating_mul(4))
            .saturating_add(atoms.saturating_mul(8))
    }
}

/// A build's result: unit vectors of the atoms with structure, and the atoms without any.
#[derive(Clone, Debug, Default)]
pub struct Structural {
    pub dim: usize,
    pub ids: Vec<AtomId>,
    /// `ids.len()` rows of `dim`, row-major, each of unit length.
    pub vectors: Vec<f32>,
    /// Live atoms in no link and with no members: no structure, so no vector.
    pub isolated: Vec<AtomId>,
}

impl Structural {
    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }
}

/// The live neighbours of every atom (members, then the links containing it), as CSR over
/// the index's dense numbers; removed atoms have none and are no one's.
struct Adjacency {
    offsets: Vec<usize>,
    neighbours: Vec<Dense>,
}

impl Adjacency {
    fn of(index: &SpaceIndex) -> Adjacency {
        let mut offsets = Vec::with_capacity(index.len() + 1);
        let mut neighbours = Vec::new();
        offsets.push(0);
        for d in 0..index.len() as Dense {
            if !index.is_removed(d) {
                let live = |n: &Dense| !index.is_removed(*n);
                neighbours.extend(index.members(d).iter().copied().filter(live));
                neighbours.extend(index.incident(d).filter(live));
            }
            offsets.push(neighbours.len());
        }
        Adjacency { offsets, neighbours }
    }

    fn of_atom(&self, d: usize) -> &[Dense] {
        &self.neighbours[self.offsets[d]..self.offsets[d + 1]]
    }
}

/// Memberships the index holds (both directions), for [`Params::memory_bytes`].
pub fn memberships(index: &SpaceIndex) -> usize {
    (0..index.len() as Dense).map(|d| index.members(d).len()).sum::<usize>() * 2
}

/// FastRP over `index` with `params` (already validated), on `threads` threads.
pub fn embed(index: &SpaceIndex, params: &Params, threads: usize) -> Structural {
    let (n, dim) = (index.len(), params.dim);
    let adjacency = Adjacency::of(index);
    let mut current = vec![0.0f32; n * dim];
    for d in 0..n {
        if !index.is_removed(d as Dense) {
            start_vector(index.id(d as Dense), params.seed, &mut current[d * dim..(d + 1) * dim]);
        }
    }
    let mut next = vec![0.0f32; n * dim];
    let mut sum = vec![0.0f32; n * dim];
    for &weight in &params.weights {
        propagate(&adjacency, &current, &mut next, dim, threads);
        std::mem::swap(&mut current, &mut next);
        if weight != 0.0 {
            for (s, x) in sum.iter_mut().zip(&current) {
                *s += weight * x;
            }
        }
    }
    let mut out = Structural { dim, ..Structural::default() };
    for d in 0..n {
        if index.is_removed(d as Dense) {
            continue;
        }
        let id = index.id(d as Dense);
        let row = &sum[d * dim..(d + 1) * dim];
        if adjacency.of_atom(d).is_empty() || row.iter().all(|x| *x == 0.0) {
            out.isolated.push(id);
        } else {
            out.ids.push(id);
            out.vectors.extend(normalised(row));
        }
    }
    out
}

/// `next[d] = unit(mean of current[n] over d's neighbours)`; zero for an atom without any.
fn propagate(adjacency: &Adjacency, current: &[f32], next: &mut [f32], dim: usize, threads: usize) {
    let n = next.len() / dim;
    let per_thread = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (chunk, rows) in next.chunks_mut(per_thread * dim).enumerate() {
            scope.spawn(move || {
                let first = chunk * per_thread;
                for (i, row) in rows.chunks_exact_mut(dim).enumerate() {
                    row.fill(0.0);
                    let neighbours = adjacency.of_atom(first + i);
                    for &nb in neighbours {
                        let from = &current[nb as usize * dim..(nb as usize + 1) * dim];
                        for (r, x) in row.iter_mut().zip(from) {
                            *r += x;
                        }
                    }
                    let norm = row.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
                    if norm > 0.0 {
                        // The mean's direction is the sum's: normalising once covers both.
                        let scale = (1.0 / norm) as f32;
                        row.iter_mut().for_each(|x| *x *= scale);
                    }
                }
            });
        }
    });
}

/// The very sparse random start of atom `id` (Achlioptas / Li et al.: each component is
/// +sqrt(3) or -sqrt(3) with probability 1/6 each, else 0), from a hash of the id and seed.
fn start_vector(id: AtomId, seed: u64, out: &mut [f32]) {
    let value = 3f32.sqrt();
    let mut state = splitmix(id ^ splitmix(seed.wrapping_add(0x5EED)));
    let mut nonzero = false;
    for x in out.iter_mut() {
        state = splitmix(state);
        *x = match state % 6 {
            0 => value,
            1 => -value,
            _ => 0.0,
        };
        nonzero |= *x != 0.0;
    }
    if !nonzero {
        // A start of all zeros carries nothing; one component keeps the atom visible.
        out[(state % out.len() as u64) as usize] = value;
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[path = "fastrp_tests.rs"]
mod tests;
