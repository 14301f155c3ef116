//! Saving and loading trained models.
//!
//! A model directory contains `model.safetensors` (the weights, named like `layers.0.weight`,
//! and the buffers, named like `layers.1.running_mean`) and `model.json` (the architecture,
//! the loss, the class names, the preprocessing of its inputs and the format version).
//! Both files are written to a temporary file in the same directory, flushed to disk and then
//! renamed over the old file, so a crash or a full disk never leaves a half-written model.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::autograd::Parameters;
use crate::data::{ChannelStats, ColorMode, SeriesPreprocessor, TabularPreprocessor};
use crate::error::{Error, Result};
use crate::nn::{LayerSpec, Loss, Sequential};
use crate::tensor::Tensor;
use crate::train::BinaryDecision;

/// The version of the `model.json` layout this build writes.
///
/// Version 2 stores the fitted preprocessing of CSV inputs (`tabular`) and the decision
/// threshold of binary classifiers. This build also reads version 1, whose CSV models name
/// their numeric feature columns in `columns`.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest `model.json` layout version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The file name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The file name of the metadata inside a model directory.
pub const META_FILE: &str = "model.json";

/// The kind of output a model predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// One class per row; the model outputs one logit per class (or one logit for two
    /// classes with binary cross-entropy).
    Classification { class_names: Vec<String> },
    /// Numeric targets, one output per name.
    Regression { target_names: Vec<String> },
}

/// The contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The layout version, [`FORMAT_VERSION`] for files written by this build.
    pub format_version: u32,
    /// The dendrite version that wrote the file.
    pub dendrite_version: String,
    /// Input shape without the batch dimension.
    pub input_shape: Vec<usize>,
    /// The layers, as in the config.
    pub layers: Vec<LayerSpec>,
    /// The loss the model was trained with; it decides how outputs become predictions.
    pub loss: Loss,
    /// Classification with class names, or regression with target names.
    pub task: Task,
    /// The column names of CSV models of format version 1: numeric features (in input
    /// order) and targets. [`load`] converts them into [`ModelMeta::tabular`], and this
    /// build never writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Columns>,
    /// For models trained on CSV files, the preprocessing fitted on the training rows, so
    /// that evaluation and prediction find columns by name and encode them the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tabular: Option<TabularPreprocessor>,
    /// The windowing, differencing and scaling of a forecaster trained on a series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<SeriesPreprocessor>,
    /// For binary classifiers, the class whose probability decides and the threshold it
    /// must reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_threshold: Option<DecisionThreshold>,
    /// For models trained on images, how inputs were turned into features, so that
    /// evaluation and prediction prepare new inputs the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
}

/// The preprocessing of image inputs: color conversion, resizing and standardization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The kind of training data.
    pub input: InputKind,
    /// The channels images are converted to; `None` for IDX data, which is grayscale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorMode>,
    /// The `(height, width)` images are resized to; `None` if they were used at their size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(usize, usize)>,
    /// The per-channel statistics computed on the training rows, if inputs are standardized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<ChannelStats>,
}

/// The kind of image data a model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// IDX image files (the MNIST format).
    Idx,
    /// A folder with one subfolder of images per class.
    ImageFolder,
}

/// Column names of a CSV model of format version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Columns {
    /// The numeric feature columns, in input order.
    pub features: Vec<String>,
    /// The target columns.
    pub targets: Vec<String>,
}

/// The decision rule of a binary classifier, by class name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionThreshold {
    /// The class whose probability is compared with the threshold.
    pub positive_class: String,
    /// The lowest probability of the positive class that predicts it.
    pub threshold: f32,
}

/// The metadata that `model.json` stores besides the architecture and the format version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The loss the model was trained with.
    pub loss: Loss,
    /// Classification with class names, or regression with target names.
    pub task: Task,
    /// The preprocessing of image inputs, for models trained on images.
    pub preprocessing: Option<Preprocessing>,
    /// The fitted preprocessing of CSV columns, for models trained on CSV files.
    pub tabular: Option<TabularPreprocessor>,
    /// The series preprocessing of a forecaster.
    pub series: Option<SeriesPreprocessor>,
    /// The decision rule of a binary classifier.
    pub decision_threshold: Option<DecisionThreshold>,
}

