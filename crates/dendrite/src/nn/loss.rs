//! Loss functions, as chosen in a config.

use serde::{Deserialize, Serialize};

use crate::autograd::{Graph, Var};

/// A training loss. Each is the mean over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy of logits against class indices.
    CrossEntropy,
    /// Sigmoid cross-entropy of logits against 0/1 targets (one output per target).
    BinaryCrossEntropy,
    /// Mean squared error against numeric targets.
    Mse,
}

/// The targets of one batch: class indices or numeric values.
#[derive(Debug, Clone, Copy)]
pub enum BatchTargets<'t> {
    /// Class indices, one per row.
    Classes(&'t [usize]),
    /// Numeric targets, row-major `[batch, outputs]`.
    Values(&'t [f32]),
}

impl Loss {
    /// Records this loss between `output` (`[batch, outputs]`) and `targets` on `graph` and
    /// returns the scalar loss.
    ///
    /// # Panics
    ///
    /// Panics if the kind of targets does not fit the loss (class indices for cross-entropy,
    /// values for the others; binary cross-entropy also takes class indices 0 and 1).
    pub fn record(self, graph: &mut Graph<'_>, output: Var, targets: BatchTargets<'_>) -> Var {
        match (self, targets) {
            (Loss::CrossEntropy, BatchTargets::Classes(labels)) => {
                graph.cross_entropy(output, labels)
            }
            (Loss::BinaryCrossEntropy, BatchTargets::Classes(labels)) => {
                // The labels arrive through the workspace as floats; a local buffer is small.
                let shape = graph.shape(output).to_vec();
                let values: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
                let target = graph.input_slice(&shape, &values);
                graph.binary_cross_entropy(output, target)
            }
            (Loss::BinaryCrossEntropy, BatchTargets::Values(values)) => {
                let shape = graph.shape(output).to_vec();
                let target = graph.input_slice(&shape, values);
                graph.binary_cross_entropy(output, target)
            }
            (Loss::Mse, BatchTargets::Values(values)) => {
                let shape = graph.shape(output).to_vec();
                let target = graph.input_slice(&shape, values);
                graph.mse(output, target)
            }
            (loss, _) => panic!("loss {loss:?} does not fit these targets"),
        }
    }

    /// Records this loss like [`Loss::record`], with each row's loss multiplied by the
    /// weight of its class: `(1/n) * sum_i w[y_i] * l_i` over a batch of `n` rows, as Keras
    /// weights classes. With all weights 1 it equals the unweighted loss.
    ///
    /// The weighted cross-entropy is built from recorded operations: the per-row losses are
    /// the log-softmax at each row's label, and one matrix product with a constant column
    /// of `-w[y_i] / n` at those positions sums them. For binary cross-entropy with one
    /// logit `z`, the logits `[0, z]` give the same two probabilities under softmax.
    ///
    /// # Panics
    ///
    /// Panics if the targets are not class indices, the loss is [`Loss::Mse`], or a label
    /// has no weight in `class_weights`.
    pub fn record_weighted(
        self,
        graph: &mut Graph<'_>,
        output: Var,
        targets: BatchTargets<'_>,
        class_weights: &[f32],
    ) -> Var {
        let BatchTargets::Classes(labels) = targets else {
            panic!("class weights need class targets, but the batch has values");
        };
        let logits = match self {
            Loss::CrossEntropy => output,
            Loss::BinaryCrossEntropy => {
                // [batch, 1] · [[0, 1]] = [batch, 2] with rows [0, z].
                let spread = graph.input_slice(&[1, 2], &[0.0, 1.0]);
                graph.matmul(output, spread)
            }
            Loss::Mse => panic!("class weights need a classification loss, not mse"),
        };

        let (batch, classes) = match *graph.shape(logits) {
            [batch, classes] => (batch, classes),
            ref shape => panic!("weighted loss needs [batch, classes] logits, got {shape:?}"),
        };
        assert_eq!(
            labels.len(),
            batch,
            "{} labels for a batch of {batch}",
            labels.len()
        );

        let mut row_weights = vec![0.0f32; batch * classes];
        for (row, &label) in labels.iter().enumerate() {
            row_weights[row * classes + label] = -class_weights[label] / batch as f32;
        }
        let log_probabilities = graph.log_softmax(logits);
        let flat = graph.reshape(log_probabilities, &[1, batch * classes]);
        let weights = graph.input_slice(&[batch * classes, 1], &row_weights);
        graph.matmul(flat, weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{Parameters, Workspace};
    use crate::tensor::Tensor;

    /// Records `loss` on logits held as a parameter, runs backward, and returns the loss
    /// and the gradient of the logits.
    fn loss_and_gradient(
        logits: Tensor,
        record: impl FnOnce(&mut Graph<'_>, Var) -> Var,
    ) -> (f32, Vec<f32>) {
        let mut params = Parameters::new();
        let id = params.push("logits", logits);
        let mut workspace = Workspace::new();
        let mut graph = Graph::new(&params, &mut workspace, true);
        let x = graph.param(id);
        let loss = record(&mut graph, x);
        let value = graph.value(loss)[0];
        graph.backward(loss);
        (value, workspace.gradient(id).to_vec())
    }

    fn assert_close(found: &[f32], expected: &[f32]) {
        assert_eq!(found.len(), expected.len());
        for (a, b) in found.iter().zip(expected) {
            assert!(
                (a - b).abs() < 1e-5,
                "found {found:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn unit_weights_match_cross_entropy() {
        let logits = Tensor::from_vec(&[3, 3], vec![1.0, -2.0, 0.5, 0.0, 3.0, 1.0, 2.0, 2.0, -1.0]);
        let labels = [2, 1, 0];

        let (plain, plain_grad) = loss_and_gradient(logits.clone(), |g, x| {
            Loss::CrossEntropy.record(g, x, BatchTargets::Classes(&labels))
        });
        let (weighted, weighted_grad) = loss_and_gradient(logits, |g, x| {
            Loss::CrossEntropy.record_weighted(g, x, BatchTargets::Classes(&labels), &[1.0; 3])
        });

        assert_close(&[weighted], &[plain]);
        assert_close(&weighted_grad, &plain_grad);
    }

    #[test]
    fn weighted_cross_entropy_by_hand() {
        // Two rows of logits [0, 0]: each row's loss is ln 2. Labels 0 and 1 with weights 3
        // and 1 give (3 ln 2 + ln 2) / 2 = 2 ln 2. The gradient of row i is
        // w[y_i] / n * (softmax - onehot): row 0 is 1.5 * [-0.5, 0.5], row 1 is 0.5 * [0.5, -0.5].
        let logits = Tensor::from_vec(&[2, 2], vec![0.0; 4]);

        let (value, gradient) = loss_and_gradient(logits, |g, x| {
            Loss::CrossEntropy.record_weighted(g, x, BatchTargets::Classes(&[0, 1]), &[3.0, 1.0])
        });

        assert_close(&[value], &[2.0 * std::f32::consts::LN_2]);
        assert_close(&gradient, &[-0.75, 0.75, 0.25, -0.25]);
    }

    #[test]
    fn weighted_binary_matches_sigmoid_loss() {
        let logits = Tensor::from_vec(&[3, 1], vec![0.3, -1.2, 2.5]);
        let labels = [1, 0, 0];
        let weights = [2.0, 0.5];

        let (value, gradient) = loss_and_gradient(logits.clone(), |g, x| {
            Loss::BinaryCrossEntropy.record_weighted(g, x, BatchTargets::Classes(&labels), &weights)
        });

        // Per row: -ln(sigmoid(z)) for label 1, -ln(1 - sigmoid(z)) for label 0, weighted
        // by the label's class and divided by 3. The gradient is w * (sigmoid(z) - y) / 3.
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        let mut expected_value = 0.0;
        let mut expected_gradient = Vec::new();
        for (&z, &label) in logits.data().iter().zip(&labels) {
            let p = sigmoid(z);
            let w = weights[label];
            let y = label as f32;
            expected_value += w * -(y * p.ln() + (1.0 - y) * (1.0 - p).ln()) / 3.0;
            expected_gradient.push(w * (p - y) / 3.0);
        }
        assert_close(&[value], &[expected_value]);
        assert_close(&gradient, &expected_gradient);
    }
}
