//! Matrix multiply through the `gemm` crate, the only place that calls it.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

/// The storage order of a matmul operand relative to its logical shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// The operand is stored as its logical `rows x cols`.
    No,
    /// The operand is stored as `cols x rows` and read transposed through strides.
    Yes,
}

static GEMM_THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while [`single_threaded`] runs on this thread.
    static SINGLE_THREADED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every matrix multiply it starts on the calling thread only, for callers that
/// already run one task per thread.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    let previous = SINGLE_THREADED.with(|flag| flag.replace(true));
    let result = f();
    SINGLE_THREADED.with(|flag| flag.set(previous));
    result
}

/// Returns whether the calling thread is inside [`single_threaded`], for kernels that decide
/// themselves whether to spread work over the rayon threads.
pub(crate) fn is_single_threaded() -> bool {
    SINGLE_THREADED.with(Cell::get)
}

/// Sets the number of threads a large matmul may use; 0 means the rayon pool's size.
pub fn set_gemm_threads(threads: usize) {
    GEMM_THREADS.store(threads, Ordering::Relaxed);
}

/// Multiply-adds below this count run on one thread, because splitting a small product costs
/// more than it saves.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// Computes `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate` is true), where the
/// logical shapes are `lhs: m x k`, `rhs: k x n` and `dst: m x n`, all row-major.
///
/// `lhs_t` and `rhs_t` state whether each operand is stored transposed (`k x m`, `n x k`).
///
/// # Panics
///
/// Panics if a slice is shorter than its shape needs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_t: Transpose,
    rhs: &[f32],
    rhs_t: Transpose,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    gemm_call(dst, lhs, lhs_t, rhs, rhs_t, m, k, n, accumulate, true);
}

/// Computes the same product as [`matmul_into`] with `lhs` not transposed, but one row of
/// `lhs` at a time, spread over the rayon threads. Each output row then depends only on its
/// input row, bit for bit, whatever the number of rows. `gemm` picks its kernels and summation
/// order from the whole shape, so a row multiplied inside a batch can differ in the last bits
/// from the same row multiplied alone.
///
/// # Panics
///
/// Panics if a slice is shorter than its shape needs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_rows_into(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    rhs_t: Transpose,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert!(
        dst.len() >= m * n && lhs.len() >= m * k,
        "matmul_rows_into: slices too short for {m} rows"
    );
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    dst[..m * n]
        .par_chunks_mut(n)
        .zip(lhs[..m * k].par_chunks(k))
        .with_min_len(8)
        .for_each(|(dst_row, lhs_row)| {
            gemm_call(
                dst_row,
                lhs_row,
                Transpose::No,
                rhs,
                rhs_t,
                1,
                k,
                n,
                accumulate,
                false,
            );
        });
}

#[allow(clippy::too_many_arguments)]
fn gemm_call(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_t: Transpose,
    rhs: &[f32],
    rhs_t: Transpose,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    allow_threads: bool,
) {
    assert!(
        dst.len() >= m * n,
        "matmul dst has {} values, needs {}",
        dst.len(),
        m * n
    );
    assert!(
        lhs.len() >= m * k,
        "matmul lhs has {} values, needs {}",
        lhs.len(),
        m * k
    );
    assert!(
        rhs.len() >= k * n,
        "matmul rhs has {} values, needs {}",
        rhs.len(),
        k * n
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }

    // Strides in elements of the logical matrices: (row stride, column stride).
    let lhs_strides = match lhs_t {
        Transpose::No => (k, 1),
        Transpose::Yes => (1, m),
    };
    let rhs_strides = match rhs_t {
        Transpose::No => (n, 1),
        Transpose::Yes => (1, k),
    };

    let threads = match GEMM_THREADS.load(Ordering::Relaxed) {
        0 => rayon::current_num_threads(),
        t => t,
    };
    let single = !allow_threads || SINGLE_THREADED.with(Cell::get);
    if single || threads <= 1 || m * n * k < PARALLEL_MIN_FLOPS || m < 2 * MIN_BLOCK_ROWS {
        gemm_block(dst, lhs, lhs_strides, rhs, rhs_strides, m, k, n, accumulate);
        return;
    }

    // Large products are split into one block of output rows per thread, each multiplied on
    // one thread. The blocks depend only on the thread count, so results do too. Measured on
    // the MLP shapes, this beats letting `gemm` split the work itself over rayon.
    let block_rows = m.div_ceil(threads).max(MIN_BLOCK_ROWS);
    dst[..m * n]
        .par_chunks_mut(block_rows * n)
        .enumerate()
        .for_each(|(block, dst_block)| {
            let first_row = block * block_rows;
            let rows = dst_block.len() / n;
            let lhs_block = &lhs[first_row * lhs_strides.0..];
            gemm_block(
                dst_block,
                lhs_block,
                lhs_strides,
                rhs,
                rhs_strides,
                rows,
                k,
                n,
                accumulate,
            );
        });
}

/// The smallest block of output rows worth a thread of its own.
const MIN_BLOCK_ROWS: usize = 16;

