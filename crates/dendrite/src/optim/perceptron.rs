//! The classic perceptron learning rule (Rosenblatt, 1958).
//!
//! A single unit with a step activation, `y = step(w · x + b)`, has zero gradient almost
//! everywhere, so gradient descent leaves it where it started. The perceptron rule instead
//! moves the weights by the error itself: `w += lr * (target - y) * x`, `b += lr * (target - y)`.
//! On linearly separable data it stops making mistakes after finitely many updates.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A single step-activation unit trained with the perceptron rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Perceptron {
    weights: Vec<f32>,
    bias: f32,
}

/// The outcome of [`Perceptron::train`].
#[derive(Debug, Clone, PartialEq)]
pub struct PerceptronReport {
    /// Passes over the data that were run.
    pub epochs: usize,
    /// Misclassified rows in the last pass.
    pub errors_in_last_epoch: usize,
    /// Whether a pass finished with no mistakes.
    pub converged: bool,
}

impl Perceptron {
    /// Creates a unit with `inputs` zero weights and a zero bias.
    pub fn new(inputs: usize) -> Self {
        Perceptron {
            weights: vec![0.0; inputs],
            bias: 0.0,
        }
    }

    /// The weights.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The bias.
    pub fn bias(&self) -> f32 {
        self.bias
    }

    /// Returns 1 if `w · x + b >= 0`, else 0.
    pub fn predict(&self, x: &[f32]) -> usize {
        let z: f32 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + self.bias;
        usize::from(z >= 0.0)
    }

    /// Runs the perceptron rule over `features: [n, inputs]` with 0/1 `labels`, in row order,
    /// until a pass makes no mistake or `max_epochs` passes have run.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if the shapes do not fit or a label is not 0 or 1.
    pub fn train(
        &mut self,
        features: &Tensor,
        labels: &[usize],
        learning_rate: f32,
        max_epochs: usize,
    ) -> Result<PerceptronReport> {
        let (rows, cols) = features.dims2();
        if cols != self.weights.len() || rows != labels.len() {
            return Err(Error::InvalidConfig(format!(
                "perceptron with {} inputs got features of shape {:?} and {} labels",
                self.weights.len(),
                features.shape(),
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().position(|&l| l > 1) {
            return Err(Error::InvalidConfig(format!(
                "perceptron labels must be 0 or 1, row {bad} has {}",
                labels[bad]
            )));
        }

        let mut report = PerceptronReport {
            epochs: 0,
            errors_in_last_epoch: rows,
            converged: false,
        };
        for _ in 0..max_epochs {
            let mut errors = 0;
            for (x, &target) in features.data().chunks_exact(cols).zip(labels) {
                let error = target as f32 - self.predict(x) as f32;
                if error != 0.0 {
                    errors += 1;
                    for (w, v) in self.weights.iter_mut().zip(x) {
                        *w += learning_rate * error * v;
                    }
                    self.bias += learning_rate * error;
                }
            }
            report.epochs += 1;
            report.errors_in_last_epoch = errors;
            if errors == 0 {
                report.converged = true;
                break;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{Activation, Graph, Parameters, Workspace};
    use crate::optim::{Optimizer, OptimizerConfig};

    fn truth_table(outputs: [usize; 4]) -> (Tensor, Vec<usize>) {
        let x = Tensor::from_vec(&[4, 2], vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        (x, outputs.to_vec())
    }

    #[test]
    fn perceptron_learns_and() {
        let (x, labels) = truth_table([0, 0, 0, 1]);
        let mut unit = Perceptron::new(2);
        let report = unit.train(&x, &labels, 0.1, 100).unwrap();
        assert!(report.converged, "{report:?}");
        for (row, &label) in x.data().chunks(2).zip(&labels) {
            assert_eq!(unit.predict(row), label);
        }
    }

    #[test]
    fn perceptron_cannot_learn_xor() {
        let (x, labels) = truth_table([0, 1, 1, 0]);
        let report = Perceptron::new(2).train(&x, &labels, 0.1, 200).unwrap();
        assert!(!report.converged);
        assert!(report.errors_in_last_epoch > 0);
    }

    #[test]
    fn gradient_descent_does_not_move_a_step_unit() {
        // The same AND problem through the step activation with SGD on squared error: the
        // gradient is 0 everywhere, so the weights never change.
        let (x, labels) = truth_table([0, 0, 0, 1]);
        let targets = Tensor::from_vec(&[4, 1], labels.iter().map(|&l| l as f32).collect());
        let mut params = Parameters::new();
        let w = params.push("w", Tensor::from_vec(&[1, 2], vec![0.3, -0.2]));
        let b = params.push("b", Tensor::from_vec(&[1], vec![0.1]));
        let before = params.clone();
        let mut optimizer = Optimizer::new(OptimizerConfig::Sgd {
            learning_rate: 1.0,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        })
        .unwrap();
        let mut workspace = Workspace::new();
        for _ in 0..20 {
            let mut graph = Graph::new(&params, &mut workspace, true);
            let input = graph.input(&x);
            let (wv, bv) = (graph.param(w), graph.param(b));
            let z = graph.linear(input, wv, Some(bv));
            let y = graph.activation(z, Activation::Step);
            let target = graph.input(&targets);
            let loss = graph.mse(y, target);
            assert!(graph.value(loss)[0] > 0.0);
            graph.backward(loss);
            optimizer.step(&mut params, workspace.gradients());
        }
        assert_eq!(params, before);
    }

    #[test]
    fn perceptron_rejects_non_binary_labels() {
        let (x, _) = truth_table([0, 0, 0, 1]);
        let error = Perceptron::new(2)
            .train(&x, &[0, 2, 0, 1], 0.1, 10)
            .unwrap_err();
        assert!(error.to_string().contains("row 1 has 2"), "{error}");
    }
}
