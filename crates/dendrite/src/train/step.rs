//! One training step's forward and backward passes, split over threads by rows.
//!
//! With several threads, a minibatch is cut into contiguous shards of rows. Each thread runs
//! the forward and backward pass of its shard with its own workspace, and the shard gradients
//! are combined, weighted by shard size, into the gradient of the whole batch. Threads then
//! meet twice per step instead of once per matrix multiply: waking an idle thread costs tens
//! of microseconds on a virtual machine, as much as a small multiply itself.
//!
//! The shards depend only on the batch size and the thread count, so the same seed and
//! thread count give the same result. Another thread count changes the summation order, and
//! so the last bits.

use rayon::prelude::*;

use crate::autograd::{BatchStatistics, Workspace};
use crate::data::{Augment, Dataset, Targets};
use crate::nn::{Loss, Sequential, loss::BatchTargets};
use crate::rng::{Rng, RngState};
use crate::tensor::single_threaded;

/// The smallest shard worth a thread: smaller ones make the per-shard matrix multiplies
/// inefficient.
const MIN_SHARD_ROWS: usize = 16;

/// The workspace and batch buffers of one shard.
struct Shard {
    workspace: Workspace,
    labels: Vec<usize>,
    values: Vec<f32>,
    shape: Vec<usize>,
    loss: f32,
    /// The source of augmentation draws, seeded per shard so that runs repeat bit for bit.
    rng: Rng,
    /// The gathered, not yet augmented rows when augmentation is on.
    unaugmented: Vec<f32>,
}

/// Augmentation of training images, with the `(channels, height, width)` of one image.
struct ImageAugment {
    augment: Augment,
    image_shape: (usize, usize, usize),
}

/// Runs training steps over up to `threads` shards and keeps each shard's gradients.
pub(crate) struct StepRunner {
    shards: Vec<Shard>,
    weights: Vec<f32>,
    used: usize,
    augment: Option<ImageAugment>,
    /// The weight of each class in the loss, if classes are weighted.
    class_weights: Option<Vec<f32>>,
    /// The seed that per-step dropout seeds derive from, when the model has dropout.
    dropout_seed: Option<u64>,
}

impl StepRunner {
    /// Creates a runner for rows of `feature_shape`; shard 0 draws dropout masks from
    /// `dropout_seed` and shard `i` from a stream derived from it.
    pub(crate) fn new(threads: usize, dropout_seed: u64, feature_shape: &[usize]) -> Self {
        let shards = (0..threads.max(1))
            .map(|i| {
                let seed = if i == 0 {
                    dropout_seed
                } else {
                    Rng::for_stream(dropout_seed, i as u64).next_u64()
                };
                let mut shape = vec![0];
                shape.extend_from_slice(feature_shape);
                Shard {
                    workspace: Workspace::with_seed(seed),
                    labels: Vec::new(),
                    values: Vec::new(),
                    shape,
                    loss: 0.0,
                    rng: Rng::new(0),
                    unaugmented: Vec::new(),
                }
            })
            .collect();
        StepRunner {
            shards,
            weights: vec![1.0],
            used: 1,
            augment: None,
            class_weights: None,
            dropout_seed: None,
        }
    }

    /// Draws dropout masks from a seed derived from `dropout_seed`, the optimizer step and
    /// the shard, so that the masks of a step do not depend on the steps before it and a run
    /// resumed from a checkpoint draws the same masks. Call [`StepRunner::begin_step`]
    /// before each step.
    pub(crate) fn reseed_dropout_per_step(&mut self, dropout_seed: u64) {
        self.dropout_seed = Some(dropout_seed);
    }

    /// Prepares optimizer step `step` (counted from 1 over the whole run): with per-step
    /// dropout seeds, each shard's workspace is reseeded for this step.
    pub(crate) fn begin_step(&mut self, step: u64) {
        let Some(dropout_seed) = self.dropout_seed else {
            return;
        };
        let step_seed = Rng::for_stream(dropout_seed, step).next_u64();
        for (i, shard) in self.shards.iter_mut().enumerate() {
            let seed = Rng::for_stream(step_seed, i as u64).next_u64();
            shard.workspace.reseed(seed);
        }
    }

    /// Returns the position of each shard's augmentation generator, for checkpoints.
    pub(crate) fn augment_states(&self) -> Vec<RngState> {
        self.shards.iter().map(|s| s.rng.state()).collect()
    }

    /// Puts back generator positions returned by [`StepRunner::augment_states`]. Returns
    /// `false`, changing nothing, if the count differs from the shard count or a state is
    /// invalid.
    pub(crate) fn restore_augment_states(&mut self, states: &[RngState]) -> bool {
        if states.len() != self.shards.len() {
            return false;
        }
        let Some(rngs) = states
            .iter()
            .map(Rng::from_state)
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        for (shard, rng) in self.shards.iter_mut().zip(rngs) {
            shard.rng = rng;
        }
        true
    }