/// Computes `dst = lhs · rhs` (or `+=`) on the calling thread, where `dst` is `m x n`
/// row-major and element `(i, j)` of `lhs` (`m x k`) and `rhs` (`k x n`) is at
/// `i * strides.0 + j * strides.1` in its slice.
///
/// # Panics
///
/// Panics if a slice is too short for its shape and strides; `m`, `k` and `n` must be > 0.
#[allow(clippy::too_many_arguments)]
fn gemm_block(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    let last =
        |rows: usize, cols: usize, (rs, cs): (usize, usize)| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst.len() >= m * n,
        "matmul dst block has {} values, needs {}",
        dst.len(),
        m * n
    );
    assert!(
        last(m, k, lhs_strides) < lhs.len(),
        "matmul lhs block is too short"
    );
    assert!(
        last(k, n, rhs_strides) < rhs.len(),
        "matmul rhs is too short"
    );

    // SAFETY: the asserts above guarantee that the last element addressed through each set
    // of strides lies inside its slice, and all strides are non-negative, so every element
    // gemm reads or writes is in bounds. `dst` is a unique mutable borrow and cannot alias
    // `lhs` or `rhs`, which are shared borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,          // dst column stride
            n as isize, // dst row stride
            accumulate, // read dst: dst = alpha * dst + beta * lhs * rhs
            lhs.as_ptr(),
            lhs_strides.1 as isize, // lhs column stride
            lhs_strides.0 as isize, // lhs row stride
            rhs.as_ptr(),
            rhs_strides.1 as isize, // rhs column stride
            rhs_strides.0 as isize, // rhs row stride
            1.0,                    // alpha, used only when dst is read
            1.0,                    // beta
            false,                  // conjugate dst (no effect on reals)
            false,                  // conjugate lhs
            false,                  // conjugate rhs
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(
        lhs: &[f32],
        lt: Transpose,
        rhs: &[f32],
        rt: Transpose,
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f64> {
        let a = |i: usize, p: usize| match lt {
            Transpose::No => lhs[i * k + p],
            Transpose::Yes => lhs[p * m + i],
        };
        let b = |p: usize, j: usize| match rt {
            Transpose::No => rhs[p * n + j],
            Transpose::Yes => rhs[j * k + p],
        };
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_naive_on_awkward_shapes() {
        let mut rng = Rng::new(0);
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (64, 784, 256),
            (63, 1, 10),
            (4, 0, 3),
            (17, 33, 10),
        ];
        for &(m, k, n) in &shapes {
            for lt in [Transpose::No, Transpose::Yes] {
                for rt in [Transpose::No, Transpose::Yes] {
                    let lhs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                    let rhs: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                    let mut dst = vec![f32::NAN; m * n];
                    matmul_into(&mut dst, &lhs, lt, &rhs, rt, m, k, n, false);
                    let expected = naive(&lhs, lt, &rhs, rt, m, k, n);
                    let tolerance = 1e-5 * (k as f64 + 1.0).sqrt() * 4.0;
                    for (got, want) in dst.iter().zip(&expected) {
                        assert!(
                            (*got as f64 - want).abs() <= tolerance * (1.0 + want.abs()),
                            "m={m} k={k} n={n} {lt:?} {rt:?}: got {got}, want {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn row_by_row_matmul_is_batch_invariant() {
        let mut rng = Rng::new(5);
        let (k, n) = (37, 19);
        let lhs: Vec<f32> = (0..70 * k).map(|_| rng.normal()).collect();
        let rhs: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        let mut all = vec![0.0; 70 * n];
        matmul_rows_into(&mut all, &lhs, &rhs, Transpose::Yes, 70, k, n, false);
        for row in [0, 13, 69] {
            let mut alone = vec![0.0; n];
            matmul_rows_into(
                &mut alone,
                &lhs[row * k..(row + 1) * k],
                &rhs,
                Transpose::Yes,
                1,
                k,
                n,
                false,
            );
            assert_eq!(alone, &all[row * n..(row + 1) * n]);
        }
        let expected = naive(&lhs, Transpose::No, &rhs, Transpose::Yes, 70, k, n);
        for (got, want) in all.iter().zip(&expected) {
            assert!((*got as f64 - want).abs() < 1e-4, "got {got}, want {want}");
        }
    }

    #[test]
    fn split_matmul_matches_naive() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let mut rng = Rng::new(9);
        let (m, k, n) = (100, 130, 70);
        for (lt, rt) in [
            (Transpose::No, Transpose::Yes),
            (Transpose::Yes, Transpose::No),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let mut dst = vec![0.0; m * n];
            pool.install(|| matmul_into(&mut dst, &lhs, lt, &rhs, rt, m, k, n, false));
            let expected = naive(&lhs, lt, &rhs, rt, m, k, n);
            for (got, want) in dst.iter().zip(&expected) {
                assert!(
                    (*got as f64 - want).abs() < 1e-3,
                    "{lt:?} {rt:?}: got {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn matmul_accumulates_into_dst() {
        let lhs = [1.0, 2.0, 3.0, 4.0];
        let rhs = [1.0, 0.0, 0.0, 1.0];
        let mut dst = vec![10.0; 4];
        matmul_into(
            &mut dst,
            &lhs,
            Transpose::No,
            &rhs,
            Transpose::No,
            2,
            2,
            2,
            true,
        );
        assert_eq!(dst, vec![11.0, 12.0, 13.0, 14.0]);
    }
}
