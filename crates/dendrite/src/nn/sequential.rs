//! A stack of layers applied in order.

use serde::{Deserialize, Serialize};

use crate::autograd::{
    Activation, BatchNormState, BatchStatistics, Conv2dParams, Graph, ParamId, Parameters,
    RecurrentCell, Var, Workspace,
};

mod sequence;
use crate::error::{Error, Result};
use crate::nn::Init;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// One layer as written in a config or in `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// A fully connected layer, `y = x · weightᵀ + bias` with `weight: [units, inputs]`,
    /// optionally followed by an activation. Input of rank > 1 (besides the batch) is
    /// flattened first, so `[batch, 28, 28]` becomes `[batch, 784]`.
    Dense {
        units: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activation: Option<Activation>,
        #[serde(default)]
        init: Init,
        #[serde(default = "default_bias")]
        bias: bool,
    },
    /// An activation on its own.
    Activation { activation: Activation },
    /// Flattens everything after the batch dimension.
    Flatten,
    /// Inverted dropout: in training, zeroes each value with probability `rate` and scales
    /// the others by `1 / (1 - rate)`; in evaluation, passes values through unchanged.
    Dropout { rate: f32 },
    /// A 2-D convolution over `[channels, height, width]` input (a `[height, width]` input is
    /// one channel), giving `[filters, h_out, w_out]` with
    /// `h_out = (h + 2 * padding - dilation * (kernel_size - 1) - 1) / stride + 1`, optionally
    /// followed by an activation. The weight is `[filters, channels / groups, kernel_size,
    /// kernel_size]`.
    Conv2d {
        filters: usize,
        kernel_size: usize,
        #[serde(default = "default_one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "default_one")]
        dilation: usize,
        #[serde(default = "default_one")]
        groups: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activation: Option<Activation>,
        #[serde(default)]
        init: Init,
        #[serde(default = "default_bias")]
        bias: bool,
    },
    /// 2-D max pooling over square windows. `stride` defaults to `kernel_size`. Padding acts
    /// as negative infinity and may be at most half the kernel size.
    MaxPool2d {
        kernel_size: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
        #[serde(default)]
        padding: usize,
    },
    /// 2-D average pooling over square windows. `stride` defaults to `kernel_size`. Every
    /// window is divided by the full kernel area, padding included, as in PyTorch's default.
    AvgPool2d {
        kernel_size: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
        #[serde(default)]
        padding: usize,
    },
    /// The mean of each channel over its positions: `[channels, height, width]` becomes
    /// `[channels]`.
    GlobalAvgPool2d,
    /// Batch normalization of `[channels]` input, as PyTorch's `BatchNorm1d`. See
    /// [`LayerSpec::BatchNorm2d`] for the rule.
    BatchNorm1d {
        #[serde(default = "default_momentum")]
        momentum: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
    },
    /// Batch normalization of `[channels, height, width]` input (a `[height, width]` input is
    /// one channel and gives `[1, height, width]`), as PyTorch's `BatchNorm2d`:
    /// `y = weight * (x - mean) / sqrt(var + epsilon) + bias` per channel, with `weight`
    /// starting at 1 and `bias` at 0. Training uses the batch mean and biased variance over
    /// the batch and positions, then moves the buffers `running_mean` and `running_var` (from
    /// 0 and 1) towards the batch mean and unbiased variance:
    /// `running = (1 - momentum) * running + momentum * batch`. Evaluation uses the running
    /// statistics.
    BatchNorm2d {
        #[serde(default = "default_momentum")]
        momentum: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
    },
    /// An Elman RNN with tanh over `[time, features]` input, giving `[units]` (the last hidden state) or,
    /// with `return_sequences`, `[time, units]`. `num_layers` layers are stacked, each but the
    /// last returning its whole sequence to the next. See [`crate::autograd::Graph::recurrent`]
    /// for the equations. Layer `k` (from 0) has `weight_ih_l{k}: [gates * units, inputs]`
    /// drawn from `init`, `weight_hh_l{k}: [gates * units, units]` drawn from
    /// `recurrent_init`, and zero biases `bias_ih_l{k}` and `bias_hh_l{k}`, as PyTorch names
    /// them.
    Rnn {
        units: usize,
        #[serde(default = "default_one")]
        num_layers: usize,
        #[serde(default)]
        return_sequences: bool,
        #[serde(default)]
        init: Init,
        #[serde(default = "default_recurrent_init")]
        recurrent_init: Init,
    },
    /// A long short-term memory layer over `[time, features]` input, giving `[units]` (the last hidden state) or,
    /// with `return_sequences`, `[time, units]`. `num_layers` layers are stacked, each but the
    /// last returning its whole sequence to the next. See [`crate::autograd::Graph::recurrent`]
    /// for the equations. Layer `k` (from 0) has `weight_ih_l{k}: [gates * units, inputs]`
    /// drawn from `init`, `weight_hh_l{k}: [gates * units, units]` drawn from
    /// `recurrent_init`, and zero biases `bias_ih_l{k}` and `bias_hh_l{k}`, as PyTorch names
    /// them.
    Lstm {
        units: usize,
        #[serde(default = "default_one")]
        num_layers: usize,
        #[serde(default)]
        return_sequences: bool,
        #[serde(default)]
        init: Init,
        #[serde(default = "default_recurrent_init")]
        recurrent_init: Init,
    },
    /// A gated recurrent unit layer over `[time, features]` input, giving `[units]` (the last hidden state) or,
    /// with `return_sequences`, `[time, units]`. `num_layers` layers are stacked, each but the
    /// last returning its whole sequence to the next. See [`crate::autograd::Graph::recurrent`]
    /// for the equations. Layer `k` (from 0) has `weight_ih_l{k}: [gates * units, inputs]`
    /// drawn from `init`, `weight_hh_l{k}: [gates * units, units]` drawn from
    /// `recurrent_init`, and zero biases `bias_ih_l{k}` and `bias_hh_l{k}`, as PyTorch names
    /// them.
    Gru {
        units: usize,
        #[serde(default = "default_one")]
        num_layers: usize,
        #[serde(default)]
        return_sequences: bool,
        #[serde(default)]
        init: Init,
        #[serde(default = "default_recurrent_init")]
        recurrent_init: Init,
    },
    /// A 1-D convolution along the time axis of `[time, channels]` input (a `[time]` input is
    /// one channel), giving `[t_out, filters]` with
    /// `t_out = (time + 2 * padding - dilation * (kernel_size - 1) - 1) / stride + 1`,
    /// optionally followed by an activation. The layout stays batch-first and channels-last,
    /// as in Keras's `Conv1D`. The weight is `[filters, channels, kernel_size]`, as in
    /// PyTorch's `Conv1d`.
    Conv1d {
        filters: usize,
        kernel_size: usize,
        #[serde(default = "default_one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "default_one")]
        dilation: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activation: Option<Activation>,
        #[serde(default)]
        init: Init,
        #[serde(default = "default_bias")]
        bias: bool,
    },
}

