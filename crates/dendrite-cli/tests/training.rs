//! End-to-end runs of the real binary: a diverging learning rate, a dataset smaller than one
//! batch, gzip data under raw IDX names, repeatable training, and `predict` and `evaluate`
//! on a trained MNIST model.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{
    TempDir, dendrite, fixture, load_params, mnist_config, predicted_column, read_json, repo_path,
    toml_path, train,
};
use dendrite::data::{read_idx_images, read_idx_labels};
use dendrite::model::Task;
use dendrite::train::predicted_classes;

/// Parses `metrics.jsonl` into one JSON object per epoch.
fn read_metrics(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

#[test]
fn diverging_learning_rate_keeps_last_good_model() {
    let dir = TempDir::new("nan");
    let config = mnist_config(&dir, 2, "1e6");
    let out = dir.join("run");

    let run = train(&config, &out);

    assert_eq!(
        run.code,
        Some(1),
        "exit code; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line:\n{}", run.stderr);
    let message = lines[0];
    assert!(message.contains("at epoch 1, batch "), "{message}");
    assert!(message.contains("may be too high"), "{message}");
    assert!(
        message.contains(&out.display().to_string()),
        "the message does not say where the model is: {message}"
    );

    let params = load_params(&out);
    assert!(!params.is_empty(), "the saved model has no parameters");
    for (name, _, values) in &params {
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name} holds a NaN or infinite value"
        );
    }
}

#[test]
fn dataset_smaller_than_one_batch_still_trains() {
    let dir = TempDir::new("tiny");
    let text = format!(
        r#"[data]
format = "csv"
train = "{train}"
target = "label"
task = "classification"
validation_split = 0.2

[model]
layers = [
  {{ type = "dense", units = 2 }},
]

[training]
epochs = 3
batch_size = 64
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.1
"#,
        train = toml_path(&fixture("smaller-than-one-batch/tiny.csv")),
    );
    let config = dir.write("tiny.toml", text);
    let out = dir.join("run");

    let run = train(&config, &out);

    run.assert_success();
    assert!(
        run.stdout.contains("training on 8 rows"),
        "stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("warning: 8 training rows < batch size 64"),
        "stderr:\n{}",
        run.stderr
    );

    let metrics = read_metrics(&out.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 3, "one line per epoch");
    for (epoch, record) in metrics.iter().enumerate() {
        // One batch of all 8 rows per epoch, so one optimizer step per epoch.
        assert_eq!(
            record["steps"].as_u64(),
            Some(epoch as u64 + 1),
            "epoch {}: {record}",
            epoch + 1
        );
    }
}

#[test]
fn gzip_under_raw_idx_name_trains() {
    let fixtures = repo_path("crates/dendrite/tests/fixtures/gzip-under-raw-name");
    let dir = TempDir::new("gzip-raw");

    // The same config on the gzip files and on the plain reference copies.
    let mut outs = Vec::new();
    for (name, folder) in [
        ("gzip", fixtures.clone()),
        ("plain", fixtures.join("reference")),
    ] {
        let text = format!(
            r#"[data]
format = "idx"
train_images = "{images}"
train_labels = "{labels}"
num_classes = 3
validation_split = 0

[model]
layers = [
  {{ type = "flatten" }},
  {{ type = "dense", units = 3 }},
]

[training]
epochs = 5
batch_size = 6
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.1
"#,
            images = toml_path(&folder.join("train-images-idx3-ubyte")),
            labels = toml_path(&folder.join("train-labels-idx1-ubyte")),
        );
        let config = dir.write(&format!("{name}.toml"), text);
        let out = dir.join(name);
        let run = train(&config, &out);
        run.assert_success();
        assert!(
            run.stdout.contains("training on 6 rows"),
            "{name}: stdout:\n{}",
            run.stdout
        );
        outs.push(out);
    }

    let gzip_weights = std::fs::read(outs[0].join("model.safetensors")).unwrap();
    let plain_weights = std::fs::read(outs[1].join("model.safetensors")).unwrap();
    assert!(
        gzip_weights == plain_weights,
        "training on the gzip files and on the plain files gave different weights"
    );

    let images = fixtures.join("train-images-idx3-ubyte");
    let labels = fixtures.join("train-labels-idx1-ubyte");
    let evaluate = dendrite([
        "evaluate".as_ref(),
        outs[0].as_os_str(),
        images.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
    ]);
    evaluate.assert_success();
    assert!(
        evaluate.stdout.starts_with("rows      6\n"),
        "evaluate output:\n{}",
        evaluate.stdout
    );
}

