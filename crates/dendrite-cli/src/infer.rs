//! `dendrite evaluate` and `dendrite predict`.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dendrite::data;
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
    } else {
        let labels = match labels {
            Some(path) => path.to_path_buf(),
            None => idx_labels_for(data_path)?,
        };
        let classes = class_names(&meta).len();
        data::load_idx_dataset(data_path, &labels, classes)?
    };
    check_input_shape(&meta, &dataset.features, data_path)?;

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
    let features = if is_csv(input) {
        read_csv_features(input, &meta)?
    } else {
        data::read_idx_images(input)?
    };
    check_input_shape(&meta, &features, input)?;

    let outputs = model.predict(&features, 256);
    let width = outputs.dims2().1;
    let mut csv = String::new();
    match &meta.task {
        Task::Classification { class_names } => {
            csv.push_str("row,predicted");
            for name in class_names {
                write!(csv, ",prob_{name}").expect("writing to a String cannot fail");
            }
            csv.push('\n');
            let predicted = train::predicted_classes(outputs.data(), width);
            for (row, (values, class)) in outputs.data().chunks(width).zip(predicted).enumerate() {
                write!(csv, "{row},{}", class_names[class])
                    .expect("writing to a String cannot fail");
                for p in probabilities(values, meta.loss) {
                    write!(csv, ",{p:.6}").expect("writing to a String cannot fail");
                }
                csv.push('\n');
            }
        }
        Task::Regression { target_names } => {
            csv.push_str("row");
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
                write!(csv, "{row}").expect("writing to a String cannot fail");
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
