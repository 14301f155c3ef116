//! Forward rules of 2-D convolution and pooling on NCHW tensors, and the per-image kernels
//! their backward rules share.
//!
//! Convolution is im2col followed by one matrix multiply per group, image by image. Each
//! image's result therefore does not depend on the other images of its batch.

mod batched;
mod direct;
#[cfg(target_arch = "x86_64")]
mod pool2x2;
mod runs;

use rayon::prelude::*;

use super::{Graph, Op, Shape, Var, take_from_pool};
use crate::tensor::{Transpose, is_single_threaded, matmul_into, single_threaded};

/// Stride, zero padding, dilation and groups of a 2-D convolution. Pairs are
/// `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between neighboring windows.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input.
    pub padding: (usize, usize),
    /// Spacing between kernel taps. A dilation of 1 is a dense kernel.
    pub dilation: (usize, usize),
    /// Number of groups: input channel group `g` is convolved only with the filters of
    /// output channel group `g`.
    pub groups: usize,
}

impl Default for Conv2dParams {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Returns the output `(height, width)` for an input of `input` and a kernel of `kernel`,
    /// or `None` if the dilated kernel is larger than the padded input or a stride or
    /// dilation is 0.
    pub fn output_size(
        &self,
        input: (usize, usize),
        kernel: (usize, usize),
    ) -> Option<(usize, usize)> {
        let height = output_len(
            input.0,
            kernel.0,
            self.stride.0,
            self.padding.0,
            self.dilation.0,
        )?;
        let width = output_len(
            input.1,
            kernel.1,
            self.stride.1,
            self.padding.1,
            self.dilation.1,
        )?;
        Some((height, width))
    }
}

/// Returns `(input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1`, or `None` if
/// the dilated kernel does not fit in the padded input or any factor is 0.
pub(crate) fn output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let span = dilation * (kernel - 1) + 1;
    let padded = input + 2 * padding;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

/// The sizes of one convolution, derived from the input and weight shapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub(crate) batch: usize,
    pub(crate) in_channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) out_channels: usize,
    pub(crate) kernel: (usize, usize),
    pub(crate) out_height: usize,
    pub(crate) out_width: usize,
    pub(crate) params: Conv2dParams,
}

impl ConvGeometry {
    /// Checks the shapes of a convolution and derives its sizes.
    ///
    /// # Panics
    ///
    /// Panics, naming both shapes, if `x` is not `[n, c_in, h, w]`, `weight` is not
    /// `[c_out, c_in / groups, kh, kw]`, the groups do not divide both channel counts, or the
    /// kernel does not fit in the padded input.
    pub(crate) fn new(x: &[usize], weight: &[usize], params: Conv2dParams) -> Self {
        assert!(
            x.len() == 4 && weight.len() == 4,
            "conv2d needs input [n, c_in, h, w] and weight [c_out, c_in / groups, kh, kw], \
             got {x:?} and {weight:?}"
        );
        let groups = params.groups;
        assert!(
            groups > 0 && x[1].is_multiple_of(groups) && weight[0].is_multiple_of(groups),
            "conv2d with {groups} groups needs both channel counts divisible by {groups}, \
             got input {x:?} and weight {weight:?}"
        );
        assert_eq!(
            weight[1],
            x[1] / groups,
            "conv2d weight {weight:?} does not fit input {x:?} with {groups} groups: \
             dimension 1 of the weight must be c_in / groups = {}",
            x[1] / groups
        );
        let kernel = (weight[2], weight[3]);
        let Some((out_height, out_width)) = params.output_size((x[2], x[3]), kernel) else {
            panic!(
                "conv2d kernel of weight {weight:?} with {params:?} does not fit input {x:?}. \
                 The dilated kernel must fit in the padded input, and strides and dilations \
                 must be at least 1"
            );
        };
        ConvGeometry {
            batch: x[0],
            in_channels: x[1],
            height: x[2],
            width: x[3],
            out_channels: weight[0],
            kernel,
            out_height,
            out_width,
            params,
        }
    }

    fn image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    fn out_plane(&self) -> usize {
        self.out_height * self.out_width
    }

    fn out_image_len(&self) -> usize {
        self.out_channels * self.out_plane()
    }

    /// Rows of one group's im2col matrix: `c_in / groups * kh * kw`.
    fn group_rows(&self) -> usize {
        self.in_channels / self.params.groups * self.kernel.0 * self.kernel.1
    }

    fn group_filters(&self) -> usize {
        self.out_channels / self.params.groups
    }

    /// Values of one image's im2col matrix, all groups: `c_in * kh * kw` rows of
    /// `h_out * w_out` columns.
    fn col_len(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1 * self.out_plane()
    }

    fn weight_len(&self) -> usize {
        self.out_channels * self.group_rows()
    }
}

/// The number of images processed at once: one per rayon thread, or 1 when the caller already
/// runs one task per thread inside [`single_threaded`].
fn parallel_images(batch: usize) -> usize {
    if is_single_threaded() {
        1
    } else {
        rayon::current_num_threads().clamp(1, batch.max(1))
    }
}

/// Returns the range of output positions `o` in `0..out_len` whose input position
/// `o * stride + offset` lies in `0..in_len`.
fn valid_range(out_len: usize, in_len: usize, stride: usize, offset: isize) -> (usize, usize) {
    let stride_i = stride as isize;
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset + stride_i - 1) / stride_i) as usize
    };
    let room = in_len as isize - offset;
    let hi = if room <= 0 {
        0
    } else {
        ((room + stride_i - 1) / stride_i) as usize
    };
    let hi = hi.min(out_len);
    (lo.min(hi), hi)
}

/// Writes the im2col matrix of one image into `col`: row `(c, ki, kj)` holds, for every output
/// position, the input value under kernel tap `(ki, kj)` of channel `c`, or 0 in the padding.
/// Every value of `col` is written.
fn im2col(col: &mut [f32], image: &[f32], geo: &ConvGeometry) {
    im2col_into(col, ColLayout::single(geo), image, geo);
}

/// The place of one image's im2col matrix in a buffer: row `r` starts at
/// `r * row_stride + offset`. Several images can share a matrix side by side, each with its
/// own offset.
#[derive(Debug, Clone, Copy)]
struct ColLayout {
    row_stride: usize,
    offset: usize,
}

impl ColLayout {
    /// Returns the layout of an im2col matrix of one image alone.
    fn single(geo: &ConvGeometry) -> Self {
        ColLayout {
            row_stride: geo.out_plane(),
            offset: 0,
        }
    }
}

/// Writes the im2col matrix of `image` into `col` at `layout`, as [`im2col`] does.
fn im2col_into(col: &mut [f32], layout: ColLayout, image: &[f32], geo: &ConvGeometry) {
    if geo.params.stride == (1, 1) && geo.params.dilation == (1, 1) {
        im2col_dense(col, layout, image, geo);
    } else {
        im2col_general(col, layout, image, geo);
    }
}

/// Writes the im2col matrix for stride 1 and dilation 1. A padded input is first copied into
/// a zeroed buffer, so that each output row of each im2col row is one contiguous run of it.
fn im2col_dense(col: &mut [f32], layout: ColLayout, image: &[f32], geo: &ConvGeometry) {
    let (pad_h, pad_w) = geo.params.padding;
    let (height, width) = (geo.height + 2 * pad_h, geo.width + 2 * pad_w);
    let padded_image;
    let source = if (pad_h, pad_w) == (0, 0) {
        image
    } else {
        let mut padded = vec![0.0; geo.in_channels * height * width];
        for (padded_plane, plane) in padded
            .chunks_exact_mut(height * width)
            .zip(image.chunks_exact(geo.height * geo.width))
        {
            for (padded_row, row) in padded_plane[pad_h * width..]
                .chunks_exact_mut(width)
                .zip(plane.chunks_exact(geo.width))
            {
                padded_row[pad_w..pad_w + geo.width].copy_from_slice(row);
            }
        }
        padded_image = padded;
        &padded_image[..]
    };
    pulp::Arch::new().dispatch(Im2colDense {
        col,
        layout,
        source,
        width,
        geo,
    });
}

