//! Regression metrics: mean squared error, its root, mean absolute error and R².

use serde::Serialize;

/// The regression metrics of one output, or their mean over several outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegressionMetrics {
    /// Mean squared error.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// The coefficient of determination, `1 - SS_res / SS_tot`: 1 for perfect predictions,
    /// 0 for always predicting the mean of the targets, negative for worse. `None` when the
    /// targets are constant, because `SS_tot` is then 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

/// Computes the metrics of each of `outputs` columns of row-major `predictions` against
/// `targets`, both of shape `[n, outputs]`. Sums are taken in `f64`.
///
/// # Panics
///
/// Panics if the slices differ in length or their length is not a multiple of `outputs`.
pub fn regression_metrics(
    predictions: &[f32],
    targets: &[f32],
    outputs: usize,
) -> Vec<RegressionMetrics> {
    assert_eq!(
        predictions.len(),
        targets.len(),
        "regression_metrics got {} predictions and {} targets",
        predictions.len(),
        targets.len()
    );
    assert!(
        outputs > 0 && targets.len().is_multiple_of(outputs),
        "regression_metrics: {} values do not form rows of {outputs} outputs",
        targets.len()
    );
    let rows = targets.len() / outputs;

    (0..outputs)
        .map(|output| {
            let column = |values: &[f32]| -> Vec<f64> {
                values
                    .iter()
                    .skip(output)
                    .step_by(outputs)
                    .map(|&v| f64::from(v))
                    .collect()
            };
            let (predicted, actual) = (column(predictions), column(targets));
            let count = rows.max(1) as f64;
            let mean = actual.iter().sum::<f64>() / count;

            let (mut squared, mut absolute, mut total) = (0.0, 0.0, 0.0);
            for (p, t) in predicted.iter().zip(&actual) {
                squared += (p - t).powi(2);
                absolute += (p - t).abs();
                total += (t - mean).powi(2);
            }
            RegressionMetrics {
                mse: squared / count,
                rmse: (squared / count).sqrt(),
                mae: absolute / count,
                r2: (total > 0.0).then(|| 1.0 - squared / total),
            }
        })
        .collect()
}

/// Returns the mean of each metric over several outputs (scikit-learn's
/// `multioutput="uniform_average"`). R² is `None` if it is `None` for any output.
///
/// # Panics
///
/// Panics if `per_output` is empty.
pub fn mean_regression_metrics(per_output: &[RegressionMetrics]) -> RegressionMetrics {
    assert!(
        !per_output.is_empty(),
        "mean_regression_metrics needs an output"
    );
    let count = per_output.len() as f64;
    let mean =
        |value: fn(&RegressionMetrics) -> f64| per_output.iter().map(value).sum::<f64>() / count;
    let r2: Option<Vec<f64>> = per_output.iter().map(|m| m.r2).collect();

    RegressionMetrics {
        mse: mean(|m| m.mse),
        rmse: mean(|m| m.rmse),
        mae: mean(|m| m.mae),
        r2: r2.map(|values| values.iter().sum::<f64>() / count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(found: f64, expected: f64) {
        assert!(
            (found - expected).abs() < 1e-9,
            "found {found}, expected {expected}"
        );
    }

    #[test]
    fn metrics_by_hand() {
        // Errors 1, -2, 0, 1: squared 1, 4, 0, 1 (sum 6), absolute sum 4. The targets 2, 4,
        // 6, 8 have mean 5 and SS_tot = 9 + 1 + 1 + 9 = 20, so R² = 1 - 6/20 = 0.7.
        let metrics = regression_metrics(&[3.0, 2.0, 6.0, 9.0], &[2.0, 4.0, 6.0, 8.0], 1);

        assert_eq!(metrics.len(), 1);
        assert_close(metrics[0].mse, 1.5);
        assert_close(metrics[0].rmse, 1.5f64.sqrt());
        assert_close(metrics[0].mae, 1.0);
        assert_close(metrics[0].r2.unwrap(), 0.7);
    }

    #[test]
    fn constant_prediction_r2() {
        let targets = [2.0, 4.0, 6.0, 8.0];

        // Predicting the mean of the targets gives R² = 0 exactly.
        let at_mean = regression_metrics(&[5.0; 4], &targets, 1);
        assert_close(at_mean[0].r2.unwrap(), 0.0);

        // Predicting 7 everywhere: SS_res = 25 + 9 + 1 + 1 = 36, so R² = 1 - 36/20 = -0.8.
        let off = regression_metrics(&[7.0; 4], &targets, 1);
        assert_close(off[0].r2.unwrap(), -0.8);
    }

    #[test]
    fn constant_targets_have_no_r2() {
        let metrics = regression_metrics(&[1.0, 2.0], &[3.0, 3.0], 1);

        assert_eq!(metrics[0].r2, None);
        assert_close(metrics[0].mse, 2.5);
    }

    #[test]
    fn outputs_are_separate_columns() {
        // Output 0: predictions 1, 3 against 1, 3 (perfect). Output 1: 10, 10 against 0, 20:
        // MSE 100, MAE 10, R² 1 - 200/200 = 0.
        let per_output = regression_metrics(&[1.0, 10.0, 3.0, 10.0], &[1.0, 0.0, 3.0, 20.0], 2);

        assert_close(per_output[0].mse, 0.0);
        assert_close(per_output[0].r2.unwrap(), 1.0);
        assert_close(per_output[1].mse, 100.0);
        assert_close(per_output[1].r2.unwrap(), 0.0);

        let mean = mean_regression_metrics(&per_output);
        assert_close(mean.mse, 50.0);
        assert_close(mean.rmse, 5.0);
        assert_close(mean.mae, 5.0);
        assert_close(mean.r2.unwrap(), 0.5);
    }
}
