//! `dendrite train` on bad data and bad configs (IDX and CSV): each case must exit with
//! code 2 and one line on stderr that names the file and the problem, must not panic, and
//! must not write a model.

mod common;

use std::path::Path;

use common::{TempDir, idx_config, repo_path, toml_path, train};

/// Writes a config that trains a one-layer classifier (or regression model) on the CSV file
/// `train` for one epoch. `extra_data` and `extra_model` are added to those tables.
fn csv_config(
    dir: &TempDir,
    train: &Path,
    task: &str,
    extra_data: &str,
    extra_model: &str,
) -> std::path::PathBuf {
    let (units, loss) = if task == "regression" {
        (1, "mse")
    } else {
        (2, "cross_entropy")
    };
    let text = format!(
        r#"[data]
format = "csv"
train = "{train}"
target = "y"
task = "{task}"
{extra_data}

[model]
{extra_model}
layers = [
  {{ type = "dense", units = {units} }},
]

[training]
epochs = 1
batch_size = 4
loss = "{loss}"

[training.optimizer]
type = "sgd"
learning_rate = 0.1
"#,
        train = toml_path(train),
    );
    dir.write("config.toml", text)
}

/// Trains on a CSV file with `contents` and checks that the run is rejected with a message
/// that names the file and contains every one of `expected`.
fn assert_csv_rejected(name: &str, contents: &str, extra_data: &str, expected: &[&str]) {
    let dir = TempDir::new(name);
    let data = dir.write("data.csv", contents);
    let config = csv_config(&dir, &data, "classification", extra_data, "");
    let out = dir.join("run");

    let run = train(&config, &out);

    let mut fragments = vec![data.to_str().unwrap()];
    fragments.extend_from_slice(expected);
    assert_rejected(&run, &out, &fragments);
}
use dendrite::data::{write_idx_images, write_idx_labels};
use dendrite::tensor::Tensor;

/// Checks that a training run was rejected as bad input and that its error line contains
/// every one of `expected`.
fn assert_rejected(run: &common::Run, out: &Path, expected: &[&str]) {
    assert_eq!(
        run.code,
        Some(2),
        "exit code; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "dendrite panicked:\n{}",
        run.stderr
    );

    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line:\n{}", run.stderr);
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    for fragment in expected {
        assert!(line.contains(fragment), "{fragment:?} missing from: {line}");
    }

    for name in ["model.safetensors", "model.json"] {
        assert!(
            !out.join(name).exists(),
            "{name} was written although training was rejected"
        );
    }
}

fn mnist(name: &str) -> std::path::PathBuf {
    repo_path(&format!("data/mnist/{name}"))
}

#[test]
fn missing_data_file() {
    let dir = TempDir::new("missing");
    let images = dir.join("no-such-images-idx3-ubyte.gz");
    let config = idx_config(&dir, &images, &mnist("train-labels-idx1-ubyte.gz"), "", 10);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(&run, &out, &[&images.display().to_string()]);
    let message = run.stderr.to_lowercase();
    assert!(
        message.contains("no such file") || message.contains("cannot find"),
        "the message does not say the file is missing: {}",
        run.stderr
    );
}

#[test]
fn truncated_gzip() {
    let dir = TempDir::new("truncated");
    let full = std::fs::read(mnist("train-labels-idx1-ubyte.gz")).unwrap();
    let labels = dir.write("train-labels-idx1-ubyte.gz", &full[..full.len() / 2]);
    let config = idx_config(&dir, &mnist("train-images-idx3-ubyte.gz"), &labels, "", 10);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[&labels.display().to_string(), "corrupt or truncated"],
    );
}

#[test]
fn wrong_idx_magic() {
    let dir = TempDir::new("magic");
    // A CSV file given as images: its first 4 bytes "x,y\n" read as magic 0x782C790A.
    let images = dir.write("images-idx3-ubyte", "x,y\n1,2\n3,4\n");
    let labels = dir.join("labels-idx1-ubyte");
    write_idx_labels(&labels, &[0, 1], false).unwrap();
    let config = idx_config(&dir, &images, &labels, "", 10);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &images.display().to_string(),
            "wrong magic number 0x782C790A",
            "expected 0x00000803",
        ],
    );
}

