//! Training checkpoints: everything a run needs to continue exactly where it was.
//!
//! A checkpoint is a folder `step-NNNNNNNNNN` (the optimizer step, zero-padded) inside the
//! checkpoint root, with these files:
//!
//! | file | contents |
//! | --- | --- |
//! | `model.safetensors` | the model's parameters and buffers, named as in `model.safetensors` |
//! | `optimizer.safetensors` | the optimizer's moments: `first.N` and `second.N` per parameter `N` |
//! | `best.safetensors` | with early stopping, the parameters and buffers of the best epoch |
//! | `state.json` | [`TrainingState`]: epoch, step, data order, generator positions, history |
//! | `checksums.json` | the SHA-256 of each file above, written last |
//!
//! The folder is written under a temporary name, every file is flushed to disk, and the
//! folder is then renamed into place, so a crash leaves either a whole checkpoint or none.
//! A checkpoint whose `checksums.json` is missing or does not match its files is damaged, and
//! [`latest`] skips it with a warning.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::autograd::Parameters;
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::rng::RngState;
use crate::train::EpochRecord;

/// The version of [`TrainingState`]; a checkpoint of another version is rejected.
pub const STATE_VERSION: u32 = 1;

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const BEST_FILE: &str = "best.safetensors";
const STATE_FILE: &str = "state.json";
const CHECKSUM_FILE: &str = "checksums.json";
const FOLDER_PREFIX: &str = "step-";

/// When checkpoints are written, as set under `[training.checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many optimizer steps.
    #[serde(default)]
    pub every_steps: Option<u64>,
    /// Write a checkpoint at the end of every this many epochs. With neither interval set,
    /// a checkpoint is written only when training is interrupted.
    #[serde(default)]
    pub every_epochs: Option<usize>,
    /// The number of checkpoints to keep; older ones are deleted (default 3).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    3
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: None,
            every_epochs: None,
            keep: default_keep(),
        }
    }
}

impl CheckpointConfig {
    /// Checks that the intervals and the count are at least 1.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the invalid key.
    pub fn validate(&self) -> Result<()> {
        if self.every_steps == Some(0) {
            return Err(Error::InvalidConfig(
                "training.checkpoint.every_steps = 0; use at least 1".into(),
            ));
        }
        if self.every_epochs == Some(0) {
            return Err(Error::InvalidConfig(
                "training.checkpoint.every_epochs = 0; use at least 1".into(),
            ));
        }
        if self.keep == 0 {
            return Err(Error::InvalidConfig(
                "training.checkpoint.keep = 0; keep at least 1 checkpoint".into(),
            ));
        }
        Ok(())
    }

    /// Returns whether a checkpoint is due after global step `step`.
    pub(crate) fn due_after_step(&self, step: u64) -> bool {
        self.every_steps.is_some_and(|n| step.is_multiple_of(n))
    }

    /// Returns whether a checkpoint is due at the end of epoch `epoch`.
    pub(crate) fn due_after_epoch(&self, epoch: usize) -> bool {
        match (self.every_epochs, self.every_steps) {
            (Some(n), _) => epoch.is_multiple_of(n),
            (None, Some(_)) => false,
            (None, None) => false,
        }
    }
}

/// The folder and intervals of the checkpoints that [`crate::train::fit_with`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointOptions {
    /// The folder of the checkpoint folders, created if needed.
    pub dir: PathBuf,
    /// The intervals and the number kept.
    pub config: CheckpointConfig,
}

