//! The training loop: minibatch gradient descent with validation, early stopping and a guard
//! against NaN and infinite values.

pub mod checkpoint;
mod lr_find;
mod metrics;
mod recovery;
mod resume;
mod step;
mod steps;

pub use lr_find::{RangePoint, RangeTest, RangeTestResult, lr_range_test};

pub use checkpoint::{Checkpoint, CheckpointConfig, CheckpointOptions};
pub use metrics::{
    BinaryDecision, ClassMetrics, ClassificationMetrics, Evaluation, FoldSummary,
    RegressionMetrics, class_probabilities, classification_metrics, classify, decide_classes,
    evaluate, evaluate_with, mean_regression_metrics, predicted_classes, regression_metrics,
    roc_auc, summarize_folds,
};
pub use recovery::{NonFiniteConfig, NonFinitePolicy};
pub use steps::StepRecord;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{Augment, Batches, Dataset, Targets};
use crate::error::{Error, Result};
use crate::nn::{LayerSpec, Loss, Sequential};
use crate::optim::{LearningRate, Optimizer, OptimizerConfig, Schedule};
use crate::rng::Rng;
use resume::{
    CheckpointParts, EpochTotals, Position, RunCounters, first_non_finite_gradient, resume,
    write_checkpoint,
};
use step::StepRunner;

/// Training settings, as written under `[training]` in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Rows per minibatch. A training set smaller than one batch trains on one batch of all
    /// its rows, with a warning.
    pub batch_size: usize,
    /// The loss to minimize.
    pub loss: Loss,
    /// The optimizer and its hyperparameters.
    pub optimizer: OptimizerConfig,
    /// Seed for weight initialization, the validation split and the shuffling.
    #[serde(default)]
    pub seed: u64,
    /// Whether to shuffle the training rows every epoch.
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// The learning-rate schedule over the epochs (constant by default).
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Stop when the validation loss has not improved for a number of epochs.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Random changes to each training image (all off by default). Validation and
    /// evaluation never augment.
    #[serde(default)]
    pub augment: Augment,
    /// Gradient clipping by global norm: when the L2 norm of all parameter gradients of a
    /// step, taken together, exceeds this value, every gradient is scaled by
    /// `clip_norm / norm` before the optimizer step (PyTorch's `clip_grad_norm_`). Off by
    /// default.
    #[serde(default)]
    pub clip_norm: Option<f32>,
    /// Gradient clipping by value: every gradient value is clamped to
    /// `[-clip_value, clip_value]` before the optimizer step, after `clip_norm` if both are
    /// set (PyTorch's `clip_grad_value_`). Off by default.
    #[serde(default)]
    pub clip_value: Option<f32>,
}

fn default_schedule() -> Schedule {
    Schedule::Constant
}

/// Random streams of a training run, see [`Rng::for_stream`].
const SHUFFLE_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;
const AUGMENT_STREAM: u64 = 3;

fn default_true() -> bool {
    true
}

/// Early stopping on the validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before training stops.
    pub patience: usize,
    /// The smallest decrease of the validation loss that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
    /// Whether to put back the weights of the epoch with the best validation loss at the end.
    #[serde(default = "default_true")]
    pub restore_best: bool,
}

impl TrainConfig {
    /// Checks the settings that do not depend on the data.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the invalid setting.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::InvalidConfig(
                "training.epochs = 0; train for at least 1 epoch".into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig(
                "training.batch_size = 0; use at least 1 (64 is common)".into(),
            ));
        }
        if let Some(stopping) = self.early_stopping
            && stopping.patience == 0
        {
            return Err(Error::InvalidConfig(
                "training.early_stopping.patience = 0; use at least 1".into(),
            ));
        }
        for (name, limit) in [
            ("clip_norm", self.clip_norm),
            ("clip_value", self.clip_value),
        ] {
            if let Some(limit) = limit
                && !(limit > 0.0 && limit.is_finite())
            {
                return Err(Error::InvalidConfig(format!(
                    "training.{name} = {limit}; use a positive finite limit such as 1.0, or \
                     remove the key to train without clipping"
                )));
            }
        }
        self.schedule.validate()?;
        self.optimizer.validate()
    }
}

