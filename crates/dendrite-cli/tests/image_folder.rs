//! `dendrite` on image folders: exporting IDX digits as PNG files, training on them with
//! normalization and augmentation, predicting on single files and folders, and bad folders.

mod common;

use std::path::{Path, PathBuf};

use common::{Run, TempDir, dendrite, repo_path, toml_path, train};

/// Exports the first `count` digits of the bundled MNIST file `split` ("train" or "t10k")
/// into `out` with `dendrite export-images`.
fn export_digits(split: &str, count: usize, out: &Path) {
    let images = repo_path(&format!("data/mnist/{split}-images-idx3-ubyte.gz"));
    let labels = repo_path(&format!("data/mnist/{split}-labels-idx1-ubyte.gz"));
    let run = dendrite([
        "export-images".as_ref(),
        images.as_os_str(),
        labels.as_os_str(),
        out.as_os_str(),
        "--count".as_ref(),
        count.to_string().as_ref(),
    ]);
    run.assert_success();
}

/// Writes a config that trains a network without hidden layers on the image folder `train`
/// for 1 epoch. `extra_data` is added to the `[data]` table and `extra` after the
/// `[training.optimizer]` table.
fn folder_config(
    dir: &TempDir,
    train: &Path,
    units: usize,
    extra_data: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"[data]
format = "image_folder"
train = "{train}"
{extra_data}

[model]
layers = [
  {{ type = "flatten" }},
  {{ type = "dense", units = {units} }},
]

[training]
epochs = 1
batch_size = 16
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.05

{extra}
"#,
        train = toml_path(train),
    );
    dir.write("config.toml", text)
}

/// Runs `dendrite predict MODEL INPUT` and returns the CSV on standard output.
fn predict(model: &Path, input: &Path) -> String {
    let run = dendrite(["predict".as_ref(), model.as_os_str(), input.as_os_str()]);
    run.assert_success();
    run.stdout
}

fn model_json(out: &Path) -> serde_json::Value {
    let text = std::fs::read(out.join("model.json")).expect("model.json is written");
    serde_json::from_slice(&text).expect("model.json is JSON")
}

/// Checks that a run failed with exit code 2 and an error line that contains every one of
/// `expected`.
fn assert_error(run: &Run, expected: &[&str]) {
    assert_eq!(
        run.code,
        Some(2),
        "exit code; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{}", run.stderr));
    for fragment in expected {
        assert!(line.contains(fragment), "{fragment:?} missing from: {line}");
    }
}

/// Writes a `side` x `side` PNG: gray if `rgb` is false, otherwise with color.
fn write_png(path: &Path, side: u32, rgb: bool, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rgb {
        let image = image::RgbImage::from_fn(side, side, |x, y| {
            image::Rgb([shade, (x * 20) as u8, (y * 20) as u8])
        });
        image.save(path).unwrap();
    } else {
        let image =
            image::GrayImage::from_fn(side, side, |x, _| image::Luma([shade ^ (x * 8) as u8]));
        image.save(path).unwrap();
    }
}

#[test]
fn example_trains_on_exported_digits() {
    let dir = TempDir::new("folder-example");
    let (train_dir, test_dir) = (dir.join("png/train"), dir.join("png/test"));
    export_digits("train", 300, &train_dir);
    export_digits("t10k", 100, &test_dir);

    // The example, pointed at the exported folders, cut to 1 epoch and with normalization on,
    // so that the stored channel statistics are checked too.
    let example = std::fs::read_to_string(repo_path("examples/image-folder.toml"))
        .expect("examples/image-folder.toml is readable");
    let png_dir = toml_path(&dir.join("png"));
    let text = example
        .replace("\"../data/mnist-png", &format!("\"{png_dir}"))
        .replace("epochs = 30", "epochs = 1")
        .replace("normalize = false", "normalize = true");
    assert!(
        text.contains(&png_dir)
            && text.contains("epochs = 1\n")
            && text.contains("normalize = true"),
        "examples/image-folder.toml changed its layout; update this test:\n{text}"
    );
    let config = dir.write("image-folder.toml", text);
    let out = dir.join("run");

    let run = train(&config, &out);
    run.assert_success();
    assert!(
        run.stdout.contains("testing on 100"),
        "stdout:\n{}",
        run.stdout
    );

    let meta = model_json(&out);
    let preprocessing = &meta["preprocessing"];
    assert_eq!(preprocessing["input"], "image_folder", "{meta}");
    assert_eq!(preprocessing["color"], "grayscale", "{meta}");
    assert_eq!(preprocessing["size"], serde_json::json!([28, 28]), "{meta}");
    let mean = preprocessing["normalization"]["mean"][0]
        .as_f64()
        .expect("a stored channel mean");
    assert!(
        (0.05..0.3).contains(&mean),
        "MNIST pixel mean {mean} is not near 0.13"
    );

    let csv = predict(&out, &test_dir);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 101, "a header and 100 rows:\n{csv}");
    assert!(
        lines[0].starts_with("file,predicted,prob_0,"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("0/"),
        "rows sorted by path: {}",
        lines[1]
    );
}

