//! Per-step records for logs and plots: the batch loss, the learning rate and the L2 norm of
//! each parameter's gradient.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::autograd::Parameters;

/// One optimizer step, as [`super::Callback::on_step_end`] receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Optimizer steps taken so far, including this one (from 1).
    pub step: u64,
    /// The epoch of the step (from 1).
    pub epoch: usize,
    /// The mean training loss of the step's batch.
    pub loss: f32,
    /// The learning rate of the step.
    pub learning_rate: f32,
    /// The L2 norm of each parameter's gradient, by parameter name, before weight decay and
    /// momentum. Empty on steps for which the callback did not request norms (see
    /// [`super::Callback::gradient_norm_interval`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gradient_norms: BTreeMap<String, f64>,
}

/// Returns whether step `step` (from 1) records gradient norms with interval `every`: the
/// first step and every `every`-th step, never when `every` is 0.
pub(crate) fn wants_gradient_norms(step: u64, every: u64) -> bool {
    every > 0 && (step == 1 || step.is_multiple_of(every))
}

/// Computes the L2 norm of each parameter's batch gradient, which is the sum of the shard
/// gradients `shards[i]` weighted by `weights[i]`.
pub(crate) fn gradient_norms(
    params: &Parameters,
    shards: &[&[Vec<f32>]],
    weights: &[f32],
) -> BTreeMap<String, f64> {
    let mut norms = BTreeMap::new();
    for id in 0..params.len() {
        let len = shards.first().map_or(0, |shard| shard[id].len());
        let mut sum_of_squares = 0.0f64;
        for k in 0..len {
            let value: f64 = shards
                .iter()
                .zip(weights)
                .map(|(shard, &weight)| f64::from(shard[id][k]) * f64::from(weight))
                .sum();
            sum_of_squares += value * value;
        }
        norms.insert(params.name(id).to_string(), sum_of_squares.sqrt());
    }
    norms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn norms_sum_weighted_shards() {
        let mut params = Parameters::new();
        params.push("layers.0.weight", Tensor::zeros(&[2]));
        params.push("layers.0.bias", Tensor::zeros(&[1]));
        let first = vec![vec![3.0, 0.0], vec![1.0]];
        let second = vec![vec![3.0, 8.0], vec![-1.0]];
        let norms = gradient_norms(&params, &[&first, &second], &[0.5, 0.5]);
        // Batch gradient: weight [3, 4], bias [0].
        assert_eq!(norms["layers.0.weight"], 5.0);
        assert_eq!(norms["layers.0.bias"], 0.0);
    }

    #[test]
    fn interval_selects_first_and_multiples() {
        let chosen: Vec<u64> = (1..=25).filter(|&s| wants_gradient_norms(s, 10)).collect();
        assert_eq!(chosen, vec![1, 10, 20]);
        assert!(!wants_gradient_norms(1, 0));
    }
}