impl ModelInfo {
    /// Creates the metadata of a model without preprocessing or decision threshold.
    pub fn new(loss: Loss, task: Task) -> ModelInfo {
        ModelInfo {
            loss,
            task,
            preprocessing: None,
            tabular: None,
            series: None,
            decision_threshold: None,
        }
    }
}

/// A model loaded from disk with its metadata.
#[derive(Debug, Clone)]
pub struct SavedModel {
    /// The network with its trained weights.
    pub model: Sequential,
    /// The contents of `model.json`.
    pub meta: ModelMeta,
}

impl ModelMeta {
    /// Returns the class names of a classifier, or an empty slice for regression.
    pub fn class_names(&self) -> &[String] {
        match &self.task {
            Task::Classification { class_names } => class_names,
            Task::Regression { .. } => &[],
        }
    }

    /// Returns the decision rule of a binary classifier (see [`binary_decision`]).
    ///
    /// # Errors
    ///
    /// As [`binary_decision`].
    pub fn binary_decision(&self) -> Result<Option<BinaryDecision>> {
        binary_decision(&self.task, self.decision_threshold.as_ref())
    }
}

impl ModelInfo {
    /// Returns the decision rule of a binary classifier (see [`binary_decision`]).
    ///
    /// # Errors
    ///
    /// As [`binary_decision`].
    pub fn binary_decision(&self) -> Result<Option<BinaryDecision>> {
        binary_decision(&self.task, self.decision_threshold.as_ref())
    }
}

/// Returns the decision rule of a binary classifier with task `task`: `stored` resolved
/// against its class names, or class 1 at probability 0.5 without one. Returns `None` unless
/// the task has exactly two classes.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if the stored positive class is not one of the two
/// classes or the threshold is not in `[0, 1]`.
pub fn binary_decision(
    task: &Task,
    stored: Option<&DecisionThreshold>,
) -> Result<Option<BinaryDecision>> {
    let class_names = match task {
        Task::Classification { class_names } if class_names.len() == 2 => class_names,
        _ => return Ok(None),
    };
    let Some(stored) = stored else {
        return Ok(Some(BinaryDecision::default()));
    };

    let positive_class = class_names
        .iter()
        .position(|name| *name == stored.positive_class)
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "the positive class \"{}\" is not one of the classes {}",
                stored.positive_class,
                class_names.join(", ")
            ))
        })?;
    BinaryDecision::new(positive_class, stored.threshold).map(Some)
}

/// Returns the model directory for `path`, which may name the directory or a file in it.
pub fn model_dir(path: &Path) -> PathBuf {
    if path.is_file() {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        path.to_path_buf()
    }
}

/// Writes `model` and its metadata into `dir`, creating the directory if needed.
///
/// # Errors
///
/// Returns [`Error::Io`] naming the file that could not be written; the previous model files,
/// if any, are then left as they were.
pub fn save(dir: &Path, model: &Sequential, info: &ModelInfo) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let tensors = || model.params().iter().chain(model.buffers().iter());
    let bytes: Vec<Vec<u8>> = tensors()
        .map(|(_, t)| t.data().iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors()
        .zip(&bytes)
        .map(|((name, tensor), bytes)| {
            let view = TensorView::new(Dtype::F32, tensor.shape().to_vec(), bytes)
                .expect("shape and byte count agree");
            (name.to_string(), view)
        })
        .collect::<Vec<_>>();
    let weights = safetensors::serialize(views, None).map_err(|e| Error::InvalidModel {
        path: dir.join(WEIGHTS_FILE),
        message: format!("cannot encode weights: {e}"),
    })?;

    let meta = ModelMeta {
        format_version: FORMAT_VERSION,
        dendrite_version: env!("CARGO_PKG_VERSION").to_string(),
        input_shape: model.input_shape().to_vec(),
        layers: model.specs().to_vec(),
        loss: info.loss,
        task: info.task.clone(),
        columns: None,
        tabular: info.tabular.clone(),
        series: info.series.clone(),
        decision_threshold: info.decision_threshold.clone(),
        preprocessing: info.preprocessing.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&meta).expect("model metadata serializes");
    json.push(b'\n');

    // Both files are complete on disk before either replaces its previous version, so a
    // full disk never leaves new weights beside old metadata.
    write_atomic_all(&[
        (&dir.join(WEIGHTS_FILE), &weights),
        (&dir.join(META_FILE), &json),
    ])
}

