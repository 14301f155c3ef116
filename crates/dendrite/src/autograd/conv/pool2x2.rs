//! Max pooling with 2x2 windows and stride 2, 16 outputs at a time with AVX-512.
//!
//! The window values of 16 neighboring outputs lie in 32 values of two input rows. The even
//! and odd columns are separated with one permute each, and the rest is lane-wise compares
//! and blends, with the same rules as the plain loops: the first maximum in row-major
//! window order wins a tie, and a NaN in a window is its maximum.
//!
//! Vectors are stored whole, so the lanes past the end of an output row land on the values
//! stored next. Each loop writes its buffers from start to end, which overwrites them. Near
//! the end of a buffer the loops fall back to one output at a time.

use core::arch::x86_64::{__m512, __m512i, _CMP_EQ_OQ, _CMP_GT_OQ};

use pulp::x86::V4;

use super::PoolGeometry;
use super::runs::load;

/// Lanes 0, 2, ..., 30 of two vectors: the even columns.
const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
/// Lanes 1, 3, ..., 31 of two vectors: the odd columns.
const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
/// Lanes 0, 16, 1, 17, ... of two vectors: the first halves interleaved.
const LOW_PAIRS: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
/// Lanes 8, 24, 9, 25, ... of two vectors: the second halves interleaved.
const HIGH_PAIRS: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];
/// The offset of each lane's window from the first window of a vector: `2 * lane`.
const WINDOW_STARTS: [f32; 16] = [
    0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0,
];

/// Outputs per vector.
const LANES: usize = 16;

/// Returns the AVX-512 instruction set if the CPU has it.
pub(super) fn available() -> Option<V4> {
    V4::try_new()
}

#[inline(always)]
fn vector(simd: V4, values: &[f32], at: usize) -> __m512 {
    let _ = simd;
    pulp::cast(load::<V4>(values, at))
}

#[inline(always)]
fn indices(values: [i32; 16]) -> __m512i {
    pulp::cast(values)
}

#[inline(always)]
fn store(values: &mut [f32], at: usize, vector: __m512) {
    <V4 as pulp::Simd>::as_mut_simd_f32s(&mut values[at..at + LANES]).0[0] = pulp::cast(vector);
}

/// Max-pools the planes of `x` into `out` and `argmax` (the index of each maximum within its
/// plane, as `f32`). `out` and `argmax` hold `geo.out_height * geo.out_width` values per plane.
pub(super) fn forward(
    simd: V4,
    x: &[f32],
    out: &mut [f32],
    argmax: &mut [f32],
    geo: &PoolGeometry,
) {
    pulp::Simd::vectorize(
        simd,
        Forward {
            simd,
            x,
            out,
            argmax,
            geo,
        },
    );
}

/// The arguments of [`forward`], run with AVX-512 enabled.
struct Forward<'a> {
    simd: V4,
    x: &'a [f32],
    out: &'a mut [f32],
    argmax: &'a mut [f32],
    geo: &'a PoolGeometry,
}

impl pulp::WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        forward_planes(self.simd, self.x, self.out, self.argmax, self.geo);
    }
}

#[inline(always)]
fn forward_planes(simd: V4, x: &[f32], out: &mut [f32], argmax: &mut [f32], geo: &PoolGeometry) {
    let avx = simd.avx512f;
    let (width, out_height, out_width) = (geo.width, geo.out_height, geo.out_width);
    let (plane_in, plane_out) = (geo.height * width, out_height * out_width);
    let (even, odd) = (indices(EVEN), indices(ODD));
    let window_starts: __m512 = pulp::cast(WINDOW_STARTS);
    let below = avx._mm512_set1_ps(width as f32);
    let below_right = avx._mm512_set1_ps(width as f32 + 1.0);
    let right = avx._mm512_set1_ps(1.0);

    let planes = out.len() / plane_out.max(1);
    for plane in 0..planes {
        for oh in 0..out_height {
            let top = plane * plane_in + 2 * oh * width;
            for first in (0..out_width).step_by(LANES) {
                let at = plane * plane_out + oh * out_width + first;
                let start = top + 2 * first;
                if start + width + 2 * LANES > x.len() || at + LANES > out.len() {
                    let count = LANES.min(out_width - first);
                    for ow in first..first + count {
                        let (value, index) = window_max(x, top, width, ow);
                        out[at + ow - first] = value;
                        argmax[at + ow - first] = (2 * oh * width + 2 * ow + index) as f32;
                    }
                    continue;
                }

                let (top_low, top_high) = (vector(simd, x, start), vector(simd, x, start + LANES));
                let bottom = start + width;
                let (bottom_low, bottom_high) =
                    (vector(simd, x, bottom), vector(simd, x, bottom + LANES));
                let candidates = [
                    (avx._mm512_permutex2var_ps(top_low, odd, top_high), right),
                    (
                        avx._mm512_permutex2var_ps(bottom_low, even, bottom_high),
                        below,
                    ),
                    (
                        avx._mm512_permutex2var_ps(bottom_low, odd, bottom_high),
                        below_right,
                    ),
                ];
                let mut best = avx._mm512_permutex2var_ps(top_low, even, top_high);
                let mut offset = avx._mm512_setzero_ps();
                for (value, value_offset) in candidates {
                    let greater = avx._mm512_cmp_ps_mask::<_CMP_GT_OQ>(value, best);
                    let value_nan = avx._mm512_cmpunord_ps_mask(value, value);
                    let best_nan = avx._mm512_cmpunord_ps_mask(best, best);
                    let take = (greater | value_nan) & !best_nan;
                    best = avx._mm512_mask_blend_ps(take, best, value);
                    offset = avx._mm512_mask_blend_ps(take, offset, value_offset);
                }
                let window = avx._mm512_set1_ps((2 * oh * width + 2 * first) as f32);
                let index = avx._mm512_add_ps(avx._mm512_add_ps(window, window_starts), offset);
                store(out, at, best);
                store(argmax, at, index);
            }
        }
    }
}