/// The metrics and timing of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, weighted by batch size.
    pub train_loss: f64,
    /// Validation loss, if there is a validation set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation accuracy, for classifiers with a validation set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Every validation metric (see [`Evaluation::metrics`]), if there is a validation set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub val_metrics: BTreeMap<String, f64>,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f32,
    /// Optimizer steps taken so far.
    pub steps: u64,
    /// Training throughput in this epoch, in rows per second.
    pub samples_per_second: f64,
    /// Wall time of the epoch in seconds, validation included.
    pub seconds: f64,
    /// Steps of this epoch whose gradients `clip_norm` scaled down, when it is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped_steps: Option<usize>,
    /// The largest global gradient norm of this epoch, before clipping, when `clip_norm` is
    /// set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gradient_norm: Option<f64>,
    /// Batches of this epoch that the `skip` policy left out because of a NaN or infinite
    /// value, when that policy is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<usize>,
}

/// Hooks the training loop calls, for progress bars, logs and saving.
pub trait Callback {
    /// Called before an epoch with its number (from 1) and its number of batches.
    fn on_epoch_begin(&mut self, _epoch: usize, _batches: usize) {}

    /// Called after each optimizer step with the rows in the batch and the batch loss.
    fn on_batch_end(&mut self, _rows: usize, _loss: f32) {}

    /// The interval in optimizer steps at which [`Callback::on_step_end`] receives gradient
    /// norms: the first step and every `n`-th step. 0, the default, never computes them.
    fn gradient_norm_interval(&self) -> u64 {
        0
    }

    /// Called after each optimizer step, after [`Callback::on_batch_end`].
    fn on_step_end(&mut self, _record: &StepRecord) {}

    /// Called after each epoch with its record and the model as it is now.
    ///
    /// # Errors
    ///
    /// An error stops training and is returned by [`fit`].
    fn on_epoch_end(&mut self, _record: &EpochRecord, _model: &Sequential) -> Result<()> {
        Ok(())
    }

    /// Called with a warning about the data or the settings.
    fn on_warning(&mut self, _message: &str) {}
}

/// A callback that does nothing.
pub struct Silent;

impl Callback for Silent {}

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// One record per epoch that ran.
    pub epochs: Vec<EpochRecord>,
    /// The epoch whose weights the model has at the end.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended training before the last epoch.
    pub stopped_early: bool,
    /// Warnings about the data or the settings.
    pub warnings: Vec<String>,
}

/// Settings of a training run that come from the data rather than the config's
/// `[training]` table.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// The weight of each class in the training loss, indexed by class (see
    /// [`crate::data::ClassWeights::resolve`]). Validation losses are not weighted.
    pub class_weights: Option<Vec<f32>>,
    /// The folder and interval of checkpoints. `None` writes none, not even on interrupt.
    pub checkpoints: Option<CheckpointOptions>,
    /// The policy when the loss or a gradient becomes NaN or infinite (default: stop).
    pub non_finite: NonFiniteConfig,
    /// A checkpoint to continue from (see [`checkpoint::latest`]). The model must have the
    /// architecture the checkpoint was written with, and the training set the same rows.
    pub resume: Option<Checkpoint>,
    /// A flag that, once set (by a Ctrl-C handler, for example), makes training finish the
    /// current step, write a checkpoint if [`FitOptions::checkpoints`] is set, and return
    /// [`Error::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Trains `model` on `train` with minibatch gradient descent, validating on `validation`
/// after every epoch if given.
///
/// If the loss or any gradient becomes NaN or infinite, training stops. The model is put back
/// to its weights at the end of the last finished epoch (or its initial weights), and an
/// [`Error::NonFinite`] names the epoch, the step and what was not finite.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] for invalid settings or an empty training set,
/// [`Error::Shape`] if the data does not fit the model or the loss, [`Error::NonFinite`] as
/// above, and any error from `callback`.
pub fn fit(
    model: &mut Sequential,
    train: &Dataset,
    validation: Option<&Dataset>,
    config: &TrainConfig,
    callback: &mut dyn Callback,
) -> Result<History> {
    fit_with(
        model,
        train,
        validation,
        config,
        &FitOptions::default(),
        callback,
    )
}

