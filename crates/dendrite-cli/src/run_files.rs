//! The files of a run folder that the report reads, besides the model and `summary.json`:
//! `run.json` (config, data summary, timing), `steps.jsonl`, `most_wrong.json` and
//! `predictions.csv`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use dendrite::data::{Dataset, Targets};
use dendrite::model::{ModelInfo, Task};
use dendrite::nn::Sequential;
use dendrite::train::{self, BinaryDecision};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const RUN_FILE: &str = "run.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const STEPS_FILE: &str = "steps.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const MOST_WRONG_FILE: &str = "most_wrong.json";
pub const PREDICTIONS_FILE: &str = "predictions.csv";

/// The number of images in the grid of the most wrong predictions.
const MOST_WRONG_COUNT: usize = 24;

/// The contents of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The config file as given on the command line.
    pub config_path: String,
    /// The text of the config file.
    pub config: String,
    pub data: DataSummary,
    pub timing: Timing,
    /// The number of threads training ran on.
    pub threads: usize,
    /// The number of trainable values.
    pub parameters: usize,
}

/// Rows, shapes and class counts of the splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// The shape of one row of features.
    pub feature_shape: Vec<usize>,
    /// The class names of a classifier; `None` for regression.
    pub classes: Option<Vec<String>>,
    /// The train, validation and test splits that exist, in that order.
    pub splits: Vec<SplitSummary>,
}

/// One split of the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub name: String,
    pub rows: usize,
    /// Rows per class, in class order, for classifiers.
    pub class_counts: Option<Vec<usize>>,
}

/// Wall-clock times of the run, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// From start to the end of writing the results, loading the data included.
    pub total_seconds: f64,
    /// The training loop: every epoch with its validation.
    pub training_seconds: f64,
    /// The final evaluation of every split.
    pub evaluation_seconds: f64,
    /// Epochs that ran.
    pub epochs: usize,
}

impl DataSummary {
    /// Summarizes the splits that exist.
    pub fn new(train: &Dataset, validation: Option<&Dataset>, test: Option<&Dataset>) -> Self {
        let split = |name: &str, dataset: &Dataset| SplitSummary {
            name: name.into(),
            rows: dataset.len(),
            class_counts: class_counts(dataset),
        };
        let mut splits = vec![split("train", train)];
        if let Some(dataset) = validation {
            splits.push(split("validation", dataset));
        }
        if let Some(dataset) = test {
            splits.push(split("test", dataset));
        }
        DataSummary {
            feature_shape: train.feature_shape().to_vec(),
            classes: train.class_names().map(<[String]>::to_vec),
            splits,
        }
    }
}

fn class_counts(dataset: &Dataset) -> Option<Vec<usize>> {
    let Targets::Classes {
        labels,
        class_names,
    } = &dataset.targets
    else {
        return None;
    };
    let mut counts = vec![0; class_names.len()];
    for &label in labels {
        counts[label] += 1;
    }
    Some(counts)
}

/// The contents of `most_wrong.json`: the images of one split whose true class got the
/// lowest probability, with the images rendered as PNG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MostWrong {
    /// The split the images come from.
    pub split: String,
    pub images: Vec<WrongImage>,
}

/// One misclassified image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrongImage {
    /// The row in its split, from 0.
    pub row: usize,
    pub true_class: String,
    pub predicted_class: String,
    /// The probability the model gave the true class.
    pub true_probability: f32,
    /// The probability the model gave the predicted class.
    pub predicted_probability: f32,
    /// The image as a base64 PNG, with the stored standardization undone.
    pub png_base64: String,
}

