//! A stack of layers applied in order.

use serde::{Deserialize, Serialize};

use crate::autograd::{Activation, Graph, ParamId, Parameters, Var, Workspace};
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
}

fn default_bias() -> bool {
    true
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
}

/// A feed-forward model: layers applied one after the other.
///
/// Parameters are named after the layer's position, as PyTorch's `nn.Sequential` names
/// them: `layers.0.weight`, `layers.0.bias`, `layers.2.weight`, ...
#[derive(Debug, Clone)]
pub struct Sequential {
    input_shape: Vec<usize>,
    specs: Vec<LayerSpec>,
    layers: Vec<Layer>,
    output_shapes: Vec<Vec<usize>>,
    params: Parameters,
}

impl Sequential {
    /// Builds a model for inputs of `input_shape` (without the batch dimension) and
    /// initializes its weights from `seed`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for an empty input shape, a layer with 0 units, or a
    /// model with no layers.
    pub fn new(input_shape: &[usize], specs: Vec<LayerSpec>, seed: u64) -> Result<Self> {
        let mut rng = Rng::new(seed);
        Self::build(input_shape, specs, |_, shape, init, fan_in, fan_out| {
            Ok(init.tensor(shape, fan_in, fan_out, &mut rng))
        })
    }

    /// Builds a model from saved parameters. Every parameter the layers need must be present
    /// with the right shape, and no other may be.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for an invalid layer list and [`Error::Shape`] for a
    /// missing, extra or wrongly shaped parameter.
    pub fn from_parameters(
        input_shape: &[usize],
        specs: Vec<LayerSpec>,
        saved: &Parameters,
    ) -> Result<Self> {
        let model = Self::build(input_shape, specs, |name, shape, _, _, _| {
            let id = saved.find(name).ok_or_else(|| Error::Shape {
                op: "load",
                message: format!("parameter {name} is missing"),
            })?;
            let tensor = saved.get(id);
            if tensor.shape() != shape {
                return Err(Error::Shape {
                    op: "load",
                    message: format!(
                        "parameter {name} has shape {:?}, the layer needs {shape:?}",
                        tensor.shape()
                    ),
                });
            }
            Ok(tensor.clone())
        })?;
        if let Some((extra, _)) = saved
            .iter()
            .find(|(name, _)| model.params.find(name).is_none())
        {
            return Err(Error::Shape {
                op: "load",
                message: format!("parameter {extra} does not belong to any layer"),
            });
        }
        Ok(model)
    }

    fn build(
        input_shape: &[usize],
        specs: Vec<LayerSpec>,
        mut make: impl FnMut(&str, &[usize], Init, usize, usize) -> Result<Tensor>,
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
                    let weight = make(&name, &[units, inputs], init, inputs, units)?;
                    let weight = params.push(name, weight);
                    let bias = if bias {
                        let name = format!("layers.{index}.bias");
                        let value = make(&name, &[units], Init::Zeros, inputs, units)?;
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
        for (layer, shape) in self.layers.iter().zip(&self.output_shapes) {
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
                };
                let prefix = format!("layers.{index}.");
                let parameters = self
                    .params
                    .iter()
                    .filter(|(name, _)| name.starts_with(&prefix))
                    .map(|(_, t)| t.numel())
                    .sum();
                LayerSummary {
                    name: format!("layers.{index} ({kind})"),
                    output_shape: self.output_shapes[index].clone(),
                    parameters,
                }
            })
            .collect()
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