/// The position of a training run, stored as `state.json` in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingState {
    /// [`STATE_VERSION`] when written.
    pub version: u32,
    /// The epoch in progress, from 1, or the last finished one when
    /// `batches_done == num_batches`.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batches_done: usize,
    /// Batches per epoch when written; a resumed run must have the same.
    pub num_batches: usize,
    /// Training rows when written; a resumed run must have the same.
    pub num_rows: usize,
    /// Optimizer steps taken over the whole run.
    pub steps: u64,
    /// The seed of the run.
    pub seed: u64,
    /// The thread count of the run; another thread count changes the results.
    pub threads: usize,
    /// The row order of `epoch`.
    pub epoch_order: Vec<usize>,
    /// The shuffle generator after drawing the order of `epoch`.
    pub shuffle_rng: RngState,
    /// The augmentation generator of each shard.
    pub augment_rngs: Vec<RngState>,
    /// The learning rate of the last step.
    pub learning_rate: f32,
    /// The factor that rollbacks have applied to the scheduled learning rate (1 without).
    pub learning_rate_scale: f32,
    /// Rollbacks so far.
    pub rollbacks: usize,
    /// The sum of batch losses times batch rows in `epoch` so far.
    pub epoch_loss_sum: f64,
    /// Steps of `epoch` so far whose gradients `clip_norm` scaled down.
    pub epoch_clipped_steps: usize,
    /// The largest gradient norm of `epoch` so far.
    pub epoch_max_gradient_norm: f64,
    /// Batches of `epoch` so far that the `skip` policy left out.
    pub epoch_skipped_steps: usize,
    /// The rows of those batches.
    #[serde(default)]
    pub epoch_skipped_rows: usize,
    /// The records of the finished epochs.
    pub history: Vec<EpochRecord>,
    /// Early stopping: the best validation loss and its epoch, if any.
    pub best: Option<(f64, usize)>,
    /// Early stopping: epochs since the best one.
    pub epochs_without_improvement: usize,
    /// The checkpoint intervals of the run (`None` when it wrote checkpoints only on an
    /// interrupt), so that a resumed run keeps writing them.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
}

/// A checkpoint read back from disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The checkpoint folder.
    pub path: PathBuf,
    /// The position of the run.
    pub state: TrainingState,
    /// The parameters and buffers, by name.
    pub(crate) weights: Parameters,
    /// The optimizer's first and second moments per parameter (empty before any step).
    pub(crate) first: Vec<Vec<f32>>,
    pub(crate) second: Vec<Vec<f32>>,
    /// The parameters and buffers of the best epoch, with early stopping.
    pub(crate) best_weights: Option<Parameters>,
}

/// What [`write`] stores.
pub(crate) struct Snapshot<'a> {
    pub(crate) state: &'a TrainingState,
    pub(crate) model: &'a Sequential,
    pub(crate) first: &'a [Vec<f32>],
    pub(crate) second: &'a [Vec<f32>],
    pub(crate) best: Option<&'a Sequential>,
}

/// Writes a checkpoint folder for `snapshot` into `root` and deletes all but the newest
/// `keep` checkpoints. Returns the new folder.
///
/// # Errors
///
/// Returns [`Error::Io`] naming the file that could not be written (for example on a full
/// disk or a read-only folder). The temporary folder is then removed and the existing
/// checkpoints are left as they were.
pub(crate) fn write(root: &Path, keep: usize, snapshot: &Snapshot<'_>) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let name = folder_name(snapshot.state.steps);
    let final_dir = root.join(&name);
    let tmp_dir = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp_dir);

    let result = write_files(&tmp_dir, snapshot).and_then(|()| {
        if final_dir.exists() {
            // Only a run resumed from an older checkpoint rewrites a step; the folder there
            // belongs to the abandoned continuation.
            fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
        }
        fs::rename(&tmp_dir, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        sync_dir(root)
    });
    if let Err(error) = result {
        let _ = fs::remove_dir_all(&tmp_dir);
        return Err(error);
    }

    prune(root, keep)?;
    Ok(final_dir)
}

fn folder_name(steps: u64) -> String {
    format!("{FOLDER_PREFIX}{steps:010}")
}