/// Writes the files that depend on predictions for the evaluation split: `most_wrong.json`
/// for image classifiers and `predictions.csv` for regression models. Returns nothing to
/// write for other models.
///
/// # Errors
///
/// Fails if a file cannot be written or an image cannot be encoded.
pub fn write_predictions(
    dir: &Path,
    model: &Sequential,
    info: &ModelInfo,
    decision: Option<BinaryDecision>,
    split: &str,
    dataset: &Dataset,
) -> Result<()> {
    let outputs = model.predict(&dataset.features, 256);
    let width: usize = model.output_shape().iter().product();
    match (&info.task, &dataset.targets) {
        (Task::Classification { class_names }, Targets::Classes { labels, .. }) => {
            if info.preprocessing.is_none() {
                return Ok(());
            }
            let (probabilities, predicted) =
                train::classify(outputs.data(), width, info.loss, decision);
            let most_wrong = most_wrong_images(
                info,
                class_names,
                dataset,
                labels,
                &probabilities,
                &predicted,
                split,
            )?;
            write_json(&dir.join(MOST_WRONG_FILE), &most_wrong)
        }
        (Task::Regression { target_names }, Targets::Values(values)) => {
            let (rows, targets) = values.dims2();
            let name = |i: usize| {
                target_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("output{i}"))
            };
            let path = dir.join(PREDICTIONS_FILE);
            let mut writer = csv::Writer::from_path(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut header = vec!["split".to_string(), "row".to_string()];
            for i in 0..targets {
                header.push(format!("{}_actual", name(i)));
                header.push(format!("{}_predicted", name(i)));
            }
            writer.write_record(&header)?;
            for row in 0..rows {
                let mut record = vec![split.to_string(), row.to_string()];
                for i in 0..targets {
                    record.push(values.data()[row * targets + i].to_string());
                    record.push(outputs.data()[row * width + i].to_string());
                }
                writer.write_record(&record)?;
            }
            writer
                .flush()
                .with_context(|| format!("cannot write {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Picks the misclassified rows whose true class got the lowest probability.
fn most_wrong_images(
    info: &ModelInfo,
    class_names: &[String],
    dataset: &Dataset,
    labels: &[usize],
    probabilities: &[f32],
    predicted: &[usize],
    split: &str,
) -> Result<MostWrong> {
    let classes = class_names.len();
    let mut wrong: Vec<usize> = (0..labels.len())
        .filter(|&row| predicted[row] != labels[row])
        .collect();
    wrong.sort_by(|&a, &b| {
        probabilities[a * classes + labels[a]].total_cmp(&probabilities[b * classes + labels[b]])
    });
    wrong.truncate(MOST_WRONG_COUNT);

    let stats = info
        .preprocessing
        .as_ref()
        .and_then(|p| p.normalization.as_ref());
    let mut images = Vec::with_capacity(wrong.len());
    for row in wrong {
        let png = image_png(dataset, row, stats)?;
        images.push(WrongImage {
            row,
            true_class: class_names[labels[row]].clone(),
            predicted_class: class_names[predicted[row]].clone(),
            true_probability: probabilities[row * classes + labels[row]],
            predicted_probability: probabilities[row * classes + predicted[row]],
            png_base64: base64::engine::general_purpose::STANDARD.encode(png),
        });
    }
    Ok(MostWrong {
        split: split.into(),
        images,
    })
}

/// Encodes row `row` of an image dataset as PNG. Pixels were scaled to [0, 1] when loaded,
/// then standardized with `stats` if given; both steps are undone.
fn image_png(
    dataset: &Dataset,
    row: usize,
    stats: Option<&dendrite::data::ChannelStats>,
) -> Result<Vec<u8>> {
    let (channels, height, width) = match *dataset.feature_shape() {
        [height, width] => (1, height, width),
        [channels, height, width] => (channels, height, width),
        ref other => bail!("rows of shape {other:?} are not images"),
    };
    let len = dataset.feature_len();
    let pixels = &dataset.features.data()[row * len..(row + 1) * len];
    let plane = height * width;
    let value = |channel: usize, index: usize| {
        let mut x = pixels[channel * plane + index];
        if let Some(stats) = stats {
            x = x * stats.std[channel] + stats.mean[channel];
        }
        (x.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let mut png = Vec::new();
    let mut cursor = std::io::Cursor::new(&mut png);
    let size = (width as u32, height as u32);
    if channels == 3 {
        let data = (0..plane)
            .flat_map(|i| [value(0, i), value(1, i), value(2, i)])
            .collect();
        image::RgbImage::from_raw(size.0, size.1, data)
            .context("image buffer size")?
            .write_to(&mut cursor, image::ImageFormat::Png)?;
    } else {
        let data = (0..plane).map(|i| value(0, i)).collect();
        image::GrayImage::from_raw(size.0, size.1, data)
            .context("image buffer size")?
            .write_to(&mut cursor, image::ImageFormat::Png)?;
    }
    Ok(png)
}

/// Writes `value` as pretty JSON through a temporary file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    dendrite::model::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads a JSON file of the run folder, naming the file in every error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}; is this the output folder of `dendrite train`?",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not valid; train again to rewrite the run folder",
            path.display()
        )
    })
}

/// Reads a JSON-lines file into one value per non-empty line, naming the file and line in
/// every error.
pub fn read_json_lines(path: &Path) -> Result<Vec<Value>> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}; is this the output folder of `dendrite train`?",
            path.display()
        )
    })?;
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {} is not valid JSON; train again to rewrite the run folder",
                path.display(),
                index + 1
            )
        })?;
        values.push(value);
    }
    Ok(values)
}
