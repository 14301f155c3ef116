//! Evaluation of a model on a dataset: the loss, and for classifiers the accuracy,
//! per-class precision, recall and F1, the confusion matrix and (for two classes) ROC AUC;
//! for regression MSE, RMSE, MAE and R².

mod classification;
mod regression;

pub use classification::{ClassMetrics, ClassificationMetrics, classification_metrics, roc_auc};
pub use regression::{RegressionMetrics, mean_regression_metrics, regression_metrics};

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::autograd::{Graph, Workspace};
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::nn::{Loss, Sequential, loss::BatchTargets};
use crate::tensor::argmax_rows;

/// The decision rule of a binary classifier: predict `positive_class` when its probability
/// is at least `threshold`, and the other class otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinaryDecision {
    /// The class index (0 or 1) whose probability is compared with the threshold.
    pub positive_class: usize,
    /// The lowest probability of the positive class that predicts it.
    pub threshold: f32,
}

impl BinaryDecision {
    /// Creates a decision rule and checks it.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if `positive_class` is not 0 or 1, or `threshold` is
    /// not in `[0, 1]`.
    pub fn new(positive_class: usize, threshold: f32) -> Result<BinaryDecision> {
        if positive_class > 1 {
            return Err(Error::InvalidConfig(format!(
                "a binary classifier's positive class is 0 or 1, got {positive_class}"
            )));
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::InvalidConfig(format!(
                "decision threshold {threshold} is invalid; use a probability in [0, 1], such \
                 as 0.5"
            )));
        }
        Ok(BinaryDecision {
            positive_class,
            threshold,
        })
    }
}

impl Default for BinaryDecision {
    /// Class 1 at probability 0.5.
    fn default() -> Self {
        BinaryDecision {
            positive_class: 1,
            threshold: 0.5,
        }
    }
}

/// Metrics of one model on one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Mean loss over all rows.
    pub loss: f64,
    /// Named metrics. Classifiers: `accuracy`, `macro_precision`, `macro_recall`,
    /// `macro_f1`, and `roc_auc` for two classes when both occur. Regression: `mse`,
    /// `rmse`, `mae` and `r2` (unless the targets are constant), averaged over the outputs.
    pub metrics: BTreeMap<String, f64>,
    /// For classifiers, `confusion[true_class][predicted_class]` counts rows.
    pub confusion: Option<Vec<Vec<usize>>>,
    /// For classifiers, the metrics of each class.
    pub per_class: Option<Vec<ClassMetrics>>,
    /// For regression, the metrics of each output.
    pub per_output: Option<Vec<RegressionMetrics>>,
}

impl Evaluation {
    /// Returns the accuracy, for classifiers.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.get("accuracy").copied()
    }

    /// Returns all metrics including `loss` as one map.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut map = self.metrics.clone();
        map.insert("loss".into(), self.loss);
        map
    }

    /// Returns the evaluation as the JSON object that `summary.json` stores per split: the
    /// metrics of [`Evaluation::to_map`], and for classifiers `per_class` (by class name)
    /// and `confusion_matrix` (rows are true classes), for several outputs `per_output` (by
    /// target name). Classes and outputs without a name are named by their index.
    pub fn to_json(&self, names: &[String]) -> Value {
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let mut object: Map<String, Value> = self
            .to_map()
            .into_iter()
            .map(|(key, value)| (key, json!(value)))
            .collect();

        if let Some(per_class) = &self.per_class {
            object.insert("per_class".into(), named_object(per_class, name));
        }
        if let Some(confusion) = &self.confusion {
            object.insert("confusion_matrix".into(), json!(confusion));
        }
        if let Some(per_output) = self.per_output.as_ref().filter(|p| p.len() > 1) {
            object.insert("per_output".into(), named_object(per_output, name));
        }
        Value::Object(object)
    }
}

/// Returns a JSON object of `items` keyed by `name(index)`.
fn named_object<T: Serialize>(items: &[T], name: impl Fn(usize) -> String) -> Value {
    Value::Object(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| (name(i), json!(item)))
            .collect(),
    )
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

/// Turns model outputs of shape `[n, width]` into class probabilities: `[n, 2]` from one
/// logit per row (sigmoid, for binary cross-entropy), or `[n, width]` by softmax otherwise.
///
/// # Panics
///
/// Panics if `width` is 0.
pub fn class_probabilities(outputs: &[f32], width: usize, loss: Loss) -> Vec<f32> {
    assert!(width > 0, "class_probabilities needs at least one output");
    if width == 1 || loss == Loss::BinaryCrossEntropy {
        return outputs
            .iter()
            .step_by(width)
            .flat_map(|&z| {
                let p = 1.0 / (1.0 + (-z).exp());
                [1.0 - p, p]
            })
            .collect();
    }

    let mut probabilities = Vec::with_capacity(outputs.len());
    for row in outputs.chunks_exact(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let start = probabilities.len();
        probabilities.extend(row.iter().map(|&z| (z - max).exp()));
        let sum: f32 = probabilities[start..].iter().sum();
        for p in &mut probabilities[start..] {
            *p /= sum;
        }
    }
    probabilities
}

