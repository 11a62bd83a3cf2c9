//! Recall by meaning over stored vectors: exact nearest neighbours by cosine, per memory space
//! and model. `index` holds every vector normalised in contiguous matrices, `follow` keeps it
//! current from the state machine's announcements, `actor` answers searches on threads of its
//! own, and the scores come from matrix products: ggml's (`tensor`, the one module that calls
//! it) in builds with the `inference` feature, plain Rust (`scan`, also the reference ggml is
//! tested against) without. `backfill` embeds node names on the leader and proposes their
//! vectors (spaces with `auto_embed`, or on an operator's request). `fastrp` computes
//! structural embeddings of a space's graph and `structural` runs those builds on the leader
//! as jobs; `kmeans` clusters vectors and `clusters` answers clusterings on the search pool.

pub mod actor;
pub mod backfill;
pub mod clusters;
pub mod fastrp;
pub mod follow;
pub mod index;
pub mod kmeans;
pub mod metrics;
pub mod scan;
pub mod structural;
#[cfg(feature = "inference")]
pub mod tensor;

/// A row-major matrix of f32 borrowed from the caller: `rows` rows of `cols` components.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

/// Which implementation computes the products, for replies and metrics.
pub const PRODUCT_ENGINE: &str = if cfg!(feature = "inference") { "ggml" } else { "rust" };

/// `out[q * base.rows + r] = dot(queries row q, base row r)`.
pub fn product(base: Matrix<'_>, queries: Matrix<'_>, threads: usize, out: &mut [f32]) -> Result<(), String> {
    #[cfg(feature = "inference")]
    {
        tensor::dot_products(base, queries, threads, out).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "inference"))]
    {
        let _ = threads;
        if base.cols != queries.cols || out.len() != base.rows * queries.rows {
            return Err(format!(
                "a {}x{} by {}x{} product does not fit {} outputs",
                base.rows,
                base.cols,
                queries.rows,
                queries.cols,
                out.len()
            ));
        }
        scan::dot_products(base, queries, out);
        Ok(())
    }
}