fn default_recurrent_init() -> Init {
    Init::Orthogonal
}

fn default_bias() -> bool {
    true
}

fn default_one() -> usize {
    1
}

fn default_momentum() -> f32 {
    0.1
}

fn default_epsilon() -> f32 {
    1e-5
}

/// The filling [`Sequential::new`] uses for a new parameter.
#[derive(Debug, Clone, Copy)]
enum Initial {
    /// Drawn from `init` with the given fan-in and fan-out.
    Random {
        init: Init,
        fan_in: usize,
        fan_out: usize,
    },
    /// Every value the same.
    Constant(f32),
}

/// Pooling kinds that share one set of checks.
#[derive(Debug, Clone, Copy)]
enum PoolKind {
    Max,
    Avg,
}

/// A built layer: its spec's parameters as ids into the model's [`Parameters`].
#[derive(Debug, Clone)]
enum Layer {
    Dense {
        weight: ParamId,
        bias: Option<ParamId>,
        activation: Option<Activation>,
    },
    Activation(Activation),
    Flatten,
    Dropout(f32),
    Conv2d {
        weight: ParamId,
        bias: Option<ParamId>,
        activation: Option<Activation>,
        params: Conv2dParams,
        input: [usize; 3],
    },
    Pool2d {
        kind: PoolKind,
        kernel: usize,
        stride: usize,
        padding: usize,
        input: [usize; 3],
    },
    GlobalAvgPool2d {
        input: [usize; 3],
    },
    /// Stacked recurrent layers, each with `[weight_ih, weight_hh, bias_ih, bias_hh]`.
    Recurrent {
        cell: RecurrentCell,
        stack: Vec<[ParamId; 4]>,
        return_sequences: bool,
    },
    /// A 1-D convolution, recorded as a 2-D convolution of height 1 on `[channels, 1, time]`.
    Conv1d {
        weight: ParamId,
        bias: Option<ParamId>,
        activation: Option<Activation>,
        params: Conv2dParams,
        /// `[time, channels]` of the input and `[t_out, filters]` of the output.
        input: [usize; 2],
        output: [usize; 2],
    },
    /// Batch normalization; `input` is `None` for 1-D input.
    BatchNorm {
        weight: ParamId,
        bias: ParamId,
        running_mean: ParamId,
        running_var: ParamId,
        momentum: f32,
        epsilon: f32,
        input: Option<[usize; 3]>,
    },
}

/// One row of [`Sequential::summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// The layer's name, for example `layers.0 (dense)`.
    pub name: String,
    /// The output shape without the batch dimension.
    pub output_shape: Vec<usize>,
    /// The number of trainable values.
    pub parameters: usize,
    /// The number of values in buffers, which are saved with the model but not trained
    /// (the running statistics of batch normalization).
    pub buffers: usize,
}

/// A feed-forward model: layers applied one after the other.
///
/// Parameters are named after the layer's position, as PyTorch's `nn.Sequential` names
/// them: `layers.0.weight`, `layers.0.bias`, `layers.2.weight`, ... Buffers, the values a
/// model saves but does not train, are named the same way: `layers.1.running_mean`.
#[derive(Debug, Clone)]
pub struct Sequential {
    input_shape: Vec<usize>,
    specs: Vec<LayerSpec>,
    layers: Vec<Layer>,
    output_shapes: Vec<Vec<usize>>,
    params: Parameters,
    buffers: Parameters,
}

impl Sequential {
    /// Builds a model for inputs of `input_shape` (without the batch dimension) and
    /// initializes its weights from `seed`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`], naming the layer index, for an empty input shape, a
    /// model with no layers, a layer with 0 units or filters, a 2-D layer whose input is not
    /// `[channels, height, width]` or `[height, width]`, a batch normalization 1-D layer
    /// whose input is not `[channels]`, a momentum outside `[0, 1]` or an epsilon that is not
    /// positive, groups that do not divide the channels, or a kernel larger than its padded
    /// input.
    pub fn new(input_shape: &[usize], specs: Vec<LayerSpec>, seed: u64) -> Result<Self> {
        let mut rng = Rng::new(seed);
        Self::build(
            input_shape,
            specs,
            |_, shape, initial| {
                Ok(match initial {
                    Initial::Random {
                        init,
                        fan_in,
                        fan_out,
                    } => init.tensor(shape, fan_in, fan_out, &mut rng),
                    Initial::Constant(value) => Tensor::full(shape, value),
                })
            },
            |_, shape, value| Ok(Tensor::full(shape, value)),
        )
    }