/// The arguments of [`im2col_dense`] once the input is padded: `source` contains its planes,
/// `width` values per row.
struct Im2colDense<'a> {
    col: &'a mut [f32],
    layout: ColLayout,
    source: &'a [f32],
    width: usize,
    geo: &'a ConvGeometry,
}

impl pulp::WithSimd for Im2colDense<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Im2colDense {
            col,
            layout,
            source,
            width,
            geo,
        } = self;
        let ow_len = geo.out_width;
        let height = source.len() / (geo.in_channels * width).max(1);
        let plane_len = height * width;
        let mut row = 0;
        for c in 0..geo.in_channels {
            for ki in 0..geo.kernel.0 {
                for kj in 0..geo.kernel.1 {
                    // The runs of a row are copied in order, each one overwriting whatever
                    // the whole-vector copy of the one before wrote past its end. The last
                    // run of the row may not write past the row.
                    let start = row * layout.row_stride + layout.offset;
                    let dst = &mut col[..start + geo.out_plane()];
                    for oh in 0..geo.out_height {
                        let from = c * plane_len + (oh + ki) * width + kj;
                        runs::copy_run::<S>(dst, start + oh * ow_len, source, from, ow_len);
                    }
                    row += 1;
                }
            }
        }
    }
}

/// Writes the im2col matrix for any stride and dilation, clipping each row to the input.
fn im2col_general(col: &mut [f32], layout: ColLayout, image: &[f32], geo: &ConvGeometry) {
    let (h, w) = (geo.height, geo.width);
    let (oh_len, ow_len) = (geo.out_height, geo.out_width);
    let Conv2dParams {
        stride,
        padding,
        dilation,
        ..
    } = geo.params;
    let mut row = 0;
    for plane in image.chunks_exact(h * w) {
        for ki in 0..geo.kernel.0 {
            let row_offset = (ki * dilation.0) as isize - padding.0 as isize;
            let (oh_lo, oh_hi) = valid_range(oh_len, h, stride.0, row_offset);
            for kj in 0..geo.kernel.1 {
                let col_offset = (kj * dilation.1) as isize - padding.1 as isize;
                let (ow_lo, ow_hi) = valid_range(ow_len, w, stride.1, col_offset);
                let start = row * layout.row_stride + layout.offset;
                let dst = &mut col[start..start + geo.out_plane()];
                row += 1;
                dst[..oh_lo * ow_len].fill(0.0);
                dst[oh_hi * ow_len..].fill(0.0);
                for oh in oh_lo..oh_hi {
                    let ih = (oh * stride.0) as isize + row_offset;
                    let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                    let dst_row = &mut dst[oh * ow_len..(oh + 1) * ow_len];
                    dst_row[..ow_lo].fill(0.0);
                    dst_row[ow_hi..].fill(0.0);
                    let first = (ow_lo * stride.1) as isize + col_offset;
                    let first = first as usize;
                    if stride.1 == 1 {
                        dst_row[ow_lo..ow_hi].copy_from_slice(&src[first..first + ow_hi - ow_lo]);
                    } else {
                        for (d, ow) in dst_row[ow_lo..ow_hi].iter_mut().zip(ow_lo..) {
                            *d = src[first + (ow - ow_lo) * stride.1];
                        }
                    }
                }
            }
        }
    }
}

/// Adds each entry of the im2col-shaped gradient `col`, laid out as `layout` describes, to the
/// input position it was read from, the adjoint of [`im2col`]. Padding entries are dropped.
fn col2im_add(image: &mut [f32], col: &[f32], layout: ColLayout, geo: &ConvGeometry) {
    let params = geo.params;
    if params.stride == (1, 1) && params.dilation == (1, 1) && params.padding == (0, 0) {
        col2im_add_unpadded(image, col, layout, geo);
    } else {
        col2im_add_general(image, col, layout, geo);
    }
}

/// Adds the im2col-shaped gradient `col` into `image` as [`col2im_add`] does, for stride 1,
/// dilation 1 and no padding, where each output row of each im2col row came from one
/// contiguous run of the input.
fn col2im_add_unpadded(image: &mut [f32], col: &[f32], layout: ColLayout, geo: &ConvGeometry) {
    pulp::Arch::new().dispatch(Col2imUnpadded {
        image,
        col,
        layout,
        geo,
    });
}

/// The arguments of [`col2im_add_unpadded`].
struct Col2imUnpadded<'a> {
    image: &'a mut [f32],
    col: &'a [f32],
    layout: ColLayout,
    geo: &'a ConvGeometry,
}