/// Trains like [`fit`], with class weights in the training loss if `options` has them.
///
/// # Errors
///
/// As [`fit`], and [`Error::InvalidConfig`] if class weights are given for regression
/// targets, do not have one weight per class, or contain a negative or non-finite weight.
pub fn fit_with(
    model: &mut Sequential,
    train: &Dataset,
    validation: Option<&Dataset>,
    config: &TrainConfig,
    options: &FitOptions,
    callback: &mut dyn Callback,
) -> Result<History> {
    config.validate()?;
    options.non_finite.validate()?;
    if let Some(target) = &options.checkpoints {
        target.config.validate()?;
    }
    if let Some(weights) = &options.class_weights {
        check_class_weights(train, config.loss, weights)?;
    }
    check_fits(model, train, config.loss, "training")?;
    if let Some(validation) = validation {
        check_fits(model, validation, config.loss, "validation")?;
    }
    if train.is_empty() {
        return Err(Error::InvalidConfig("the training set has no rows".into()));
    }
    if config.schedule.needs_validation() && validation.is_none_or(Dataset::is_empty) {
        return Err(Error::InvalidConfig(
            "training.schedule reduce_on_plateau watches the validation loss, but there is no \
             validation split; set data.validation_split above 0 or choose another schedule"
                .into(),
        ));
    }

    let mut history = History {
        epochs: Vec::new(),
        best_epoch: None,
        stopped_early: false,
        warnings: Vec::new(),
    };
    let mut batch_size = config.batch_size;
    if train.len() < batch_size {
        let message = format!(
            "{} training rows < batch size {batch_size}; training on batches of {} rows instead",
            train.len(),
            train.len()
        );
        callback.on_warning(&message);
        history.warnings.push(message);
        batch_size = train.len();
    }

    let mut optimizer = Optimizer::new(config.optimizer.clone())?;
    optimizer.set_clip_value(config.clip_value);
    let mut clip_weights = Vec::new();
    let mut learning_rate = LearningRate::new(
        config.schedule,
        config.optimizer.learning_rate(),
        config.epochs,
    );
    let mut batches = Batches::new(train.len(), batch_size, config.shuffle)?;
    let num_batches = batches.num_batches();
    let mut rng = Rng::for_stream(config.seed, SHUFFLE_STREAM);
    let dropout_seed = Rng::for_stream(config.seed, DROPOUT_STREAM).next_u64();
    let threads = rayon::current_num_threads();
    let mut runner = StepRunner::new(threads, dropout_seed, train.feature_shape());
    if model
        .specs()
        .iter()
        .any(|spec| matches!(spec, LayerSpec::Dropout { .. }))
    {
        runner.reseed_dropout_per_step(dropout_seed);
    }
    if let Some(weights) = &options.class_weights {
        runner.set_class_weights(weights.clone());
    }
    if !config.augment.is_identity() {
        let image_shape = augment_shape(train.feature_shape())?;
        let augment_seed = Rng::for_stream(config.seed, AUGMENT_STREAM).next_u64();
        runner.set_augment(config.augment.clone(), image_shape, augment_seed);
    }
    let policy = options.non_finite;
    let checkpoint_config = options
        .checkpoints
        .as_ref()
        .map(|target| target.config.clone())
        .unwrap_or_default();
    let interrupted = || {
        options
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    };

    // Snapshots keep the whole model, so that the running statistics of batch normalization
    // are put back together with the weights.
    let mut best: Option<(f64, Sequential)> = None;
    let mut counters = RunCounters {
        learning_rate_scale: 1.0,
        rollbacks: 0,
        epochs_without_improvement: 0,
    };
    let mut start_epoch = 1;
    let mut resume_within_epoch = None;
    if let Some(checkpoint) = &options.resume {
        let resumed = resume(
            checkpoint,
            model,
            &mut optimizer,
            &mut batches,
            &mut runner,
            train.len(),
        )?;
        rng = resumed.shuffle_rng;
        let state = &checkpoint.state;
        if state.threads != threads {
            let message = format!(
                "the checkpoint was written with {} threads and this run has {threads}, so the \
                 results differ from those of an uninterrupted run; resume with {0} threads \
                 to get identical results",
                state.threads
            );
            callback.on_warning(&message);
            history.warnings.push(message);
        }
        history.epochs = state.history.clone();
        // Reduce-on-plateau depends only on the validation losses so far, so replaying them
        // puts the learning rate back where the interrupted run had it.
        for record in &history.epochs {
            if let Some(loss) = record.val_loss {
                learning_rate.end_epoch(loss);
            }
        }
        best = resumed.best;
        history.best_epoch = state.best.map(|(_, epoch)| epoch);
        counters = RunCounters {
            learning_rate_scale: state.learning_rate_scale,
            rollbacks: state.rollbacks,
            epochs_without_improvement: state.epochs_without_improvement,
        };
        if state.batches_done >= state.num_batches {
            start_epoch = state.epoch + 1;
        } else {
            start_epoch = state.epoch;
            resume_within_epoch = Some((
                state.batches_done,
                EpochTotals {
                    loss_sum: state.epoch_loss_sum,
                    clipped_steps: state.epoch_clipped_steps,
                    max_gradient_norm: state.epoch_max_gradient_norm,
                    skipped_steps: state.epoch_skipped_steps,
                    skipped_rows: state.epoch_skipped_rows,
                },
            ));
        }
        if let Some(stopping) = config.early_stopping
            && counters.epochs_without_improvement >= stopping.patience
        {
            start_epoch = config.epochs + 1;
        }
    }
    let mut last_good: Sequential = model.clone();

    for epoch in start_epoch..=config.epochs {
        let (first_batch, totals_at_start) = match resume_within_epoch.take() {
            Some(position) => position,
            None => {
                batches.epoch(&mut rng);
                (0, EpochTotals::default())
            }
        };
        // The state a rollback returns to: the start of the epoch, or the resumed position.
        let rollback_point = (policy.policy == NonFinitePolicy::Rollback)
            .then(|| (model.clone(), optimizer.clone(), runner.augment_states()));

        let (totals, train_seconds, started) = loop {
            let started = Instant::now();
            callback.on_epoch_begin(epoch, num_batches);
            let mut totals = totals_at_start;
            let mut failure = None;

            for step_in_epoch in first_batch..num_batches {
                let batch = batches.batch(step_in_epoch);
                let progress = (epoch - 1) as f64 + step_in_epoch as f64 / num_batches as f64;
                optimizer
                    .set_learning_rate(learning_rate.at(progress) * counters.learning_rate_scale);
                runner.begin_step(optimizer.steps() + 1);
                let loss = runner.run(model, train, batch, config.loss);
                // A non-finite loss skips the backward pass. With the stop policy, a
                // non-finite gradient is found by the optimizer, which then leaves those
                // chunks alone; the other policies check the gradients before any update.
                let mut bad_gradient = None;
                if loss.is_finite() {
                    let gradients = runner.gradients();
                    clip_weights.clear();
                    clip_weights.extend_from_slice(runner.weights());
                    if let Some(limit) = config.clip_norm {
                        // Scaling each shard's weight scales the combined gradient.
                        let norm = global_norm(&gradients, runner.weights());
                        if norm.is_finite() {
                            totals.max_gradient_norm = totals.max_gradient_norm.max(norm);
                        }
                        if norm > limit as f64 {
                            totals.clipped_steps += 1;
                            let scale = (limit as f64 / norm) as f32;
                            clip_weights.iter_mut().for_each(|w| *w *= scale);
                        }
                    }
                    bad_gradient = if policy.policy == NonFinitePolicy::Stop {
                        optimizer.step_weighted(model.params_mut(), &gradients, &clip_weights)
                    } else {
                        first_non_finite_gradient(&gradients).or_else(|| {
                            optimizer.step_weighted(model.params_mut(), &gradients, &clip_weights)
                        })
                    };
                }
                if !loss.is_finite() || bad_gradient.is_some() {
                    let bad_name = bad_gradient.map(|id| model.params().name(id).to_string());
                    let what = recovery::locate(
                        model,
                        train,
                        batch,
                        loss.is_finite(),
                        bad_name.as_deref(),
                    );
                    let step = optimizer.steps() + 1;
                    let can_roll_back = policy.policy == NonFinitePolicy::Rollback
                        && counters.rollbacks < policy.max_rollbacks;
                    if policy.policy == NonFinitePolicy::Skip {
                        totals.skipped_steps += 1;
                        totals.skipped_rows += batch.len();
                        let message = format!(
                            "non-finite {what} at epoch {epoch}, batch {} (optimizer step \
                             {step}); skipping the batch",
                            step_in_epoch + 1
                        );
                        callback.on_warning(&message);
                        history.warnings.push(message);
                        continue;
                    }
                    if can_roll_back {
                        failure = Some((what, step_in_epoch + 1, step));
                        break;
                    }
                    if policy.policy == NonFinitePolicy::Rollback {
                        let message = format!(
                            "non-finite {what} at epoch {epoch}, batch {} (optimizer step \
                             {step}) after {} rollbacks, the maximum \
                             (training.non_finite.max_rollbacks)",
                            step_in_epoch + 1,
                            counters.rollbacks
                        );
                        callback.on_warning(&message);
                        history.warnings.push(message);
                    }
                    *model = last_good;
                    return Err(Error::NonFinite {
                        what: format!("{what} (optimizer step {step})"),
                        epoch,
                        batch: step_in_epoch + 1,
                        learning_rate: optimizer.learning_rate(),
                    });
                }
                model.update_running_stats(&runner.batch_statistics());

                totals.loss_sum += loss as f64 * batch.len() as f64;
                callback.on_batch_end(batch.len(), loss);
                let step = optimizer.steps();
                let gradient_norms =
                    if steps::wants_gradient_norms(step, callback.gradient_norm_interval()) {
                        steps::gradient_norms(model.params(), &runner.gradients(), runner.weights())
                    } else {
                        BTreeMap::new()
                    };
                callback.on_step_end(&StepRecord {
                    step,
                    epoch,
                    loss,
                    learning_rate: optimizer.learning_rate(),
                    gradient_norms,
                });

                // A checkpoint due at the last batch is written after validation instead.
                let last_batch = step_in_epoch + 1 == num_batches;
                let stop_now = interrupted();
                if !last_batch && (checkpoint_config.due_after_step(step) || stop_now) {
                    let position = Position {
                        epoch,
                        batches_done: step_in_epoch + 1,
                        totals,
                    };
                    let written = write_checkpoint(
                        options,
                        &position,
                        &counters,
                        &CheckpointParts {
                            model,
                            optimizer: &optimizer,
                            batches: &batches,
                            rng: &rng,
                            runner: &runner,
                            history: &history,
                            best: best.as_ref(),
                            seed: config.seed,
                            threads,
                            num_rows: train.len(),
                        },
                    )?;
                    if stop_now {
                        return Err(Error::Interrupted {
                            epoch,
                            step,
                            checkpoint: written,
                        });
                    }
                }
            }

            let Some((what, batch_number, step)) = failure else {
                break (totals, started.elapsed().as_secs_f64(), started);
            };
            let Some((snapshot_model, snapshot_optimizer, augment_states)) = &rollback_point else {
                unreachable!("a rollback failure needs the rollback policy");
            };
            model.clone_from(snapshot_model);
            optimizer = snapshot_optimizer.clone();
            runner.restore_augment_states(augment_states);
            counters.rollbacks += 1;
            counters.learning_rate_scale /= policy.learning_rate_factor;
            let new_rate = learning_rate
                .at((epoch - 1) as f64 + first_batch as f64 / num_batches as f64)
                * counters.learning_rate_scale;
            let message = format!(
                "rollback {} of {}: non-finite {what} at epoch {epoch}, batch {batch_number} \
                 (optimizer step {step}); training epoch {epoch} again from batch {} with the \
                 learning rate divided by {} (now {})",
                counters.rollbacks,
                policy.max_rollbacks,
                first_batch + 1,
                policy.learning_rate_factor,
                short_number(f64::from(new_rate))
            );
            callback.on_warning(&message);
            history.warnings.push(message);
        };

        // An epoch whose every batch was skipped trained nothing, and the next would not
        // either: the model itself gives non-finite values.
        if totals.skipped_rows == train.len() {
            return Err(Error::NonFinite {
                what: format!(
                    "loss or gradient in every batch (the skip policy left out all {})",
                    totals.skipped_steps
                ),
                epoch,
                batch: num_batches,
                learning_rate: optimizer.learning_rate(),
            });
        }

        let evaluation = validation.map(|v| evaluate(model, v, config.loss, batch_size.max(256)));
        if evaluation.as_ref().is_some_and(|e| !e.loss.is_finite()) {
            *model = last_good;
            return Err(Error::NonFinite {
                what: "validation loss".into(),
                epoch,
                batch: num_batches,
                learning_rate: optimizer.learning_rate(),
            });
        }
        last_good.clone_from(model);
        if let Some(evaluation) = &evaluation {
            learning_rate.end_epoch(evaluation.loss);
        }

        let record = EpochRecord {
            epoch,
            // The mean over the rows trained on: skipped batches have no finite loss.
            train_loss: totals.loss_sum / (train.len() - totals.skipped_rows) as f64,
            val_loss: evaluation.as_ref().map(|e| e.loss),
            val_accuracy: evaluation.as_ref().and_then(Evaluation::accuracy),
            val_metrics: evaluation
                .as_ref()
                .map(|e| e.metrics.clone())
                .unwrap_or_default(),
            learning_rate: optimizer.learning_rate(),
            steps: optimizer.steps(),
            samples_per_second: train.len() as f64 / train_seconds.max(1e-9),
            seconds: started.elapsed().as_secs_f64(),
            clipped_steps: config.clip_norm.map(|_| totals.clipped_steps),
            max_gradient_norm: config.clip_norm.map(|_| totals.max_gradient_norm),
            skipped_steps: (policy.policy == NonFinitePolicy::Skip).then_some(totals.skipped_steps),
        };
        history.epochs.push(record.clone());
        callback.on_epoch_end(&record, model)?;

        // Early stopping watches the validation loss; without a validation set it is off.
        let mut stop_early = false;
        if let (Some(stopping), Some(val_loss)) = (config.early_stopping, record.val_loss) {
            let improved = best
                .as_ref()
                .is_none_or(|(best_loss, _)| val_loss < best_loss - stopping.min_delta);
            if improved {
                best = Some((val_loss, model.clone()));
                history.best_epoch = Some(epoch);
                counters.epochs_without_improvement = 0;
            } else {
                counters.epochs_without_improvement += 1;
                if counters.epochs_without_improvement >= stopping.patience {
                    history.stopped_early = epoch < config.epochs;
                    stop_early = true;
                }
            }
        }

        let stop_now = interrupted();
        let step_checkpoint_due = (optimizer.steps().saturating_sub(num_batches as u64) + 1
            ..=optimizer.steps())
            .any(|step| checkpoint_config.due_after_step(step));
        if checkpoint_config.due_after_epoch(epoch) || step_checkpoint_due || stop_now {
            let position = Position {
                epoch,
                batches_done: num_batches,
                totals,
            };
            let written = write_checkpoint(
                options,
                &position,
                &counters,
                &CheckpointParts {
                    model,
                    optimizer: &optimizer,
                    batches: &batches,
                    rng: &rng,
                    runner: &runner,
                    history: &history,
                    best: best.as_ref(),
                    seed: config.seed,
                    threads,
                    num_rows: train.len(),
                },
            )?;
            if stop_now && epoch < config.epochs && !stop_early {
                return Err(Error::Interrupted {
                    epoch,
                    step: optimizer.steps(),
                    checkpoint: written,
                });
            }
        }
        if stop_early {
            break;
        }
    }

    match (config.early_stopping, best) {
        (Some(stopping), Some((_, best_model))) if stopping.restore_best => {
            *model = best_model;
        }
        _ => history.best_epoch = history.epochs.last().map(|r| r.epoch),
    }
    Ok(history)
}

