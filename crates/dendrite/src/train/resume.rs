//! The glue between the training loop and its checkpoints: what the loop saves and how a
//! resumed run puts it back.

use crate::data::Batches;
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::train::checkpoint::{self, Checkpoint, STATE_VERSION, Snapshot, TrainingState};
use crate::train::step::StepRunner;
use crate::train::{FitOptions, History};

use std::path::PathBuf;

/// Counters that carry over from epoch to epoch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunCounters {
    /// The factor rollbacks have applied to the scheduled learning rate.
    pub(crate) learning_rate_scale: f32,
    pub(crate) rollbacks: usize,
    pub(crate) epochs_without_improvement: usize,
}

/// The running totals of one epoch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EpochTotals {
    /// The sum of batch losses times batch rows.
    pub(crate) loss_sum: f64,
    pub(crate) clipped_steps: usize,
    pub(crate) max_gradient_norm: f64,
    pub(crate) skipped_steps: usize,
    /// The rows of the batches that the `skip` policy left out.
    pub(crate) skipped_rows: usize,
}

/// The position in an epoch where a checkpoint is taken.
pub(crate) struct Position {
    pub(crate) epoch: usize,
    pub(crate) batches_done: usize,
    pub(crate) totals: EpochTotals,
}

/// The parts of the training loop a checkpoint stores.
pub(crate) struct CheckpointParts<'a> {
    pub(crate) model: &'a Sequential,
    pub(crate) optimizer: &'a Optimizer,
    pub(crate) batches: &'a Batches,
    pub(crate) rng: &'a Rng,
    pub(crate) runner: &'a StepRunner,
    pub(crate) history: &'a History,
    pub(crate) best: Option<&'a (f64, Sequential)>,
    pub(crate) seed: u64,
    pub(crate) threads: usize,
    pub(crate) num_rows: usize,
}

/// Writes a checkpoint if `options` names a folder, and returns its path (`None` without a
/// folder).
///
/// # Errors
///
/// Returns [`Error::Io`] if the checkpoint cannot be written; the older checkpoints are then
/// intact.
pub(crate) fn write_checkpoint(
    options: &FitOptions,
    position: &Position,
    counters: &RunCounters,
    parts: &CheckpointParts<'_>,
) -> Result<Option<PathBuf>> {
    let Some(target) = &options.checkpoints else {
        return Ok(None);
    };
    let (first, second, steps) = parts.optimizer.state();
    let state = TrainingState {
        version: STATE_VERSION,
        epoch: position.epoch,
        batches_done: position.batches_done,
        num_batches: parts.batches.num_batches(),
        num_rows: parts.num_rows,
        steps,
        seed: parts.seed,
        threads: parts.threads,
        epoch_order: parts.batches.order().to_vec(),
        shuffle_rng: parts.rng.state(),
        augment_rngs: parts.runner.augment_states(),
        learning_rate: parts.optimizer.learning_rate(),
        learning_rate_scale: counters.learning_rate_scale,
        rollbacks: counters.rollbacks,
        epoch_loss_sum: position.totals.loss_sum,
        epoch_clipped_steps: position.totals.clipped_steps,
        epoch_max_gradient_norm: position.totals.max_gradient_norm,
        epoch_skipped_steps: position.totals.skipped_steps,
        epoch_skipped_rows: position.totals.skipped_rows,
        history: parts.history.epochs.clone(),
        best: parts
            .best
            .map(|(loss, _)| (*loss, parts.history.best_epoch.unwrap_or(0))),
        epochs_without_improvement: counters.epochs_without_improvement,
        checkpoint: (target.config.every_steps.is_some() || target.config.every_epochs.is_some())
            .then(|| target.config.clone()),
    };
    let snapshot = Snapshot {
        state: &state,
        model: parts.model,
        first,
        second,
        best: parts.best.map(|(_, model)| model),
    };
    checkpoint::write(&target.dir, target.config.keep, &snapshot).map(Some)
}

/// The state [`resume`] returns to the training loop.
pub(crate) struct Resumed {
    pub(crate) shuffle_rng: Rng,
    pub(crate) best: Option<(f64, Sequential)>,
}

/// Puts the weights, optimizer state, row order and augmentation generators of `checkpoint`
/// back into the training loop's parts.
///
/// # Errors
///
/// Returns [`Error::InvalidData`] naming the checkpoint if it does not fit the model or the
/// training set.
pub(crate) fn resume(
    checkpoint: &Checkpoint,
    model: &mut Sequential,
    optimizer: &mut Optimizer,
    batches: &mut Batches,
    runner: &mut StepRunner,
    num_rows: usize,
) -> Result<Resumed> {
    let state = &checkpoint.state;
    let invalid = |message: String| Error::invalid_data(&checkpoint.path, message);
    if state.num_rows != num_rows || state.num_batches != batches.num_batches() {
        return Err(invalid(format!(
            "the checkpoint was written for {} training rows in {} batches, but this run has {} \
             rows in {} batches; resume with the config and data it was written with",
            state.num_rows,
            state.num_batches,
            num_rows,
            batches.num_batches()
        )));
    }
    checkpoint::restore_model(model, &checkpoint.weights).map_err(|e| {
        invalid(format!(
            "the weights do not fit the model of the config ({e}); resume with the config the \
             checkpoint was written with"
        ))
    })?;
    let shapes_match = checkpoint.first.is_empty()
        || (checkpoint.first.len() == model.params().len()
            && checkpoint
                .first
                .iter()
                .zip(model.params().values())
                .all(|(m, p)| m.len() == p.numel()));
    if !shapes_match {
        return Err(invalid(
            "the optimizer moments do not match the model's parameters".into(),
        ));
    }
    optimizer
        .restore_state(
            checkpoint.first.clone(),
            checkpoint.second.clone(),
            state.steps,
        )
        .map_err(|e| invalid(e.to_string()))?;
    batches
        .set_order(state.epoch_order.clone())
        .map_err(|e| invalid(e.to_string()))?;
    let shuffle_rng = Rng::from_state(&state.shuffle_rng)
        .ok_or_else(|| invalid("the shuffle generator state is invalid".into()))?;
    // There is one augmentation generator per thread. With another thread count, the
    // generators start from the seed again, and the caller warns that results differ.
    let same_threads = state.augment_rngs.len() == runner.augment_states().len();
    if same_threads && !runner.restore_augment_states(&state.augment_rngs) {
        return Err(invalid(
            "the augmentation generator states are invalid".into(),
        ));
    }
    let best = match (&checkpoint.best_weights, state.best) {
        (Some(weights), Some((loss, _))) => {
            let mut best_model = model.clone();
            checkpoint::restore_model(&mut best_model, weights)
                .map_err(|e| invalid(format!("the best weights do not fit the model ({e})")))?;
            Some((loss, best_model))
        }
        _ => None,
    };
    Ok(Resumed { shuffle_rng, best })
}

/// Returns the first parameter, in id order, whose gradient has a NaN or infinite value in
/// any shard.
pub(crate) fn first_non_finite_gradient(gradients: &[&[Vec<f32>]]) -> Option<usize> {
    let params = gradients.first()?.len();
    (0..params).find(|&param| {
        gradients
            .iter()
            .any(|shard| shard[param].iter().any(|v| !v.is_finite()))
    })
}