#[test]
fn same_config_gives_identical_files() {
    let dir = TempDir::new("repeat");
    let config = mnist_config(&dir, 1, "0.05");
    let outs = [dir.join("first"), dir.join("second")];

    for out in &outs {
        let run = dendrite([
            "--threads".as_ref(),
            "1".as_ref(),
            "train".as_ref(),
            config.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ]);
        run.assert_success();
    }

    let first = std::fs::read(outs[0].join("model.safetensors")).unwrap();
    let second = std::fs::read(outs[1].join("model.safetensors")).unwrap();
    assert!(
        first == second,
        "model.safetensors differs between two runs"
    );

    // metrics.jsonl repeats byte for byte; the timing, which varies, is in timing.jsonl.
    let first_metrics = std::fs::read(outs[0].join("metrics.jsonl")).unwrap();
    assert_eq!(
        read_metrics(&outs[0].join("metrics.jsonl")).len(),
        1,
        "one line per epoch"
    );
    assert!(
        first_metrics == std::fs::read(outs[1].join("metrics.jsonl")).unwrap(),
        "metrics.jsonl differs between two runs"
    );
    let timing = read_metrics(&outs[0].join("timing.jsonl"));
    assert_eq!(timing.len(), 1, "one timing line per epoch");
    assert!(timing[0]["seconds"].as_f64().is_some_and(|s| s > 0.0));

    assert_eq!(
        read_json(&outs[0].join("summary.json")),
        read_json(&outs[1].join("summary.json"))
    );
}

