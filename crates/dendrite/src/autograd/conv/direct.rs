//! Direct convolution for layers with small windows, such as the first layer of a grayscale
//! network (one input channel, a 5x5 kernel: 25 input values per output).
//!
//! For such a layer the im2col matrix is `kh * kw` times the size of the image, and the
//! matrix multiply that reads it has too few rows to pay for writing it. The loops here read
//! a zero-padded copy of the image instead, which stays in the L1 cache: every output row is
//! the sum of the input rows under the kernel taps, each scaled by its weight, computed a
//! vector of [`LANES`] output columns at a time.
//!
//! The loops use AVX-512 vectors through [`pulp`] and run only on CPUs that have them; on
//! other CPUs such a layer goes through im2col like any other.

use super::ConvGeometry;
use super::runs::load;

/// Output columns computed together: one AVX-512 register of `f32`.
const LANES: usize = 16;

/// Filters accumulated together in the forward pass, each in its own vector.
const FILTERS: usize = 8;

/// Kernel taps accumulated together in the weight gradient, each in its own vector.
const TAPS: usize = 8;

/// The maximum number of input values one output may read (`c_in * kh * kw`) for the direct loops to be
/// used.
const MAX_TAPS: usize = 32;

/// Returns true if the convolution of `geo` runs through the direct loops: one group, stride
/// 1, dilation 1, at most [`MAX_TAPS`] input values per output, output rows that fill at
/// least three quarters of their vectors, and a CPU with AVX-512.
pub(super) fn applies(geo: &ConvGeometry) -> bool {
    let params = geo.params;
    let rounded = geo.out_width.next_multiple_of(LANES);
    params.groups == 1
        && params.stride == (1, 1)
        && params.dilation == (1, 1)
        && geo.group_rows() <= MAX_TAPS
        && geo.out_width > 0
        && geo.out_height > 0
        && 4 * geo.out_width >= 3 * rounded
        && has_avx512()
}

/// Returns true if the CPU has AVX-512.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return pulp::x86::V4::try_new().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The sizes of the buffers of the direct loops.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Rows of a padded input plane: `h + 2 * pad_h`.
    rows: usize,
    /// Values per padded input row: the output width rounded up to whole vectors, plus
    /// `kw - 1`, so that every vector read stays inside the row.
    row_len: usize,
    /// The output width rounded up to whole vectors.
    out_row_len: usize,
}

impl Layout {
    fn new(geo: &ConvGeometry) -> Self {
        let out_row_len = geo.out_width.next_multiple_of(LANES);
        Layout {
            rows: geo.height + 2 * geo.params.padding.0,
            row_len: out_row_len + geo.kernel.1 - 1,
            out_row_len,
        }
    }

    /// Values of the padded copy of one image.
    fn padded_len(&self, geo: &ConvGeometry) -> usize {
        geo.in_channels * self.rows * self.row_len
    }

    /// Values of one image's output gradient with rows padded to whole vectors and an even
    /// number of planes.
    fn grad_len(&self, geo: &ConvGeometry) -> usize {
        geo.out_channels.next_multiple_of(2) * geo.out_height * self.out_row_len
    }
}

/// Values of scratch space one image needs in [`forward`] and [`weight_gradient`].
pub(super) fn scratch_len(geo: &ConvGeometry) -> usize {
    let layout = Layout::new(geo);
    layout.padded_len(geo) + layout.grad_len(geo)
}

/// Values of the weights rearranged by [`pack_weights`].
pub(super) fn packed_weights_len(geo: &ConvGeometry) -> usize {
    geo.out_channels.div_ceil(FILTERS) * FILTERS * geo.group_rows()
}

