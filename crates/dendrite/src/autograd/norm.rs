//! Batch normalization over the channels of `[n, c]` and `[n, c, h, w]` values.
//!
//! The forward pass follows PyTorch's `BatchNorm1d` and `BatchNorm2d`: a training pass
//! normalizes each channel with the mean and biased variance of its `n * h * w` values, and an
//! evaluation pass uses the running statistics it is given. A training pass also records each
//! channel's batch mean and biased variance in the workspace, so that the caller can update the
//! running statistics after the step (see [`BatchStatistics`]).

use super::{Graph, Op, Var, Workspace};

/// The running statistics and settings of one batch normalization.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormState<'a> {
    /// The running mean of each channel, used by evaluation passes.
    pub running_mean: &'a [f32],
    /// The running variance of each channel, used by evaluation passes.
    pub running_var: &'a [f32],
    /// The value added to the variance before its square root, 1e-5 in PyTorch.
    pub epsilon: f32,
    /// The key under which a training pass records its [`BatchStatistics`];
    /// [`crate::nn::Sequential`] uses the layer index.
    pub key: usize,
}

/// The statistics of one batch normalization in one training pass, per channel.
#[derive(Debug)]
pub struct BatchStatistics {
    key: usize,
    count: usize,
    mean: Vec<f32>,
    variance: Vec<f32>,
}

impl BatchStatistics {
    /// The key given in [`BatchNormState::key`].
    pub fn key(&self) -> usize {
        self.key
    }

    /// The number of values each channel's statistics cover: `n` for `[n, c]` input and
    /// `n * h * w` for `[n, c, h, w]`.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The batch mean of each channel.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The biased batch variance of each channel (the sum of squared deviations divided by
    /// [`BatchStatistics::count`]), as used for normalization.
    pub fn variance(&self) -> &[f32] {
        &self.variance
    }
}

impl Workspace {
    /// The batch statistics recorded by the batch normalizations of the last training pass,
    /// in recording order. Evaluation passes record none.
    pub fn batch_statistics(&self) -> &[BatchStatistics] {
        &self.batch_stats
    }

    /// Returns the buffers of the recorded batch statistics to the pool.
    pub(super) fn recycle_batch_statistics(&mut self) {
        for stats in self.batch_stats.drain(..) {
            for buffer in [stats.mean, stats.variance] {
                if buffer.capacity() > 0 {
                    self.pool.push(buffer);
                }
            }
        }
    }

    /// The capacity, in values, of the recorded batch statistics.
    pub(super) fn batch_statistics_capacity(&self) -> usize {
        self.batch_stats
            .iter()
            .map(|s| s.mean.capacity() + s.variance.capacity())
            .sum()
    }
}

impl Graph<'_> {
    /// Records batch normalization of `x: [n, c]` with `weight: [c]` (gamma) and
    /// `bias: [c]` (beta), giving `[n, c]`. See [`Graph::batch_norm2d`] for the rule.
    ///
    /// # Panics
    ///
    /// Panics if `x` is not 2-D or `weight`, `bias` or the running statistics do not have
    /// `c` values.
    pub fn batch_norm1d(&mut self, x: Var, weight: Var, bias: Var, state: BatchNormState) -> Var {
        let rank = self.node(x).shape.rank;
        assert!(
            rank == 2,
            "batch_norm1d needs input [n, c], got {:?}",
            self.node(x).shape.dims()
        );
        self.batch_norm(x, weight, bias, state)
    }

    /// Records batch normalization of `x: [n, c, h, w]` with `weight: [c]` (gamma) and
    /// `bias: [c]` (beta), giving `[n, c, h, w]`:
    /// `y = gamma * (x - mean) / sqrt(var + epsilon) + beta` per channel.
    ///
    /// In a training pass, `mean` and `var` are the mean and biased variance of the channel's
    /// `n * h * w` values, and they are recorded in the workspace as [`BatchStatistics`]. With
    /// one value per channel the output is `beta`. In an evaluation pass they are
    /// `state.running_mean` and `state.running_var`, so each image's output does not depend on
    /// the rest of its batch.
    ///
    /// # Panics
    ///
    /// Panics if `x` is not 4-D or `weight`, `bias` or the running statistics do not have
    /// `c` values.
    pub fn batch_norm2d(&mut self, x: Var, weight: Var, bias: Var, state: BatchNormState) -> Var {
        let rank = self.node(x).shape.rank;
        assert!(
            rank == 4,
            "batch_norm2d needs input [n, c, h, w], got {:?}",
            self.node(x).shape.dims()
        );
        self.batch_norm(x, weight, bias, state)
    }

    /// Batch normalization over dimension 1 of `x`, with every dimension after it spatial.
    fn batch_norm(&mut self, x: Var, weight: Var, bias: Var, state: BatchNormState) -> Var {
        let shape = self.node(x).shape;
        let dims = shape.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let plane: usize = dims[2..].iter().product();
        for (name, len) in [
            ("weight", self.node(weight).shape.numel()),
            ("bias", self.node(bias).shape.numel()),
            ("running_mean", state.running_mean.len()),
            ("running_var", state.running_var.len()),
        ] {
            assert_eq!(
                len, channels,
                "batch norm {name} must have {channels} values for input {dims:?}, got {len}"
            );
        }

        // The auxiliary buffer keeps the normalized input, then `1 / sqrt(var + epsilon)` of
        // each channel, for the backward rule.
        let numel = shape.numel();
        let mut aux = self.ws.take_buffer(numel + channels);
        let mut mean = self.ws.take_buffer(channels);
        let mut variance = self.ws.take_buffer(channels);
        if self.training {
            channel_statistics(
                self.value(x),
                batch,
                channels,
                plane,
                &mut mean,
                &mut variance,
            );
        } else {
            mean.copy_from_slice(state.running_mean);
            variance.copy_from_slice(state.running_var);
        }
        let (normalized, inv_std) = aux.split_at_mut(numel);
        for (s, &v) in inv_std.iter_mut().zip(&variance) {
            *s = 1.0 / (v + state.epsilon).sqrt();
        }

        let mut out = self.ws.take_buffer(numel);
        let (gamma, beta, input) = (self.value(weight), self.value(bias), self.value(x));
        for image in 0..batch {
            for c in 0..channels {
                let start = (image * channels + c) * plane;
                let range = start..start + plane;
                for ((o, n), &v) in out[range.clone()]
                    .iter_mut()
                    .zip(&mut normalized[range.clone()])
                    .zip(&input[range])
                {
                    *n = (v - mean[c]) * inv_std[c];
                    *o = gamma[c] * *n + beta[c];
                }
            }
        }

        let training = self.training;
        if training {
            self.ws.batch_stats.push(BatchStatistics {
                key: state.key,
                count: batch * plane,
                mean,
                variance,
            });
        } else {
            self.ws.pool.push(mean);
            self.ws.pool.push(variance);
        }
        let needs_grad =
            self.node(x).needs_grad || self.node(weight).needs_grad || self.node(bias).needs_grad;
        let var = self.push(
            Op::BatchNorm {
                x,
                weight,
                bias,
                training,
            },
            shape,
            out,
            needs_grad,
        );
        self.ws.nodes[var.0].aux = aux;
        var
    }
}