    /// Builds a model from saved tensors: its parameters and its buffers in one set, as
    /// [`crate::model::load`] reads them. Every tensor the layers need must be present with
    /// the right shape, and no other may be.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for an invalid layer list and [`Error::Shape`] for a
    /// missing, extra or wrongly shaped parameter or buffer.
    pub fn from_parameters(
        input_shape: &[usize],
        specs: Vec<LayerSpec>,
        saved: &Parameters,
    ) -> Result<Self> {
        let lookup = |kind: &str, name: &str, shape: &[usize]| {
            let id = saved.find(name).ok_or_else(|| Error::Shape {
                op: "load",
                message: format!("{kind} {name} is missing"),
            })?;
            let tensor = saved.get(id);
            if tensor.shape() != shape {
                return Err(Error::Shape {
                    op: "load",
                    message: format!(
                        "{kind} {name} has shape {:?}, the layer needs {shape:?}",
                        tensor.shape()
                    ),
                });
            }
            Ok(tensor.clone())
        };
        let model = Self::build(
            input_shape,
            specs,
            |name, shape, _| lookup("parameter", name, shape),
            |name, shape, _| lookup("buffer", name, shape),
        )?;
        if let Some((extra, _)) = saved.iter().find(|(name, _)| {
            model.params.find(name).is_none() && model.buffers.find(name).is_none()
        }) {
            return Err(Error::Shape {
                op: "load",
                message: format!("parameter {extra} does not belong to any layer"),
            });
        }
        Ok(model)
    }

