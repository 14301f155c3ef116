//! `dendrite evaluate` and `dendrite predict`.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use anyhow::{Context, Result, bail};
use dendrite::data::{self, BadFilePolicy, ColorMode, ImageFolderConfig};
use dendrite::model::{self, ModelMeta, SavedModel, Task};
use dendrite::nn::Loss;
use dendrite::tensor::Tensor;
use dendrite::train;

/// Runs `dendrite evaluate MODEL DATA [--labels FILE]`.
pub fn evaluate(model_path: &Path, data_path: &Path, labels: Option<&Path>) -> Result<()> {
    let SavedModel { model, meta } = model::load(model_path)?;
    let dataset = if is_csv(data_path) {
        let columns = meta.columns.as_ref().with_context(|| {
            format!(
                "{}: the model was not trained on CSV data, so it cannot read a CSV file",
                data_path.display()
            )
        })?;
        let classification = matches!(meta.task, Task::Classification { .. });
        let dataset = data::read_numeric_csv(data_path, &columns.targets, classification)?;
        let found = data::csv_numeric::feature_names(data_path, &columns.targets)?;
        if found != columns.features {
            bail!(
                "{}: feature columns {found:?} differ from the model's {:?}",
                data_path.display(),
                columns.features
            );
        }
        dataset
    } else if data_path.is_dir() {
        let config = ImageFolderConfig {
            color: image_color(&meta),
            size: image_size(&meta),
            on_bad_file: BadFilePolicy::Stop,
        };
        let dataset = crate::preprocess::load_folder(data_path, &config)?;
        let found = dataset.class_names().unwrap_or_default();
        if found != class_names(&meta) {
            bail!(
                "{}: class folders {found:?} differ from the model's classes {:?}",
                data_path.display(),
                class_names(&meta)
            );
        }
        dataset
    } else {
        let labels = match labels {
            Some(path) => path.to_path_buf(),
            None => idx_labels_for(data_path)?,
        };
        let classes = class_names(&meta).len();
        data::load_idx_dataset(data_path, &labels, classes)?
    };
    let mut dataset = dataset;
    prepare_features(&meta, &mut dataset.features, data_path)?;

    let evaluation = train::evaluate(&model, &dataset, meta.loss, 256);
    println!("rows      {}", dataset.len());
    println!("loss      {:.4}", evaluation.loss);
    for (name, value) in &evaluation.metrics {
        println!("{name:<9} {value:.4}");
    }
    if let Some(confusion) = &evaluation.confusion {
        println!("\n{}", confusion_table(confusion, class_names(&meta)));
    }
    Ok(())
}

/// Runs `dendrite predict MODEL INPUT [--out FILE]`.
pub fn predict(model_path: &Path, input: &Path, out: Option<&Path>) -> Result<()> {
    let SavedModel { model, meta } = model::load(model_path)?;
    // The first column names image inputs by file and other inputs by row number.
    let (mut features, files) = if is_csv(input) {
        (read_csv_features(input, &meta)?, None)
    } else if input.is_dir() || has_image_extension(input) {
        let (features, files) = read_images(input, &meta)?;
        (features, Some(files))
    } else {
        (data::read_idx_images(input)?, None)
    };
    prepare_features(&meta, &mut features, input)?;

    let outputs = model.predict(&features, 256);
    let width = outputs.dims2().1;
    let row_name = |row: usize| match &files {
        Some(files) => csv_field(&files[row]),
        None => row.to_string(),
    };
    let mut csv = String::new();
    match &meta.task {
        Task::Classification { class_names } => {
            csv.push_str(if files.is_some() {
                "file,predicted"
            } else {
                "row,predicted"
            });
            for name in class_names {
                write!(csv, ",prob_{name}").expect("writing to a String cannot fail");
            }
            csv.push('\n');
            let predicted = train::predicted_classes(outputs.data(), width);
            for (row, (values, class)) in outputs.data().chunks(width).zip(predicted).enumerate() {
                write!(csv, "{},{}", row_name(row), class_names[class])
                    .expect("writing to a String cannot fail");
                for p in probabilities(values, meta.loss) {
                    write!(csv, ",{p:.6}").expect("writing to a String cannot fail");
                }
                csv.push('\n');
            }
        }
        Task::Regression { target_names } => {
            csv.push_str(if files.is_some() { "file" } else { "row" });
            for (i, name) in target_names.iter().enumerate().take(width) {
                let name = if name.is_empty() {
                    format!("output_{i}")
                } else {
                    name.clone()
                };
                write!(csv, ",{name}").expect("writing to a String cannot fail");
            }
            csv.push('\n');
            for (row, values) in outputs.data().chunks(width).enumerate() {
                write!(csv, "{}", row_name(row)).expect("writing to a String cannot fail");
                for v in values {
                    write!(csv, ",{v}").expect("writing to a String cannot fail");
                }
                csv.push('\n');
            }
        }
    }

    match out {
        Some(path) => model::write_atomic(path, csv.as_bytes())?,
        None => write_stdout(&csv)?,
    }
    Ok(())
}