/// Returns the maximum of the window of output column `ow` in the rows from `top`, and its
/// offset from the window's first value.
#[inline(always)]
fn window_max(x: &[f32], top: usize, width: usize, ow: usize) -> (f32, usize) {
    let first = top + 2 * ow;
    let mut best = x[first];
    let mut offset = 0;
    for candidate in [1, width, width + 1] {
        let v = x[first + candidate];
        if (v > best || v.is_nan()) && !best.is_nan() {
            best = v;
            offset = candidate;
        }
    }
    (best, offset)
}

/// Returns true if [`backward_write`] covers `geo`: its windows tile every input plane.
pub(super) fn tiles(geo: &PoolGeometry) -> bool {
    geo.height == 2 * geo.out_height && geo.width == 2 * geo.out_width
}

/// Writes the max-pooling gradient into `dx` (overwriting it): each output gradient of `g`
/// goes to the input position stored in `argmax`, and every other position is 0.
///
/// # Panics
///
/// Panics if the windows of `geo` do not tile the input planes ([`tiles`]).
pub(super) fn backward_write(
    simd: V4,
    dx: &mut [f32],
    g: &[f32],
    argmax: &[f32],
    geo: &PoolGeometry,
) {
    assert!(
        tiles(geo),
        "max_pool2d windows of {geo:?} do not tile the input"
    );
    pulp::Simd::vectorize(
        simd,
        Backward {
            simd,
            dx,
            g,
            argmax,
            geo,
        },
    );
}

/// The arguments of [`backward_write`], run with AVX-512 enabled.
struct Backward<'a> {
    simd: V4,
    dx: &'a mut [f32],
    g: &'a [f32],
    argmax: &'a [f32],
    geo: &'a PoolGeometry,
}

impl pulp::WithSimd for Backward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        backward_planes(self.simd, self.dx, self.g, self.argmax, self.geo);
    }
}