/// Loads the model in `path` (a model directory, or a file inside it).
///
/// # Errors
///
/// Returns [`Error::Io`] if a file cannot be read and [`Error::InvalidModel`] if the files
/// are not a valid model or do not agree with each other.
///
/// A CSV model of format version 1 gets a [`TabularPreprocessor::passthrough`] of its
/// feature columns in [`ModelMeta::tabular`], so it reads CSV files as it did before.
pub fn load(path: &Path) -> Result<SavedModel> {
    let dir = model_dir(path);
    let meta_path = dir.join(META_FILE);
    let weights_path = dir.join(WEIGHTS_FILE);

    let text = fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    let mut meta: ModelMeta = serde_json::from_str(&text).map_err(|e| Error::InvalidModel {
        path: meta_path.clone(),
        message: e.to_string(),
    })?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&meta.format_version) {
        return Err(Error::InvalidModel {
            path: meta_path,
            message: format!(
                "format version {} is not supported by this build, which reads versions \
                 {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; use a newer dendrite",
                meta.format_version
            ),
        });
    }
    if let Some(columns) = meta.columns.take()
        && meta.tabular.is_none()
    {
        meta.tabular = Some(TabularPreprocessor::passthrough(
            columns.features,
            columns.targets,
        ));
    }
    if let Err(error) = meta.binary_decision() {
        return Err(Error::InvalidModel {
            path: meta_path,
            message: error.to_string(),
        });
    }

    let bytes = fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let invalid = |message: String| Error::InvalidModel {
        path: weights_path.clone(),
        message,
    };
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
    let mut entries = tensors.tensors();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut params = Parameters::new();
    for (name, view) in entries {
        if view.dtype() != Dtype::F32 {
            return Err(invalid(format!(
                "tensor {name} has dtype {:?}; only F32 is supported",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        params.push(name, Tensor::from_vec(view.shape(), values));
    }

    let model = Sequential::from_parameters(&meta.input_shape, meta.layers.clone(), &params)
        .map_err(|e| match e {
            Error::Shape { message, .. } | Error::InvalidConfig(message) => invalid(message),
            other => other,
        })?;
    Ok(SavedModel { model, meta })
}

/// Writes `bytes` to `path` through a temporary file in the same directory: write, flush to
/// disk, then rename over `path`.
///
/// # Errors
///
/// Returns [`Error::Io`] naming `path`; the temporary file is removed and `path` is unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_all(&[(path, bytes)])
}

/// Writes several files as [`write_atomic`] does, but renames none of them until all are
/// written and flushed to disk. A failed write (a full disk, a read-only folder) thus leaves
/// every previous file unchanged.
///
/// # Errors
///
/// Returns [`Error::Io`] naming the file that failed; all temporary files are removed.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let temporary = |path: &Path| {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()))
    };
    let remove_all = || {
        for (path, _) in files {
            let _ = fs::remove_file(temporary(path));
        }
    };

    for &(path, bytes) in files {
        let tmp = temporary(path);
        let written = fs::File::create(&tmp).and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
        if let Err(e) = written {
            remove_all();
            return Err(Error::io(path, e));
        }
    }

    for &(path, _) in files {
        if let Err(e) = fs::rename(temporary(path), path) {
            remove_all();
            return Err(Error::io(path, e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
