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
}