    /// Weights each row's loss by the weight of its class (see [`Loss::record_weighted`]).
    pub(crate) fn set_class_weights(&mut self, class_weights: Vec<f32>) {
        self.class_weights = Some(class_weights);
    }

    /// Turns on augmentation of every training image of shape `image_shape`; shard `i` draws
    /// from a stream derived from `seed` and `i`.
    pub(crate) fn set_augment(
        &mut self,
        augment: Augment,
        image_shape: (usize, usize, usize),
        seed: u64,
    ) {
        for (i, shard) in self.shards.iter_mut().enumerate() {
            shard.rng = Rng::for_stream(seed, i as u64);
        }
        self.augment = Some(ImageAugment {
            augment,
            image_shape,
        });
    }

    /// Runs the forward and backward passes of the rows in `batch` and returns the mean loss.
    /// When the loss is finite, [`StepRunner::gradients`] then contains its gradient.
    pub(crate) fn run(
        &mut self,
        model: &Sequential,
        train: &Dataset,
        batch: &[usize],
        loss: Loss,
    ) -> f32 {
        let used = self.shards.len().min(batch.len() / MIN_SHARD_ROWS).max(1);
        self.used = used;
        if used == 1 {
            self.weights.clear();
            self.weights.push(1.0);
            return run_shard(
                &mut self.shards[0],
                model,
                train,
                batch,
                loss,
                self.augment.as_ref(),
                self.class_weights.as_deref(),
            );
        }

        let rows = batch.len();
        let augment = self.augment.as_ref();
        let class_weights = self.class_weights.as_deref();
        self.shards[..used]
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, shard)| {
                let part = &batch[i * rows / used..(i + 1) * rows / used];
                shard.loss = single_threaded(|| {
                    run_shard(shard, model, train, part, loss, augment, class_weights)
                });
            });

        // Every loss is a mean over its shard's rows, so shard i weighs rows_i / rows.
        self.weights.clear();
        self.weights.extend(
            (0..used).map(|i| ((i + 1) * rows / used - i * rows / used) as f32 / rows as f32),
        );
        self.shards[..used]
            .iter()
            .zip(&self.weights)
            .map(|(s, w)| s.loss * w)
            .sum()
    }

    /// The gradients of each shard of the last step, in shard order. The gradient of the
    /// batch is their sum weighted by [`StepRunner::weights`]; the optimizer forms it chunk by
    /// chunk, which saves a pass over memory.
    pub(crate) fn gradients(&self) -> Vec<&[Vec<f32>]> {
        self.shards[..self.used]
            .iter()
            .map(|s| s.workspace.gradients())
            .collect()
    }

    /// The batch statistics each shard's batch normalizations recorded in the last step, in
    /// shard order, for [`Sequential::update_running_stats`]. Each shard normalizes with the
    /// statistics of its own rows (as unsynchronized data-parallel batch normalization does),
    /// so with batch normalization the thread count changes more than the last bits.
    pub(crate) fn batch_statistics(&self) -> Vec<&[BatchStatistics]> {
        self.shards[..self.used]
            .iter()
            .map(|s| s.workspace.batch_statistics())
            .collect()
    }

    /// The weight of each shard's gradient: its share of the batch rows.
    pub(crate) fn weights(&self) -> &[f32] {
        &self.weights
    }
}

/// Runs the forward and backward pass of `rows` on one shard and returns its mean loss.
fn run_shard(
    shard: &mut Shard,
    model: &Sequential,
    train: &Dataset,
    rows: &[usize],
    loss: Loss,
    augment: Option<&ImageAugment>,
    class_weights: Option<&[f32]>,
) -> f32 {
    let Shard {
        workspace,
        labels,
        values,
        shape,
        rng,
        unaugmented,
        ..
    } = shard;
    shape[0] = rows.len();
    let targets = match &train.targets {
        Targets::Classes { .. } => {
            train.gather_labels_into(rows, labels);
            BatchTargets::Classes(labels)
        }
        Targets::Values(_) => {
            train.gather_values_into(rows, values);
            BatchTargets::Values(values)
        }
    };

    let mut graph = crate::autograd::Graph::new(model.params(), workspace, true);
    let x = graph.input_with(shape, |out| match augment {
        None => train.gather_into_slice(rows, out),
        Some(ImageAugment {
            augment,
            image_shape,
        }) => {
            train.gather_into(rows, unaugmented);
            let image_len = train.feature_len().max(1);
            for (image, augmented) in unaugmented
                .chunks_exact(image_len)
                .zip(out.chunks_exact_mut(image_len))
            {
                augment.apply_into(image, *image_shape, rng, augmented);
            }
        }
    });
    let y = model.forward(&mut graph, x);
    let batch_loss = match class_weights {
        Some(weights) => loss.record_weighted(&mut graph, y, targets, weights),
        None => loss.record(&mut graph, y, targets),
    };
    let value = graph.value(batch_loss)[0];
    if value.is_finite() {
        graph.backward(batch_loss);
    }
    value
}