/// Rearranges `weight: [c_out, taps]` into `packed` as blocks of [`FILTERS`] filters: tap `t`
/// of block `b` holds the weights of filters `b * FILTERS..(b + 1) * FILTERS` for that tap,
/// with zeros past the last filter.
pub(super) fn pack_weights(packed: &mut [f32], weight: &[f32], geo: &ConvGeometry) {
    let taps = geo.group_rows();
    for (block, packed_block) in packed.chunks_exact_mut(taps * FILTERS).enumerate() {
        for (tap, packed_tap) in packed_block.chunks_exact_mut(FILTERS).enumerate() {
            for (slot, w) in packed_tap.iter_mut().enumerate() {
                let filter = block * FILTERS + slot;
                *w = if filter < geo.out_channels {
                    weight[filter * taps + tap]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Copies `image: [c_in, h, w]` into `padded` with the convolution's zero padding on the top,
/// bottom and left, and zeros to the end of each row.
#[inline(always)]
fn pad_image(padded: &mut [f32], image: &[f32], geo: &ConvGeometry, layout: &Layout) {
    let (pad_h, pad_w) = geo.params.padding;
    padded.fill(0.0);
    for (padded_plane, plane) in padded
        .chunks_exact_mut(layout.rows * layout.row_len)
        .zip(image.chunks_exact(geo.height * geo.width))
    {
        for (padded_row, row) in padded_plane[pad_h * layout.row_len..]
            .chunks_exact_mut(layout.row_len)
            .zip(plane.chunks_exact(geo.width))
        {
            padded_row[pad_w..pad_w + geo.width].copy_from_slice(row);
        }
    }
}

/// Runs `op` with AVX-512 enabled.
///
/// # Panics
///
/// Panics if the CPU lacks AVX-512; [`applies`] checks for it first.
fn run_avx512<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V4::try_new() {
        return pulp::Simd::vectorize(simd, op);
    }
    panic!("the direct convolution loops run only on CPUs with AVX-512");
}

/// Writes the convolution of each image of `x` into `out` (`[n, c_out, h_out, w_out]`),
/// followed by `max(v, 0)` when `relu` is true. `packed` contains the weights as
/// [`pack_weights`] arranges them, and `scratch` at least [`scratch_len`] values.
///
/// Each output value is its bias (or 0) plus the products of its taps, added one at a time
/// in `(c, ki, kj)` order with fused multiply-adds, so an image's output does not depend on
/// the other images.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    out: &mut [f32],
    scratch: &mut [f32],
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    geo: &ConvGeometry,
    relu: bool,
) {
    run_avx512(Forward {
        out,
        scratch,
        x,
        packed,
        bias,
        geo,
        relu,
    });
}

/// The arguments of [`forward`], run by [`run_avx512`].
struct Forward<'a> {
    out: &'a mut [f32],
    scratch: &'a mut [f32],
    x: &'a [f32],
    packed: &'a [f32],
    bias: Option<&'a [f32]>,
    geo: &'a ConvGeometry,
    relu: bool,
}

impl pulp::WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let geo = self.geo;
        let layout = Layout::new(geo);
        let padded = &mut self.scratch[..layout.padded_len(geo)];
        for (out_image, image) in self
            .out
            .chunks_exact_mut(geo.out_image_len())
            .zip(self.x.chunks_exact(geo.image_len()))
        {
            pad_image(padded, image, geo, &layout);
            forward_image(
                simd,
                out_image,
                padded,
                self.packed,
                self.bias,
                geo,
                &layout,
                self.relu,
            );
        }
    }
}

/// Computes one image's output from its padded copy; see [`forward`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_image<S: pulp::Simd>(
    simd: S,
    out: &mut [f32],
    padded: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    geo: &ConvGeometry,
    layout: &Layout,
    relu: bool,
) {
    let (kh, kw) = geo.kernel;
    let (out_height, out_width) = (geo.out_height, geo.out_width);
    let taps = geo.group_rows();
    let plane_rows = layout.rows * layout.row_len;
    let zero = simd.splat_f32s(0.0);
    for (block, block_weights) in packed.chunks_exact(taps * FILTERS).enumerate() {
        let first_filter = block * FILTERS;
        let filters = FILTERS.min(geo.out_channels - first_filter);
        let mut initial = [zero; FILTERS];
        if let Some(bias) = bias {
            for (v, &b) in initial.iter_mut().zip(&bias[first_filter..]) {
                *v = simd.splat_f32s(b);
            }
        }
        for oh in 0..out_height {
            for start in (0..out_width).step_by(LANES) {
                let mut acc = initial;
                let mut tap_weights = block_weights.chunks_exact(FILTERS);
                for c in 0..geo.in_channels {
                    for ki in 0..kh {
                        let row = c * plane_rows + (oh + ki) * layout.row_len + start;
                        for kj in 0..kw {
                            let input = load::<S>(padded, row + kj);
                            let weights: &[f32; FILTERS] = tap_weights
                                .next()
                                .and_then(|w| w.try_into().ok())
                                .expect("one weight block per tap");
                            for (a, &w) in acc.iter_mut().zip(weights) {
                                *a = simd.mul_add_e_f32s(simd.splat_f32s(w), input, *a);
                            }
                        }
                    }
                }
                let valid = LANES.min(out_width - start);
                for (filter, &a) in acc.iter().enumerate().take(filters) {
                    // `max(v, 0)` as the ReLU activation op computes it, so both give the
                    // same bits.
                    let a = if relu { simd.max_f32s(a, zero) } else { a };
                    let at = ((first_filter + filter) * out_height + oh) * out_width + start;
                    simd.partial_store_f32s(&mut out[at..at + valid], a);
                }
            }
        }
    }
}

