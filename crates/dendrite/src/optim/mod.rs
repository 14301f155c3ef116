//! Optimizers that update parameters from their gradients.
//!
//! The update rules and defaults follow PyTorch's `torch.optim` (2.x): SGD without dampening,
//! Adam with `eps` added after the square root, AdamW with decoupled weight decay, and RMSprop
//! with `alpha = 0.99`.

mod perceptron;
mod schedule;

pub use perceptron::{Perceptron, PerceptronReport};
pub use schedule::{LearningRate, Schedule};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::autograd::{ParamId, Parameters};
use crate::error::{Error, Result};

/// An optimizer and its hyperparameters, as written in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent, with optional momentum, Nesterov momentum and L2 weight
    /// decay added to the gradient.
    Sgd {
        learning_rate: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f32,
    },
    /// Adam (Kingma and Ba, 2015) with L2 weight decay added to the gradient.
    Adam {
        #[serde(default = "default_adam_lr")]
        learning_rate: f32,
        #[serde(default = "default_beta1")]
        beta1: f32,
        #[serde(default = "default_beta2")]
        beta2: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
        #[serde(default)]
        weight_decay: f32,
    },
    /// AdamW (Loshchilov and Hutter, 2019): Adam with weight decay applied to the weights
    /// directly. PyTorch's default decay is 0.01.
    #[serde(rename = "adamw")]
    AdamW {
        #[serde(default = "default_adam_lr")]
        learning_rate: f32,
        #[serde(default = "default_beta1")]
        beta1: f32,
        #[serde(default = "default_beta2")]
        beta2: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
        #[serde(default = "default_adamw_decay")]
        weight_decay: f32,
    },
    /// RMSprop (Hinton's lecture notes, 2012), with optional momentum.
    #[serde(rename = "rmsprop")]
    RmsProp {
        #[serde(default = "default_rmsprop_lr")]
        learning_rate: f32,
        #[serde(default = "default_alpha")]
        alpha: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        weight_decay: f32,
    },
}

fn default_adam_lr() -> f32 {
    1e-3
}
fn default_rmsprop_lr() -> f32 {
    1e-2
}
fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.999
}
fn default_epsilon() -> f32 {
    1e-8
}
fn default_adamw_decay() -> f32 {
    0.01
}
fn default_alpha() -> f32 {
    0.99
}

impl OptimizerConfig {
    /// The configured learning rate.
    pub fn learning_rate(&self) -> f32 {
        match *self {
            OptimizerConfig::Sgd { learning_rate, .. }
            | OptimizerConfig::Adam { learning_rate, .. }
            | OptimizerConfig::AdamW { learning_rate, .. }
            | OptimizerConfig::RmsProp { learning_rate, .. } => learning_rate,
        }
    }

    /// Checks that every hyperparameter is in its valid range.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the first invalid hyperparameter.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: f32, valid: bool, range: &str| {
            if valid && value.is_finite() {
                Ok(())
            } else {
                Err(Error::InvalidConfig(format!(
                    "optimizer.{name} = {value} is invalid; it must be {range}"
                )))
            }
        };
        let lr = self.learning_rate();
        check(
            "learning_rate",
            lr,
            lr > 0.0,
            "a positive number such as 0.01",
        )?;
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                ..
            } => {
                check(
                    "momentum",
                    momentum,
                    (0.0..1.0).contains(&momentum),
                    "in [0, 1)",
                )?;
                check("weight_decay", weight_decay, weight_decay >= 0.0, ">= 0")
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
                ..
            }
            | OptimizerConfig::AdamW {
                beta1,
                beta2,
                epsilon,
                weight_decay,
                ..
            } => {
                check("beta1", beta1, (0.0..1.0).contains(&beta1), "in [0, 1)")?;
                check("beta2", beta2, (0.0..1.0).contains(&beta2), "in [0, 1)")?;
                check("epsilon", epsilon, epsilon > 0.0, "> 0")?;
                check("weight_decay", weight_decay, weight_decay >= 0.0, ">= 0")
            }
            OptimizerConfig::RmsProp {
                alpha,
                epsilon,
                momentum,
                weight_decay,
                ..
            } => {
                check("alpha", alpha, (0.0..1.0).contains(&alpha), "in [0, 1)")?;
                check("epsilon", epsilon, epsilon > 0.0, "> 0")?;
                check(
                    "momentum",
                    momentum,
                    (0.0..1.0).contains(&momentum),
                    "in [0, 1)",
                )?;
                check("weight_decay", weight_decay, weight_decay >= 0.0, ">= 0")
            }
        }
    }
}

