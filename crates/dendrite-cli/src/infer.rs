//! `dendrite evaluate` and `dendrite predict`.

use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use anyhow::{Context, Result, bail};
use dendrite::data::tabular::TransformReport;
use dendrite::data::{
    self, BadFilePolicy, ColorMode, Dataset, ImageFolderConfig, TabularPreprocessor,
};
use dendrite::model::{self, ModelMeta, SavedModel, Task};
use dendrite::tensor::Tensor;
use dendrite::train;

/// Runs `dendrite evaluate MODEL DATA [--labels FILE] [--json FILE]`.
pub fn evaluate(
    model_path: &Path,
    data_path: &Path,
    labels: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    let SavedModel { model, meta } = model::load(model_path)?;
    if let Some(series) = &meta.series {
        return crate::forecast::evaluate(&model, series, data_path, json);
    }
    let decision = meta.binary_decision()?;
    let mut dataset = if reads_as_csv(data_path, &meta) {
        read_csv_dataset(data_path, &meta)?
    } else if data_path.is_dir() {
        let config = ImageFolderConfig {
            color: image_color(&meta),
            size: image_size(&meta),
            on_bad_file: BadFilePolicy::Stop,
        };
        let dataset = crate::preprocess::load_folder(data_path, &config)?;
        let found = dataset.class_names().unwrap_or_default();
        if found != meta.class_names() {
            bail!(
                "{}: class folders {found:?} differ from the model's classes {:?}",
                data_path.display(),
                meta.class_names()
            );
        }
        dataset
    } else {
        let labels = match labels {
            Some(path) => path.to_path_buf(),
            None => idx_labels_for(data_path)?,
        };
        let classes = meta.class_names().len();
        data::load_idx_dataset(data_path, &labels, classes)?
    };
    prepare_features(&meta, &mut dataset.features, data_path)?;

    let evaluation = train::evaluate_with(&model, &dataset, meta.loss, 256, decision);
    let names = crate::train::output_names(&meta.task);
    print!(
        "{}",
        crate::report::evaluation_table(&evaluation, dataset.len(), &names)
    );

    if let Some(path) = json {
        let mut object = evaluation.to_json(&names);
        object["rows"] = dataset.len().into();
        let mut bytes = serde_json::to_vec_pretty(&object)?;
        bytes.push(b'\n');
        model::write_atomic(path, &bytes)?;
    }
    Ok(())
}

/// Reads a labelled CSV file with the model's stored preprocessing and reports its warnings
/// on standard error.
fn read_csv_dataset(path: &Path, meta: &ModelMeta) -> Result<Dataset> {
    let tabular = tabular_of(meta, path)?;
    let table = tabular.read_table(path)?;
    let (features, report) = tabular.transform(&table)?;
    report_transform(&report, path);
    let class_names = match &meta.task {
        Task::Classification { class_names } => Some(class_names.as_slice()),
        Task::Regression { .. } => None,
    };
    let targets = tabular.read_targets(&table, class_names)?;
    Ok(Dataset::new(features, targets)?)
}

/// Returns the CSV preprocessing of a model.
fn tabular_of<'m>(meta: &'m ModelMeta, path: &Path) -> Result<&'m TabularPreprocessor> {
    if meta.series.is_some() {
        bail!(
            "{}: the model forecasts a series (format = \"series\"); predict its next values \
             with `dendrite forecast MODEL FILE --steps N`",
            path.display()
        );
    }
    meta.tabular.as_ref().with_context(|| {
        format!(
            "{}: the model was not trained on CSV data, so it cannot read a CSV file",
            path.display()
        )
    })
}

/// Prints the warning about unknown categories and the note about imputed values of a
/// transform on standard error.
fn report_transform(report: &TransformReport, path: &Path) {
    let source = path.display().to_string();
    if let Some(warning) = report.unknown_warning(&source) {
        eprintln!("warning: {warning}");
    }
    if let Some(note) = report.imputed_note(&source) {
        eprintln!("note: {note}");
    }
}

/// Runs `dendrite predict MODEL INPUT [--out FILE]`.
pub fn predict(model_path: &Path, input: &Path, out: Option<&Path>) -> Result<()> {
    let SavedModel { model, meta } = model::load(model_path)?;
    let decision = meta.binary_decision()?;

    // The first column names each row: by the configured ID column for CSV input, by file
    // for image input, and by row number otherwise.
    let (mut features, row_names, first_column) = if reads_as_csv(input, &meta) {
        let tabular = tabular_of(&meta, input)?;
        let table = tabular.read_table(input)?;
        let (features, report) = tabular.transform(&table)?;
        report_transform(&report, input);
        match (tabular.read_ids(&table)?, &tabular.id_column) {
            (Some(ids), Some(id_column)) => (features, Some(ids), id_column.clone()),
            _ => (features, None, "row".to_string()),
        }
    } else if input.is_dir() || has_image_extension(input) {
        let (features, files) = read_images(input, &meta)?;
        (features, Some(files), "file".to_string())
    } else {
        (data::read_idx_images(input)?, None, "row".to_string())
    };
    prepare_features(&meta, &mut features, input)?;

    let outputs = model.predict(&features, 256);
    let width = outputs.dims2().1;
    let row_name = |row: usize| match &row_names {
        Some(names) => names[row].clone(),
        None => row.to_string(),
    };

    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut record: Vec<String> = vec![first_column];
    match &meta.task {
        Task::Classification { class_names } => {
            record.push("predicted".to_string());
            record.extend(class_names.iter().map(|name| format!("prob_{name}")));
            writer.write_record(&record)?;

            let classes = class_names.len();
            let (probabilities, predicted) =
                train::classify(outputs.data(), width, meta.loss, decision);
            for (row, (values, class)) in probabilities.chunks(classes).zip(predicted).enumerate() {
                record.clear();
                record.push(row_name(row));
                record.push(class_names[class].clone());
                record.extend(values.iter().map(|p| format!("{p:.6}")));
                writer.write_record(&record)?;
            }
        }
        Task::Regression { target_names } => {
            record.extend((0..width).map(|i| match target_names.get(i) {
                Some(name) if !name.is_empty() => name.clone(),
                _ => format!("output_{i}"),
            }));
            writer.write_record(&record)?;

            for (row, values) in outputs.data().chunks(width).enumerate() {
                record.clear();
                record.push(row_name(row));
                record.extend(values.iter().map(f32::to_string));
                writer.write_record(&record)?;
            }
        }
    }
    let csv = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot format the predictions as CSV: {e}"))?;

    match out {
        Some(path) => model::write_atomic(path, &csv)?,
        None => write_stdout(&csv)?,
    }
    Ok(())
}

/// Writes `bytes` to standard output. A reader that closes the pipe early, as `head` does,
/// has all the rows it wants, so a broken pipe ends the output without an error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(error).context("cannot write the predictions to standard output"),
    }
}

/// Returns true if `path` is read as CSV: a file named `.csv` or `.csv.gz`, or for a model
/// trained on CSV data, any file that is not an image (such as `.tsv` or `.txt`).
fn reads_as_csv(path: &Path, meta: &ModelMeta) -> bool {
    let name = path.to_string_lossy().to_lowercase();
    let csv_name = name.ends_with(".csv") || name.ends_with(".csv.gz");
    csv_name || (meta.tabular.is_some() && !path.is_dir() && !has_image_extension(path))
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