#[test]
fn swapped_image_and_label_files() {
    let dir = TempDir::new("swapped");
    let labels = mnist("train-labels-idx1-ubyte.gz");
    let config = idx_config(&dir, &labels, &mnist("train-images-idx3-ubyte.gz"), "", 10);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &labels.display().to_string(),
            "wrong magic number 0x00000801",
        ],
    );
}

#[test]
fn image_and_label_counts_differ() {
    let dir = TempDir::new("counts");
    let images = dir.join("images-idx3-ubyte");
    let labels = dir.join("labels-idx1-ubyte");
    write_idx_images(&images, &Tensor::zeros(&[5, 3, 3]), false).unwrap();
    write_idx_labels(&labels, &[0, 1, 2, 3], true).unwrap();
    let config = idx_config(&dir, &images, &labels, "", 10);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &images.display().to_string(),
            &labels.display().to_string(),
            "5 images",
            "4 labels",
        ],
    );
}

#[test]
fn mnist_labels_beyond_num_classes() {
    let dir = TempDir::new("num-classes");
    let labels = mnist("train-labels-idx1-ubyte.gz");
    let config = idx_config(
        &dir,
        &mnist("train-images-idx3-ubyte.gz"),
        &labels,
        "num_classes = 5",
        5,
    );
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[&labels.display().to_string(), "out of range for 5 classes"],
    );
}

#[test]
fn crafted_label_outside_classes() {
    let dir = TempDir::new("label");
    let images = dir.join("images-idx3-ubyte");
    let labels = dir.join("labels-idx1-ubyte");
    write_idx_images(&images, &Tensor::zeros(&[4, 2, 2]), false).unwrap();
    write_idx_labels(&labels, &[0, 9, 12, 3], false).unwrap();
    let config = idx_config(&dir, &images, &labels, "", 10);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &labels.display().to_string(),
            "label 12 at index 2",
            "out of range for 10 classes",
        ],
    );
}

#[test]
fn unknown_config_key() {
    let dir = TempDir::new("unknown-key");
    let config = idx_config(
        &dir,
        &mnist("train-images-idx3-ubyte.gz"),
        &mnist("train-labels-idx1-ubyte.gz"),
        "shuffle_seed = 3",
        10,
    );
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &config.display().to_string(),
            "unknown field `shuffle_seed`",
            "`train_images`",
            "`train_labels`",
            "`num_classes`",
            "`validation_split`",
        ],
    );
}

#[test]
fn unknown_layer_key() {
    let dir = TempDir::new("unknown-layer-key");
    let text = format!(
        r#"[data]
format = "idx"
train_images = "{images}"
train_labels = "{labels}"

[model]
layers = [
  {{ type = "flatten" }},
  {{ type = "dense", units = 10, activaton = "relu" }},
]

[training]
epochs = 1
batch_size = 64
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.05
"#,
        images = toml_path(&mnist("train-images-idx3-ubyte.gz")),
        labels = toml_path(&mnist("train-labels-idx1-ubyte.gz")),
    );
    let config = dir.write("config.toml", text);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &config.display().to_string(),
            "unknown field `activaton`",
            "`units`",
            "`activation`",
            "`init`",
            "`bias`",
        ],
    );
}

#[test]
fn dense_layer_with_zero_units() {
    let dir = TempDir::new("zero-units");
    let config = idx_config(
        &dir,
        &mnist("train-images-idx3-ubyte.gz"),
        &mnist("train-labels-idx1-ubyte.gz"),
        "",
        0,
    );
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(&run, &out, &[&config.display().to_string(), "units = 0"]);
}

