//! Optimizers that update parameters from their gradients.
//!
//! The update rules and defaults follow PyTorch's `torch.optim` (2.x): SGD without dampening,
//! Adam with `eps` added after the square root, AdamW with decoupled weight decay, and RMSprop
//! with `alpha = 0.99`.

mod perceptron;
mod schedule;

pub use perceptron::{Perceptron, PerceptronReport};
pub use schedule::Schedule;

use serde::{Deserialize, Serialize};

use crate::autograd::Parameters;
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
        })
    }

    /// The learning rate the next step uses.
    pub fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    /// Sets the learning rate for the next steps (for schedules).
    pub fn set_learning_rate(&mut self, learning_rate: f32) {
        self.learning_rate = learning_rate;
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Updates every parameter from its gradient; `grads[i]` is laid out like parameter `i`.
    ///
    /// # Panics
    ///
    /// Panics if `grads` does not match `params` in count or sizes.
    pub fn step(&mut self, params: &mut Parameters, grads: &[Vec<f32>]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "optimizer got {} gradients for {} parameters",
            grads.len(),
            params.len()
        );
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

        for (i, (param, grad)) in params.values_mut().iter_mut().zip(grads).enumerate() {
            let w = param.data_mut();
            assert_eq!(
                w.len(),
                grad.len(),
                "gradient {i} has {} values, its parameter {}",
                grad.len(),
                w.len()
            );
            let (first, second) = (&mut self.first[i], &mut self.second[i]);
            match self.config {
                OptimizerConfig::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                    ..
                } => {
                    for j in 0..w.len() {
                        let mut g = grad[j] + weight_decay * w[j];
                        if momentum != 0.0 {
                            // PyTorch starts the buffer at the first gradient, not at zero.
                            first[j] = if t == 1 { g } else { momentum * first[j] + g };
                            g = if nesterov {
                                g + momentum * first[j]
                            } else {
                                first[j]
                            };
                        }
                        w[j] -= lr * g;
                    }
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
                    let decoupled = matches!(self.config, OptimizerConfig::AdamW { .. });
                    let bias1 = 1.0 - beta1.powi(t);
                    let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
                    let step_size = lr / bias1;
                    for j in 0..w.len() {
                        let mut g = grad[j];
                        if decoupled {
                            w[j] -= lr * weight_decay * w[j];
                        } else {
                            g += weight_decay * w[j];
                        }
                        first[j] = beta1 * first[j] + (1.0 - beta1) * g;
                        second[j] = beta2 * second[j] + (1.0 - beta2) * g * g;
                        w[j] -= step_size * first[j] / (second[j].sqrt() / bias2_sqrt + epsilon);
                    }
                }
                OptimizerConfig::RmsProp {
                    alpha,
                    epsilon,
                    momentum,
                    weight_decay,
                    ..
                } => {
                    for j in 0..w.len() {
                        let g = grad[j] + weight_decay * w[j];
                        second[j] = alpha * second[j] + (1.0 - alpha) * g * g;
                        let update = g / (second[j].sqrt() + epsilon);
                        if momentum != 0.0 {
                            first[j] = momentum * first[j] + update;
                            w[j] -= lr * first[j];
                        } else {
                            w[j] -= lr * update;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
