//! Convolution of a training pass over blocks of images: the im2col matrices of up to
//! [`IMAGES`] images sit side by side in one matrix, and each product covers the whole block.
//!
//! A layer such as the second one of LeNet-5 has 100 output positions per image, too few
//! for the matrix multiply to run near its peak. Side by side, 8 images give it 800.
//!
//! Only the training pass takes this path. Evaluation multiplies image by image, so that a
//! prediction does not depend on the other images of its batch.

use super::runs::copy_run;
use super::{ColLayout, ConvGeometry, col2im_add, im2col_into};
use crate::tensor::{Transpose, matmul_into};

/// Images per block.
pub(super) const IMAGES: usize = 8;

/// Returns true if the training pass of the convolution of `geo` runs block by block: one
/// group, and more than one image.
pub(super) fn applies(geo: &ConvGeometry) -> bool {
    geo.params.groups == 1 && geo.batch > 1
}

/// The layout of image `index` of a block of `images` images.
fn layout(geo: &ConvGeometry, images: usize, index: usize) -> ColLayout {
    let plane = geo.out_plane();
    ColLayout {
        row_stride: images * plane,
        offset: index * plane,
    }
}

/// Values of scratch space one block needs in [`forward_block`] and [`backward_block`].
pub(super) fn scratch_len(geo: &ConvGeometry) -> usize {
    IMAGES * (geo.out_image_len() + geo.col_len())
}

/// Writes the convolution of the images of `x` (one block) into `out`, followed by
/// `max(v, 0)` when `relu` is true, and keeps the block's im2col matrix in `cols`
/// (`c_in * kh * kw` rows of `images * h_out * w_out` values).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_block(
    out: &mut [f32],
    cols: &mut [f32],
    scratch: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    geo: &ConvGeometry,
    relu: bool,
) {
    let (plane, out_len) = (geo.out_plane(), geo.out_image_len());
    let images = out.len() / out_len;
    let width = images * plane;
    if geo.params.padding == (0, 0) && geo.params.stride == (1, 1) && geo.params.dilation == (1, 1)
    {
        im2col_block(cols, x, geo);
    } else {
        for (index, image) in x.chunks_exact(geo.image_len()).enumerate() {
            im2col_into(cols, layout(geo, images, index), image, geo);
        }
    }

    let products = &mut scratch[..geo.out_channels * width];
    if let Some(bias) = bias {
        for (row, &b) in products.chunks_exact_mut(width).zip(bias) {
            row.fill(b);
        }
    }
    matmul_into(
        products,
        weight,
        Transpose::No,
        cols,
        Transpose::No,
        geo.out_channels,
        geo.group_rows(),
        width,
        bias.is_some(),
    );

    for (index, out_image) in out.chunks_exact_mut(out_len).enumerate() {
        for (channel, row) in out_image
            .chunks_exact_mut(plane)
            .zip(products.chunks_exact(width))
        {
            let values = &row[index * plane..(index + 1) * plane];
            if relu {
                // The same expression as the ReLU activation op, so both give the same bits.
                for (d, &v) in channel.iter_mut().zip(values) {
                    *d = v.max(0.0);
                }
            } else {
                channel.copy_from_slice(values);
            }
        }
    }
}

/// Computes the gradients of one block of `images` images from their output gradient `g`
/// (`[images, c_out, h_out, w_out]`) and the im2col matrix `cols` that [`forward_block`]
/// kept. Writes the block's weight gradient into `dw`, transposed to `[c_in * kh * kw, c_out]`,
/// and adds each image's input gradient to `dx`.
pub(super) fn backward_block(
    g: &[f32],
    cols: &[f32],
    weight: &[f32],
    geo: &ConvGeometry,
    dw: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let (plane, out_len, rows) = (geo.out_plane(), geo.out_image_len(), geo.group_rows());
    let images = g.len() / out_len;
    let width = images * plane;
    let (block_grad, dcols) = scratch.split_at_mut(IMAGES * out_len);

    // The output gradient in the block's layout: `c_out` rows of `images * h_out * w_out`.
    let block_grad = &mut block_grad[..geo.out_channels * width];
    for (index, g_image) in g.chunks_exact(out_len).enumerate() {
        for (row, channel) in block_grad
            .chunks_exact_mut(width)
            .zip(g_image.chunks_exact(plane))
        {
            row[index * plane..(index + 1) * plane].copy_from_slice(channel);
        }
    }

    if let Some(dw) = dw {
        // dWᵀ = cols · Gᵀ, summed over the images of the block by the product itself.
        matmul_into(
            dw,
            cols,
            Transpose::No,
            block_grad,
            Transpose::Yes,
            rows,
            width,
            geo.out_channels,
            false,
        );
    }
    if let Some(dx) = dx {
        let dcols = &mut dcols[..rows * width];
        matmul_into(
            dcols,
            weight,
            Transpose::Yes,
            block_grad,
            Transpose::No,
            rows,
            geo.out_channels,
            width,
            false,
        );
        for (index, dx_image) in dx.chunks_exact_mut(geo.image_len()).enumerate() {
            col2im_add(dx_image, dcols, layout(geo, images, index), geo);
        }
    }
}

/// Writes the im2col matrix of a block of images without padding, stride 1 and dilation 1,
/// row by row, so that the writes run through the matrix from start to end.
fn im2col_block(cols: &mut [f32], x: &[f32], geo: &ConvGeometry) {
    pulp::Arch::new().dispatch(Im2colBlock { cols, x, geo });
}

/// The arguments of [`im2col_block`].
struct Im2colBlock<'a> {
    cols: &'a mut [f32],
    x: &'a [f32],
    geo: &'a ConvGeometry,
}

impl pulp::WithSimd for Im2colBlock<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Im2colBlock { cols, x, geo } = self;
        let (width, ow_len, plane_len) = (geo.width, geo.out_width, geo.height * geo.width);
        let image_len = geo.image_len();
        let images = x.len() / image_len.max(1);

        // Each run overwrites whatever the whole-vector copy of the one before wrote past
        // its end.
        let mut at = 0;
        for c in 0..geo.in_channels {
            for ki in 0..geo.kernel.0 {
                for kj in 0..geo.kernel.1 {
                    for image in 0..images {
                        let plane = image * image_len + c * plane_len;
                        for oh in 0..geo.out_height {
                            let from = plane + (oh + ki) * width + kj;
                            copy_run::<S>(cols, at, x, from, ow_len);
                            at += ow_len;
                        }
                    }
                }
            }
        }
    }
}