#[test]
fn csv_missing_target_column() {
    assert_csv_rejected(
        "csv-no-target",
        "a,b,label\n1,2,x\n3,4,y\n",
        "",
        &[
            "column \"y\" of data.target is not in the header",
            "\"a\", \"b\", \"label\"",
        ],
    );
}

#[test]
fn csv_text_in_numeric_column() {
    assert_csv_rejected(
        "csv-text-in-number",
        "a,b,y\n1,2,x\n3,4,y\n5,six,x\n",
        "column_types = { b = \"numeric\" }",
        &[
            "line 4, column \"b\"",
            "value \"six\" is not a finite number",
        ],
    );
}

#[test]
fn csv_unknown_category_in_test_file() {
    let dir = TempDir::new("csv-unknown-category");
    let data = dir.write("data.csv", "a,city,y\n1,Paris,x\n2,Lyon,y\n3,Paris,x\n");
    let test = dir.write("test.csv", "y,city,a\nx,Paris,1\ny,Berlin,2\n");
    let test_line = format!("test = \"{}\"", toml_path(&test));
    let config = csv_config(&dir, &data, "classification", &test_line, "");
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            test.to_str().unwrap(),
            "line 3, column \"city\"",
            "category \"Berlin\" did not occur in the training rows",
            "unknown_category = \"ignore\"",
        ],
    );
}

#[test]
fn csv_empty_file() {
    assert_csv_rejected("csv-empty", "", "", &["the file is empty"]);
    assert_csv_rejected("csv-header-only", "a,y\n", "", &["no data rows"]);
}

#[test]
fn csv_ragged_row() {
    assert_csv_rejected(
        "csv-ragged",
        "a,b,y\n1,2,x\n3,y\n",
        "",
        &["line 3 has 2 cells but the header has 3 columns"],
    );
}

#[test]
fn csv_missing_value_rejected() {
    assert_csv_rejected(
        "csv-missing-value",
        "a,b,y\n1,2,x\n3,NA,y\n",
        "",
        &[
            "line 3, column \"b\"",
            "missing value (\"NA\")",
            "data.missing",
        ],
    );
}

#[test]
fn csv_missing_target_value() {
    assert_csv_rejected(
        "csv-missing-target",
        "a,y\n1,x\n2,\n3,y\n",
        "",
        &["line 3, column \"y\"", "the target is missing"],
    );
}

#[test]
fn csv_unknown_data_key() {
    let dir = TempDir::new("csv-unknown-key");
    let data = dir.write("data.csv", "a,y\n1,x\n2,y\n");
    let config = csv_config(&dir, &data, "classification", "standardise = false", "");
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &config.display().to_string(),
            "unknown field `standardise`",
            "`standardize`",
            "`missing`",
        ],
    );
}

#[test]
fn csv_unknown_positive_class() {
    let dir = TempDir::new("csv-positive-class");
    let data = dir.write("data.csv", "a,y\n1,x\n2,y\n");
    let config = csv_config(&dir, &data, "classification", "", "positive_class = \"z\"");
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &config.display().to_string(),
            "positive_class = \"z\" is not one of the classes x, y",
        ],
    );
}

#[test]
fn csv_threshold_on_regression() {
    let dir = TempDir::new("csv-threshold-regression");
    let data = dir.write("data.csv", "a,y\n1,0.5\n2,1.5\n");
    let config = csv_config(&dir, &data, "regression", "", "decision_threshold = 0.3");
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &["apply to binary classifiers only", "regression targets"],
    );
}

#[test]
fn csv_class_weight_for_unknown_class() {
    let dir = TempDir::new("csv-class-weights");
    let data = dir.write("data.csv", "a,y\n1,x\n2,y\n");
    let config = csv_config(
        &dir,
        &data,
        "classification",
        "class_weights = { z = 2.0 }",
        "",
    );
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_rejected(
        &run,
        &out,
        &[
            &config.display().to_string(),
            "data.class_weights names class \"z\"",
            "its classes are x, y",
        ],
    );
}
