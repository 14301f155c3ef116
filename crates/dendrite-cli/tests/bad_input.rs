//! `dendrite train` on bad data and bad configs: each case must exit with code 2 and one
//! line on stderr that names the file and the problem, must not panic, and must not write a
//! model.

mod common;

use std::path::Path;

use common::{TempDir, idx_config, repo_path, toml_path, train};
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