/// Writes the mean and biased variance of each channel of `x: [batch, channels, plane]`,
/// summed in `f64` and in two passes so that a large mean does not swamp the variance.
fn channel_statistics(
    x: &[f32],
    batch: usize,
    channels: usize,
    plane: usize,
    mean: &mut [f32],
    variance: &mut [f32],
) {
    let count = (batch * plane).max(1) as f64;
    for c in 0..channels {
        let values = || {
            (0..batch).flat_map(move |image| {
                let start = (image * channels + c) * plane;
                x[start..start + plane].iter().map(|&v| v as f64)
            })
        };
        let m = values().sum::<f64>() / count;
        let squares: f64 = values().map(|v| (v - m) * (v - m)).sum();
        mean[c] = m as f32;
        variance[c] = (squares / count) as f32;
    }
}

/// Applies the backward rule of batch normalization: `g` is the output gradient, `aux` the
/// node's auxiliary buffer, `gamma` the weight and `plane` the number of values per channel
/// and image. Each gradient is `(buffer, accumulate)` as [`super::backward`] hands it out.
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_norm_backward(
    g: &[f32],
    aux: &[f32],
    gamma: &[f32],
    dims: (usize, usize, usize),
    training: bool,
    dx: Option<(&mut [f32], bool)>,
    dgamma: Option<(&mut [f32], bool)>,
    dbeta: Option<(&mut [f32], bool)>,
) {
    let (batch, channels, plane) = dims;
    let numel = batch * channels * plane;
    let (normalized, inv_std) = aux.split_at(numel);
    let channel_values = |c: usize| {
        (0..batch).flat_map(move |image| {
            let start = (image * channels + c) * plane;
            start..start + plane
        })
    };

    // Per channel: sum of g and sum of g * x_hat, the gradients of beta and gamma.
    let mut sums = Vec::with_capacity(channels);
    for c in 0..channels {
        let (mut sum_g, mut sum_g_hat) = (0.0f64, 0.0f64);
        for i in channel_values(c) {
            sum_g += g[i] as f64;
            sum_g_hat += (g[i] * normalized[i]) as f64;
        }
        sums.push((sum_g as f32, sum_g_hat as f32));
    }
    if let Some((dbeta, accumulate)) = dbeta {
        for (d, &(sum_g, _)) in dbeta.iter_mut().zip(&sums) {
            *d = if accumulate { *d + sum_g } else { sum_g };
        }
    }
    if let Some((dgamma, accumulate)) = dgamma {
        for (d, &(_, sum_g_hat)) in dgamma.iter_mut().zip(&sums) {
            *d = if accumulate {
                *d + sum_g_hat
            } else {
                sum_g_hat
            };
        }
    }

    let Some((dx, accumulate)) = dx else {
        return;
    };
    let count = (batch * plane).max(1) as f32;
    for (c, &(sum_g, sum_g_hat)) in sums.iter().enumerate() {
        let scale = gamma[c] * inv_std[c];
        for i in channel_values(c) {
            // In training the mean and variance depend on x, which gives
            // dx = gamma * inv_std * (g - mean(g) - x_hat * mean(g * x_hat)).
            // In evaluation they are constants, so dx = gamma * inv_std * g.
            let d = if training {
                scale * (g[i] - sum_g / count - normalized[i] * sum_g_hat / count)
            } else {
                scale * g[i]
            };
            dx[i] = if accumulate { dx[i] + d } else { d };
        }
    }
}
