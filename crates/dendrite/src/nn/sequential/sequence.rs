//! The sequence layers of [`Sequential`](super::Sequential): recurrent layers and 1-D
//! convolutions over batch-first `[batch, time, features]` input.

use super::{Initial, Layer, LayerSpec};
use crate::autograd::{
    Activation, Conv2dParams, Graph, ParamId, Parameters, RecurrentCell, RecurrentWeights, Var,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The parameter factory of [`super::Sequential::build`]: a tensor for a name, a shape and
/// how a new one is filled.
type MakeParameter<'m> = &'m mut dyn FnMut(&str, &[usize], Initial) -> Result<Tensor>;

/// Builds a recurrent layer spec for input rows of `shape` and returns it with its output
/// shape.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`], naming the layer index, if the input is not
/// `[time, features]` or `units` or `num_layers` is 0.
pub(super) fn build_recurrent(
    index: usize,
    spec: &LayerSpec,
    shape: &[usize],
    make: MakeParameter<'_>,
    params: &mut Parameters,
) -> Result<(Layer, Vec<usize>)> {
    let (cell, units, num_layers, return_sequences, init, recurrent_init) = match *spec {
        LayerSpec::Rnn {
            units,
            num_layers,
            return_sequences,
            init,
            recurrent_init,
        } => (
            RecurrentCell::Rnn,
            units,
            num_layers,
            return_sequences,
            init,
            recurrent_init,
        ),
        LayerSpec::Lstm {
            units,
            num_layers,
            return_sequences,
            init,
            recurrent_init,
        } => (
            RecurrentCell::Lstm,
            units,
            num_layers,
            return_sequences,
            init,
            recurrent_init,
        ),
        LayerSpec::Gru {
            units,
            num_layers,
            return_sequences,
            init,
            recurrent_init,
        } => (
            RecurrentCell::Gru,
            units,
            num_layers,
            return_sequences,
            init,
            recurrent_init,
        ),
        _ => unreachable!("build_recurrent called with another layer"),
    };
    let kind = cell.name();
    let &[time, features] = shape else {
        return Err(Error::InvalidConfig(format!(
            "layer {index} ({kind}) needs input of shape [time, features], got {shape:?}; \
             recurrent layers read sequences such as the windows of format = \"series\", or \
             the output of a layer with return_sequences = true"
        )));
    };
    if units == 0 || num_layers == 0 {
        return Err(Error::InvalidConfig(format!(
            "layer {index} ({kind}) has units = {units} and num_layers = {num_layers}; both \
             must be at least 1"
        )));
    }

    let width = cell.gates() * units;
    let mut stack = Vec::with_capacity(num_layers);
    let mut inputs = features;
    for k in 0..num_layers {
        let mut add = |name: &str, shape: &[usize], initial: Initial| -> Result<ParamId> {
            let name = format!("layers.{index}.{name}_l{k}");
            let tensor = make(&name, shape, initial)?;
            Ok(params.push(name, tensor))
        };
        let weight_ih = add(
            "weight_ih",
            &[width, inputs],
            Initial::Random {
                init,
                fan_in: inputs,
                fan_out: width,
            },
        )?;
        let weight_hh = add(
            "weight_hh",
            &[width, units],
            Initial::Random {
                init: recurrent_init,
                fan_in: units,
                fan_out: width,
            },
        )?;
        let bias_ih = add("bias_ih", &[width], Initial::Constant(0.0))?;
        let bias_hh = add("bias_hh", &[width], Initial::Constant(0.0))?;
        stack.push([weight_ih, weight_hh, bias_ih, bias_hh]);
        inputs = units;
    }

    let output = if return_sequences {
        vec![time, units]
    } else {
        vec![units]
    };
    let layer = Layer::Recurrent {
        cell,
        stack,
        return_sequences,
    };
    Ok((layer, output))
}

/// Records stacked recurrent layers on `x: [batch, time, features]`.
pub(super) fn forward_recurrent(
    graph: &mut Graph<'_>,
    x: Var,
    cell: RecurrentCell,
    stack: &[[ParamId; 4]],
    return_sequences: bool,
) -> Var {
    let mut x = x;
    for (k, ids) in stack.iter().enumerate() {
        let weights = RecurrentWeights {
            weight_ih: graph.param(ids[0]),
            weight_hh: graph.param(ids[1]),
            bias_ih: graph.param(ids[2]),
            bias_hh: graph.param(ids[3]),
        };
        let sequences = return_sequences || k + 1 < stack.len();
        x = graph.recurrent(x, weights, cell, sequences);
    }
    x
}

/// Builds a 1-D convolution spec for input rows of `shape` and returns it with its output
/// shape.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`], naming the layer index, if the input is not `[time]` or
/// `[time, channels]`, a size is 0, or the dilated kernel is longer than the padded input.
pub(super) fn build_conv1d(
    index: usize,
    spec: &LayerSpec,
    shape: &[usize],
    make: MakeParameter<'_>,
    params: &mut Parameters,
) -> Result<(Layer, Vec<usize>)> {
    let LayerSpec::Conv1d {
        filters,
        kernel_size,
        stride,
        padding,
        dilation,
        activation,
        init,
        bias,
    } = *spec
    else {
        unreachable!("build_conv1d called with another layer");
    };
    let invalid =
        |message: String| Error::InvalidConfig(format!("layer {index} (conv1d) {message}"));
    let (time, channels) = match *shape {
        [time] => (time, 1),
        [time, channels] => (time, channels),
        _ => {
            return Err(invalid(format!(
                "needs input of shape [time, channels] or [time], got {shape:?}"
            )));
        }
    };
    for (name, value) in [
        ("filters", filters),
        ("kernel_size", kernel_size),
        ("stride", stride),
        ("dilation", dilation),
    ] {
        if value == 0 {
            return Err(invalid(format!(
                "has {name} = 0, but it must be at least 1"
            )));
        }
    }
    let conv = Conv2dParams {
        stride: (1, stride),
        padding: (0, padding),
        dilation: (1, dilation),
        groups: 1,
    };
    let Some((_, out_time)) = conv.output_size((1, time), (1, kernel_size)) else {
        return Err(invalid(format!(
            "kernel of size {kernel_size} with dilation {dilation} spans {} steps, more than \
             the padded input of {} steps. Use a smaller kernel, more padding or a longer \
             lookback",
            dilation * (kernel_size - 1) + 1,
            time + 2 * padding
        )));
    };

    let name = format!("layers.{index}.weight");
    let initial = Initial::Random {
        init,
        fan_in: channels * kernel_size,
        fan_out: filters * kernel_size,
    };
    let weight = make(&name, &[filters, channels, kernel_size], initial)?;
    let weight = params.push(name, weight);
    let bias = if bias {
        let name = format!("layers.{index}.bias");
        let value = make(&name, &[filters], Initial::Constant(0.0))?;
        Some(params.push(name, value))
    } else {
        None
    };
    let layer = Layer::Conv1d {
        weight,
        bias,
        activation,
        params: conv,
        input: [time, channels],
        output: [out_time, filters],
    };
    Ok((layer, vec![out_time, filters]))
}

/// Records a 1-D convolution on `x: [batch, time, channels]` (or `[batch, time]`), giving
/// `[batch, t_out, filters]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_conv1d(
    graph: &mut Graph<'_>,
    x: Var,
    batch: usize,
    weight: ParamId,
    bias: Option<ParamId>,
    activation: Option<Activation>,
    params: Conv2dParams,
    input: [usize; 2],
    output: [usize; 2],
) -> Var {
    let [time, channels] = input;
    let [out_time, filters] = output;
    let x = graph.reshape(x, &[batch, time, channels]);
    let x = graph.swap_last_axes(x);
    let x = graph.reshape(x, &[batch, channels, 1, time]);
    let w = graph.param(weight);
    let kernel_size = graph.shape(w)[2];
    let w = graph.reshape(w, &[filters, channels, 1, kernel_size]);
    let b = bias.map(|b| graph.param(b));
    let y = match activation {
        Some(Activation::Relu) => graph.conv2d_relu(x, w, b, params),
        Some(activation) => {
            let y = graph.conv2d(x, w, b, params);
            graph.activation(y, activation)
        }
        None => graph.conv2d(x, w, b, params),
    };
    let y = graph.reshape(y, &[batch, filters, out_time]);
    graph.swap_last_axes(y)
}