/// An optimizer with its per-parameter state (momentum buffers, moment estimates).
#[derive(Debug, Clone)]
pub struct Optimizer {
    config: OptimizerConfig,
    learning_rate: f32,
    /// First state buffer per parameter: momentum, or Adam's first moment.
    first: Vec<Vec<f32>>,
    /// Second state buffer per parameter: Adam's second moment or RMSprop's square average.
    second: Vec<Vec<f32>>,
    steps: u64,
    /// Every combined gradient value is clamped to `[-limit, limit]` before the update.
    clip_value: Option<f32>,
}

impl Optimizer {
    /// Creates an optimizer with empty state.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if a hyperparameter is out of range.
    pub fn new(config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Optimizer {
            learning_rate: config.learning_rate(),
            config,
            first: Vec::new(),
            second: Vec::new(),
            steps: 0,
            clip_value: None,
        })
    }

    /// The learning rate the next step uses.
    pub fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    /// Sets the limit of gradient clipping by value for the next steps: every combined
    /// gradient value is clamped to `[-limit, limit]` before the update, and `None` turns
    /// clipping off. A NaN or infinite gradient is still reported, not clamped.
    pub fn set_clip_value(&mut self, limit: Option<f32>) {
        self.clip_value = limit;
    }

    /// Sets the learning rate for the next steps (for schedules).
    pub fn set_learning_rate(&mut self, learning_rate: f32) {
        self.learning_rate = learning_rate;
    }

    /// Returns the per-parameter state (momentum buffers or first moments, and second
    /// moments) and the step count, for checkpoints. The moment lists are empty before the
    /// first step.
    pub fn state(&self) -> (&[Vec<f32>], &[Vec<f32>], u64) {
        (&self.first, &self.second, self.steps)
    }

    /// Puts back a state returned by [`Optimizer::state`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if the two moment lists differ in length or shape.
    pub fn restore_state(
        &mut self,
        first: Vec<Vec<f32>>,
        second: Vec<Vec<f32>>,
        steps: u64,
    ) -> Result<()> {
        let same_shape = first.len() == second.len()
            && first.iter().zip(&second).all(|(m, v)| m.len() == v.len());
        if !same_shape {
            return Err(Error::InvalidConfig(
                "the stored optimizer moments do not match each other".into(),
            ));
        }
        self.first = first;
        self.second = second;
        self.steps = steps;
        Ok(())
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Updates every parameter from its gradient; `grads[i]` is laid out like parameter `i`.
    ///
    /// Returns the id of the first parameter whose gradient contains a NaN or infinite value,
    /// if any; see [`Optimizer::step_weighted`] for what is then updated.
    ///
    /// # Panics
    ///
    /// Panics if `grads` does not match `params` in count or sizes.
    pub fn step(&mut self, params: &mut Parameters, grads: &[Vec<f32>]) -> Option<ParamId> {
        self.step_weighted(params, &[grads], &[1.0])
    }

    /// Updates every parameter from the gradient `sum_s weights[s] * grads[s][i]`, the form
    /// in which data-parallel shards deliver it. The sum is formed chunk by chunk while the
    /// chunk is in cache; with one source of weight 1 it is the gradient itself.
    ///
    /// The gradient is checked for NaN and infinite values in the same pass. A chunk that
    /// contains one is left unchanged, but other chunks are updated, so on `Some(id)` (the
    /// first such parameter) the caller should restore the parameters and the optimizer from
    /// a copy, or stop.
    ///
    /// # Panics
    ///
    /// Panics if there is no source, the counts of sources and weights differ, or a source
    /// does not match `params` in count or sizes.
    pub fn step_weighted(
        &mut self,
        params: &mut Parameters,
        grads: &[&[Vec<f32>]],
        weights: &[f32],
    ) -> Option<ParamId> {
        assert!(
            !grads.is_empty() && grads.len() == weights.len(),
            "optimizer needs one weight per gradient source"
        );
        for source in grads {
            assert_eq!(
                params.len(),
                source.len(),
                "optimizer got {} gradients for {} parameters",
                source.len(),
                params.len()
            );
        }
        if self.first.len() != params.len() {
            self.first = params
                .values()
                .iter()
                .map(|p| vec![0.0; p.numel()])
                .collect();
            self.second = params
                .values()
                .iter()
                .map(|p| vec![0.0; p.numel()])
                .collect();
        }
        self.steps += 1;
        let lr = self.learning_rate;
        let t = self.steps as i32;
        let config = &self.config;
        let clip_value = self.clip_value;

        // The tensors are cut into fixed chunks. Each chunk's update is independent of the
        // others, so chunks run on all threads and the result does not depend on their count.
        let mut tasks = Vec::new();
        let state = self.first.iter_mut().zip(self.second.iter_mut());
        for (i, (param, (first, second))) in params.values_mut().iter_mut().zip(state).enumerate() {
            let w = param.data_mut();
            for source in grads {
                assert_eq!(
                    w.len(),
                    source[i].len(),
                    "gradient {i} has {} values, its parameter {}",
                    source[i].len(),
                    w.len()
                );
            }
            let chunks = w
                .chunks_mut(CHUNK)
                .zip(first.chunks_mut(CHUNK))
                .zip(second.chunks_mut(CHUNK));
            tasks.extend(
                chunks
                    .enumerate()
                    .map(|(c, ((w, m), v))| (i, c * CHUNK, w, m, v)),
            );
        }
        let first_bad = AtomicUsize::new(usize::MAX);
        let run = |(i, start, w, m, v): (usize, usize, &mut [f32], &mut [f32], &mut [f32])| {
            let range = start..start + w.len();
            if grads.len() == 1 && weights[0] == 1.0 && clip_value.is_none() {
                let grad = &grads[0][i][range];
                if all_finite(grad) {
                    update(config, w, grad, m, v, lr, t);
                } else {
                    first_bad.fetch_min(i, Ordering::Relaxed);
                }
                return;
            }
            let mut scratch = [0.0f32; CHUNK];
            let scratch = &mut scratch[..w.len()];
            for (s, g) in scratch.iter_mut().zip(&grads[0][i][range.clone()]) {
                *s = weights[0] * g;
            }
            for (source, &weight) in grads.iter().zip(weights).skip(1) {
                for (s, g) in scratch.iter_mut().zip(&source[i][range.clone()]) {
                    *s += weight * g;
                }
            }
            if all_finite(scratch) {
                if let Some(limit) = clip_value {
                    scratch.iter_mut().for_each(|g| *g = g.clamp(-limit, limit));
                }
                update(config, w, scratch, m, v, lr, t);
            } else {
                first_bad.fetch_min(i, Ordering::Relaxed);
            }
        };
        if rayon::current_num_threads() > 1 {
            tasks.into_par_iter().for_each(run);
        } else {
            tasks.into_iter().for_each(run);
        }
        match first_bad.into_inner() {
            usize::MAX => None,
            id => Some(id),
        }
    }
}