impl pulp::WithSimd for Col2imUnpadded<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Col2imUnpadded {
            image,
            col,
            layout,
            geo,
        } = self;
        let lanes = S::F32_LANES;
        let (width, ow_len) = (geo.width, geo.out_width);
        let (kh, kw) = geo.kernel;
        let indices = runs::load::<S>(&runs::LANE_INDICES, 0);
        let zero = simd.splat_f32s(0.0);
        let mut sums = [0.0f32; runs::LANE_INDICES.len()];

        // Each vector of an input row gathers its sum from the runs of im2col rows that
        // cover it: lane `l` of the vector at column `x0` is input column `x0 + l`, which
        // run `(c, ki, kj)` of output row `oh = ih - ki` contains at position `x0 + l - kj`.
        // Reading the runs, not the image, keeps each load clear of the stores before it.
        for (c, plane) in image.chunks_exact_mut(geo.height * width).enumerate() {
            for ih in 0..geo.height {
                let rows = ih.saturating_sub(geo.out_height - 1)..(ih + 1).min(kh);
                for x0 in (0..width).step_by(lanes) {
                    let mut acc = zero;
                    for ki in rows.clone() {
                        let oh = ih - ki;
                        for kj in 0..kw {
                            let row = (c * kh + ki) * kw + kj;
                            let from = row * layout.row_stride + layout.offset + oh * ow_len;
                            // Lanes `kj - x0 .. kj - x0 + ow_len` lie inside the run.
                            let first = kj as f32 - x0 as f32;
                            let inside = simd.and_m32s(
                                simd.greater_than_or_equal_f32s(indices, simd.splat_f32s(first)),
                                simd.less_than_f32s(
                                    indices,
                                    simd.splat_f32s(first + ow_len as f32),
                                ),
                            );
                            let values = runs::load_shifted::<S>(col, from + x0, kj);
                            acc = simd.add_f32s(acc, simd.select_f32s(inside, values, zero));
                        }
                    }
                    let count = lanes.min(width - x0);
                    S::as_mut_simd_f32s(&mut sums[..lanes]).0[0] = acc;
                    for (d, &v) in plane[ih * width + x0..][..count].iter_mut().zip(&sums) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// Adds the im2col-shaped gradient `col` into `image` as [`col2im_add`] does, for any stride,
/// dilation and padding.
fn col2im_add_general(image: &mut [f32], col: &[f32], layout: ColLayout, geo: &ConvGeometry) {
    let (h, w) = (geo.height, geo.width);
    let (oh_len, ow_len) = (geo.out_height, geo.out_width);
    let Conv2dParams {
        stride,
        padding,
        dilation,
        ..
    } = geo.params;
    let mut row = 0;
    for plane in image.chunks_exact_mut(h * w) {
        for ki in 0..geo.kernel.0 {
            let row_offset = (ki * dilation.0) as isize - padding.0 as isize;
            let (oh_lo, oh_hi) = valid_range(oh_len, h, stride.0, row_offset);
            for kj in 0..geo.kernel.1 {
                let col_offset = (kj * dilation.1) as isize - padding.1 as isize;
                let (ow_lo, ow_hi) = valid_range(ow_len, w, stride.1, col_offset);
                let start = row * layout.row_stride + layout.offset;
                let src = &col[start..start + geo.out_plane()];
                row += 1;
                for oh in oh_lo..oh_hi {
                    let ih = ((oh * stride.0) as isize + row_offset) as usize;
                    let dst = &mut plane[ih * w..(ih + 1) * w];
                    let first = ((ow_lo * stride.1) as isize + col_offset) as usize;
                    let src_row = &src[oh * ow_len + ow_lo..oh * ow_len + ow_hi];
                    if stride.1 == 1 {
                        // Contiguous on both sides, so that the compiler may vectorize the adds.
                        let dst_row = &mut dst[first..first + src_row.len()];
                        for (d, &v) in dst_row.iter_mut().zip(src_row) {
                            *d += v;
                        }
                    } else {
                        for (index, &v) in src_row.iter().enumerate() {
                            dst[first + index * stride.1] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Writes the convolution of one image: `out = bias + W_g · col_g` for every group `g`,
/// followed by `max(out, 0)` when `relu` is true.
fn conv_image(
    out: &mut [f32],
    col: &mut [f32],
    image: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    geo: &ConvGeometry,
    relu: bool,
) {
    im2col(col, image, geo);
    let plane = geo.out_plane();
    if let Some(bias) = bias {
        for (channel, &b) in out.chunks_exact_mut(plane).zip(bias) {
            channel.fill(b);
        }
    }
    let (rows, filters) = (geo.group_rows(), geo.group_filters());
    for group in 0..geo.params.groups {
        matmul_into(
            &mut out[group * filters * plane..(group + 1) * filters * plane],
            &weight[group * filters * rows..(group + 1) * filters * rows],
            Transpose::No,
            &col[group * rows * plane..(group + 1) * rows * plane],
            Transpose::No,
            filters,
            rows,
            plane,
            bias.is_some(),
        );
    }
    if relu {
        // The same expression as the ReLU activation op, so both give the same bits.
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// Writes the convolution of every image of `x` into `out`, spread over the rayon threads
/// unless the caller is inside [`single_threaded`]. With `relu` true, every output value goes
/// through `max(v, 0)`.
///
/// Convolutions with small windows run through [`direct`], and `scratch` contains the packed
/// weights and one padded image per task. Otherwise, with `keep_cols` false, `scratch` holds
/// one im2col matrix per task, reused from image to image. With `keep_cols` true, it keeps
/// the im2col matrices of all images for the backward pass, block by block in image order
/// (see [`batched`]) when the convolution has one group, followed by one block's scratch per
/// task.
#[allow(clippy::too_many_arguments)]
fn conv_forward(
    out: &mut [f32],
    scratch: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    geo: &ConvGeometry,
    tasks: usize,
    keep_cols: bool,
    relu: bool,
) {
    let (image_len, out_len, col_len) = (geo.image_len(), geo.out_image_len(), geo.col_len());
    if out.is_empty() || image_len == 0 {
        // No output values, or an input with no values, so every window covers only padding
        // and the output is the bias alone.
        for (channel, index) in out.chunks_exact_mut(geo.out_plane().max(1)).zip(0..) {
            let value = bias.map_or(0.0, |b| b[index % geo.out_channels]);
            channel.fill(if relu { value.max(0.0) } else { value });
        }
        return;
    }
    let per_task = geo.batch.div_ceil(tasks);
    if direct::applies(geo) {
        let (packed, scratch) = scratch.split_at_mut(direct::packed_weights_len(geo));
        direct::pack_weights(packed, weight, geo);
        let packed = &*packed;
        let run = |(out_chunk, (x_chunk, scratch)): (&mut [f32], (&[f32], &mut [f32]))| {
            direct::forward(out_chunk, scratch, x_chunk, packed, bias, geo, relu);
        };
        if tasks > 1 {
            out.par_chunks_mut(per_task * out_len)
                .zip(
                    x.par_chunks(per_task * image_len)
                        .zip(scratch.par_chunks_mut(direct::scratch_len(geo))),
                )
                .for_each(run);
        } else {
            run((out, (x, scratch)));
        }
        return;
    }
    if keep_cols && batched::applies(geo) {
        let (cols, scratch) = scratch.split_at_mut(geo.batch * col_len);
        let per_task = geo.batch.div_ceil(batched::IMAGES).div_ceil(tasks) * batched::IMAGES;
        let run = |((out_chunk, x_chunk), (cols, scratch)): BlockTask<'_>| {
            single_threaded(|| {
                for ((out_block, x_block), cols_block) in out_chunk
                    .chunks_mut(batched::IMAGES * out_len)
                    .zip(x_chunk.chunks(batched::IMAGES * image_len))
                    .zip(cols.chunks_mut(batched::IMAGES * col_len))
                {
                    batched::forward_block(
                        out_block, cols_block, scratch, x_block, weight, bias, geo, relu,
                    );
                }
            })
        };
        if tasks > 1 {
            out.par_chunks_mut(per_task * out_len)
                .zip(x.par_chunks(per_task * image_len))
                .zip(
                    cols.par_chunks_mut(per_task * col_len)
                        .zip(scratch.par_chunks_mut(batched::scratch_len(geo))),
                )
                .for_each(run);
        } else {
            run(((out, x), (cols, scratch)));
        }
        return;
    }
    let task_scratch = if keep_cols {
        per_task * col_len
    } else {
        col_len
    };
    let run = |(out_chunk, (x_chunk, cols)): (&mut [f32], (&[f32], &mut [f32]))| {
        single_threaded(|| {
            for (index, (out_image, image)) in out_chunk
                .chunks_exact_mut(out_len)
                .zip(x_chunk.chunks_exact(image_len))
                .enumerate()
            {
                let col = if keep_cols {
                    &mut cols[index * col_len..(index + 1) * col_len]
                } else {
                    &mut cols[..col_len]
                };
                conv_image(out_image, col, image, weight, bias, geo, relu);
            }
        })
    };
    if tasks > 1 {
        out.par_chunks_mut(per_task * out_len)
            .zip(
                x.par_chunks(per_task * image_len)
                    .zip(scratch.par_chunks_mut(task_scratch)),
            )
            .for_each(run);
    } else {
        run((out, (x, scratch)));
    }
}

/// One task of the block-by-block forward pass: its output images and input images, then
/// its im2col matrices and its scratch.
type BlockTask<'a> = ((&'a mut [f32], &'a [f32]), (&'a mut [f32], &'a mut [f32]));

/// One task of the convolution backward pass: one image, or one block of images (see
/// [`batched`]) from image `first`.
struct ImageGrad<'a> {
    first: usize,
    col: &'a mut [f32],
    dw: Option<&'a mut [f32]>,
    dx: Option<&'a mut [f32]>,
}

/// Writes one image's weight gradient into `item.dw` (overwriting it), each group's block
/// transposed to `[c_in / groups * kh * kw, c_out / groups]`, and adds its input gradient to
/// `item.dx`. `kept_cols`, when not empty, contains the im2col matrices of all
/// images that the forward pass kept, so they need not be built again.
fn conv_image_backward(
    item: ImageGrad<'_>,
    g: &[f32],
    x: &[f32],
    w: &[f32],
    kept_cols: &[f32],
    geo: &ConvGeometry,
) {
    let plane = geo.out_plane();
    let (rows, filters) = (geo.group_rows(), geo.group_filters());
    let g_image = &g[item.first * geo.out_image_len()..(item.first + 1) * geo.out_image_len()];
    let col = item.col;
    let image = &x[item.first * geo.image_len()..(item.first + 1) * geo.image_len()];
    let mut dw = item.dw;
    if let Some(dw) = dw.as_deref_mut().filter(|_| direct::applies(geo)) {
        direct::weight_gradient(dw, col, image, g_image, geo);
    } else if let Some(dw) = dw {
        let image_cols = if kept_cols.is_empty() {
            im2col(col, image, geo);
            &*col
        } else {
            let col_len = geo.col_len();
            &kept_cols[item.first * col_len..(item.first + 1) * col_len]
        };
        // dW_gᵀ = col_g · G_gᵀ. With few filters, this orientation puts the long side in the
        // rows of `gemm`'s kernels and measured faster than `G_g · col_gᵀ` on LeNet-5 shapes.
        // The caller transposes the result.
        for group in 0..geo.params.groups {
            matmul_into(
                &mut dw[group * filters * rows..(group + 1) * filters * rows],
                &image_cols[group * rows * plane..(group + 1) * rows * plane],
                Transpose::No,
                &g_image[group * filters * plane..(group + 1) * filters * plane],
                Transpose::Yes,
                rows,
                plane,
                filters,
                false,
            );
        }
    }
    if let Some(dx) = item.dx {
        // dcol_g = W_gᵀ · G_g, written over the im2col matrix, which is no longer needed.
        for group in 0..geo.params.groups {
            matmul_into(
                &mut col[group * rows * plane..(group + 1) * rows * plane],
                &w[group * filters * rows..(group + 1) * filters * rows],
                Transpose::Yes,
                &g_image[group * filters * plane..(group + 1) * filters * plane],
                Transpose::No,
                rows,
                filters,
                plane,
                false,
            );
        }
        col2im_add(dx, col, ColLayout::single(geo), geo);
    }
}

/// A gradient buffer taken from the tape, with `true` if it already contains a contribution
/// that must be added to.
pub(super) type GradBuffer<'a> = Option<(&'a mut [f32], bool)>;

/// Computes the convolution gradients for the output gradient `g`: `dx` through col2im, `dw`
/// summed over the images in image order, and `db` summed over images and positions.
/// `kept_cols` is empty or contains every image's im2col matrix, as the forward pass of a
/// training pass keeps them. `relu_out`, for a convolution with a fused ReLU, is the
/// node's output: `g` then flows only where it is positive.
///
/// Images, or the blocks of images the forward pass kept (see [`batched`]), are processed in
/// waves of one per rayon thread (one per wave inside [`single_threaded`]). Each one's weight
/// gradient goes to its own buffer and the buffers are added in image order, so the result
/// does not depend on the number of threads.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_backward(
    geo: &ConvGeometry,
    g: &[f32],
    x: &[f32],
    w: &[f32],
    kept_cols: &[f32],
    relu_out: Option<&[f32]>,
    dx: GradBuffer<'_>,
    dw: GradBuffer<'_>,
    db: GradBuffer<'_>,
    pool: &mut Vec<Vec<f32>>,
) {
    // One pass over the output gradient applies the ReLU mask, if any, and sums each channel
    // of each image for the bias gradient.
    let mut masked = take_from_pool(pool, if relu_out.is_some() { g.len() } else { 0 });
    let sums_len = if db.is_some() || relu_out.is_some() {
        geo.batch * geo.out_channels
    } else {
        0
    };
    let mut channel_sums = take_from_pool(pool, sums_len);
    mask_and_sum_channels(
        &mut masked,
        &mut channel_sums,
        g,
        relu_out,
        geo.out_plane(),
        parallel_images(geo.batch),
    );
    let g = if relu_out.is_some() { &masked[..] } else { g };
    if let Some((db, accumulate)) = db {
        if !accumulate {
            db.fill(0.0);
        }
        // The sums are added in image order, so the result does not depend on the threads.
        for image_sums in channel_sums.chunks_exact(geo.out_channels.max(1)) {
            for (d, &sum) in db.iter_mut().zip(image_sums) {
                *d += sum;
            }
        }
    }
    if channel_sums.capacity() > 0 {
        pool.push(channel_sums);
    }

    let mut dx = dx.map(|(dx, accumulate)| {
        if !accumulate {
            dx.fill(0.0);
        }
        dx
    });
    let dw = dw.map(|(dw, accumulate)| {
        if !accumulate {
            dw.fill(0.0);
        }
        dw
    });
    let (col_len, weight_len, image_len) = (geo.col_len(), geo.weight_len(), geo.image_len());
    if (dx.is_none() && dw.is_none())
        || geo.batch == 0
        || image_len == 0
        || geo.out_image_len() == 0
    {
        // Nothing to compute, or every product is empty and the zero fills above are the
        // whole gradient.
        return;
    }

    // A training pass of a convolution that runs block by block kept the im2col matrices
    // of its blocks, and the backward pass goes block by block too.
    let blocks = batched::applies(geo) && !kept_cols.is_empty();
    let unit = if blocks { batched::IMAGES } else { 1 };
    let units = geo.batch.div_ceil(unit);
    let tasks = parallel_images(units);
    let task_scratch = if blocks {
        batched::scratch_len(geo)
    } else if direct::applies(geo) {
        col_len.max(direct::scratch_len(geo))
    } else {
        col_len
    };
    let mut scratch = take_from_pool(pool, tasks * task_scratch);
    let mut dw_parts = take_from_pool(pool, if dw.is_some() { tasks * weight_len } else { 0 });
    // The weight gradient is summed in the transposed layout of the per-image parts, so that
    // the sum reads them contiguously, and transposed back at the end. Each value is still
    // added in image order, so the bits are the same as summing into `dw` directly.
    let (rows, filters) = (geo.group_rows(), geo.group_filters());
    let mut dw_sum = take_from_pool(pool, if dw.is_some() { weight_len } else { 0 });
    if let Some(dw) = dw.as_deref() {
        transpose_groups(&mut dw_sum, dw, filters, rows);
    }
    let out_len = geo.out_image_len();
    for wave_start in (0..units).step_by(tasks) {
        let wave_end = (wave_start + tasks).min(units);
        let images = wave_start * unit..(wave_end * unit).min(geo.batch);
        let mut dx_units = dx.as_deref_mut().map(|d| {
            d[images.start * image_len..images.end * image_len].chunks_mut(unit * image_len)
        });
        let mut dw_slots = dw.is_some().then(|| dw_parts.chunks_exact_mut(weight_len));
        // NOTE: this allocates a list of at most one entry per thread per wave, but the
        // tensor buffers themselves come from the workspace pool.
        let items: Vec<ImageGrad<'_>> = (wave_start..wave_end)
            .zip(scratch.chunks_exact_mut(task_scratch))
            .map(|(index, col)| ImageGrad {
                first: index * unit,
                col,
                dw: dw_slots.as_mut().and_then(Iterator::next),
                dx: dx_units.as_mut().and_then(Iterator::next),
            })
            .collect();
        let work = |item: ImageGrad<'_>| {
            single_threaded(|| {
                if blocks {
                    let block = item.first..(item.first + unit).min(geo.batch);
                    batched::backward_block(
                        &g[block.start * out_len..block.end * out_len],
                        &kept_cols[block.start * col_len..block.end * col_len],
                        w,
                        geo,
                        item.dw,
                        item.dx,
                        item.col,
                    );
                } else {
                    conv_image_backward(item, g, x, w, kept_cols, geo);
                }
            })
        };
        if tasks > 1 {
            items.into_par_iter().for_each(work);
        } else {
            items.into_iter().for_each(work);
        }
        if dw.is_some() {
            for part in dw_parts
                .chunks_exact(weight_len)
                .take(wave_end - wave_start)
            {
                for (d, &v) in dw_sum.iter_mut().zip(part) {
                    *d += v;
                }
            }
        }
    }
    if let Some(dw) = dw {
        transpose_groups(dw, &dw_sum, rows, filters);
    }
    for buffer in [scratch, dw_parts, dw_sum, masked] {
        if buffer.capacity() > 0 {
            pool.push(buffer);
        }
    }
}

/// Writes into `dst` the transpose of each `[outer, inner]` block of `src`, as an
/// `[inner, outer]` block at the same place.
fn transpose_groups(dst: &mut [f32], src: &[f32], outer: usize, inner: usize) {
    let block = (outer * inner).max(1);
    for (dst_block, src_block) in dst.chunks_exact_mut(block).zip(src.chunks_exact(block)) {
        for (o, src_row) in src_block.chunks_exact(inner.max(1)).enumerate() {
            for (i, &v) in src_row.iter().enumerate() {
                dst_block[i * outer + o] = v;
            }
        }
    }
}

/// Writes into `sums` the sum of each `plane`-long channel of the output gradient `g`. With
/// `relu_out` (the output of a convolution with a fused ReLU), the gradient is first masked
/// to `g` where the output is positive and 0 elsewhere, written into `masked`, and summed
/// from there. The channels are split into `tasks` chunks on the rayon threads. Each value
/// depends only on its own channel, so the split does not change the result.
fn mask_and_sum_channels(
    masked: &mut [f32],
    sums: &mut [f32],
    g: &[f32],
    relu_out: Option<&[f32]>,
    plane: usize,
    tasks: usize,
) {
    if plane == 0 || sums.is_empty() {
        sums.fill(0.0);
        return;
    }
    let per_task = sums.len().div_ceil(tasks.max(1));
    let chunk = per_task * plane;
    match relu_out {
        Some(y) => {
            let work = |task: usize, sums: &mut [f32], masked: &mut [f32]| {
                let values = task * chunk..task * chunk + masked.len();
                let (g, y) = (&g[values.clone()], &y[values]);
                pulp::Arch::new().dispatch(MaskAndSum {
                    masked,
                    sums,
                    g,
                    y,
                    plane,
                });
            };
            if tasks > 1 {
                sums.par_chunks_mut(per_task)
                    .zip(masked.par_chunks_mut(chunk))
                    .enumerate()
                    .for_each(|(task, (sums, masked))| work(task, sums, masked));
            } else {
                work(0, sums, masked);
            }
        }
        None => {
            let work = |(sums, g): (&mut [f32], &[f32])| {
                pulp::Arch::new().dispatch(ChannelSums { sums, g, plane });
            };
            if tasks > 1 {
                sums.par_chunks_mut(per_task)
                    .zip(g.par_chunks(chunk))
                    .for_each(work);
            } else {
                work((sums, g));
            }
        }
    }
}

/// The arguments of one task of [`mask_and_sum_channels`] with a fused ReLU: `masked`, `g`
/// and `y` hold `sums.len()` channels of `plane` values.
struct MaskAndSum<'a> {
    masked: &'a mut [f32],
    sums: &'a mut [f32],
    g: &'a [f32],
    y: &'a [f32],
    plane: usize,
}

impl pulp::WithSimd for MaskAndSum<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let MaskAndSum {
            masked,
            sums,
            g,
            y,
            plane,
        } = self;
        let zero = simd.splat_f32s(0.0);
        for (((sum, masked), g), y) in sums
            .iter_mut()
            .zip(masked.chunks_exact_mut(plane))
            .zip(g.chunks_exact(plane))
            .zip(y.chunks_exact(plane))
        {
            // The same rule as the backward pass of the ReLU activation op: the gradient
            // passes where the output is positive.
            let (masked_head, masked_tail) = S::as_mut_simd_f32s(masked);
            let (g_head, g_tail) = S::as_simd_f32s(g);
            let (y_head, y_tail) = S::as_simd_f32s(y);
            for ((m, &gv), &yv) in masked_head.iter_mut().zip(g_head).zip(y_head) {
                *m = simd.select_f32s(simd.greater_than_f32s(yv, zero), gv, zero);
            }
            for ((m, &gv), &yv) in masked_tail.iter_mut().zip(g_tail).zip(y_tail) {
                *m = if yv > 0.0 { gv } else { 0.0 };
            }
            *sum = vector_sum(simd, masked);
        }
    }
}

/// The arguments of one task of [`mask_and_sum_channels`] without a ReLU: `g` holds
/// `sums.len()` channels of `plane` values.
struct ChannelSums<'a> {
    sums: &'a mut [f32],
    g: &'a [f32],
    plane: usize,
}

impl pulp::WithSimd for ChannelSums<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        for (sum, g) in self.sums.iter_mut().zip(self.g.chunks_exact(self.plane)) {
            *sum = vector_sum(simd, g);
        }
    }
}

/// Returns the sum of `values`: whole vectors added lane by lane, the lanes added together,
/// then the values past the last whole vector. The order depends only on the length and
/// the instruction set.
#[inline(always)]
fn vector_sum<S: pulp::Simd>(simd: S, values: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(values);
    let mut acc = simd.splat_f32s(0.0);
    for &v in head {
        acc = simd.add_f32s(acc, v);
    }
    let mut total = simd.reduce_sum_f32s(acc);
    for &v in tail {
        total += v;
    }
    total
}

/// The sizes of one pooling, derived from the input shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeometry {
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) kernel: (usize, usize),
    pub(crate) stride: (usize, usize),
    pub(crate) padding: (usize, usize),
    pub(crate) out_height: usize,
    pub(crate) out_width: usize,
}