/// Writes the weight gradient of one image into `dw`, laid out `[taps, c_out]` as the im2col
/// path's per-image parts are: `dw[t][f]` is the sum over output positions of
/// `g[f][oh][ow] * x[c][oh + ki - pad_h][ow + kj - pad_w]` for tap `t = (c, ki, kj)`.
/// `scratch` has room for at least [`scratch_len`] values.
pub(super) fn weight_gradient(
    dw: &mut [f32],
    scratch: &mut [f32],
    image: &[f32],
    g: &[f32],
    geo: &ConvGeometry,
) {
    run_avx512(WeightGradient {
        dw,
        scratch,
        image,
        g,
        geo,
    });
}

/// The arguments of [`weight_gradient`], run by [`run_avx512`].
struct WeightGradient<'a> {
    dw: &'a mut [f32],
    scratch: &'a mut [f32],
    image: &'a [f32],
    g: &'a [f32],
    geo: &'a ConvGeometry,
}

impl pulp::WithSimd for WeightGradient<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let geo = self.geo;
        let layout = Layout::new(geo);
        let (padded, padded_grad) = self.scratch.split_at_mut(layout.padded_len(geo));
        let padded_grad = &mut padded_grad[..layout.grad_len(geo)];
        pad_image(padded, self.image, geo, &layout);
        pad_grad(padded_grad, self.g, geo, &layout);
        weight_gradient_image(simd, self.dw, padded, padded_grad, geo, &layout);
    }
}

/// Copies the output gradient `g: [c_out, h_out, w_out]` into `padded` with each row padded
/// by zeros to a whole number of vectors, and a plane of zeros after an odd number of them.
#[inline(always)]
fn pad_grad(padded: &mut [f32], g: &[f32], geo: &ConvGeometry, layout: &Layout) {
    let rows = geo.out_channels * geo.out_height;
    let (filled, extra) = padded.split_at_mut(rows * layout.out_row_len);
    for (padded_row, row) in filled
        .chunks_exact_mut(layout.out_row_len)
        .zip(g.chunks_exact(geo.out_width))
    {
        padded_row[..geo.out_width].copy_from_slice(row);
        padded_row[geo.out_width..].fill(0.0);
    }
    extra.fill(0.0);
}