/// Formats `value` with at most 4 significant digits, so that a learning rate computed in
/// `f32` prints as 0.001 rather than 0.0009999998.
///
/// ```
/// use dendrite::train::short_number;
///
/// assert_eq!(short_number(f64::from(0.001_f32)), "0.001");
/// assert_eq!(short_number(f64::from(9.999_999_f32)), "10");
/// assert_eq!(short_number(12_346.0), "12350");
/// ```
pub fn short_number(value: f64) -> String {
    let rounded: f64 = format!("{value:.3e}").parse().unwrap_or(value);
    rounded.to_string()
}

/// Returns the L2 norm of the weighted sum of the shard gradients, over all parameters
/// together, in f64. It is NaN or infinite if a gradient value is.
fn global_norm(gradients: &[&[Vec<f32>]], weights: &[f32]) -> f64 {
    let Some(first) = gradients.first() else {
        return 0.0;
    };
    let mut squares = 0.0f64;
    for param in 0..first.len() {
        for i in 0..first[param].len() {
            let value: f64 = gradients
                .iter()
                .zip(weights)
                .map(|(shard, &w)| w as f64 * shard[param][i] as f64)
                .sum();
            squares += value * value;
        }
    }
    squares.sqrt()
}

/// Returns the `(channels, height, width)` of one image for augmentation: a `[height, width]`
/// row is one channel.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if rows are not images of rank 2 or 3.
fn augment_shape(feature_shape: &[usize]) -> Result<(usize, usize, usize)> {
    match *feature_shape {
        [height, width] => Ok((1, height, width)),
        [channels, height, width] => Ok((channels, height, width)),
        _ => Err(Error::InvalidConfig(format!(
            "training.augment needs image rows of shape [height, width] or [channels, height, \
             width], but the rows have shape {feature_shape:?}; remove [training.augment]"
        ))),
    }
}