/// Returns true if no value is NaN or infinite. The loop has no early exit, so it vectorizes.
fn all_finite(values: &[f32]) -> bool {
    let mut finite = true;
    for v in values {
        finite &= v.is_finite();
    }
    finite
}

/// Values updated per pass of the inner loops: small enough that a chunk of the weights, the
/// gradient and the state stays in the L2 cache between the summation and the update.
const CHUNK: usize = 8 * 1024;

/// Applies one step of the rule in `config` to one parameter (or a chunk of it) with its
/// gradient and its two state buffers. `t` is the step number, from 1.
fn update(
    config: &OptimizerConfig,
    w: &mut [f32],
    grad: &[f32],
    first: &mut [f32],
    second: &mut [f32],
    lr: f32,
    t: i32,
) {
    // Each rule is written as plain zipped loops with the branches hoisted out, so the
    // compiler vectorizes them.
    match *config {
        OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => {
            sgd_update(w, grad, first, lr, momentum, nesterov, weight_decay, t == 1);
        }
        OptimizerConfig::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        }
        | OptimizerConfig::AdamW {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        } => {
            let decoupled = matches!(config, OptimizerConfig::AdamW { .. });
            adam_update(
                w,
                grad,
                first,
                second,
                lr,
                beta1,
                beta2,
                epsilon,
                weight_decay,
                decoupled,
                t,
            );
        }
        OptimizerConfig::RmsProp {
            alpha,
            epsilon,
            momentum,
            weight_decay,
            ..
        } => {
            for (((w, &g), v), buffer) in w
                .iter_mut()
                .zip(grad)
                .zip(second.iter_mut())
                .zip(first.iter_mut())
            {
                let g = g + weight_decay * *w;
                *v = alpha * *v + (1.0 - alpha) * g * g;
                let step = g / (v.sqrt() + epsilon);
                if momentum != 0.0 {
                    *buffer = momentum * *buffer + step;
                    *w -= lr * *buffer;
                } else {
                    *w -= lr * step;
                }
            }
        }
    }
}

