//! The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural
//! Networks", 2017; the stopping and smoothing rules follow fastai's `lr_find`).

use serde::Serialize;

use crate::data::{Batches, Dataset};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::optim::Optimizer;
use crate::rng::Rng;

use super::step::StepRunner;
use super::{
    DROPOUT_STREAM, FitOptions, SHUFFLE_STREAM, TrainConfig, check_class_weights, check_fits,
};

/// Settings of the learning-rate range test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeTest {
    /// The learning rate of the first step.
    pub min_learning_rate: f32,
    /// The learning rate of the last step, if the loss has not diverged before.
    pub max_learning_rate: f32,
    /// Optimizer steps from the lowest to the highest rate; the batches repeat if an epoch
    /// has fewer.
    pub steps: usize,
    /// Weight of the previous value in the exponential moving average of the loss.
    pub smoothing: f64,
    /// The test stops once the smoothed loss exceeds this multiple of its lowest value.
    pub divergence_factor: f64,
}

impl Default for RangeTest {
    /// fastai's defaults: 1e-7 to 10 in 100 steps with smoothing 0.98 and a stop at 4 times
    /// the lowest loss, except 300 steps, which gives a smoother curve on small batches.
    fn default() -> Self {
        RangeTest {
            min_learning_rate: 1e-7,
            max_learning_rate: 10.0,
            steps: 300,
            smoothing: 0.98,
            divergence_factor: 4.0,
        }
    }
}

/// One step of the range test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RangePoint {
    /// The learning rate of the step.
    pub learning_rate: f32,
    /// The batch loss before the step.
    pub loss: f64,
    /// The bias-corrected exponential moving average of the batch losses so far.
    pub smoothed_loss: f64,
}

/// The outcome of [`lr_range_test`].
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTestResult {
    /// One point per step, by increasing learning rate.
    pub points: Vec<RangePoint>,
    /// The learning rate with the lowest smoothed loss.
    pub min_loss_learning_rate: f32,
    /// The suggested learning rate: a tenth of the rate with the lowest smoothed loss.
    pub suggestion: f32,
    /// Whether the test stopped because the loss diverged (became non-finite or exceeded
    /// `divergence_factor` times its lowest value).
    pub diverged: bool,
}

/// Trains `model` for `settings.steps` steps with a learning rate that grows exponentially
/// from `settings.min_learning_rate` to `settings.max_learning_rate`, and records the loss
/// of each step. The optimizer, batch size, loss and seed come from `config`; its schedule
/// and epochs are ignored. `model` is left in its last finite state and is not meant to be
/// kept.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] for invalid settings or an empty training set (naming the
/// setting), [`Error::Shape`] if the data does not fit the model, and
/// [`Error::InvalidConfig`] if the first step's loss is not finite.
pub fn lr_range_test(
    model: &mut Sequential,
    train: &Dataset,
    config: &TrainConfig,
    options: &FitOptions,
    settings: &RangeTest,
) -> Result<RangeTestResult> {
    config.validate()?;
    validate_settings(settings)?;
    if let Some(weights) = &options.class_weights {
        check_class_weights(train, config.loss, weights)?;
    }
    check_fits(model, train, config.loss, "training")?;
    if train.is_empty() {
        return Err(Error::InvalidConfig("the training set has no rows".into()));
    }

    let batch_size = config.batch_size.min(train.len());
    let mut optimizer = Optimizer::new(config.optimizer.clone())?;
    let mut batches = Batches::new(train.len(), batch_size, config.shuffle)?;
    let mut rng = Rng::for_stream(config.seed, SHUFFLE_STREAM);
    let dropout_seed = Rng::for_stream(config.seed, DROPOUT_STREAM).next_u64();
    let mut runner = StepRunner::new(
        rayon::current_num_threads(),
        dropout_seed,
        train.feature_shape(),
    );
    if let Some(weights) = &options.class_weights {
        runner.set_class_weights(weights.clone());
    }

    let ratio = (settings.max_learning_rate as f64 / settings.min_learning_rate as f64)
        .powf(1.0 / (settings.steps.max(2) - 1) as f64);
    let mut points = Vec::with_capacity(settings.steps);
    let mut average = 0.0f64;
    let mut lowest = f64::INFINITY;
    let mut diverged = false;
    let mut step = 0;
    'epochs: while step < settings.steps {
        let order: Vec<Vec<usize>> = batches.epoch(&mut rng).map(<[usize]>::to_vec).collect();
        for batch in &order {
            if step == settings.steps {
                break 'epochs;
            }
            let learning_rate =
                (settings.min_learning_rate as f64 * ratio.powi(step as i32)) as f32;
            optimizer.set_learning_rate(learning_rate);
            let loss = runner.run(model, train, batch, config.loss) as f64;
            if !loss.is_finite() {
                if points.is_empty() {
                    return Err(Error::InvalidConfig(format!(
                        "the loss is {loss} at the first step, at learning rate \
                         {learning_rate}; lower the range test's minimum learning rate"
                    )));
                }
                diverged = true;
                break 'epochs;
            }

            // Bias-corrected moving average, as in Adam's moment estimates.
            average = settings.smoothing * average + (1.0 - settings.smoothing) * loss;
            let smoothed = average / (1.0 - settings.smoothing.powi(step as i32 + 1));
            points.push(RangePoint {
                learning_rate,
                loss,
                smoothed_loss: smoothed,
            });
            lowest = lowest.min(smoothed);
            if step > 0 && smoothed > settings.divergence_factor * lowest {
                diverged = true;
                break 'epochs;
            }

            let bad_gradient =
                optimizer.step_weighted(model.params_mut(), &runner.gradients(), runner.weights());
            if bad_gradient.is_some() {
                diverged = true;
                break 'epochs;
            }
            model.update_running_stats(&runner.batch_statistics());
            step += 1;
        }
    }

    let min_loss_learning_rate = points
        .iter()
        .min_by(|a, b| a.smoothed_loss.total_cmp(&b.smoothed_loss))
        .map_or(settings.min_learning_rate, |point| point.learning_rate);
    Ok(RangeTestResult {
        points,
        min_loss_learning_rate,
        suggestion: (min_loss_learning_rate / 10.0).max(settings.min_learning_rate),
        diverged,
    })
}

fn validate_settings(settings: &RangeTest) -> Result<()> {
    let RangeTest {
        min_learning_rate: low,
        max_learning_rate: high,
        steps,
        smoothing,
        divergence_factor,
    } = *settings;
    if !(low > 0.0 && low.is_finite() && high.is_finite() && high > low) {
        return Err(Error::InvalidConfig(format!(
            "the range test needs 0 < minimum learning rate < maximum learning rate, got {low} \
             and {high}"
        )));
    }
    if steps < 2 {
        return Err(Error::InvalidConfig(format!(
            "the range test needs at least 2 steps, got {steps}"
        )));
    }
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::InvalidConfig(format!(
            "the range test's smoothing is {smoothing}; use a value in [0, 1) such as 0.98"
        )));
    }
    if !(divergence_factor.is_finite() && divergence_factor > 1.0) {
        return Err(Error::InvalidConfig(format!(
            "the range test's divergence factor is {divergence_factor}; use more than 1, such \
             as 4"
        )));
    }
    Ok(())
}