fn write_files(dir: &Path, snapshot: &Snapshot<'_>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    files.push((MODEL_FILE, model_tensors(dir, snapshot.model)?));

    let mut moments = Vec::new();
    for (i, (m, v)) in snapshot.first.iter().zip(snapshot.second).enumerate() {
        moments.push((format!("first.{i}"), vec![m.len()], m.as_slice()));
        moments.push((format!("second.{i}"), vec![v.len()], v.as_slice()));
    }
    files.push((OPTIMIZER_FILE, encode(dir, &moments)?));
    if let Some(best) = snapshot.best {
        files.push((BEST_FILE, model_tensors(dir, best)?));
    }
    let mut state = serde_json::to_vec_pretty(snapshot.state).expect("training state serializes");
    state.push(b'\n');
    files.push((STATE_FILE, state));

    let mut checksums = BTreeMap::new();
    for (name, bytes) in &files {
        write_synced(&dir.join(name), bytes)?;
        checksums.insert(name.to_string(), sha256_hex(bytes));
    }
    let mut json = serde_json::to_vec_pretty(&checksums).expect("checksums serialize");
    json.push(b'\n');
    write_synced(&dir.join(CHECKSUM_FILE), &json)?;
    sync_dir(dir)
}

fn model_tensors(dir: &Path, model: &Sequential) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Vec<usize>, &[f32])> = model
        .params()
        .iter()
        .chain(model.buffers().iter())
        .map(|(name, t)| (name.to_string(), t.shape().to_vec(), t.data()))
        .collect();
    encode(dir, &tensors)
}

