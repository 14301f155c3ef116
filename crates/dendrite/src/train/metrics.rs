//! Evaluation of a model on a dataset: loss, accuracy and the confusion matrix for
//! classifiers, error measures for regression.

use std::collections::BTreeMap;

use crate::autograd::{Graph, Workspace};
use crate::data::{Dataset, Targets};
use crate::nn::{Loss, Sequential, loss::BatchTargets};
use crate::tensor::argmax_rows;

/// Metrics of one model on one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Mean loss over all rows.
    pub loss: f64,
    /// Named metrics: `accuracy` for classifiers; `mse`, `rmse`, `mae` and `r2` for regression.
    pub metrics: BTreeMap<String, f64>,
    /// For classifiers, `confusion[true_class][predicted_class]` counts rows.
    pub confusion: Option<Vec<Vec<usize>>>,
}

impl Evaluation {
    /// The accuracy, for classifiers.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.get("accuracy").copied()
    }

    /// All metrics including `loss`, as one map (the form `summary.json` stores).
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut map = self.metrics.clone();
        map.insert("loss".into(), self.loss);
        map
    }
}

/// Returns the predicted class of each row from the model outputs `[n, outputs]`: the argmax
/// for several outputs, or `output >= 0` (a logit, probability 0.5) for one output.
pub fn predicted_classes(outputs: &[f32], width: usize) -> Vec<usize> {
    if width == 1 {
        outputs.iter().map(|&z| usize::from(z >= 0.0)).collect()
    } else {
        argmax_rows(outputs, width)
    }
}

/// Evaluates `model` with `loss` on every row of `dataset`, `batch_size` rows at a time, in
/// evaluation mode.
///
/// # Panics
///
/// Panics if the dataset's rows do not have the model's input shape, or the targets do not
/// fit the loss.
pub fn evaluate(
    model: &Sequential,
    dataset: &Dataset,
    loss: Loss,
    batch_size: usize,
) -> Evaluation {
    let n = dataset.len();
    let width: usize = model.output_shape().iter().product();
    let mut workspace = Workspace::new();
    let mut outputs = Vec::with_capacity(n * width);
    let mut total_loss = 0.0f64;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut values = Vec::new();
    let mut shape = vec![0];
    shape.extend_from_slice(dataset.feature_shape());
    let indices: Vec<usize> = (0..n).collect();

    for batch in indices.chunks(batch_size.max(1)) {
        shape[0] = batch.len();
        dataset.gather_into(batch, &mut features);
        let targets = match &dataset.targets {
            Targets::Classes { .. } => {
                dataset.gather_labels_into(batch, &mut labels);
                BatchTargets::Classes(&labels)
            }
            Targets::Values(_) => {
                dataset.gather_values_into(batch, &mut values);
                BatchTargets::Values(&values)
            }
        };
        let mut graph = Graph::new(model.params(), &mut workspace, false);
        let x = graph.input_slice(&shape, &features);
        let y = model.forward(&mut graph, x);
        let batch_loss = loss.record(&mut graph, y, targets);
        total_loss += graph.value(batch_loss)[0] as f64 * batch.len() as f64;
        outputs.extend_from_slice(graph.value(y));
    }

    let mut metrics = BTreeMap::new();
    let mut confusion = None;
    match &dataset.targets {
        Targets::Classes {
            labels,
            class_names,
        } => {
            let predicted = predicted_classes(&outputs, width);
            let classes = class_names.len().max(width);
            let mut matrix = vec![vec![0usize; classes]; classes];
            for (&truth, &guess) in labels.iter().zip(&predicted) {
                matrix[truth][guess] += 1;
            }
            let correct = labels
                .iter()
                .zip(&predicted)
                .filter(|(a, b)| a == b)
                .count();
            metrics.insert("accuracy".into(), correct as f64 / n.max(1) as f64);
            confusion = Some(matrix);
        }
        Targets::Values(targets) => {
            let targets = targets.data();
            let count = targets.len().max(1) as f64;
            let mean = targets.iter().map(|&t| t as f64).sum::<f64>() / count;
            let (mut squared, mut absolute, mut total) = (0.0, 0.0, 0.0);
            for (&p, &t) in outputs.iter().zip(targets) {
                let error = p as f64 - t as f64;
                squared += error * error;
                absolute += error.abs();
                total += (t as f64 - mean).powi(2);
            }
            metrics.insert("mse".into(), squared / count);
            metrics.insert("rmse".into(), (squared / count).sqrt());
            metrics.insert("mae".into(), absolute / count);
            if total > 0.0 {
                metrics.insert("r2".into(), 1.0 - squared / total);
            }
        }
    }

    Evaluation {
        loss: total_loss / n.max(1) as f64,
        metrics,
        confusion,
    }
}