/// Writes `text` to standard output. A reader that closes the pipe early, as `head` does,
/// has all the rows it wants, so a broken pipe ends the output without an error.
fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(error).context("cannot write the predictions to standard output"),
    }
}

/// Turns one row of model outputs into class probabilities.
fn probabilities(logits: &[f32], loss: Loss) -> Vec<f32> {
    if logits.len() == 1 || loss == Loss::BinaryCrossEntropy {
        let p = 1.0 / (1.0 + (-logits[0]).exp());
        return vec![1.0 - p, p];
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn class_names(meta: &ModelMeta) -> &[String] {
    match &meta.task {
        Task::Classification { class_names } => class_names,
        Task::Regression { .. } => &[],
    }
}

fn is_csv(path: &Path) -> bool {
    let name = path.to_string_lossy().to_lowercase();
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

/// Finds the label file of an MNIST-named image file: `...images-idx3-ubyte...` pairs with
/// `...labels-idx1-ubyte...` in the same folder.
fn idx_labels_for(images: &Path) -> Result<PathBuf> {
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains("images-idx3") {
        let candidate = images.with_file_name(name.replace("images-idx3", "labels-idx1"));
        if candidate.exists() {
            return Ok(candidate);
        }
        bail!(
            "{}: label file {} not found; pass it with --labels",
            images.display(),
            candidate.display()
        );
    }
    bail!(
        "{}: cannot tell which label file goes with it; pass it with --labels",
        images.display()
    )
}

/// The file name extensions that `predict` reads as images, compared without regard to
/// letter case. They match the ones an image folder accepts.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|known| ext.eq_ignore_ascii_case(known))
        })
}

/// Returns the channels that images are converted to for `meta`'s model: the stored color
/// mode, or for a model without one (trained on IDX data), grayscale when its input has one
/// channel.
fn image_color(meta: &ModelMeta) -> ColorMode {
    if let Some(color) = meta.preprocessing.as_ref().and_then(|p| p.color) {
        return color;
    }
    match meta.input_shape.as_slice() {
        [_, _] | [1, _, _] => ColorMode::Grayscale,
        _ => ColorMode::Rgb,
    }
}

/// Returns the size images were resized to in training, if any.
fn image_size(meta: &ModelMeta) -> Option<(usize, usize)> {
    meta.preprocessing.as_ref().and_then(|p| p.size)
}

/// Applies the model's stored standardization to `features`, gives one-channel images the
/// model's layout (`[n, h, w]` or `[n, 1, h, w]`), and checks the row shape.
fn prepare_features(meta: &ModelMeta, features: &mut Tensor, path: &Path) -> Result<()> {
    if let Some(stats) = meta
        .preprocessing
        .as_ref()
        .and_then(|p| p.normalization.as_ref())
    {
        crate::preprocess::standardize(features, stats)
            .with_context(|| format!("{}", path.display()))?;
    }

    let row_shape = &features.shape()[1..];
    let without_channel = |shape: &[usize]| match shape {
        [1, height, width] => vec![*height, *width],
        other => other.to_vec(),
    };
    if row_shape != meta.input_shape.as_slice()
        && without_channel(row_shape) == without_channel(&meta.input_shape)
    {
        let mut shape = vec![features.shape()[0]];
        shape.extend_from_slice(&meta.input_shape);
        *features = std::mem::replace(features, Tensor::zeros(&[0])).reshape(&shape);
    }
    check_input_shape(meta, features, path)
}

/// Reads one image file, or every image file under a folder and its subfolders (sorted by
/// path), prepared as the model's training images were. Returns the features `[n, c, h, w]`
/// and the name of each row: the path relative to the folder, or the file name.
fn read_images(input: &Path, meta: &ModelMeta) -> Result<(Tensor, Vec<String>)> {
    let (paths, names) = if input.is_dir() {
        let mut paths = Vec::new();
        list_images(input, &mut paths)?;
        if paths.is_empty() {
            bail!(
                "{}: the folder contains no image files (.png, .jpg, .jpeg)",
                input.display()
            );
        }
        paths.sort();
        let names = paths
            .iter()
            .map(|path| {
                let relative = path.strip_prefix(input).unwrap_or(path);
                let parts: Vec<String> = relative
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect();
                parts.join("/")
            })
            .collect();
        (paths, names)
    } else {
        let name = input.file_name().map_or_else(
            || input.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        (vec![input.to_path_buf()], vec![name])
    };

    let color = image_color(meta);
    let size = image_size(meta);
    let images: Vec<Tensor> = paths
        .par_iter()
        .map(|path| data::load_image_file(path, color, size).map(|(image, _)| image))
        .collect::<dendrite::Result<_>>()?;

    // Without a stored size, training used images at their own size, so every image must
    // already have the size of the model's input.
    let expected: Vec<usize> = match meta.input_shape.as_slice() {
        [height, width] => vec![1, *height, *width],
        other => other.to_vec(),
    };
    let mut values = Vec::with_capacity(images.len() * expected.iter().product::<usize>());
    for (image, path) in images.iter().zip(&paths) {
        if image.shape() != expected.as_slice() {
            bail!(
                "{}: image has shape {:?} (channels, height, width), the model expects {:?}; \
                 resize it to {}x{} (height x width)",
                path.display(),
                image.shape(),
                expected,
                expected.get(1).copied().unwrap_or(0),
                expected.get(2).copied().unwrap_or(0)
            );
        }
        values.extend_from_slice(image.data());
    }
    let mut shape = vec![images.len()];
    shape.extend_from_slice(&expected);
    Ok((Tensor::from_vec(&shape, values), names))
}

/// Appends the image files under `dir` and its subfolders to `paths`, skipping hidden
/// entries (names starting with `.`).
fn list_images(dir: &Path, paths: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            list_images(&path, paths)?;
        } else if has_image_extension(&path) {
            paths.push(path);
        }
    }
    Ok(())
}