fn encode(dir: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("shape and byte count agree");
            (name.clone(), view)
        })
        .collect::<Vec<_>>();
    safetensors::serialize(views, None).map_err(|e| Error::InvalidModel {
        path: dir.to_path_buf(),
        message: format!("cannot encode tensors: {e}"),
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Flushes a folder's entries (new and renamed files) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Returns the checkpoint folders in `root` with their steps, oldest first, without
/// checking their contents.
///
/// # Errors
///
/// Returns [`Error::Io`] if `root` cannot be read.
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FOLDER_PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().is_dir() {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes all but the newest `keep` checkpoint folders and leftover temporary folders of
/// this process.
fn prune(root: &Path, keep: usize) -> Result<()> {
    let found = list(root)?;
    let excess = found.len().saturating_sub(keep);
    for (_, path) in &found[..excess] {
        fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Reads and verifies the checkpoint in folder `path`.
///
/// # Errors
///
/// Returns [`Error::Io`] if a file cannot be read and [`Error::InvalidData`] naming the file
/// if a checksum does not match, a file is missing or malformed, or the state has another
/// version.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let checksum_path = path.join(CHECKSUM_FILE);
    let checksum_bytes = fs::read(&checksum_path).map_err(|e| Error::io(&checksum_path, e))?;
    let checksums: BTreeMap<String, String> = serde_json::from_slice(&checksum_bytes)
        .map_err(|e| Error::invalid_data(&checksum_path, format!("invalid checksum list: {e}")))?;
    for required in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
        if !checksums.contains_key(required) {
            return Err(Error::invalid_data(
                &checksum_path,
                format!("no checksum for {required}"),
            ));
        }
    }

    let mut files = BTreeMap::new();
    for (name, expected) in &checksums {
        if ![MODEL_FILE, OPTIMIZER_FILE, BEST_FILE, STATE_FILE].contains(&name.as_str()) {
            return Err(Error::invalid_data(
                &checksum_path,
                format!("unexpected file name {name:?}"),
            ));
        }
        let file = path.join(name);
        let bytes = fs::read(&file).map_err(|e| Error::io(&file, e))?;
        if sha256_hex(&bytes) != *expected {
            return Err(Error::invalid_data(
                &file,
                "SHA-256 checksum mismatch; the file is truncated or corrupted",
            ));
        }
        files.insert(name.as_str(), bytes);
    }

    let state_path = path.join(STATE_FILE);
    let state: TrainingState = serde_json::from_slice(&files[STATE_FILE])
        .map_err(|e| Error::invalid_data(&state_path, format!("invalid training state: {e}")))?;
    if state.version != STATE_VERSION {
        return Err(Error::invalid_data(
            &state_path,
            format!(
                "training state version {} is not supported (this build reads version \
                 {STATE_VERSION})",
                state.version
            ),
        ));
    }
    let weights = decode(&path.join(MODEL_FILE), &files[MODEL_FILE])?;
    let moments = decode(&path.join(OPTIMIZER_FILE), &files[OPTIMIZER_FILE])?;
    let (first, second) = split_moments(&path.join(OPTIMIZER_FILE), &moments)?;
    let best_weights = match files.get(BEST_FILE) {
        Some(bytes) => Some(decode(&path.join(BEST_FILE), bytes)?),
        None => None,
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        state,
        weights,
        first,
        second,
        best_weights,
    })
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Parameters> {
    let tensors = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::invalid_data(path, format!("invalid safetensors file: {e}")))?;
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    let mut params = Parameters::new();
    for name in names {
        let view = tensors
            .tensor(&name)
            .map_err(|e| Error::invalid_data(path, format!("tensor {name}: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(Error::invalid_data(
                path,
                format!("tensor {name} has dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if view.shape().iter().product::<usize>() != values.len() {
            return Err(Error::invalid_data(
                path,
                format!(
                    "tensor {name} has shape {:?} but {} values",
                    view.shape(),
                    values.len()
                ),
            ));
        }
        params.push(name, crate::tensor::Tensor::from_vec(view.shape(), values));
    }
    Ok(params)
}

type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

fn split_moments(path: &Path, moments: &Parameters) -> Result<Moments> {
    let count = moments.len() / 2;
    let mut first = Vec::with_capacity(count);
    let mut second = Vec::with_capacity(count);
    for i in 0..count {
        for (kind, out) in [("first", &mut first), ("second", &mut second)] {
            let name = format!("{kind}.{i}");
            let id = moments
                .find(&name)
                .ok_or_else(|| Error::invalid_data(path, format!("tensor {name} is missing")))?;
            out.push(moments.get(id).data().to_vec());
        }
    }
    if count * 2 != moments.len() {
        return Err(Error::invalid_data(
            path,
            "optimizer moments come in first/second pairs, but their count is odd",
        ));
    }
    Ok((first, second))
}

/// The newest valid checkpoint in `root`, with one warning per newer damaged checkpoint
/// that was skipped.
#[derive(Debug)]
pub struct Latest {
    /// The newest checkpoint that passed verification, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Warnings naming each skipped checkpoint and why it was skipped.
    pub warnings: Vec<String>,
}

/// Finds the newest checkpoint in `root` that passes verification.
///
/// # Errors
///
/// Returns [`Error::Io`] if `root` cannot be listed.
pub fn latest(root: &Path) -> Result<Latest> {
    let mut warnings = Vec::new();
    for (_, path) in list(root)?.into_iter().rev() {
        match load(&path) {
            Ok(checkpoint) => {
                return Ok(Latest {
                    checkpoint: Some(checkpoint),
                    warnings,
                });
            }
            Err(error) => warnings.push(format!(
                "skipping damaged checkpoint {}: {error}",
                path.display()
            )),
        }
    }
    Ok(Latest {
        checkpoint: None,
        warnings,
    })
}

/// Replaces the parameters and buffers of `model` with the tensors of `saved`.
///
/// # Errors
///
/// Returns [`Error::Shape`] if a tensor is missing, extra or has another shape.
pub(crate) fn restore_model(model: &mut Sequential, saved: &Parameters) -> Result<()> {
    let rebuilt = Sequential::from_parameters(model.input_shape(), model.specs().to_vec(), saved)?;
    *model = rebuilt;
    Ok(())
}