#[test]
fn single_file_matches_folder_row() {
    let dir = TempDir::new("folder-single");
    let train_dir = dir.join("train");
    export_digits("train", 200, &train_dir);
    let config = folder_config(
        &dir,
        &train_dir,
        10,
        "color = \"grayscale\"",
        "[training.augment]\nmax_shift = 2\nhorizontal_flip = true",
    );
    let out = dir.join("run");
    train(&config, &out).assert_success();

    let folder_csv = predict(&out, &train_dir);
    let mut sevens: Vec<PathBuf> = std::fs::read_dir(train_dir.join("7"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    sevens.sort();
    let file = &sevens[0];
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let single_csv = predict(&out, file);

    let single_row = single_csv.lines().nth(1).expect("one row");
    assert!(single_row.starts_with(&format!("{name},")), "{single_row}");
    let folder_row = folder_csv
        .lines()
        .find(|line| line.starts_with(&format!("7/{name},")))
        .unwrap_or_else(|| panic!("no row for 7/{name} in:\n{folder_csv}"));
    let probabilities = |row: &str| row.split_once(',').unwrap().1.to_string();
    assert_eq!(probabilities(single_row), probabilities(folder_row));
}

#[test]
fn augmented_training_repeats() {
    let dir = TempDir::new("folder-repeat");
    let train_dir = dir.join("train");
    export_digits("train", 200, &train_dir);
    let config = folder_config(
        &dir,
        &train_dir,
        10,
        "color = \"grayscale\"",
        "[training.augment]\ncrop_padding = 2\nhorizontal_flip = true",
    );

    let mut weights = Vec::new();
    for name in ["first", "second"] {
        let out = dir.join(name);
        let run = dendrite([
            "--threads".as_ref(),
            "2".as_ref(),
            "train".as_ref(),
            config.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ]);
        run.assert_success();
        weights.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert!(weights[0] == weights[1], "two runs gave different weights");

    let plain = folder_config(&dir, &train_dir, 10, "color = \"grayscale\"", "");
    let out = dir.join("plain");
    train(&plain, &out).assert_success();
    let plain_weights = std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(
        plain_weights != weights[0],
        "augmentation did not change the training"
    );
}

#[test]
fn corrupt_png_stops_or_skips() {
    let dir = TempDir::new("folder-corrupt");
    let train_dir = dir.join("train");
    export_digits("train", 100, &train_dir);
    let broken = train_dir.join("3").join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();

    let config = folder_config(&dir, &train_dir, 10, "color = \"grayscale\"", "");
    let run = train(&config, &dir.join("stopped"));
    assert_error(&run, &[&broken.display().to_string()]);
    assert!(!dir.join("stopped").join("model.json").exists());

    let config = folder_config(
        &dir,
        &train_dir,
        10,
        "color = \"grayscale\"\non_bad_file = \"skip\"",
        "",
    );
    let run = train(&config, &dir.join("skipped"));
    run.assert_success();
    assert!(
        run.stderr.contains("skipped 1 of 101 image files"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("broken.png"), "stderr:\n{}", run.stderr);
}

#[test]
fn empty_class_folder_rejected() {
    let dir = TempDir::new("folder-empty-class");
    let train_dir = dir.join("train");
    export_digits("train", 100, &train_dir);
    let empty = train_dir.join("zebra");
    std::fs::create_dir_all(&empty).unwrap();

    let config = folder_config(&dir, &train_dir, 11, "", "");
    let run = train(&config, &dir.join("run"));
    assert_error(&run, &[&empty.display().to_string(), "no images"]);
}

#[test]
fn single_class_folder_rejected() {
    let dir = TempDir::new("folder-one-class");
    let train_dir = dir.join("train");
    for i in 0..4 {
        write_png(&train_dir.join(format!("cat/{i}.png")), 8, false, 40 * i);
    }

    let config = folder_config(&dir, &train_dir, 2, "", "");
    let run = train(&config, &dir.join("run"));
    assert_error(&run, &["found 1 class folder (cat)", "at least 2"]);
}

#[test]
fn gray_and_rgb_mix_loads_as_configured() {
    let dir = TempDir::new("folder-color-mix");
    let train_dir = dir.join("train");
    for i in 0..8u8 {
        write_png(&train_dir.join(format!("gray/{i}.png")), 8, false, 30 * i);
        write_png(&train_dir.join(format!("rgb/{i}.png")), 8, true, 30 * i);
    }
    // Smaller images than the crop padding: augmentation pads, so this trains.
    let augment = "[training.augment]\ncrop_padding = 12";

    for (color, shape) in [("grayscale", [1, 8, 8]), ("rgb", [3, 8, 8])] {
        let config = folder_config(
            &dir,
            &train_dir,
            2,
            &format!("color = \"{color}\"\nvalidation_split = 0.25"),
            augment,
        );
        let out = dir.join(color);
        train(&config, &out).assert_success();

        let meta = model_json(&out);
        assert_eq!(
            meta["input_shape"],
            serde_json::json!(shape),
            "{color}: {meta}"
        );
        let channels = meta["preprocessing"]["normalization"]["mean"]
            .as_array()
            .map(Vec::len);
        assert_eq!(channels, Some(shape[0]), "{color}: {meta}");

        // A color file predicted by a grayscale model is converted, and the other way round.
        let csv = predict(&out, &train_dir.join("rgb/0.png"));
        assert_eq!(csv.lines().count(), 2, "{color}:\n{csv}");
        let csv = predict(&out, &train_dir.join("gray/0.png"));
        assert_eq!(csv.lines().count(), 2, "{color}:\n{csv}");
    }
}

#[test]
fn other_sizes_resized_and_reported() {
    let dir = TempDir::new("folder-resize");
    let train_dir = dir.join("train");
    for i in 0..6u8 {
        write_png(&train_dir.join(format!("a/{i}.png")), 8, false, 30 * i);
        write_png(
            &train_dir.join(format!("b/{i}.png")),
            8,
            false,
            255 - 30 * i,
        );
    }
    write_png(&train_dir.join("b/large.png"), 12, false, 99);

    let config = folder_config(&dir, &train_dir, 2, "size = [8, 8]", "");
    let out = dir.join("run");
    let run = train(&config, &out);
    run.assert_success();
    assert!(
        run.stderr.contains("resized 1 of 13 images"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("large.png was 12x12"), "{}", run.stderr);

    // Prediction resizes the same way, and without a size the file is rejected by name.
    let csv = predict(&out, &train_dir.join("b/large.png"));
    assert_eq!(csv.lines().count(), 2, "{csv}");

    let unsized_config = folder_config(&dir, &train_dir, 2, "", "");
    let run = train(&unsized_config, &dir.join("unsized"));
    assert_error(&run, &["large.png", "size = [8, 8]"]);
}

#[test]
fn predict_error_names_path() {
    let dir = TempDir::new("folder-predict-error");
    let train_dir = dir.join("train");
    export_digits("train", 60, &train_dir);
    let config = folder_config(&dir, &train_dir, 10, "color = \"grayscale\"", "");
    let out = dir.join("run");
    train(&config, &out).assert_success();

    let broken = dir.write("broken.png", b"not an image");
    let run = dendrite(["predict".as_ref(), out.as_os_str(), broken.as_os_str()]);
    assert_error(&run, &[&broken.display().to_string()]);

    let missing = dir.join("missing.png");
    let run = dendrite(["predict".as_ref(), out.as_os_str(), missing.as_os_str()]);
    assert_error(&run, &[&missing.display().to_string()]);

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = dendrite(["predict".as_ref(), out.as_os_str(), empty.as_os_str()]);
    assert_error(&run, &[&empty.display().to_string(), "no image files"]);
}

#[test]
fn idx_normalization_stored_and_applied() {
    let dir = TempDir::new("idx-normalize");
    let config = common::idx_config(
        &dir,
        &repo_path("data/mnist/t10k-images-idx3-ubyte.gz"),
        &repo_path("data/mnist/t10k-labels-idx1-ubyte.gz"),
        "normalize = true\nvalidation_split = 0",
        10,
    );
    let out = dir.join("run");
    train(&config, &out).assert_success();

    let meta = model_json(&out);
    assert_eq!(meta["preprocessing"]["input"], "idx", "{meta}");
    let std = meta["preprocessing"]["normalization"]["std"][0]
        .as_f64()
        .expect("a stored channel std");
    assert!((0.2..0.5).contains(&std), "MNIST pixel std {std}");

    // Evaluating on the training file gives the training figures of the summary, so the
    // same standardization was applied.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let data = repo_path("data/mnist/t10k-images-idx3-ubyte.gz");
    let run = dendrite(["evaluate".as_ref(), out.as_os_str(), data.as_os_str()]);
    run.assert_success();
    let accuracy = summary["train"]["accuracy"].as_f64().unwrap();
    assert!(
        run.stdout.contains(&format!("accuracy  {accuracy:.4}")),
        "summary {summary}, evaluate:\n{}",
        run.stdout
    );
}