/// Checks that class weights fit the training targets and the loss.
fn check_class_weights(train: &Dataset, loss: Loss, weights: &[f32]) -> Result<()> {
    let Some(classes) = train.num_classes() else {
        return Err(Error::InvalidConfig(
            "class weights need class labels, but the targets are numeric values".into(),
        ));
    };
    if loss == Loss::Mse {
        return Err(Error::InvalidConfig(
            "class weights need a classification loss, not mse".into(),
        ));
    }
    if weights.len() != classes {
        return Err(Error::InvalidConfig(format!(
            "{} class weights for {classes} classes; give one weight per class",
            weights.len()
        )));
    }
    if let Some(weight) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(Error::InvalidConfig(format!(
            "class weight {weight} is invalid; weights must be finite and not negative"
        )));
    }
    Ok(())
}

/// Checks that `dataset` fits the model's input and output and the loss.
fn check_fits(model: &Sequential, dataset: &Dataset, loss: Loss, role: &str) -> Result<()> {
    if dataset.feature_shape() != model.input_shape() {
        return Err(Error::Shape {
            op: "fit",
            message: format!(
                "{role} rows have shape {:?}, the model's input is {:?}",
                dataset.feature_shape(),
                model.input_shape()
            ),
        });
    }
    let outputs: usize = model.output_shape().iter().product();
    match (&dataset.targets, loss) {
        (Targets::Classes { class_names, .. }, Loss::CrossEntropy) if outputs != class_names.len() => Err(Error::Shape {
            op: "fit",
            message: format!(
                "the {role} data has {} classes but the last layer has {outputs} units; set its units to {}",
                class_names.len(),
                class_names.len()
            ),
        }),
        (Targets::Classes { class_names, .. }, Loss::BinaryCrossEntropy) if outputs != 1 || class_names.len() > 2 => Err(Error::Shape {
            op: "fit",
            message: format!(
                "binary cross-entropy needs 2 classes and 1 output unit, got {} classes and {outputs} units",
                class_names.len()
            ),
        }),
        (Targets::Values(values), Loss::Mse | Loss::BinaryCrossEntropy) if values.dims2().1 != outputs => Err(Error::Shape {
            op: "fit",
            message: format!(
                "the {role} data has {} target columns but the last layer has {outputs} units",
                values.dims2().1
            ),
        }),
        (Targets::Values(_), Loss::CrossEntropy) => Err(Error::InvalidConfig(
            "cross_entropy needs class labels, but the targets are numeric values; use loss = \"mse\" or a classification target".into(),
        )),
        (Targets::Classes { .. }, Loss::Mse) => Err(Error::InvalidConfig(
            "mse needs numeric targets, but the targets are class labels; use loss = \"cross_entropy\"".into(),
        )),
        _ => Ok(()),
    }
}