/// Quotes a CSV field that contains a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Runs `dendrite export-images IMAGES LABELS OUT_DIR`: writes IDX images as PNG files under
/// `OUT_DIR/<label>/`.
pub fn export_images(
    images: &Path,
    labels: &Path,
    out_dir: &Path,
    count: Option<usize>,
    num_classes: usize,
) -> Result<()> {
    let dataset = data::load_idx_dataset(images, labels, num_classes)?;
    let rows = count.map_or(dataset.len(), |count| count.min(dataset.len()));
    let indices: Vec<usize> = (0..rows).collect();
    let dataset = dataset.subset(&indices);
    let labels = dataset.labels().unwrap_or_default();
    let class_names = dataset.class_names().unwrap_or_default();
    data::write_png_folder(&dataset.features, labels, class_names, out_dir)?;

    let mut used = vec![false; class_names.len()];
    for &label in labels {
        used[label] = true;
    }
    println!(
        "wrote {rows} images into {} class folders under {}",
        used.iter().filter(|&&u| u).count(),
        out_dir.display()
    );
    Ok(())
}

fn check_input_shape(meta: &ModelMeta, features: &Tensor, path: &Path) -> Result<()> {
    if features.shape()[1..] != meta.input_shape[..] {
        bail!(
            "{}: rows have shape {:?}, the model expects {:?}",
            path.display(),
            &features.shape()[1..],
            meta.input_shape
        );
    }
    Ok(())
}

/// Reads the model's feature columns from a CSV file by name, in any column order; other
/// columns are ignored.
fn read_csv_features(path: &Path, meta: &ModelMeta) -> Result<Tensor> {
    let columns = meta.columns.as_ref().with_context(|| {
        format!(
            "{}: the model was not trained on CSV data, so it cannot read a CSV file",
            path.display()
        )
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header", path.display()))?
        .clone();
    let mut indices = Vec::with_capacity(columns.features.len());
    for name in &columns.features {
        match header.iter().position(|h| h == name) {
            Some(i) => indices.push(i),
            None => bail!(
                "{}: column \"{name}\" is missing; the model needs {:?}",
                path.display(),
                columns.features
            ),
        }
    }
    let mut values = Vec::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.with_context(|| format!("cannot read {}", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        for (&i, name) in indices.iter().zip(&columns.features) {
            let cell = record.get(i).unwrap_or("");
            let value: f32 = cell
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .with_context(|| {
                    format!(
                        "{}: line {line}, column \"{name}\": value \"{cell}\" is not a number",
                        path.display()
                    )
                })?;
            values.push(value);
        }
        rows += 1;
    }
    if rows == 0 {
        bail!(
            "{}: the file has no data rows after the header",
            path.display()
        );
    }
    Ok(Tensor::from_vec(&[rows, indices.len()], values))
}

/// Formats a confusion matrix with true classes as rows and predicted classes as columns.
fn confusion_table(confusion: &[Vec<usize>], names: &[String]) -> String {
    let label = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let width = confusion
        .iter()
        .flatten()
        .map(|c| c.to_string().len())
        .chain((0..confusion.len()).map(|i| label(i).len()))
        .max()
        .unwrap_or(1)
        .max(4);
    let mut table = format!(
        "confusion matrix (rows: true class, columns: predicted)\n{:>width$}",
        ""
    );
    for j in 0..confusion.len() {
        write!(table, " {:>width$}", label(j)).expect("writing to a String cannot fail");
    }
    for (i, row) in confusion.iter().enumerate() {
        write!(table, "\n{:>width$}", label(i)).expect("writing to a String cannot fail");
        for count in row {
            write!(table, " {count:>width$}").expect("writing to a String cannot fail");
        }
    }
    table
}