#[test]
fn predict_and_evaluate_agree_with_library() {
    let dir = TempDir::new("round-trip");
    let config = mnist_config(&dir, 1, "0.05");
    let out = dir.join("run");
    train(&config, &out).assert_success();
    let images = repo_path("data/mnist/t10k-images-idx3-ubyte.gz");

    // `predict --out FILE` and `predict` to standard output write the same CSV.
    let predictions = dir.join("predictions.csv");
    dendrite([
        "predict".as_ref(),
        out.as_os_str(),
        images.as_os_str(),
        "--out".as_ref(),
        predictions.as_os_str(),
    ])
    .assert_success();
    let csv = std::fs::read_to_string(&predictions).unwrap();
    let to_stdout = dendrite(["predict".as_ref(), out.as_os_str(), images.as_os_str()]);
    to_stdout.assert_success();
    assert!(csv == to_stdout.stdout, "predict --out and predict differ");

    // The library's model.predict on the same images picks the same classes.
    let saved = dendrite::model::load(&out).unwrap();
    let Task::Classification { class_names } = &saved.meta.task else {
        panic!("the MNIST model is not a classifier: {:?}", saved.meta.task);
    };
    let features = read_idx_images(&images).unwrap();
    let outputs = saved.model.predict(&features, 100);
    let width = outputs.shape()[1];
    let expected: Vec<String> = predicted_classes(outputs.data(), width)
        .into_iter()
        .map(|class| class_names[class].clone())
        .collect();
    let predicted = predicted_column(&csv);
    assert_eq!(predicted.len(), 10_000);
    let differing = predicted
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "rows where predict and model.predict differ");

    // The share of correct predictions is the test accuracy of summary.json.
    let labels = read_idx_labels(repo_path("data/mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(class, label)| **class == label.to_string())
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    let summary = read_json(&out.join("summary.json"));
    let test_accuracy = summary["test"]["accuracy"]
        .as_f64()
        .expect("summary.json has a test accuracy");
    assert!(
        (accuracy - test_accuracy).abs() < 1e-12,
        "accuracy of the predictions {accuracy}, summary.json {test_accuracy}"
    );
    assert!(
        test_accuracy > 0.8,
        "one epoch reaches about 0.9; got {test_accuracy}"
    );

    let evaluate = dendrite(["evaluate".as_ref(), out.as_os_str(), images.as_os_str()]);
    evaluate.assert_success();
    let text = &evaluate.stdout;
    assert!(text.contains("rows      10000\n"), "{text}");
    assert!(
        text.contains(&format!("accuracy  {test_accuracy:.4}\n")),
        "{text}"
    );
    assert!(
        text.contains("confusion matrix (rows: true class, columns: predicted)"),
        "{text}"
    );

    // 10 rows of the table, one per true class, each the class name and 10 counts.
    let table: Vec<Vec<usize>> = text
        .lines()
        .skip_while(|line| !line.starts_with("confusion matrix"))
        .skip(2)
        .map(|line| {
            line.split_whitespace()
                .map(|cell| cell.parse().unwrap_or_else(|_| panic!("{line}")))
                .collect()
        })
        .collect();
    assert_eq!(table.len(), 10, "{text}");
    let mut diagonal = 0;
    for (class, row) in table.iter().enumerate() {
        assert_eq!(row.len(), 11, "{text}");
        assert_eq!(row[0], class, "{text}");
        let true_count = labels.iter().filter(|&&l| usize::from(l) == class).count();
        assert_eq!(
            row[1..].iter().sum::<usize>(),
            true_count,
            "class {class}: the row does not add up to its number of test digits"
        );
        diagonal += row[1 + class];
    }
    assert_eq!(
        diagonal, correct,
        "the diagonal is the number of correct rows"
    );
}

#[test]
fn predict_to_closed_pipe_exits_cleanly() {
    let dir = TempDir::new("pipe");
    let config = mnist_config(&dir, 1, "0.05");
    let out = dir.join("run");
    train(&config, &out).assert_success();
    let images = repo_path("data/mnist/t10k-images-idx3-ubyte.gz");

    // The CSV of 10,000 rows is about 1 MB, far more than a pipe buffer (64 KiB on Linux),
    // so the binary is still writing when the reader stops after the header, as
    // `dendrite predict | head -1` does.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dendrite"))
        .arg("predict")
        .arg(&out)
        .arg(&images)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dendrite binary starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut header = [0u8; 16];
    stdout.read_exact(&mut header).unwrap();
    assert_eq!(&header, b"row,predicted,pr");
    drop(stdout);

    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
}

#[test]
fn huge_unscaled_features_stay_finite_or_stop_cleanly() {
    let dir = TempDir::new("huge-features");
    let text = format!(
        r#"[data]
format = "csv"
train = "{train}"
target = "label"
task = "classification"
standardize = false

[model]
layers = [
  {{ type = "dense", units = 16, activation = "relu", init = "he_uniform" }},
  {{ type = "dense", units = 3 }},
]

[training]
epochs = 20
batch_size = 16
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.01
"#,
        train = toml_path(&fixture(
            "huge-unscaled-features/huge_unscaled_features.csv"
        )),
    );
    let config = dir.write("huge.toml", text);
    let out = dir.join("run");

    let run = train(&config, &out);

    assert!(!run.stderr.contains("panicked"), "stderr:\n{}", run.stderr);
    match run.code {
        Some(0) => {
            let metrics = read_metrics(&out.join("metrics.jsonl"));
            assert_eq!(metrics.len(), 20);
            for record in &metrics {
                let loss = record["train_loss"].as_f64();
                assert!(
                    loss.is_some_and(f64::is_finite),
                    "non-finite loss in {record}"
                );
            }
            let summary = read_json(&out.join("summary.json"));
            let train_loss = summary["train"]["loss"].as_f64();
            assert!(train_loss.is_some_and(f64::is_finite), "summary: {summary}");
        }
        Some(1) => {
            assert!(
                run.stderr.contains("may be too high"),
                "stderr:\n{}",
                run.stderr
            );
            assert!(
                dendrite::model::load(&out).is_ok(),
                "the last good model is kept"
            );
        }
        other => panic!("unexpected exit code {other:?}\nstderr:\n{}", run.stderr),
    }
}