/// Returns the predicted class of each row of `probabilities` (`[n, classes]`): the most
/// probable class (the first on a tie), or with a `decision` and two classes, the positive
/// class when its probability reaches the threshold.
///
/// # Panics
///
/// Panics if `classes` is 0.
pub fn decide_classes(
    probabilities: &[f32],
    classes: usize,
    decision: Option<BinaryDecision>,
) -> Vec<usize> {
    match decision {
        Some(decision) if classes == 2 => probabilities
            .chunks_exact(2)
            .map(|row| {
                let positive = decision.positive_class;
                if row[positive] >= decision.threshold {
                    positive
                } else {
                    1 - positive
                }
            })
            .collect(),
        _ => argmax_rows(probabilities, classes),
    }
}

/// Turns classifier outputs `[n, width]` into class probabilities (see
/// [`class_probabilities`]) and predicted classes: with a `decision` and two classes as
/// [`decide_classes`] does, otherwise as [`predicted_classes`] does on the outputs
/// themselves. Returns the probabilities (`[n, classes]`, row major) and the classes.
///
/// # Panics
///
/// Panics if `width` is 0.
pub fn classify(
    outputs: &[f32],
    width: usize,
    loss: Loss,
    decision: Option<BinaryDecision>,
) -> (Vec<f32>, Vec<usize>) {
    let probabilities = class_probabilities(outputs, width, loss);
    let classes = probabilities.len() / (outputs.len() / width).max(1);
    let predicted = match decision {
        Some(decision) if classes == 2 => decide_classes(&probabilities, 2, Some(decision)),
        _ => predicted_classes(outputs, width),
    };
    (probabilities, predicted)
}

/// Evaluates `model` with `loss` on every row of `dataset`, `batch_size` rows at a time, in
/// evaluation mode. Classes are predicted as [`predicted_classes`] does.
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
    evaluate_with(model, dataset, loss, batch_size, None)
}

/// Evaluates like [`evaluate`], but a binary classifier predicts with `decision` (see
/// [`decide_classes`]), and ROC AUC scores rows by the probability of its positive class
/// (class 1 without a decision).
///
/// # Panics
///
/// As [`evaluate`].
pub fn evaluate_with(
    model: &Sequential,
    dataset: &Dataset,
    loss: Loss,
    batch_size: usize,
    decision: Option<BinaryDecision>,
) -> Evaluation {
    let (outputs, total_loss) = forward_all(model, dataset, loss, batch_size);
    let n = dataset.len();
    let width: usize = model.output_shape().iter().product();

    let mut evaluation = Evaluation {
        loss: total_loss / n.max(1) as f64,
        metrics: BTreeMap::new(),
        confusion: None,
        per_class: None,
        per_output: None,
    };
    let metrics = &mut evaluation.metrics;
    match &dataset.targets {
        Targets::Classes {
            labels,
            class_names,
        } => {
            let classes = class_names.len().max(width).max(2);
            let (probabilities, predicted) = classify(&outputs, width, loss, decision);
            let report = classification_metrics(labels, &predicted, classes);

            metrics.insert("accuracy".into(), report.accuracy);
            metrics.insert("macro_precision".into(), report.macro_precision);
            metrics.insert("macro_recall".into(), report.macro_recall);
            metrics.insert("macro_f1".into(), report.macro_f1);
            if classes == 2 && probabilities.len() == 2 * n {
                let positive_class = decision.unwrap_or_default().positive_class;
                let scores: Vec<f32> = probabilities
                    .chunks_exact(2)
                    .map(|row| row[positive_class])
                    .collect();
                let positive: Vec<bool> = labels.iter().map(|&l| l == positive_class).collect();
                if let Some(auc) = roc_auc(&scores, &positive) {
                    metrics.insert("roc_auc".into(), auc);
                }
            }
            evaluation.confusion = Some(report.confusion);
            evaluation.per_class = Some(report.per_class);
        }
        Targets::Values(targets) => {
            let per_output = regression_metrics(&outputs, targets.data(), width);
            let mean = mean_regression_metrics(&per_output);
            metrics.insert("mse".into(), mean.mse);
            metrics.insert("rmse".into(), mean.rmse);
            metrics.insert("mae".into(), mean.mae);
            if let Some(r2) = mean.r2 {
                metrics.insert("r2".into(), r2);
            }
            evaluation.per_output = Some(per_output);
        }
    }
    evaluation
}