/// One SGD step on one parameter. PyTorch starts the momentum buffer at the first gradient,
/// not at zero, and so does `first_step`.
#[allow(clippy::too_many_arguments)]
fn sgd_update(
    w: &mut [f32],
    grad: &[f32],
    buffer: &mut [f32],
    lr: f32,
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
    first_step: bool,
) {
    if momentum == 0.0 {
        for (w, &g) in w.iter_mut().zip(grad) {
            *w -= lr * (g + weight_decay * *w);
        }
        return;
    }
    let keep = if first_step { 0.0 } else { momentum };
    if nesterov {
        for ((w, &g), b) in w.iter_mut().zip(grad).zip(buffer.iter_mut()) {
            let g = g + weight_decay * *w;
            *b = keep * *b + g;
            *w -= lr * (g + momentum * *b);
        }
    } else {
        for ((w, &g), b) in w.iter_mut().zip(grad).zip(buffer.iter_mut()) {
            let g = g + weight_decay * *w;
            *b = keep * *b + g;
            *w -= lr * *b;
        }
    }
}

/// One Adam or AdamW step on one parameter; `decoupled` selects AdamW's weight decay.
#[allow(clippy::too_many_arguments)]
fn adam_update(
    w: &mut [f32],
    grad: &[f32],
    first: &mut [f32],
    second: &mut [f32],
    lr: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    weight_decay: f32,
    decoupled: bool,
    t: i32,
) {
    let bias1 = 1.0 - beta1.powi(t);
    let inv_bias2_sqrt = 1.0 / (1.0 - beta2.powi(t)).sqrt();
    let step_size = lr / bias1;
    let (shrink, l2) = if decoupled {
        (1.0 - lr * weight_decay, 0.0)
    } else {
        (1.0, weight_decay)
    };
    for (((w, &g), m), v) in w
        .iter_mut()
        .zip(grad)
        .zip(first.iter_mut())
        .zip(second.iter_mut())
    {
        let g = g + l2 * *w;
        *w *= shrink;
        *m = beta1 * *m + (1.0 - beta1) * g;
        *v = beta2 * *v + (1.0 - beta2) * g * g;
        *w -= step_size * *m / (v.sqrt() * inv_bias2_sqrt + epsilon);
    }
}

#[cfg(test)]
mod tests;
