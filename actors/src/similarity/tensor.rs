//! The one place cograft calls ggml (through `llama-cpp-sys-2`'s bindings): a safe matrix
//! product for the similarity scans. Every shape is checked in Rust before ggml sees it (a
//! failed `GGML_ASSERT` aborts the process, which a node must never do), ggml never owns the
//! caller's memory (its tensors point at the slices for the duration of one call), and each
//! call has its own context, freed on every path. Tested against [`super::scan`], the plain
//! Rust reference.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::Matrix;

/// Why a product was not computed (nothing was called).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("a {rows}x{cols} matrix needs {want} values, got {got}")]
    Shape { rows: usize, cols: usize, want: usize, got: usize },
    #[error("the matrices have {left} and {right} columns; a product needs them equal")]
    Columns { left: usize, right: usize },
    #[error("the output holds {got} values, the product has {want}")]
    Output { want: usize, got: usize },
    #[error("an empty matrix has no product")]
    Empty,
    #[error("ggml could not {0}")]
    Ggml(&'static str),
}

/// Whether `m`'s shape matches its data and fits ggml's counters (elements in i64).
fn check(m: &Matrix<'_>) -> Result<(), TensorError> {
    let want = m.rows.checked_mul(m.cols).ok_or(TensorError::Empty)?;
    if m.rows == 0 || m.cols == 0 {
        return Err(TensorError::Empty);
    }
    let fits = want.checked_mul(4).is_some_and(|bytes| i64::try_from(bytes).is_ok());
    if want != m.data.len() || !fits {
        return Err(TensorError::Shape { rows: m.rows, cols: m.cols, want, got: m.data.len() });
    }
    Ok(())
}

/// A ggml context holding only tensor and graph headers (`no_alloc`): tensor data is always
/// the caller's memory. Freed on drop.
struct Context(NonNull<sys::ggml_context>);

impl Context {
    fn new(tensors: usize) -> Result<Context, TensorError> {
        // SAFETY: both functions only compute sizes from ggml's own constants.
        let mem_size = unsafe { sys::ggml_tensor_overhead() * tensors + sys::ggml_graph_overhead() };
        let params = sys::ggml_init_params { mem_size, mem_buffer: std::ptr::null_mut(), no_alloc: true };
        // SAFETY: a null `mem_buffer` makes ggml allocate (and `ggml_free` release) its own
        // header arena of `mem_size` bytes; `no_alloc` keeps tensor data out of it.
        let ctx = unsafe { sys::ggml_init(params) };
        NonNull::new(ctx).map(Context).ok_or(TensorError::Ggml("allocate a context"))
    }

    /// A 2-D f32 tensor of `rows` x `cols` (ggml's ne0 = columns, ne1 = rows) pointing at `data`.
    ///
    /// # Safety
    /// `data` must hold `rows * cols` f32 and stay valid, and not be used by Rust in a
    /// conflicting way, until the graph that uses the tensor has been computed.
    unsafe fn tensor(
        &self,
        rows: usize,
        cols: usize,
        data: *mut f32,
    ) -> Result<*mut sys::ggml_tensor, TensorError> {
        let t = sys::ggml_new_tensor_2d(self.0.as_ptr(), sys::GGML_TYPE_F32, cols as i64, rows as i64);
        if t.is_null() {
            return Err(TensorError::Ggml("create a tensor"));
        }
        (*t).data = data.cast::<c_void>();
        Ok(t)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context came from `ggml_init` and is freed once, here; no tensor or
        // graph of it outlives this value (they are used only inside `dot_products`).
        unsafe { sys::ggml_free(self.0.as_ptr()) }
    }
}