impl PoolGeometry {
    /// Checks the arguments of a pooling of `x` and derives its sizes.
    ///
    /// # Panics
    ///
    /// Panics, naming the shape, if `x` is not `[n, c, h, w]` with `h, w > 0`, a kernel size
    /// or stride is 0, the padding exceeds half the kernel (PyTorch's rule, which keeps every
    /// window on at least one input value), or the kernel is larger than the padded input.
    pub(crate) fn new(
        op: &str,
        x: &[usize],
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Self {
        assert!(
            x.len() == 4 && x[2] > 0 && x[3] > 0,
            "{op} needs input [n, c, h, w] with h, w > 0, got {x:?}"
        );
        assert!(
            padding.0 <= kernel.0 / 2 && padding.1 <= kernel.1 / 2,
            "{op} padding {padding:?} must be at most half the kernel size {kernel:?}"
        );
        let out_height = output_len(x[2], kernel.0, stride.0, padding.0, 1);
        let out_width = output_len(x[3], kernel.1, stride.1, padding.1, 1);
        let (Some(out_height), Some(out_width)) = (out_height, out_width) else {
            panic!(
                "{op} with kernel {kernel:?}, stride {stride:?} and padding {padding:?} does \
                 not fit input {x:?}. The kernel must fit in the padded input, and the kernel \
                 sizes and strides must be at least 1"
            );
        };
        PoolGeometry {
            height: x[2],
            width: x[3],
            kernel,
            stride,
            padding,
            out_height,
            out_width,
        }
    }

    /// Returns the input rows and columns under the window at output position `(oh, ow)`,
    /// clipped to the input.
    fn window(&self, oh: usize, ow: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let clip = |out: usize, stride: usize, pad: usize, kernel: usize, len: usize| {
            let start = (out * stride) as isize - pad as isize;
            let end = (start + kernel as isize).min(len as isize);
            start.max(0) as usize..end as usize
        };
        (
            clip(
                oh,
                self.stride.0,
                self.padding.0,
                self.kernel.0,
                self.height,
            ),
            clip(ow, self.stride.1, self.padding.1, self.kernel.1, self.width),
        )
    }

    fn output_shape(&self, x: &[usize]) -> Shape {
        Shape::new(&[x[0], x[1], self.out_height, self.out_width])
    }
}

/// Max-pools one plane of width `width` with 2x2 windows and stride 2 into `out` and
/// `argmax` (`out_height x out_width`), with the same results as the general loop: the first
/// maximum in row-major window order wins a tie, and a NaN in a window is its maximum.
fn max_pool_2x2(
    plane: &[f32],
    out: &mut [f32],
    argmax: &mut [f32],
    width: usize,
    out_height: usize,
    out_width: usize,
) {
    for oh in 0..out_height {
        let top = &plane[2 * oh * width..(2 * oh + 1) * width];
        let bottom = &plane[(2 * oh + 1) * width..(2 * oh + 2) * width];
        let out_row = &mut out[oh * out_width..(oh + 1) * out_width];
        let index_row = &mut argmax[oh * out_width..(oh + 1) * out_width];
        let row_start = (2 * oh * width) as f32;
        let below = width as f32;
        // The window is read pairwise and every step is a select, not a branch, so that the
        // compiler may vectorize the loop. Offsets within the plane stay below 2^24 (checked
        // by the caller), so they are exact in `f32`.
        for (ow, (((best_out, index_out), top_pair), bottom_pair)) in out_row
            .iter_mut()
            .zip(index_row.iter_mut())
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
            .enumerate()
        {
            let mut best = top_pair[0];
            let mut offset = 0.0f32;
            for (v, v_offset) in [
                (top_pair[1], 1.0),
                (bottom_pair[0], below),
                (bottom_pair[1], below + 1.0),
            ] {
                let take = (v > best || v.is_nan()) && !best.is_nan();
                best = if take { v } else { best };
                offset = if take { v_offset } else { offset };
            }
            *best_out = best;
            *index_out = row_start + (2 * ow) as f32 + offset;
        }
    }
}

/// Max-pools the planes of `x` into `out` and `argmax`, plane by plane. See
/// [`Graph::max_pool2d`] for the rules.
fn max_pool_planes(x: &[f32], out: &mut [f32], argmax: &mut [f32], geo: &PoolGeometry) {
    let (plane_in, plane_out) = (geo.height * geo.width, geo.out_height * geo.out_width);
    // The clipped column ranges are the same for every row and plane, so they are
    // computed once.
    // The most common pooling, 2x2 windows with stride 2 and no padding, has its own loop.
    let pair_pool = geo.kernel == (2, 2) && geo.stride == (2, 2) && geo.padding == (0, 0);
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pool2x2::available().filter(|_| pair_pool) {
        pool2x2::forward(simd, x, out, argmax, geo);
        return;
    }
    let columns: Vec<std::ops::Range<usize>> =
        (0..geo.out_width).map(|ow| geo.window(0, ow).1).collect();
    for ((plane, out_plane), index_plane) in x
        .chunks_exact(plane_in)
        .zip(out.chunks_exact_mut(plane_out))
        .zip(argmax.chunks_exact_mut(plane_out))
    {
        if pair_pool {
            max_pool_2x2(
                plane,
                out_plane,
                index_plane,
                geo.width,
                geo.out_height,
                geo.out_width,
            );
            continue;
        }
        for oh in 0..geo.out_height {
            let rows = geo.window(oh, 0).0;
            let out_row = &mut out_plane[oh * geo.out_width..(oh + 1) * geo.out_width];
            let index_row = &mut index_plane[oh * geo.out_width..(oh + 1) * geo.out_width];
            for ((best_out, index_out), cols) in
                out_row.iter_mut().zip(index_row.iter_mut()).zip(&columns)
            {
                let mut best = f32::NEG_INFINITY;
                let mut best_index = rows.start * geo.width + cols.start;
                for ih in rows.clone() {
                    let line = &plane[ih * geo.width..(ih + 1) * geo.width];
                    for iw in cols.clone() {
                        let v = line[iw];
                        if (v > best || v.is_nan()) && !best.is_nan() {
                            best = v;
                            best_index = ih * geo.width + iw;
                        }
                    }
                }
                *best_out = best;
                *index_out = best_index as f32;
            }
        }
    }
}

/// The number of chunks of planes that pooling spreads over the rayon threads: 1 inside
/// [`single_threaded`], else one per thread but no more than `planes`.
fn parallel_planes(planes: usize) -> usize {
    if is_single_threaded() {
        1
    } else {
        rayon::current_num_threads().clamp(1, planes.max(1))
    }
}

/// Writes the max-pooling gradient `g` into `dx`, or adds it with `accumulate`: each output
/// gradient goes to the input position whose index within its plane is stored in `argmax`.
pub(super) fn max_pool2d_backward(
    dx: &mut [f32],
    accumulate: bool,
    g: &[f32],
    argmax: &[f32],
    geo: &PoolGeometry,
) {
    #[cfg(target_arch = "x86_64")]
    if !accumulate
        && geo.kernel == (2, 2)
        && geo.stride == (2, 2)
        && geo.padding == (0, 0)
        && let Some(simd) = pool2x2::available().filter(|_| pool2x2::tiles(geo))
    {
        pool2x2::backward_write(simd, dx, g, argmax, geo);
        return;
    }
    if !accumulate {
        dx.fill(0.0);
    }
    let (plane_in, plane_out) = (geo.height * geo.width, geo.out_height * geo.out_width);
    let run = |(dx, (g, argmax)): (&mut [f32], (&[f32], &[f32]))| {
        for ((dx_plane, g_plane), index_plane) in dx
            .chunks_exact_mut(plane_in)
            .zip(g.chunks_exact(plane_out))
            .zip(argmax.chunks_exact(plane_out))
        {
            for (&gv, &index) in g_plane.iter().zip(index_plane) {
                dx_plane[index as usize] += gv;
            }
        }
    };
    // Every plane is independent of the others, so any split gives the same result.
    let planes = dx.len() / plane_in.max(1);
    let tasks = parallel_planes(planes);
    let per_task = planes.div_ceil(tasks).max(1);
    if tasks > 1 {
        dx.par_chunks_mut(per_task * plane_in)
            .zip(
                g.par_chunks(per_task * plane_out)
                    .zip(argmax.par_chunks(per_task * plane_out)),
            )
            .for_each(run);
    } else {
        run((dx, (g, argmax)));
    }
}

/// Adds the average-pooling gradient `g` to `dx`: each output gradient, divided by the
/// kernel area, goes to every input position of its window.
pub(super) fn avg_pool2d_backward(dx: &mut [f32], g: &[f32], geo: &PoolGeometry) {
    let (plane_in, plane_out) = (geo.height * geo.width, geo.out_height * geo.out_width);
    let scale = 1.0 / (geo.kernel.0 * geo.kernel.1) as f32;
    for (dx_plane, g_plane) in dx.chunks_exact_mut(plane_in).zip(g.chunks_exact(plane_out)) {
        for oh in 0..geo.out_height {
            for ow in 0..geo.out_width {
                let share = g_plane[oh * geo.out_width + ow] * scale;
                let (rows, cols) = geo.window(oh, ow);
                for ih in rows {
                    for d in &mut dx_plane[ih * geo.width + cols.start..ih * geo.width + cols.end] {
                        *d += share;
                    }
                }
            }
        }
    }
}

impl Graph<'_> {
    /// Records a 2-D convolution (cross-correlation, as in PyTorch's `conv2d`) of
    /// `x: [n, c_in, h, w]` with `weight: [c_out, c_in / groups, kh, kw]` and an optional
    /// `bias: [c_out]`, giving `[n, c_out, h_out, w_out]` with
    /// `h_out = (h + 2 * padding - dilation * (kh - 1) - 1) / stride + 1`, and likewise `w_out`.
    ///
    /// Outside a training pass, each image is computed on its own (im2col and one matrix
    /// multiply per group, or direct loops for small windows), so its output is the same bit
    /// for bit whatever batch it is in. A training pass multiplies blocks of 8 images at once.
    /// Outside [`single_threaded`] the images are spread over the rayon threads.
    ///
    /// # Panics
    ///
    /// Panics, naming the shapes, if the shapes do not fit or `params` is invalid (a stride,
    /// dilation or group count of 0, groups that do not divide both channel counts, or a
    /// dilated kernel larger than the padded input).
    pub fn conv2d(&mut self, x: Var, weight: Var, bias: Option<Var>, params: Conv2dParams) -> Var {
        self.record_conv2d(x, weight, bias, params, false)
    }

