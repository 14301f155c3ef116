//! What training does when the loss or a gradient becomes NaN or infinite, and where such a
//! value first appeared.

use serde::{Deserialize, Serialize};

use crate::autograd::{Graph, Parameters, Workspace};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::nn::Sequential;

/// The response to a non-finite loss or gradient, as `policy` under
/// `[training.non_finite]` in a `dendrite` config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Stop training, keep the weights of the last finished epoch and return an error.
    #[default]
    Stop,
    /// Leave the batch out: no update, and training goes on with the next batch.
    Skip,
    /// Go back to the state at the start of the epoch (or at the resumed checkpoint), divide
    /// the learning rate by `learning_rate_factor` and train the epoch again, at most
    /// `max_rollbacks` times over the run.
    Rollback,
}

/// Settings under `[training.non_finite]` in a `dendrite` config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonFiniteConfig {
    /// The response (default `stop`).
    #[serde(default)]
    pub policy: NonFinitePolicy,
    /// With `rollback`: the learning rate is divided by this after each rollback (default 10).
    #[serde(default = "default_factor")]
    pub learning_rate_factor: f32,
    /// With `rollback`: the most rollbacks in one run; one more non-finite value stops
    /// training (default 3).
    #[serde(default = "default_max_rollbacks")]
    pub max_rollbacks: usize,
}

fn default_factor() -> f32 {
    10.0
}

fn default_max_rollbacks() -> usize {
    3
}

impl Default for NonFiniteConfig {
    fn default() -> Self {
        NonFiniteConfig {
            policy: NonFinitePolicy::Stop,
            learning_rate_factor: default_factor(),
            max_rollbacks: default_max_rollbacks(),
        }
    }
}

impl NonFiniteConfig {
    /// Checks the learning-rate factor.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the invalid key.
    pub fn validate(&self) -> Result<()> {
        if !(self.learning_rate_factor > 1.0 && self.learning_rate_factor.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "training.non_finite.learning_rate_factor = {}; use a finite number above 1, \
                 such as 10",
                self.learning_rate_factor
            )));
        }
        Ok(())
    }
}

/// Finds where a non-finite value of a failed step first appeared and describes it, for
/// example `forward activation of layers.2 (dense)` or `gradient of layers.0.weight`.
///
/// The forward pass of `rows` is run again layer by layer in training mode. The first
/// layer whose output contains a NaN or infinity is named; if every activation is finite, the
/// loss or the first parameter (in layer order) with a non-finite gradient is named.
/// Dropout masks of this pass are drawn anew, so a value that only one mask produced may
/// be missed, and the loss is then named.
pub(crate) fn locate(
    model: &Sequential,
    train: &Dataset,
    rows: &[usize],
    loss_finite: bool,
    bad_gradient: Option<&str>,
) -> String {
    if let Some(layer) = first_non_finite_layer(model, train, rows) {
        return layer;
    }
    match (loss_finite, bad_gradient) {
        (true, Some(name)) => format!("gradient of {name}"),
        (true, None) => "gradient".into(),
        (false, _) => "training loss".into(),
    }
}

fn first_non_finite_layer(model: &Sequential, train: &Dataset, rows: &[usize]) -> Option<String> {
    let mut shape = vec![rows.len()];
    shape.extend_from_slice(train.feature_shape());
    let mut inputs = vec![0.0; rows.len() * train.feature_len()];
    train.gather_into_slice(rows, &mut inputs);
    if inputs.iter().any(|v| !v.is_finite()) {
        return Some("input batch".into());
    }

    let specs = model.specs();
    for end in 1..=specs.len() {
        let prefix = prefix_model(model, end)?;
        let mut workspace = Workspace::new();
        let mut graph = Graph::new(prefix.params(), &mut workspace, true);
        let x = graph.input_slice(&shape, &inputs);
        let y = prefix.forward(&mut graph, x);
        if graph.value(y).iter().any(|v| !v.is_finite()) {
            let kind = serde_json::to_value(&specs[end - 1])
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
                .unwrap_or_else(|| "layer".into());
            return Some(format!("forward activation of layers.{} ({kind})", end - 1));
        }
    }
    None
}

/// Builds the model of the first `end` layers with the weights of `model`.
fn prefix_model(model: &Sequential, end: usize) -> Option<Sequential> {
    let specs = model.specs()[..end].to_vec();
    let mut saved = Parameters::new();
    for (name, tensor) in model.params().iter().chain(model.buffers().iter()) {
        let layer: usize = name
            .strip_prefix("layers.")?
            .split('.')
            .next()?
            .parse()
            .ok()?;
        if layer < end {
            saved.push(name, tensor.clone());
        }
    }
    Sequential::from_parameters(model.input_shape(), specs, &saved).ok()
}