/// `out[q * base.rows + r] = dot(queries row q, base row r)` for every query and base row:
/// one ggml matrix product (`ggml_mul_mat`, which tiles it for the CPU's vector units) on
/// `threads` threads.
pub fn dot_products(
    base: Matrix<'_>,
    queries: Matrix<'_>,
    threads: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    check(&base)?;
    check(&queries)?;
    if base.cols != queries.cols {
        return Err(TensorError::Columns { left: base.cols, right: queries.cols });
    }
    let want = base.rows.checked_mul(queries.rows).ok_or(TensorError::Empty)?;
    if out.len() != want {
        return Err(TensorError::Output { want, got: out.len() });
    }
    let threads = threads.clamp(1, 64) as i32;
    let ctx = Context::new(3)?;
    // SAFETY: the shapes were checked above against the slices' lengths, so ggml reads and
    // writes only inside them. ggml only reads the two inputs (the `*mut` casts are for its
    // tensor struct); it writes only `out`, which this function borrows mutably. The slices
    // outlive the call, the context (and every tensor and graph in it) is dropped before
    // return, and the work buffer is sized by `ggml_graph_plan` for this graph.
    unsafe {
        let a = ctx.tensor(base.rows, base.cols, base.data.as_ptr().cast_mut())?;
        let b = ctx.tensor(queries.rows, queries.cols, queries.data.as_ptr().cast_mut())?;
        // ggml_mul_mat(a, b) has ne0 = a's rows, ne1 = b's rows: row q holds query q's dots.
        let c = sys::ggml_mul_mat(ctx.0.as_ptr(), a, b);
        if c.is_null() {
            return Err(TensorError::Ggml("create the product"));
        }
        (*c).data = out.as_mut_ptr().cast::<c_void>();
        let graph = sys::ggml_new_graph(ctx.0.as_ptr());
        if graph.is_null() {
            return Err(TensorError::Ggml("create a graph"));
        }
        sys::ggml_build_forward_expand(graph, c);
        let mut plan = sys::ggml_graph_plan(graph, threads, std::ptr::null_mut());
        let mut work = vec![0u8; plan.work_size];
        plan.work_data = if work.is_empty() { std::ptr::null_mut() } else { work.as_mut_ptr() };
        if sys::ggml_graph_compute(graph, &mut plan) != sys::GGML_STATUS_SUCCESS {
            return Err(TensorError::Ggml("compute the product"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::similarity::scan;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn products_equal_the_rust_reference() {
        for (rows, queries, cols) in [(1, 1, 1), (7, 3, 5), (1000, 64, 384), (333, 1, 17), (64, 65, 4096)] {
            let base = values(rows * cols, rows as u64);
            let q = values(queries * cols, cols as u64);
            let (b, qm) = (Matrix { data: &base, rows, cols }, Matrix { data: &q, rows: queries, cols });
            let mut got = vec![0.0; rows * queries];
            dot_products(b, qm, 2, &mut got).unwrap();
            let mut want = vec![0.0; rows * queries];
            scan::dot_products(b, qm, &mut want);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // ggml sums in another order (and may round through f16 on no path here).
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{rows}x{queries}x{cols} at {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused_before_ggml_sees_them() {
        let data = [1.0f32; 12];
        let m = |rows, cols, n| Matrix { data: &data[..n], rows, cols };
        let mut out = vec![0.0; 9];
        assert_eq!(
            dot_products(m(3, 4, 11), m(3, 4, 12), 1, &mut out),
            Err(TensorError::Shape { rows: 3, cols: 4, want: 12, got: 11 })
        );
        assert_eq!(
            dot_products(m(3, 4, 12), m(4, 3, 12), 1, &mut out),
            Err(TensorError::Columns { left: 4, right: 3 })
        );
        assert_eq!(
            dot_products(m(3, 4, 12), m(3, 4, 12), 1, &mut out[..8]),
            Err(TensorError::Output { want: 9, got: 8 })
        );
        assert_eq!(dot_products(m(0, 4, 0), m(3, 4, 12), 1, &mut out), Err(TensorError::Empty));
        assert_eq!(dot_products(m(usize::MAX, 4, 12), m(3, 4, 12), 1, &mut out), Err(TensorError::Empty));
        // A good call after the refusals works.
        dot_products(m(3, 4, 12), m(3, 4, 12), 1, &mut out).unwrap();
        assert!(out.iter().all(|x| *x == 4.0));
    }
}