    /// Builds the layers, taking each parameter from `make` and each buffer from
    /// `make_buffer`, which get the tensor's name, its shape and how a new one is filled.
    fn build(
        input_shape: &[usize],
        specs: Vec<LayerSpec>,
        mut make: impl FnMut(&str, &[usize], Initial) -> Result<Tensor>,
        mut make_buffer: impl FnMut(&str, &[usize], f32) -> Result<Tensor>,
    ) -> Result<Self> {
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::InvalidConfig(format!(
                "input shape {input_shape:?} must have at least one dimension, none of them 0"
            )));
        }
        if specs.is_empty() {
            return Err(Error::InvalidConfig(
                "the model has no layers; add at least one dense layer".into(),
            ));
        }

        let mut params = Parameters::new();
        let mut buffers = Parameters::new();
        let mut layers = Vec::with_capacity(specs.len());
        let mut output_shapes = Vec::with_capacity(specs.len());
        let mut shape = input_shape.to_vec();
        for (index, spec) in specs.iter().enumerate() {
            let layer = match *spec {
                LayerSpec::Dense {
                    units,
                    activation,
                    init,
                    bias,
                } => {
                    if units == 0 {
                        return Err(Error::InvalidConfig(format!(
                            "layer {index} (dense) has units = 0; a dense layer needs at least 1 unit"
                        )));
                    }
                    let inputs: usize = shape.iter().product();
                    let name = format!("layers.{index}.weight");
                    let initial = Initial::Random {
                        init,
                        fan_in: inputs,
                        fan_out: units,
                    };
                    let weight = make(&name, &[units, inputs], initial)?;
                    let weight = params.push(name, weight);
                    let bias = if bias {
                        let name = format!("layers.{index}.bias");
                        let value = make(&name, &[units], Initial::Constant(0.0))?;
                        Some(params.push(name, value))
                    } else {
                        None
                    };
                    shape = vec![units];
                    Layer::Dense {
                        weight,
                        bias,
                        activation,
                    }
                }
                LayerSpec::Activation { activation } => Layer::Activation(activation),
                LayerSpec::Flatten => {
                    shape = vec![shape.iter().product()];
                    Layer::Flatten
                }
                LayerSpec::Dropout { rate } => {
                    if !(0.0..1.0).contains(&rate) {
                        return Err(Error::InvalidConfig(format!(
                            "layer {index} (dropout) has rate = {rate}; use a probability in [0, 1)"
                        )));
                    }
                    Layer::Dropout(rate)
                }
                LayerSpec::Conv2d {
                    filters,
                    kernel_size,
                    stride,
                    padding,
                    dilation,
                    groups,
                    activation,
                    init,
                    bias,
                } => {
                    let input = image_shape(index, "conv2d", &shape)?;
                    let conv = Conv2dParams {
                        stride: (stride, stride),
                        padding: (padding, padding),
                        dilation: (dilation, dilation),
                        groups,
                    };
                    let (out_height, out_width) =
                        check_conv(index, input, filters, kernel_size, conv)?;
                    let group_inputs = input[0] / groups;
                    let fan_in = group_inputs * kernel_size * kernel_size;
                    let fan_out = filters * kernel_size * kernel_size / groups;
                    let name = format!("layers.{index}.weight");
                    let weight_shape = [filters, group_inputs, kernel_size, kernel_size];
                    let initial = Initial::Random {
                        init,
                        fan_in,
                        fan_out,
                    };
                    let weight = make(&name, &weight_shape, initial)?;
                    let weight = params.push(name, weight);
                    let bias = if bias {
                        let name = format!("layers.{index}.bias");
                        let value = make(&name, &[filters], Initial::Constant(0.0))?;
                        Some(params.push(name, value))
                    } else {
                        None
                    };
                    shape = vec![filters, out_height, out_width];
                    Layer::Conv2d {
                        weight,
                        bias,
                        activation,
                        params: conv,
                        input,
                    }
                }
                LayerSpec::MaxPool2d {
                    kernel_size,
                    stride,
                    padding,
                } => {
                    let stride = stride.unwrap_or(kernel_size);
                    let input = image_shape(index, "max_pool2d", &shape)?;
                    shape = check_pool(index, "max_pool2d", input, kernel_size, stride, padding)?;
                    Layer::Pool2d {
                        kind: PoolKind::Max,
                        kernel: kernel_size,
                        stride,
                        padding,
                        input,
                    }
                }
                LayerSpec::AvgPool2d {
                    kernel_size,
                    stride,
                    padding,
                } => {
                    let stride = stride.unwrap_or(kernel_size);
                    let input = image_shape(index, "avg_pool2d", &shape)?;
                    shape = check_pool(index, "avg_pool2d", input, kernel_size, stride, padding)?;
                    Layer::Pool2d {
                        kind: PoolKind::Avg,
                        kernel: kernel_size,
                        stride,
                        padding,
                        input,
                    }
                }
                LayerSpec::GlobalAvgPool2d => {
                    let input = image_shape(index, "global_avg_pool2d", &shape)?;
                    shape = vec![input[0]];
                    Layer::GlobalAvgPool2d { input }
                }
                LayerSpec::BatchNorm1d { momentum, epsilon }
                | LayerSpec::BatchNorm2d { momentum, epsilon } => {
                    let images = matches!(spec, LayerSpec::BatchNorm2d { .. });
                    let kind = if images {
                        "batch_norm2d"
                    } else {
                        "batch_norm1d"
                    };
                    let input = if images {
                        Some(image_shape(index, kind, &shape)?)
                    } else if shape.len() == 1 {
                        None
                    } else {
                        return Err(Error::InvalidConfig(format!(
                            "layer {index} (batch_norm1d) needs input of shape [channels], got \
                             {shape:?}; use batch_norm2d for images or add a flatten layer first"
                        )));
                    };
                    check_batch_norm(index, kind, momentum, epsilon)?;
                    let channels = input.map_or(shape[0], |input| input[0]);
                    let mut add = |name: &str, value: f32, trainable: bool| -> Result<ParamId> {
                        let name = format!("layers.{index}.{name}");
                        Ok(if trainable {
                            let tensor = make(&name, &[channels], Initial::Constant(value))?;
                            params.push(name, tensor)
                        } else {
                            let tensor = make_buffer(&name, &[channels], value)?;
                            buffers.push(name, tensor)
                        })
                    };
                    let layer = Layer::BatchNorm {
                        weight: add("weight", 1.0, true)?,
                        bias: add("bias", 0.0, true)?,
                        running_mean: add("running_mean", 0.0, false)?,
                        running_var: add("running_var", 1.0, false)?,
                        momentum,
                        epsilon,
                        input,
                    };
                    if let Some(input) = input {
                        shape = input.to_vec();
                    }
                    layer
                }
                LayerSpec::Rnn { .. } | LayerSpec::Lstm { .. } | LayerSpec::Gru { .. } => {
                    let (layer, output) =
                        sequence::build_recurrent(index, spec, &shape, &mut make, &mut params)?;
                    shape = output;
                    layer
                }
                LayerSpec::Conv1d { .. } => {
                    let (layer, output) =
                        sequence::build_conv1d(index, spec, &shape, &mut make, &mut params)?;
                    shape = output;
                    layer
                }
            };
            layers.push(layer);
            output_shapes.push(shape.clone());
        }

        Ok(Sequential {
            input_shape: input_shape.to_vec(),
            specs,
            layers,
            output_shapes,
            params,
            buffers,
        })
    }

    /// The input shape without the batch dimension.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The output shape without the batch dimension.
    pub fn output_shape(&self) -> &[usize] {
        self.output_shapes
            .last()
            .map_or(&self.input_shape, Vec::as_slice)
    }

    /// The layer specs the model was built from.
    pub fn specs(&self) -> &[LayerSpec] {
        &self.specs
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    /// The trainable parameters, mutable (for optimizers).
    pub fn params_mut(&mut self) -> &mut Parameters {
        &mut self.params
    }

    /// The buffers: values that are saved with the model but not trained, namely the running
    /// mean and variance of each batch normalization layer.
    pub fn buffers(&self) -> &Parameters {
        &self.buffers
    }

    /// The buffers, mutable.
    pub fn buffers_mut(&mut self) -> &mut Parameters {
        &mut self.buffers
    }

    /// Moves the running statistics of each batch normalization layer towards the statistics
    /// of one training step, recorded by [`Sequential::forward`] in training passes. `shards`
    /// contains the [`crate::autograd::Workspace::batch_statistics`] of every workspace that
    /// took part in the step, each over its own rows.
    ///
    /// The shards' statistics are combined exactly into those of all rows together: the mean
    /// is the count-weighted mean of the shard means, and the unbiased variance is
    /// `(sum_k n_k * (var_k + (mean_k - mean)^2)) / (n - 1)`. Each running statistic then
    /// becomes `(1 - momentum) * running + momentum * batch`, as in PyTorch. A layer missing
    /// from every shard keeps its statistics. When all shards together have one value per
    /// channel, the unbiased variance is undefined and `running_var` is left unchanged.
    pub fn update_running_stats(&mut self, shards: &[&[BatchStatistics]]) {
        for (index, layer) in self.layers.iter().enumerate() {
            let Layer::BatchNorm {
                running_mean,
                running_var,
                momentum,
                ..
            } = *layer
            else {
                continue;
            };
            let records = || {
                shards
                    .iter()
                    .flat_map(|stats| stats.iter())
                    .filter(move |s| s.key() == index && s.count() > 0)
            };
            let total: usize = records().map(BatchStatistics::count).sum();
            if total == 0 {
                continue;
            }
            let channels = self.buffers.get(running_mean).numel();
            for c in 0..channels {
                let mean = records()
                    .map(|s| s.count() as f64 * s.mean()[c] as f64)
                    .sum::<f64>()
                    / total as f64;
                let squares: f64 = records()
                    .map(|s| {
                        let shift = s.mean()[c] as f64 - mean;
                        s.count() as f64 * (s.variance()[c] as f64 + shift * shift)
                    })
                    .sum();
                let running = &mut self.buffers.get_mut(running_mean).data_mut()[c];
                *running = (1.0 - momentum) * *running + momentum * mean as f32;
                if total > 1 {
                    let unbiased = (squares / (total - 1) as f64) as f32;
                    let running = &mut self.buffers.get_mut(running_var).data_mut()[c];
                    *running = (1.0 - momentum) * *running + momentum * unbiased;
                }
            }
        }
    }

    /// Records the forward pass of a batch `x: [batch, input_shape...]` on `graph` and returns
    /// the output `[batch, output_shape...]`.
    ///
    /// # Panics
    ///
    /// Panics if `x` does not have the model's input shape after the batch dimension.
    pub fn forward(&self, graph: &mut Graph<'_>, x: Var) -> Var {
        let batch = graph.shape(x)[0];
        assert_eq!(
            &graph.shape(x)[1..],
            self.input_shape.as_slice(),
            "model expects input of shape [batch, {:?}]",
            self.input_shape
        );
        let mut x = x;
        for (index, (layer, shape)) in self.layers.iter().zip(&self.output_shapes).enumerate() {
            x = match *layer {
                Layer::Dense {
                    weight,
                    bias,
                    activation,
                } => {
                    let w = graph.param(weight);
                    let b = bias.map(|b| graph.param(b));
                    let y = graph.linear(x, w, b);
                    match activation {
                        Some(activation) => graph.activation(y, activation),
                        None => y,
                    }
                }
                Layer::Activation(activation) => graph.activation(x, activation),
                Layer::Dropout(rate) => graph.dropout(x, rate),
                Layer::Flatten => {
                    let mut full = Vec::with_capacity(shape.len() + 1);
                    full.push(batch);
                    full.extend_from_slice(shape);
                    graph.reshape(x, &full)
                }
                Layer::Conv2d {
                    weight,
                    bias,
                    activation,
                    params,
                    input,
                } => {
                    let x = to_images(graph, x, batch, input);
                    let w = graph.param(weight);
                    let b = bias.map(|b| graph.param(b));
                    match activation {
                        Some(Activation::Relu) => graph.conv2d_relu(x, w, b, params),
                        Some(activation) => {
                            let y = graph.conv2d(x, w, b, params);
                            graph.activation(y, activation)
                        }
                        None => graph.conv2d(x, w, b, params),
                    }
                }
                Layer::Pool2d {
                    kind,
                    kernel,
                    stride,
                    padding,
                    input,
                } => {
                    let x = to_images(graph, x, batch, input);
                    let (kernel, stride, padding) =
                        ((kernel, kernel), (stride, stride), (padding, padding));
                    match kind {
                        PoolKind::Max => graph.max_pool2d(x, kernel, stride, padding),
                        PoolKind::Avg => graph.avg_pool2d(x, kernel, stride, padding),
                    }
                }
                Layer::GlobalAvgPool2d { input } => {
                    let x = to_images(graph, x, batch, input);
                    graph.global_avg_pool2d(x)
                }
                Layer::BatchNorm {
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    epsilon,
                    input,
                    ..
                } => {
                    let w = graph.param(weight);
                    let b = graph.param(bias);
                    let state = BatchNormState {
                        running_mean: self.buffers.get(running_mean).data(),
                        running_var: self.buffers.get(running_var).data(),
                        epsilon,
                        key: index,
                    };
                    match input {
                        Some(input) => {
                            let x = to_images(graph, x, batch, input);
                            graph.batch_norm2d(x, w, b, state)
                        }
                        None => {
                            let x = if graph.shape(x).len() == 2 {
                                x
                            } else {
                                graph.reshape(x, &[batch, shape[0]])
                            };
                            graph.batch_norm1d(x, w, b, state)
                        }
                    }
                }
                Layer::Recurrent {
                    cell,
                    ref stack,
                    return_sequences,
                } => sequence::forward_recurrent(graph, x, cell, stack, return_sequences),
                Layer::Conv1d {
                    weight,
                    bias,
                    activation,
                    params,
                    input,
                    output,
                } => sequence::forward_conv1d(
                    graph, x, batch, weight, bias, activation, params, input, output,
                ),
            };
        }
        x
    }

    /// Runs the model in evaluation mode on `inputs: [n, input_shape...]`, `batch_size` rows
    /// at a time, and returns the outputs `[n, output_shape...]`.
    ///
    /// Each row's output does not depend on the batch it is computed in.
    ///
    /// # Panics
    ///
    /// Panics if `inputs` does not have the model's input shape after the first dimension or
    /// `batch_size` is 0.
    pub fn predict(&self, inputs: &Tensor, batch_size: usize) -> Tensor {
        assert!(batch_size > 0, "batch size must be at least 1");
        let n = inputs.shape()[0];
        let (_, row_len) = inputs.dims2();
        let out_len: usize = self.output_shape().iter().product();
        let mut outputs = Vec::with_capacity(n * out_len);
        let mut workspace = Workspace::new();
        let mut shape = inputs.shape().to_vec();
        for start in (0..n).step_by(batch_size) {
            let end = (start + batch_size).min(n);
            shape[0] = end - start;
            let mut graph = Graph::new(&self.params, &mut workspace, false);
            let x = graph.input_slice(&shape, &inputs.data()[start * row_len..end * row_len]);
            let y = self.forward(&mut graph, x);
            outputs.extend_from_slice(graph.value(y));
        }
        let mut out_shape = vec![n];
        out_shape.extend_from_slice(self.output_shape());
        Tensor::from_vec(&out_shape, outputs)
    }

    /// Lists each layer with its output shape and parameter count.
    pub fn summary(&self) -> Vec<LayerSummary> {
        self.specs
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let kind = match spec {
                    LayerSpec::Dense { .. } => "dense",
                    LayerSpec::Activation { .. } => "activation",
                    LayerSpec::Flatten => "flatten",
                    LayerSpec::Dropout { .. } => "dropout",
                    LayerSpec::Conv2d { .. } => "conv2d",
                    LayerSpec::MaxPool2d { .. } => "max_pool2d",
                    LayerSpec::AvgPool2d { .. } => "avg_pool2d",
                    LayerSpec::GlobalAvgPool2d => "global_avg_pool2d",
                    LayerSpec::BatchNorm1d { .. } => "batch_norm1d",
                    LayerSpec::BatchNorm2d { .. } => "batch_norm2d",
                    LayerSpec::Rnn { .. } => "rnn",
                    LayerSpec::Lstm { .. } => "lstm",
                    LayerSpec::Gru { .. } => "gru",
                    LayerSpec::Conv1d { .. } => "conv1d",
                };
                let prefix = format!("layers.{index}.");
                let count = |set: &Parameters| {
                    set.iter()
                        .filter(|(name, _)| name.starts_with(&prefix))
                        .map(|(_, t)| t.numel())
                        .sum()
                };
                LayerSummary {
                    name: format!("layers.{index} ({kind})"),
                    output_shape: self.output_shapes[index].clone(),
                    parameters: count(&self.params),
                    buffers: count(&self.buffers),
                }
            })
            .collect()
    }
}