/// Runs the model over every row of `dataset` and returns the outputs (`[n, width]`, row
/// major) and the sum of the batch losses weighted by batch size.
fn forward_all(
    model: &Sequential,
    dataset: &Dataset,
    loss: Loss,
    batch_size: usize,
) -> (Vec<f32>, f64) {
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
    (outputs, total_loss)
}

/// The mean and standard deviation of one metric over cross-validation folds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldSummary {
    /// The mean over the folds.
    pub mean: f64,
    /// The sample standard deviation over the folds (divided by `folds - 1`), 0 for one
    /// fold.
    pub std: f64,
    /// The value of each fold, in fold order.
    pub folds: Vec<f64>,
}

/// Summarizes the metrics of each cross-validation fold: for each metric that every fold
/// has, its mean and sample standard deviation.
pub fn summarize_folds(folds: &[BTreeMap<String, f64>]) -> BTreeMap<String, FoldSummary> {
    let Some(first) = folds.first() else {
        return BTreeMap::new();
    };

    let mut summary = BTreeMap::new();
    for name in first.keys() {
        let Some(values) = folds
            .iter()
            .map(|fold| fold.get(name).copied())
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        let count = values.len() as f64;
        let mean = values.iter().sum::<f64>() / count;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0)).sqrt()
        } else {
            0.0
        };
        summary.insert(
            name.clone(),
            FoldSummary {
                mean,
                std,
                folds: values,
            },
        );
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_from_one_logit_and_softmax() {
        let binary = class_probabilities(&[0.0, 2.0_f32.ln()], 1, Loss::BinaryCrossEntropy);
        let expected = [0.5, 0.5, 1.0 / 3.0, 2.0 / 3.0];
        for (found, expected) in binary.iter().zip(expected) {
            assert!((found - expected).abs() < 1e-6, "{binary:?}");
        }

        let softmax = class_probabilities(&[0.0, 0.0, 1000.0, 1000.0], 2, Loss::CrossEntropy);
        assert_eq!(softmax, vec![0.5, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn threshold_moves_the_decision() {
        let probabilities = [0.7, 0.3, 0.4, 0.6, 0.1, 0.9];

        assert_eq!(decide_classes(&probabilities, 2, None), vec![0, 1, 1]);
        let strict = BinaryDecision::new(1, 0.8).unwrap();
        assert_eq!(
            decide_classes(&probabilities, 2, Some(strict)),
            vec![0, 0, 1]
        );
        let lenient = BinaryDecision::new(1, 0.25).unwrap();
        assert_eq!(
            decide_classes(&probabilities, 2, Some(lenient)),
            vec![1, 1, 1]
        );
        let class_zero = BinaryDecision::new(0, 0.65).unwrap();
        assert_eq!(
            decide_classes(&probabilities, 2, Some(class_zero)),
            vec![0, 1, 1]
        );
    }

    #[test]
    fn decision_rejects_bad_settings() {
        assert!(BinaryDecision::new(2, 0.5).is_err());
        assert!(BinaryDecision::new(1, 1.5).is_err());
        assert!(BinaryDecision::new(1, f32::NAN).is_err());
    }

    #[test]
    fn folds_mean_and_sample_std() {
        let folds: Vec<BTreeMap<String, f64>> = [0.7, 0.8, 0.9]
            .iter()
            .map(|&accuracy| {
                BTreeMap::from([
                    ("accuracy".to_string(), accuracy),
                    ("loss".to_string(), 1.0),
                ])
            })
            .collect();

        let summary = summarize_folds(&folds);

        let accuracy = &summary["accuracy"];
        assert!((accuracy.mean - 0.8).abs() < 1e-12);
        // Deviations -0.1, 0, 0.1: sum of squares 0.02 over 2 gives 0.01, std 0.1.
        assert!((accuracy.std - 0.1).abs() < 1e-12, "{accuracy:?}");
        assert_eq!(summary["loss"].std, 0.0);
        assert_eq!(accuracy.folds, vec![0.7, 0.8, 0.9]);
    }

    #[test]
    fn folds_skip_metrics_some_fold_lacks() {
        let folds = vec![
            BTreeMap::from([("roc_auc".to_string(), 0.8)]),
            BTreeMap::new(),
        ];

        assert!(summarize_folds(&folds).is_empty());
    }
}