#[inline(always)]
fn backward_planes(simd: V4, dx: &mut [f32], g: &[f32], argmax: &[f32], geo: &PoolGeometry) {
    let avx = simd.avx512f;
    let (width, out_height, out_width) = (geo.width, geo.out_height, geo.out_width);
    let (plane_in, plane_out) = (geo.height * width, out_height * out_width);
    let (low_pairs, high_pairs) = (indices(LOW_PAIRS), indices(HIGH_PAIRS));
    let window_starts: __m512 = pulp::cast(WINDOW_STARTS);
    let zero = avx._mm512_setzero_ps();

    // The gradients of the windows of one vector that go to their left and right columns of
    // the row `row_offset` (0 for the top row, `width` for the bottom one), interleaved.
    let spread = |gv: __m512, index: __m512, window: f32, row_offset: f32| {
        let offset = avx._mm512_sub_ps(
            index,
            avx._mm512_add_ps(avx._mm512_set1_ps(window), window_starts),
        );
        let left = avx._mm512_cmp_ps_mask::<_CMP_EQ_OQ>(offset, avx._mm512_set1_ps(row_offset));
        let right =
            avx._mm512_cmp_ps_mask::<_CMP_EQ_OQ>(offset, avx._mm512_set1_ps(row_offset + 1.0));
        let left = avx._mm512_mask_blend_ps(left, zero, gv);
        let right = avx._mm512_mask_blend_ps(right, zero, gv);
        (
            avx._mm512_permutex2var_ps(left, low_pairs, right),
            avx._mm512_permutex2var_ps(left, high_pairs, right),
        )
    };

    let planes = dx.len() / plane_in.max(1);
    for plane in 0..planes {
        for oh in 0..out_height {
            // The top row is written before the bottom one, so that the lanes a vector stores
            // past the end of a row are overwritten by the next row.
            for (row, row_offset) in [(0, 0.0), (1, width as f32)] {
                let row_start = plane * plane_in + (2 * oh + row) * width;
                for first in (0..out_width).step_by(LANES) {
                    let at = plane * plane_out + oh * out_width + first;
                    let start = row_start + 2 * first;
                    let window = (2 * oh * width + 2 * first) as f32;
                    if start + 2 * LANES > dx.len() || at + LANES > g.len() {
                        let count = LANES.min(out_width - first);
                        for ow in first..first + count {
                            let index = argmax[at + ow - first] as usize;
                            let left = (2 * oh + row) * width + 2 * ow;
                            let gv = g[at + ow - first];
                            dx[start + 2 * (ow - first)] = if index == left { gv } else { 0.0 };
                            dx[start + 2 * (ow - first) + 1] =
                                if index == left + 1 { gv } else { 0.0 };
                        }
                        continue;
                    }
                    let gv = vector(simd, g, at);
                    let index = vector(simd, argmax, at);
                    let (low, high) = spread(gv, index, window, row_offset);
                    store(dx, start, low);
                    store(dx, start + LANES, high);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Planes of few distinct values, so that windows hold ties, with a NaN now and then.
    fn planes(count: usize, height: usize, width: usize) -> Vec<f32> {
        (0..count * height * width)
            .map(|i| match (i * 7) % 23 {
                0 => f32::NAN,
                v => (v % 4) as f32 - 1.0,
            })
            .collect()
    }

    fn geometry(height: usize, width: usize) -> PoolGeometry {
        PoolGeometry::new("max_pool2d", &[1, 1, height, width], (2, 2), (2, 2), (0, 0))
    }

    /// Sizes with one and two vectors of outputs per row, a partial vector, and an odd
    /// width and height.
    const SIZES: [(usize, usize); 5] = [(28, 28), (10, 10), (4, 40), (7, 9), (2, 66)];

    #[test]
    fn forward_matches_brute_force() {
        let Some(simd) = available() else {
            return;
        };
        for (height, width) in SIZES {
            let geo = geometry(height, width);
            let count = 3;
            let x = planes(count, height, width);
            let plane_out = geo.out_height * geo.out_width;
            let mut out = vec![0.5; count * plane_out];
            let mut argmax = vec![0.5; count * plane_out];
            forward(simd, &x, &mut out, &mut argmax, &geo);
            for plane in 0..count {
                for oh in 0..geo.out_height {
                    for ow in 0..geo.out_width {
                        let mut best = f32::NEG_INFINITY;
                        let mut best_index = 0;
                        for (dh, dw) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let index = (2 * oh + dh) * width + 2 * ow + dw;
                            let v = x[plane * height * width + index];
                            if (v > best || v.is_nan()) && !best.is_nan() {
                                best = v;
                                best_index = index;
                            }
                        }
                        let at = plane * plane_out + oh * geo.out_width + ow;
                        let case = format!("{height}x{width}, plane {plane}, ({oh}, {ow})");
                        assert_eq!(out[at].to_bits(), best.to_bits(), "value at {case}");
                        assert_eq!(argmax[at], best_index as f32, "index at {case}");
                    }
                }
            }
        }
    }

    #[test]
    fn backward_matches_scatter() {
        let Some(simd) = available() else {
            return;
        };
        for (height, width) in SIZES {
            let geo = geometry(height, width);
            if !tiles(&geo) {
                continue;
            }
            let count = 3;
            let x = planes(count, height, width);
            let plane_out = geo.out_height * geo.out_width;
            let mut out = vec![0.0; count * plane_out];
            let mut argmax = vec![0.0; count * plane_out];
            forward(simd, &x, &mut out, &mut argmax, &geo);
            let g: Vec<f32> = (0..out.len()).map(|i| i as f32 * 0.25 - 3.0).collect();

            let mut expected = vec![0.0; x.len()];
            for (o, (&gv, &index)) in g.iter().zip(&argmax).enumerate() {
                expected[o / plane_out * height * width + index as usize] += gv;
            }
            let mut dx = vec![f32::NAN; x.len()];
            backward_write(simd, &mut dx, &g, &argmax, &geo);
            assert_eq!(dx, expected, "{height}x{width}");
        }
    }
}