/// Returns the `[channels, height, width]` a 2-D layer at `index` receives: a 2-D shape is one
/// channel.
fn image_shape(index: usize, kind: &str, shape: &[usize]) -> Result<[usize; 3]> {
    match *shape {
        [height, width] => Ok([1, height, width]),
        [channels, height, width] => Ok([channels, height, width]),
        _ => Err(Error::InvalidConfig(format!(
            "layer {index} ({kind}) needs input of shape [channels, height, width] or \
             [height, width], got {shape:?}"
        ))),
    }
}

/// Checks the momentum and epsilon of the batch normalization at `index`.
fn check_batch_norm(index: usize, kind: &str, momentum: f32, epsilon: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::InvalidConfig(format!(
            "layer {index} ({kind}) has momentum = {momentum}; use a value in [0, 1] (PyTorch's \
             default is 0.1)"
        )));
    }
    if !(epsilon > 0.0 && epsilon.is_finite()) {
        return Err(Error::InvalidConfig(format!(
            "layer {index} ({kind}) has epsilon = {epsilon}; use a small positive value such \
             as 1e-5"
        )));
    }
    Ok(())
}

/// Checks the settings of the convolution at `index` and returns its output height and width.
fn check_conv(
    index: usize,
    input: [usize; 3],
    filters: usize,
    kernel_size: usize,
    params: Conv2dParams,
) -> Result<(usize, usize)> {
    let invalid = |message: String| {
        Err(Error::InvalidConfig(format!(
            "layer {index} (conv2d) {message}"
        )))
    };
    for (name, value) in [
        ("filters", filters),
        ("kernel_size", kernel_size),
        ("stride", params.stride.0),
        ("dilation", params.dilation.0),
        ("groups", params.groups),
    ] {
        if value == 0 {
            return invalid(format!("has {name} = 0, but it must be at least 1"));
        }
    }
    let groups = params.groups;
    if !input[0].is_multiple_of(groups) || !filters.is_multiple_of(groups) {
        return invalid(format!(
            "has groups = {groups}, which must divide both the {} input channels and the \
             {filters} filters",
            input[0]
        ));
    }
    match params.output_size((input[1], input[2]), (kernel_size, kernel_size)) {
        Some(size) => Ok(size),
        None => invalid(format!(
            "kernel of size {kernel_size} with dilation {} spans {} positions, more than the \
             padded input of {}x{}. Use a smaller kernel or more padding",
            params.dilation.0,
            params.dilation.0 * (kernel_size - 1) + 1,
            input[1] + 2 * params.padding.0,
            input[2] + 2 * params.padding.1,
        )),
    }
}