    /// Records [`Graph::conv2d`] followed by a ReLU as one node, with the same values and
    /// gradients as `conv2d` then [`Graph::activation`] with [`Activation::Relu`]. The ReLU is
    /// applied to each image right after its matrix multiply, while the output is still in
    /// cache, and no separate activation node or buffer is recorded.
    ///
    /// # Panics
    ///
    /// Panics as [`Graph::conv2d`] does.
    ///
    /// [`Activation::Relu`]: super::Activation::Relu
    pub fn conv2d_relu(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        params: Conv2dParams,
    ) -> Var {
        self.record_conv2d(x, weight, bias, params, true)
    }

    fn record_conv2d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        params: Conv2dParams,
        relu: bool,
    ) -> Var {
        let geo = ConvGeometry::new(
            self.node(x).shape.dims(),
            self.node(weight).shape.dims(),
            params,
        );
        if let Some(bias) = bias {
            assert_eq!(
                self.node(bias).shape.dims(),
                &[geo.out_channels],
                "conv2d bias must have shape [{}] for weight {:?}",
                geo.out_channels,
                self.node(weight).shape.dims()
            );
        }
        let tasks = parallel_images(geo.batch);
        let needs_grad = self.node(x).needs_grad
            || self.node(weight).needs_grad
            || bias.is_some_and(|b| self.node(b).needs_grad);
        // A training pass keeps every image's im2col matrix for the weight gradient, so the
        // backward pass need not build them again.
        let direct = direct::applies(&geo);
        let keep_cols = self.training && self.node(weight).needs_grad && !direct;
        let scratch_len = if direct {
            direct::packed_weights_len(&geo) + tasks * direct::scratch_len(&geo)
        } else if keep_cols && batched::applies(&geo) {
            geo.batch * geo.col_len() + tasks * batched::scratch_len(&geo)
        } else if keep_cols {
            geo.batch * geo.col_len()
        } else {
            tasks * geo.col_len()
        };
        let mut out = self.ws.take_buffer(geo.batch * geo.out_image_len());
        let mut scratch = self.ws.take_buffer(scratch_len);
        conv_forward(
            &mut out,
            &mut scratch,
            self.value(x),
            self.value(weight),
            bias.map(|b| self.value(b)),
            &geo,
            tasks,
            keep_cols,
            relu,
        );
        let kept_cols = if keep_cols {
            // The block scratch after the im2col matrices is no longer needed.
            scratch.truncate(geo.batch * geo.col_len());
            scratch
        } else {
            if scratch.capacity() > 0 {
                self.ws.pool.push(scratch);
            }
            Vec::new()
        };
        let shape = Shape::new(&[geo.batch, geo.out_channels, geo.out_height, geo.out_width]);
        let var = self.push(
            Op::Conv2d {
                x,
                weight,
                bias,
                params,
                relu,
            },
            shape,
            out,
            needs_grad,
        );
        self.ws.nodes[var.0].aux = kept_cols;
        var
    }

    /// Records 2-D max pooling of `x: [n, c, h, w]` with PyTorch's semantics: the padding acts
    /// as negative infinity, ties go to the first maximum in row-major window order, and a NaN
    /// in a window is the result. Pairs are `(height, width)`, and the output is
    /// `[n, c, h_out, w_out]` with `h_out = (h + 2 * padding - kernel) / stride + 1`.
    ///
    /// # Panics
    ///
    /// Panics, naming the shape, if `x` is not 4-D with non-empty planes, a kernel size or
    /// stride is 0, the padding is more than half the kernel, the kernel is larger than the
    /// padded input, or a plane
    /// has more than 2^24 values (indices are kept as exact `f32`).
    pub fn max_pool2d(
        &mut self,
        x: Var,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Var {
        let dims = self.node(x).shape;
        let geo = PoolGeometry::new("max_pool2d", dims.dims(), kernel, stride, padding);
        assert!(
            geo.height * geo.width <= 1 << 24,
            "max_pool2d planes of {}x{} values are too large to index exactly",
            geo.height,
            geo.width
        );
        let shape = geo.output_shape(dims.dims());
        let mut out = self.ws.take_buffer(shape.numel());
        let mut argmax = self.ws.take_buffer(shape.numel());
        let planes = dims.dims()[0] * dims.dims()[1];
        let tasks = parallel_planes(planes);
        let (plane_in, plane_out) = (geo.height * geo.width, geo.out_height * geo.out_width);
        let per_task = planes.div_ceil(tasks).max(1);
        let run = |(x, (out, argmax)): (&[f32], (&mut [f32], &mut [f32]))| {
            max_pool_planes(x, out, argmax, &geo);
        };
        let x_value = self.value(x);
        if tasks > 1 {
            x_value
                .par_chunks(per_task * plane_in)
                .zip(
                    out.par_chunks_mut(per_task * plane_out)
                        .zip(argmax.par_chunks_mut(per_task * plane_out)),
                )
                .for_each(run);
        } else {
            run((x_value, (&mut out, &mut argmax)));
        }
        let needs_grad = self.node(x).needs_grad;
        let var = self.push(
            Op::MaxPool2d {
                x,
                kernel,
                stride,
                padding,
            },
            shape,
            out,
            needs_grad,
        );
        self.ws.nodes[var.0].aux = argmax;
        var
    }

    /// Records 2-D average pooling of `x: [n, c, h, w]`. As in PyTorch's default
    /// (`count_include_pad = true`), every window is divided by the full kernel area, padding
    /// included. Pairs are `(height, width)`, and the output is `[n, c, h_out, w_out]` with
    /// `h_out = (h + 2 * padding - kernel) / stride + 1`.
    ///
    /// # Panics
    ///
    /// Panics, naming the shape, if `x` is not 4-D with non-empty planes, a kernel size or
    /// stride is 0, the padding is more than half the kernel, or the kernel is larger than the
    /// padded input.
    pub fn avg_pool2d(
        &mut self,
        x: Var,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Var {
        let dims = self.node(x).shape;
        let geo = PoolGeometry::new("avg_pool2d", dims.dims(), kernel, stride, padding);
        let shape = geo.output_shape(dims.dims());
        let mut out = self.ws.take_buffer(shape.numel());
        let scale = 1.0 / (kernel.0 * kernel.1) as f32;
        let (plane_in, plane_out) = (geo.height * geo.width, geo.out_height * geo.out_width);
        for (plane, out_plane) in self
            .value(x)
            .chunks_exact(plane_in)
            .zip(out.chunks_exact_mut(plane_out))
        {
            for oh in 0..geo.out_height {
                for ow in 0..geo.out_width {
                    let (rows, cols) = geo.window(oh, ow);
                    let mut sum = 0.0;
                    for ih in rows {
                        sum += plane[ih * geo.width + cols.start..ih * geo.width + cols.end]
                            .iter()
                            .sum::<f32>();
                    }
                    out_plane[oh * geo.out_width + ow] = sum * scale;
                }
            }
        }
        let needs_grad = self.node(x).needs_grad;
        self.push(
            Op::AvgPool2d {
                x,
                kernel,
                stride,
                padding,
            },
            shape,
            out,
            needs_grad,
        )
    }

    /// Records the mean of each channel of `x: [n, c, h, w]` over its `h * w` positions,
    /// giving `[n, c]`.
    ///
    /// # Panics
    ///
    /// Panics if `x` is not 4-D or its planes are empty.
    pub fn global_avg_pool2d(&mut self, x: Var) -> Var {
        let dims = self.node(x).shape;
        assert!(
            dims.rank == 4 && dims.dims[2] * dims.dims[3] > 0,
            "global_avg_pool2d needs input [n, c, h, w] with h, w > 0, got {:?}",
            dims.dims()
        );
        let plane = dims.dims[2] * dims.dims[3];
        let shape = Shape::new(&[dims.dims[0], dims.dims[1]]);
        let mut out = self.ws.take_buffer(shape.numel());
        let scale = 1.0 / plane as f32;
        for (o, channel) in out.iter_mut().zip(self.value(x).chunks_exact(plane)) {
            *o = channel.iter().sum::<f32>() * scale;
        }
        let needs_grad = self.node(x).needs_grad;
        self.push(Op::GlobalAvgPool2d(x), shape, out, needs_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for out_len in 0..6 {
            for in_len in 0..6 {
                for stride in 1..4 {
                    for offset in -4isize..4 {
                        let inside: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = (o * stride) as isize + offset;
                                (0..in_len as isize).contains(&i)
                            })
                            .collect();
                        let (lo, hi) = valid_range(out_len, in_len, stride, offset);
                        assert_eq!(
                            (lo..hi).collect::<Vec<_>>(),
                            inside,
                            "out {out_len}, in {in_len}, stride {stride}, offset {offset}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn im2col_dense_matches_general() {
        for (channels, size, kernel, padding) in [
            (1, (5, 5), (3, 3), (0, 0)),
            (2, (6, 4), (3, 2), (1, 0)),
            (1, (7, 9), (5, 5), (2, 2)),
            (3, (4, 5), (2, 3), (1, 2)),
            (1, (3, 3), (3, 3), (0, 0)),
        ] {
            let params = Conv2dParams {
                padding,
                ..Conv2dParams::default()
            };
            let weight = [4, channels, kernel.0, kernel.1];
            let geo = ConvGeometry::new(&[1, channels, size.0, size.1], &weight, params);
            let image: Vec<f32> = (0..geo.image_len()).map(|v| v as f32 + 1.0).collect();
            let plane = geo.out_plane();
            let rows = geo.col_len() / plane;
            let mut single = vec![-7.0; geo.col_len()];
            im2col_general(&mut single, ColLayout::single(&geo), &image, &geo);

            // Alone, and as the middle image of three sharing one matrix.
            let shared = ColLayout {
                row_stride: 3 * plane,
                offset: plane,
            };
            for layout in [ColLayout::single(&geo), shared] {
                let len = rows * layout.row_stride;
                let mut dense = vec![-7.0; len];
                let mut general = vec![-7.0; len];
                im2col_dense(&mut dense, layout, &image, &geo);
                im2col_general(&mut general, layout, &image, &geo);
                let case = format!("{channels} channels, {size:?}, {kernel:?}, {padding:?}");
                assert_eq!(dense, general, "{case}, {layout:?}");
                for (row, expected) in single.chunks_exact(plane).enumerate() {
                    let start = row * layout.row_stride + layout.offset;
                    assert_eq!(&dense[start..start + plane], expected, "{case}, row {row}");
                }
                let written = dense.iter().filter(|&&v| v != -7.0).count();
                let expected = single.iter().filter(|&&v| v != -7.0).count();
                assert_eq!(
                    written, expected,
                    "{case}: values written outside the image"
                );
            }
        }
    }

    #[test]
    fn col2im_unpadded_matches_general() {
        for (channels, size, kernel) in [
            (1, (5, 5), (3, 3)),
            (2, (6, 4), (3, 2)),
            (3, (4, 7), (1, 5)),
            (1, (3, 3), (3, 3)),
        ] {
            let weight = [4, channels, kernel.0, kernel.1];
            let params = Conv2dParams::default();
            let geo = ConvGeometry::new(&[1, channels, size.0, size.1], &weight, params);
            let plane = geo.out_plane();
            let start: Vec<f32> = (0..geo.image_len()).map(|v| v as f32 * 0.5).collect();

            // Alone, and as the last image of two sharing one matrix.
            let shared = ColLayout {
                row_stride: 2 * plane,
                offset: plane,
            };
            for layout in [ColLayout::single(&geo), shared] {
                let len = geo.col_len() / plane * layout.row_stride;
                let col: Vec<f32> = (0..len).map(|v| (v % 13) as f32 - 6.0).collect();
                let (mut unpadded, mut general) = (start.clone(), start.clone());
                col2im_add_unpadded(&mut unpadded, &col, layout, &geo);
                col2im_add_general(&mut general, &col, layout, &geo);
                assert_eq!(
                    unpadded, general,
                    "{channels} channels, {size:?}, {kernel:?}, {layout:?}"
                );
            }
        }
    }

    #[test]
    fn max_pool_2x2_matches_brute_force() {
        // Few distinct values force ties, and a NaN appears in some windows.
        let (height, width) = (6, 7);
        let plane: Vec<f32> = (0..height * width)
            .map(|i| match (i * 7) % 11 {
                0 => f32::NAN,
                v => (v % 3) as f32,
            })
            .collect();
        let (out_height, out_width) = (height / 2, width / 2);
        let mut out = vec![0.0; out_height * out_width];
        let mut argmax = vec![0.0; out_height * out_width];
        max_pool_2x2(&plane, &mut out, &mut argmax, width, out_height, out_width);
        for oh in 0..out_height {
            for ow in 0..out_width {
                let mut best = f32::NEG_INFINITY;
                let mut best_index = 0;
                for index in [
                    2 * oh * width + 2 * ow,
                    2 * oh * width + 2 * ow + 1,
                    (2 * oh + 1) * width + 2 * ow,
                    (2 * oh + 1) * width + 2 * ow + 1,
                ] {
                    let v = plane[index];
                    if (v > best || v.is_nan()) && !best.is_nan() {
                        best = v;
                        best_index = index;
                    }
                }
                let at = oh * out_width + ow;
                assert_eq!(out[at].to_bits(), best.to_bits(), "value at ({oh}, {ow})");
                assert_eq!(argmax[at], best_index as f32, "index at ({oh}, {ow})");
            }
        }
    }

    #[test]
    fn output_len_follows_pytorch_formula() {
        assert_eq!(output_len(28, 5, 1, 2, 1), Some(28));
        assert_eq!(output_len(7, 3, 2, 1, 2), Some(3));
        assert_eq!(output_len(4, 5, 1, 0, 1), None);
        assert_eq!(output_len(4, 3, 0, 0, 1), None);
    }
}