/// Computes one image's weight gradient from the padded copies of its input and output
/// gradient; see [`weight_gradient`]. Each sum runs over the rows in order, a vector of
/// columns at a time, and the lanes of the vector are added at the end.
#[inline(always)]
fn weight_gradient_image<S: pulp::Simd>(
    simd: S,
    dw: &mut [f32],
    padded: &[f32],
    padded_grad: &[f32],
    geo: &ConvGeometry,
    layout: &Layout,
) {
    let (kh, kw) = geo.kernel;
    let taps = geo.group_rows();
    let plane_rows = layout.rows * layout.row_len;

    // The offset of each tap's first input value in the padded image. Taps past the last
    // repeat tap 0 and their sums are dropped.
    let mut offsets = [0usize; MAX_TAPS.next_multiple_of(TAPS)];
    for c in 0..geo.in_channels {
        for ki in 0..kh {
            for kj in 0..kw {
                offsets[(c * kh + ki) * kw + kj] = c * plane_rows + ki * layout.row_len + kj;
            }
        }
    }

    // Every vector read from the padded image starts at a tap's offset plus at most
    // `(h_out - 1) * row_len + out_row_len - LANES`, so it ends inside the image.
    let span = (geo.out_height - 1) * layout.row_len + layout.out_row_len;
    assert!(
        offsets.iter().all(|&offset| offset + span <= padded.len()),
        "the padded image holds every vector the taps read"
    );

    // Two filters share each input vector read.
    let out_plane = geo.out_height * layout.out_row_len;
    let chunks = layout.out_row_len / LANES;
    for (pair, grad_planes) in padded_grad.chunks_exact(2 * out_plane).enumerate() {
        let (first_grad, second_grad) = grad_planes.split_at(out_plane);
        let (first_rows, _) = S::as_simd_f32s(first_grad);
        let (second_rows, _) = S::as_simd_f32s(second_grad);
        for first_tap in (0..taps).step_by(TAPS) {
            let block: &[usize; TAPS] = offsets[first_tap..first_tap + TAPS]
                .try_into()
                .expect("a block of TAPS offsets");
            let mut first_acc = [simd.splat_f32s(0.0); TAPS];
            let mut second_acc = first_acc;
            for (vector, (&first, &second)) in first_rows.iter().zip(second_rows).enumerate() {
                let row = vector / chunks * layout.row_len + vector % chunks * LANES;
                for ((a, b), &offset) in first_acc.iter_mut().zip(&mut second_acc).zip(block) {
                    // SAFETY: `row + LANES <= span` and `offset + span <= padded.len()`
                    // (asserted above), so the `LANES` values read are inside `padded`.
                    // `S::f32s` is `LANES` `f32` values and may be read unaligned.
                    let input = unsafe {
                        padded
                            .as_ptr()
                            .add(offset + row)
                            .cast::<S::f32s>()
                            .read_unaligned()
                    };
                    *a = simd.mul_add_e_f32s(first, input, *a);
                    *b = simd.mul_add_e_f32s(second, input, *b);
                }
            }
            for filter in [2 * pair, 2 * pair + 1] {
                if filter >= geo.out_channels {
                    break;
                }
                let acc = if filter % 2 == 0 {
                    &first_acc
                } else {
                    &second_acc
                };
                for (tap, &a) in acc.iter().enumerate().take(taps - first_tap) {
                    dw[(first_tap + tap) * geo.out_channels + filter] = simd.reduce_sum_f32s(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Conv2dParams;
    use crate::rng::Rng;
    use crate::tensor::{Transpose, matmul_into};

    fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.uniform_range(-1.0, 1.0)).collect()
    }

    /// Geometries the direct loops take: one and two input channels, kernels from 1x1 to
    /// 5x5, with and without padding, and output widths of one and two vectors.
    fn geometries() -> Vec<ConvGeometry> {
        let mut found = Vec::new();
        for (c_in, c_out) in [(1, 6), (1, 9), (2, 3)] {
            for (kh, kw) in [(5, 5), (3, 3), (1, 1), (3, 5)] {
                for padding in [(0, 0), (2, 2), (1, 0)] {
                    for (h, w) in [(7, 16), (28, 28), (9, 30)] {
                        let params = Conv2dParams {
                            padding,
                            ..Conv2dParams::default()
                        };
                        if params.output_size((h, w), (kh, kw)).is_none() {
                            continue;
                        }
                        let geo =
                            ConvGeometry::new(&[2, c_in, h, w], &[c_out, c_in, kh, kw], params);
                        if applies(&geo) {
                            found.push(geo);
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn forward_matches_im2col() {
        let geometries = geometries();
        if !has_avx512() {
            // Without AVX-512 the direct loops are never used; the im2col tests cover
            // every convolution.
            assert!(geometries.is_empty());
            return;
        }
        assert!(
            geometries.len() > 10,
            "only {} geometries",
            geometries.len()
        );
        let mut rng = Rng::new(3);
        for geo in geometries {
            let x = random(&mut rng, geo.batch * geo.image_len());
            let weight = random(&mut rng, geo.weight_len());
            let bias = random(&mut rng, geo.out_channels);
            let mut packed = vec![0.0; packed_weights_len(&geo)];
            pack_weights(&mut packed, &weight, &geo);
            for (bias, relu) in [(None, false), (Some(&bias[..]), true)] {
                let mut out = vec![f32::NAN; geo.batch * geo.out_image_len()];
                let mut scratch = vec![f32::NAN; scratch_len(&geo)];
                forward(&mut out, &mut scratch, &x, &packed, bias, &geo, relu);

                let mut col = vec![0.0; geo.col_len()];
                for (image, out_image) in x
                    .chunks_exact(geo.image_len())
                    .zip(out.chunks_exact(geo.out_image_len()))
                {
                    let mut expected = vec![0.0; geo.out_image_len()];
                    super::super::conv_image(
                        &mut expected,
                        &mut col,
                        image,
                        &weight,
                        bias,
                        &geo,
                        relu,
                    );
                    for (i, (&got, &want)) in out_image.iter().zip(&expected).enumerate() {
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{geo:?}, relu {relu}: output {i} is {got}, im2col gives {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn weight_gradient_matches_im2col() {
        let mut rng = Rng::new(4);
        for geo in geometries() {
            let image = random(&mut rng, geo.image_len());
            let g = random(&mut rng, geo.out_image_len());
            let mut dw = vec![f32::NAN; geo.weight_len()];
            let mut scratch = vec![f32::NAN; scratch_len(&geo)];
            weight_gradient(&mut dw, &mut scratch, &image, &g, &geo);

            // The im2col path: dWᵀ = col · Gᵀ, laid out [taps, c_out] as the direct one is.
            let mut col = vec![0.0; geo.col_len()];
            super::super::im2col(&mut col, &image, &geo);
            let mut expected = vec![0.0; geo.weight_len()];
            matmul_into(
                &mut expected,
                &col,
                Transpose::No,
                &g,
                Transpose::Yes,
                geo.group_rows(),
                geo.out_plane(),
                geo.out_channels,
                false,
            );
            for (i, (&got, &want)) in dw.iter().zip(&expected).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{geo:?}: weight gradient {i} is {got}, im2col gives {want}"
                );
            }
        }
    }
}