/// Checks the settings of the pooling at `index` and returns its output shape.
fn check_pool(
    index: usize,
    kind: &str,
    input: [usize; 3],
    kernel_size: usize,
    stride: usize,
    padding: usize,
) -> Result<Vec<usize>> {
    let invalid = |message: String| {
        Err(Error::InvalidConfig(format!(
            "layer {index} ({kind}) {message}"
        )))
    };
    if kernel_size == 0 || stride == 0 {
        return invalid(format!(
            "has kernel_size = {kernel_size} and stride = {stride}, but both must be at least 1"
        ));
    }
    if padding > kernel_size / 2 {
        return invalid(format!(
            "has padding = {padding}, but it may be at most half the kernel size {kernel_size}"
        ));
    }
    let params = Conv2dParams {
        stride: (stride, stride),
        padding: (padding, padding),
        ..Conv2dParams::default()
    };
    match params.output_size((input[1], input[2]), (kernel_size, kernel_size)) {
        Some((height, width)) => Ok(vec![input[0], height, width]),
        None => invalid(format!(
            "kernel of size {kernel_size} is larger than the padded input of {}x{}",
            input[1] + 2 * padding,
            input[2] + 2 * padding,
        )),
    }
}

/// Reshapes `x` to `[batch, channels, height, width]` unless it already has 4 dimensions.
fn to_images(graph: &mut Graph<'_>, x: Var, batch: usize, input: [usize; 3]) -> Var {
    if graph.shape(x).len() == 4 {
        x
    } else {
        graph.reshape(x, &[batch, input[0], input[1], input[2]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp_specs() -> Vec<LayerSpec> {
        vec![
            LayerSpec::Flatten,
            LayerSpec::Dense {
                units: 8,
                activation: Some(Activation::Relu),
                init: Init::HeUniform,
                bias: true,
            },
            LayerSpec::Dropout { rate: 0.5 },
            LayerSpec::Dense {
                units: 3,
                activation: None,
                init: Init::GlorotUniform,
                bias: false,
            },
        ]
    }

    #[test]
    fn parameters_are_named_by_layer_position() {
        let model = Sequential::new(&[2, 3], mlp_specs(), 0).unwrap();
        let names: Vec<&str> = model.params().iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            ["layers.1.weight", "layers.1.bias", "layers.3.weight"]
        );
        assert_eq!(model.params().get(0).shape(), &[8, 6]);
        assert_eq!(model.output_shape(), &[3]);
        assert_eq!(model.params().numel(), 8 * 6 + 8 + 3 * 8);
    }

    #[test]
    fn summary_counts_parameters_per_layer() {
        let model = Sequential::new(&[2, 3], mlp_specs(), 0).unwrap();
        let summary = model.summary();
        let counts: Vec<usize> = summary.iter().map(|row| row.parameters).collect();
        assert_eq!(counts, [0, 56, 0, 24]);
        assert_eq!(summary[0].output_shape, vec![6]);
        assert_eq!(summary[1].name, "layers.1 (dense)");
    }

    #[test]
    fn zero_units_are_rejected() {
        let specs = vec![LayerSpec::Dense {
            units: 0,
            activation: None,
            init: Init::Zeros,
            bias: true,
        }];
        let message = Sequential::new(&[4], specs, 0).unwrap_err().to_string();
        assert!(
            message.contains("layer 0 (dense) has units = 0"),
            "{message}"
        );
    }

    #[test]
    fn invalid_dropout_rate_is_rejected() {
        let specs = vec![LayerSpec::Dropout { rate: 1.0 }];
        let message = Sequential::new(&[4], specs, 0).unwrap_err().to_string();
        assert!(message.contains("rate = 1"), "{message}");
    }

    #[test]
    fn empty_model_is_rejected() {
        assert!(Sequential::new(&[4], Vec::new(), 0).is_err());
        assert!(Sequential::new(&[], mlp_specs(), 0).is_err());
    }

    #[test]
    fn prediction_does_not_depend_on_batch() {
        let model = Sequential::new(&[2, 3], mlp_specs(), 4).unwrap();
        let mut rng = Rng::new(1);
        let inputs = Tensor::from_vec(&[70, 2, 3], (0..420).map(|_| rng.normal()).collect());
        let together = model.predict(&inputs, 64);
        assert_eq!(together.shape(), &[70, 3]);
        for batch in [1, 2, 17, 70] {
            assert_eq!(
                together.data(),
                model.predict(&inputs, batch).data(),
                "batch {batch}"
            );
        }
    }

    fn conv(filters: usize, kernel_size: usize, padding: usize) -> LayerSpec {
        LayerSpec::Conv2d {
            filters,
            kernel_size,
            stride: 1,
            padding,
            dilation: 1,
            groups: 1,
            activation: Some(Activation::Relu),
            init: Init::GlorotUniform,
            bias: true,
        }
    }

    fn max_pool(kernel_size: usize) -> LayerSpec {
        LayerSpec::MaxPool2d {
            kernel_size,
            stride: None,
            padding: 0,
        }
    }

    fn lenet_specs() -> Vec<LayerSpec> {
        let dense = |units, activation| LayerSpec::Dense {
            units,
            activation,
            init: Init::GlorotUniform,
            bias: true,
        };
        vec![
            conv(6, 5, 2),
            max_pool(2),
            conv(16, 5, 0),
            max_pool(2),
            LayerSpec::Flatten,
            dense(120, Some(Activation::Relu)),
            dense(84, Some(Activation::Relu)),
            dense(10, None),
        ]
    }

    #[test]
    fn lenet_has_61706_parameters() {
        let model = Sequential::new(&[1, 28, 28], lenet_specs(), 0).unwrap();
        assert_eq!(model.params().numel(), 61_706);
        let shapes: Vec<Vec<usize>> = model
            .summary()
            .into_iter()
            .map(|r| r.output_shape)
            .collect();
        assert_eq!(shapes[0], [6, 28, 28]);
        assert_eq!(shapes[1], [6, 14, 14]);
        assert_eq!(shapes[2], [16, 10, 10]);
        assert_eq!(shapes[3], [16, 5, 5]);
        assert_eq!(shapes[4], [400]);
        assert_eq!(model.output_shape(), &[10]);
        assert_eq!(model.params().get(0).shape(), &[6, 1, 5, 5]);
        assert_eq!(model.summary()[0].name, "layers.0 (conv2d)");
        assert_eq!(model.summary()[1].name, "layers.1 (max_pool2d)");
    }

    #[test]
    fn lenet_accepts_two_dimensional_images() {
        let model = Sequential::new(&[28, 28], lenet_specs(), 0).unwrap();
        assert_eq!(model.params().numel(), 61_706);
        let mut rng = Rng::new(2);
        let inputs = Tensor::from_vec(&[3, 28, 28], (0..3 * 784).map(|_| rng.normal()).collect());
        let together = model.predict(&inputs, 3);
        assert_eq!(together.shape(), &[3, 10]);
        assert!(together.is_finite());
        for batch in [1, 2] {
            assert_eq!(
                together.data(),
                model.predict(&inputs, batch).data(),
                "batch {batch}"
            );
        }
    }

    #[test]
    fn image_layers_infer_shapes() {
        let specs = vec![
            LayerSpec::Conv2d {
                filters: 8,
                kernel_size: 3,
                stride: 2,
                padding: 1,
                dilation: 2,
                groups: 2,
                activation: None,
                init: Init::HeUniform,
                bias: false,
            },
            LayerSpec::AvgPool2d {
                kernel_size: 3,
                stride: Some(1),
                padding: 1,
            },
            LayerSpec::GlobalAvgPool2d,
        ];
        let model = Sequential::new(&[4, 9, 9], specs, 0).unwrap();
        let summary = model.summary();
        // (9 + 2 - 2 * 2 - 1) / 2 + 1 = 4.
        assert_eq!(summary[0].output_shape, [8, 4, 4]);
        assert_eq!(summary[0].parameters, 8 * 2 * 3 * 3);
        assert_eq!(summary[1].output_shape, [8, 4, 4]);
        assert_eq!(summary[2].output_shape, [8]);
        assert_eq!(summary[2].name, "layers.2 (global_avg_pool2d)");
    }

    #[test]
    fn impossible_image_layers_are_rejected() {
        let cases: Vec<(Vec<usize>, Vec<LayerSpec>, &str)> = vec![
            (
                vec![1, 4, 4],
                vec![LayerSpec::Flatten, conv(2, 5, 0)],
                "layer 1 (conv2d) needs input of shape [channels, height, width]",
            ),
            (
                vec![1, 4, 4],
                vec![conv(2, 5, 0)],
                "layer 0 (conv2d) kernel of size 5",
            ),
            (
                vec![1, 4, 4],
                vec![conv(0, 3, 0)],
                "layer 0 (conv2d) has filters = 0",
            ),
            (
                vec![3, 8, 8],
                vec![LayerSpec::Conv2d {
                    filters: 4,
                    kernel_size: 3,
                    stride: 1,
                    padding: 0,
                    dilation: 1,
                    groups: 2,
                    activation: None,
                    init: Init::GlorotUniform,
                    bias: true,
                }],
                "layer 0 (conv2d) has groups = 2",
            ),
            (
                vec![1, 8, 8],
                vec![conv(2, 3, 0), max_pool(9)],
                "layer 1 (max_pool2d) kernel of size 9",
            ),
            (
                vec![1, 8, 8],
                vec![LayerSpec::AvgPool2d {
                    kernel_size: 2,
                    stride: None,
                    padding: 2,
                }],
                "layer 0 (avg_pool2d) has padding = 2",
            ),
        ];
        for (input, specs, expected) in cases {
            let message = Sequential::new(&input, specs, 0).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn image_layer_specs_parse_with_defaults() {
        let json = r#"[
            {"type": "conv2d", "filters": 6, "kernel_size": 5},
            {"type": "max_pool2d", "kernel_size": 2},
            {"type": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1},
            {"type": "global_avg_pool2d"}
        ]"#;
        let specs: Vec<LayerSpec> = serde_json::from_str(json).unwrap();
        assert_eq!(
            specs[0],
            LayerSpec::Conv2d {
                filters: 6,
                kernel_size: 5,
                stride: 1,
                padding: 0,
                dilation: 1,
                groups: 1,
                activation: None,
                init: Init::GlorotUniform,
                bias: true,
            }
        );
        assert_eq!(specs[1], max_pool(2));
        assert_eq!(
            specs[2],
            LayerSpec::AvgPool2d {
                kernel_size: 3,
                stride: Some(1),
                padding: 1,
            }
        );
        assert_eq!(specs[3], LayerSpec::GlobalAvgPool2d);
        let round_trip: Vec<LayerSpec> =
            serde_json::from_str(&serde_json::to_string(&specs).unwrap()).unwrap();
        assert_eq!(round_trip, specs);
        let unknown = r#"{"type": "conv2d", "filters": 6, "kernel_size": 5, "size": 3}"#;
        assert!(serde_json::from_str::<LayerSpec>(unknown).is_err());
    }

    #[test]
    fn from_parameters_checks_names_and_shapes() {
        let model = Sequential::new(&[2, 3], mlp_specs(), 0).unwrap();
        let rebuilt = Sequential::from_parameters(&[2, 3], mlp_specs(), model.params()).unwrap();
        assert_eq!(rebuilt.params(), model.params());

        let mut wrong_shape = Parameters::new();
        wrong_shape.push("layers.1.weight", Tensor::zeros(&[8, 5]));
        let message = Sequential::from_parameters(&[2, 3], mlp_specs(), &wrong_shape)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("layers.1.weight has shape [8, 5]"),
            "{message}"
        );

        let mut extra = model.params().clone();
        extra.push("layers.9.weight", Tensor::zeros(&[1]));
        let message = Sequential::from_parameters(&[2, 3], mlp_specs(), &extra)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("layers.9.weight does not belong"),
            "{message}"
        );
    }
}
