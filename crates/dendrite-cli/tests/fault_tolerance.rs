//! Checkpoints, exact resume, interrupts, non-finite recovery and damaged checkpoints, run
//! through the real `dendrite` binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TempDir, dendrite, fixture, toml_path};

/// A 64-row CSV classifier with shuffling and dropout, trained with Adam: batch 8, seed 7.
fn resume_config(dir: &TempDir, epochs: usize, train: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[data]
format = "csv"
train = "{train}"
target = "label"
task = "classification"

[model]
layers = [
  {{ type = "dense", units = 16, activation = "relu" }},
  {{ type = "dropout", rate = 0.2 }},
  {{ type = "dense", units = 2 }},
]

[training]
epochs = {epochs}
batch_size = 8
loss = "cross_entropy"
seed = 7
{extra}

[training.optimizer]
type = "adam"
learning_rate = 0.01
"#,
        train = toml_path(train),
    );
    dir.write(&format!("config-{epochs}.toml"), text)
}

fn train_args(config: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--threads".to_string(),
        "2".into(),
        "train".into(),
        config.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn metric_epochs(out: &Path) -> Vec<u64> {
    String::from_utf8(read(&out.join("metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["epoch"].as_u64().unwrap()
        })
        .collect()
}

fn checkpoint_dirs(out: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(out.join("checkpoints")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let dir = TempDir::new("resume-c21");
    let data = fixture("resume/train.csv");
    let full = dir.join("full");
    let config4 = resume_config(&dir, 4, &data, "");
    dendrite(train_args(&config4, &full, &[])).assert_success();

    // 2 epochs with a checkpoint each epoch, then the same run continued to 4 epochs.
    let part = dir.join("part");
    let config2 = resume_config(&dir, 2, &data, "");
    dendrite(train_args(
        &config2,
        &part,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();
    assert_eq!(metric_epochs(&part), [1, 2]);
    let resumed = dendrite(train_args(
        &config4,
        &part,
        &["--resume", part.to_str().unwrap()],
    ));
    resumed.assert_success();
    assert!(
        resumed.stdout.contains("resuming from"),
        "stdout:\n{}",
        resumed.stdout
    );

    assert_eq!(metric_epochs(&part), [1, 2, 3, 4]);
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&part.join("metrics.jsonl")),
        "metrics.jsonl differs between the uninterrupted and the resumed run"
    );
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&part.join("model.safetensors")),
        "final weights differ between the uninterrupted and the resumed run"
    );
}

#[test]
fn plateau_schedule_resumes_bit_identical() {
    let dir = TempDir::new("resume-plateau");
    let data = fixture("resume/train.csv");
    // A required improvement of 10 counts every epoch as a plateau, so the rate falls during
    // the first 3 epochs and the resumed run must restore those reductions.
    let schedule = "[training.schedule]\ntype = \"reduce_on_plateau\"\nfactor = 0.5\npatience = 1\nmin_delta = 10.0";
    let with_validation = |epochs: usize| {
        let config = resume_config(&dir, epochs, &data, schedule);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "task = \"classification\"",
            "task = \"classification\"\nvalidation_split = 0.25",
        );
        std::fs::write(&config, text).unwrap();
        config
    };
    let full = dir.join("full");
    let config6 = with_validation(6);
    dendrite(train_args(&config6, &full, &[])).assert_success();

    let part = dir.join("part");
    let config3 = with_validation(3);
    dendrite(train_args(
        &config3,
        &part,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();
    dendrite(train_args(
        &config6,
        &part,
        &["--resume", part.to_str().unwrap()],
    ))
    .assert_success();

    let rates = |out: &Path| -> Vec<String> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["learning_rate"].to_string()
            })
            .collect()
    };
    let full_rates = rates(&full);
    assert!(
        full_rates.iter().any(|rate| rate != &full_rates[0]),
        "the plateau never lowered the rate: {full_rates:?}"
    );
    assert_eq!(full_rates, rates(&part), "learning rates per epoch");
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&part.join("model.safetensors")),
        "final weights differ between the uninterrupted and the resumed run"
    );
}

#[test]
fn mid_epoch_resume_is_bit_identical() {
    let dir = TempDir::new("resume-mid-epoch");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 4, &data, "");
    let full = dir.join("full");
    dendrite(train_args(&config, &full, &[])).assert_success();

    // Checkpoints every 3 steps fall inside the 8-batch epochs. Resume from the one at step
    // 12, in the middle of epoch 2, after removing the newer ones.
    let part = dir.join("part");
    dendrite(train_args(
        &config,
        &part,
        &["--checkpoint-every-steps", "3"],
    ))
    .assert_success();
    let dirs = checkpoint_dirs(&part);
    assert_eq!(dirs.len(), 3, "keep = 3 checkpoints: {dirs:?}");
    fs::remove_dir_all(part.join("checkpoints")).unwrap();
    let config_short = resume_config(&dir, 2, &data, "");
    let short = dir.join("short");
    // A 2-epoch run stops after step 16; its checkpoint at step 12 is inside epoch 2.
    dendrite(train_args(
        &config_short,
        &short,
        &["--checkpoint-every-steps", "3"],
    ))
    .assert_success();
    let step12 = short.join("checkpoints/step-0000000012");
    let state: serde_json::Value =
        serde_json::from_slice(&read(&step12.join("state.json"))).unwrap();
    assert_eq!(state["epoch"], 2);
    assert_eq!(state["batches_done"], 4);

    let resumed = dendrite(train_args(
        &config,
        &short,
        &["--resume", step12.to_str().unwrap()],
    ));
    resumed.assert_success();
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&short.join("model.safetensors"))
    );
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&short.join("metrics.jsonl"))
    );
}

#[test]
fn two_runs_give_identical_metrics() {
    let dir = TempDir::new("determinism");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 3, &data, "");
    let (a, b) = (dir.join("a"), dir.join("b"));
    dendrite(train_args(&config, &a, &[])).assert_success();
    dendrite(train_args(&config, &b, &[])).assert_success();
    assert_eq!(
        read(&a.join("metrics.jsonl")),
        read(&b.join("metrics.jsonl"))
    );
    assert_eq!(
        read(&a.join("model.safetensors")),
        read(&b.join("model.safetensors"))
    );
    let timing = String::from_utf8(read(&a.join("timing.jsonl"))).unwrap();
    assert_eq!(timing.lines().count(), 3, "timing.jsonl:\n{timing}");
}

/// Writes a CSV of `rows` rows with 8 features and a class that depends on them.
fn write_large_csv(dir: &TempDir, rows: usize) -> PathBuf {
    let mut text = String::from("a,b,c,d,e,f,g,h,label\n");
    let mut state = 12345u64;
    for _ in 0..rows {
        let mut values = Vec::new();
        for _ in 0..8 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            values.push(((state >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0);
        }
        let label = usize::from(values[0] + values[1] * values[2] > 0.0);
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
        text.push_str(&format!("{},{label}\n", cells.join(",")));
    }
    dir.write("large.csv", text)
}

/// Starts `dendrite ARGS` and waits until `ready` holds, then returns the child.
fn start_and_wait(args: &[String], ready: impl Fn() -> bool) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dendrite"))
        .args(args)
        .current_dir(common::repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dendrite binary starts");
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dendrite exited with {status} before the test could stop it");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn large_config(dir: &TempDir) -> PathBuf {
    let data = write_large_csv(dir, 6000);
    let text = format!(
        r#"
[data]
format = "csv"
train = "{train}"
target = "label"
task = "classification"
validation_split = 0.1

[model]
layers = [
  {{ type = "dense", units = 128, activation = "relu" }},
  {{ type = "dropout", rate = 0.1 }},
  {{ type = "dense", units = 2 }},
]

[training]
epochs = 3
batch_size = 4
loss = "cross_entropy"
seed = 3

[training.optimizer]
type = "sgd"
learning_rate = 0.01
momentum = 0.9
"#,
        train = toml_path(&data),
    );
    dir.write("large.toml", text)
}

#[test]
fn sigkill_mid_epoch_then_resume_is_bit_identical() {
    let dir = TempDir::new("sigkill");
    let config = large_config(&dir);
    let full = dir.join("full");
    dendrite(train_args(&config, &full, &[])).assert_success();

    let part = dir.join("part");
    let args = train_args(&config, &part, &["--checkpoint-every-steps", "100"]);
    let mut child = start_and_wait(&args, || checkpoint_dirs(&part).len() >= 2);
    child.kill().expect("SIGKILL reaches the child");
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the run ended on its own: {status}"
    );
    let newest = checkpoint_dirs(&part).pop().unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&read(&newest.join("state.json"))).unwrap();
    assert!(
        state["batches_done"].as_u64().unwrap() < state["num_batches"].as_u64().unwrap(),
        "the newest checkpoint is not inside an epoch: {state}"
    );

    let resumed = dendrite(train_args(
        &config,
        &part,
        &["--resume", part.to_str().unwrap()],
    ));
    resumed.assert_success();
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&part.join("model.safetensors")),
        "weights after SIGKILL and resume differ from the uninterrupted run"
    );
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&part.join("metrics.jsonl"))
    );
}

#[test]
fn sigint_writes_checkpoint_and_resume_hint() {
    let dir = TempDir::new("sigint");
    let config = large_config(&dir);
    let full = dir.join("full");
    dendrite(train_args(&config, &full, &[])).assert_success();

    let part = dir.join("part");
    let args = train_args(&config, &part, &["--checkpoint-every-steps", "200"]);
    let child = start_and_wait(&args, || !checkpoint_dirs(&part).is_empty());
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("training interrupted"), "stderr:\n{stderr}");

    // The last line is the command to run, with the thread count of the interrupted run.
    let command = stderr
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("continue with: dendrite "))
        .unwrap_or_else(|| panic!("no command on the last line; stderr:\n{stderr}"));
    let expected = format!(
        "--threads 2 train {} --resume {}",
        config.display(),
        part.display()
    );
    assert_eq!(command, expected);
    let resumed = dendrite(command.split(' '));
    resumed.assert_success();
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&part.join("model.safetensors"))
    );
}

#[test]
fn damaged_checkpoints_are_skipped_with_warning() {
    let dir = TempDir::new("damaged");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 4, &data, "");
    let full = dir.join("full");
    dendrite(train_args(&config, &full, &[])).assert_success();

    let part = dir.join("part");
    let config2 = resume_config(&dir, 2, &data, "");
    dendrite(train_args(
        &config2,
        &part,
        &["--checkpoint-every-steps", "4"],
    ))
    .assert_success();
    let dirs = checkpoint_dirs(&part);
    assert_eq!(dirs.len(), 3);
    // Flip one bit of the newest checkpoint's weights and truncate the second newest state.
    let weights = dirs[2].join("model.safetensors");
    let mut bytes = read(&weights);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&weights, bytes).unwrap();
    let state = dirs[1].join("state.json");
    let bytes = read(&state);
    fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();

    let resumed = dendrite(train_args(
        &config,
        &part,
        &["--resume", part.to_str().unwrap()],
    ));
    resumed.assert_success();
    assert_eq!(
        resumed
            .stderr
            .matches("skipping damaged checkpoint")
            .count(),
        2,
        "stderr:\n{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains("checksum mismatch"),
        "stderr:\n{}",
        resumed.stderr
    );
    assert!(
        resumed.stdout.contains("step 8)"),
        "stdout:\n{}",
        resumed.stdout
    );
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&part.join("model.safetensors"))
    );
}

#[test]
fn damaged_single_checkpoint_is_rejected() {
    let dir = TempDir::new("damaged-one");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 1, &data, "");
    let out = dir.join("run");
    dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();
    let checkpoint = checkpoint_dirs(&out).pop().unwrap();
    let optimizer = checkpoint.join("optimizer.safetensors");
    let bytes = read(&optimizer);
    fs::write(&optimizer, &bytes[..bytes.len() - 3]).unwrap();

    let run = dendrite(train_args(
        &config,
        &out,
        &["--resume", checkpoint.to_str().unwrap()],
    ));
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("checksum mismatch"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "stderr:\n{}", run.stderr);
}

#[test]
fn rollback_recovers_from_too_high_learning_rate() {
    let dir = TempDir::new("rollback");
    let text = format!(
        r#"
[data]
format = "csv"
train = "{train}"
target = "label"
task = "regression"

[model]
layers = [
  {{ type = "dense", units = 16, activation = "relu" }},
  {{ type = "dense", units = 1 }},
]

[training]
epochs = 5
batch_size = 8
loss = "mse"
seed = 1

[training.non_finite]
policy = "rollback"
learning_rate_factor = 10
max_rollbacks = 8

[training.optimizer]
type = "sgd"
learning_rate = 10000.0
"#,
        train = toml_path(&fixture("resume/train.csv")),
    );
    let config = dir.write("rollback.toml", text);
    let out = dir.join("run");
    let run = dendrite(train_args(&config, &out, &[]));
    run.assert_success();
    assert!(
        run.stderr.contains("rollback 1 of 8"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("(now 1000)"), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("forward activation of layers.") || run.stderr.contains("gradient of"),
        "stderr:\n{}",
        run.stderr
    );
    let metrics = String::from_utf8(read(&out.join("metrics.jsonl"))).unwrap();
    assert_eq!(metrics.lines().count(), 5);
    for line in metrics.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let loss = record["train_loss"].as_f64();
        assert!(loss.is_some_and(f64::is_finite), "{record}");
        assert!(
            record["learning_rate"].as_f64().unwrap() < 10000.0,
            "{record}"
        );
    }
}

#[test]
fn stop_policy_names_layer_and_step() {
    let dir = TempDir::new("stop-policy");
    let text = format!(
        r#"
[data]
format = "csv"
train = "{train}"
target = "label"
task = "regression"

[model]
layers = [
  {{ type = "dense", units = 16, activation = "relu" }},
  {{ type = "dense", units = 1 }},
]

[training]
epochs = 5
batch_size = 8
loss = "mse"

[training.optimizer]
type = "sgd"
learning_rate = 10000.0
"#,
        train = toml_path(&fixture("resume/train.csv")),
    );
    let config = dir.write("stop.toml", text);
    let run = dendrite(train_args(&config, &dir.join("run"), &[]));
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("optimizer step 3"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(
        [
            "forward activation of layers.",
            "gradient of",
            "training loss"
        ]
        .iter()
        .any(|place| run.stderr.contains(place)),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn skip_policy_skips_bad_batches() {
    let dir = TempDir::new("skip-policy");
    let text = format!(
        r#"
[data]
format = "csv"
train = "{train}"
target = "label"
task = "regression"

[model]
layers = [
  {{ type = "dense", units = 16, activation = "relu" }},
  {{ type = "dense", units = 1 }},
]

[training]
epochs = 2
batch_size = 8
loss = "mse"

[training.non_finite]
policy = "skip"

[training.optimizer]
type = "sgd"
learning_rate = 10000.0
"#,
        train = toml_path(&fixture("resume/train.csv")),
    );
    let config = dir.write("skip.toml", text);
    let out = dir.join("run");
    let run = dendrite(train_args(&config, &out, &[]));
    assert!(
        run.stderr.contains("skipping the batch"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "stderr:\n{}", run.stderr);

    // The model diverges within the first epoch; once every batch of an epoch gives
    // non-finite values, skipping cannot help and training stops.
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("the skip policy left out all 8"),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn unwritable_output_gives_clear_error() {
    let dir = TempDir::new("unwritable");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 1, &data, "");
    // A regular file where the output folder's parent should be: no file can be created
    // below it, as in a read-only folder, and the error must name the path.
    let blocker = dir.write("blocker", "not a folder");
    let out = blocker.join("run");
    let run = dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ));
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("blocker"), "stderr:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "stderr:\n{}", run.stderr);
}

#[test]
fn failed_checkpoint_keeps_previous_model() {
    let dir = TempDir::new("keep-previous");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 2, &data, "");
    let out = dir.join("run");
    dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();
    let model_before = read(&out.join("model.safetensors"));
    let checkpoints_before = checkpoint_dirs(&out);

    // A file in place of the checkpoint folder makes every checkpoint write fail.
    fs::remove_dir_all(out.join("checkpoints")).unwrap();
    fs::write(out.join("checkpoints"), "blocked").unwrap();
    let run = dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ));
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("checkpoints"),
        "stderr:\n{}",
        run.stderr
    );
    assert_eq!(read(&out.join("model.safetensors")), model_before);
    assert_eq!(checkpoints_before.len(), 2);
}

/// Writes the config of a classifier whose weights (about 48 KiB) exceed the 32 KiB that the
/// full-disk test leaves free, with a checkpoint after each epoch.
fn wide_config(dir: &TempDir, epochs: usize) -> PathBuf {
    let text = format!(
        r#"
[data]
format = "csv"
train = "{train}"
target = "label"
task = "classification"

[model]
layers = [
  {{ type = "dense", units = 2048, activation = "relu" }},
  {{ type = "dense", units = 2 }},
]

[training]
epochs = {epochs}
batch_size = 8
loss = "cross_entropy"
seed = 7

[training.checkpoint]
every_epochs = 1

[training.optimizer]
type = "adam"
learning_rate = 0.01
"#,
        train = toml_path(&fixture("resume/train.csv")),
    );
    dir.write(&format!("wide-{epochs}.toml"), text)
}

/// Runs `script` with `sh -eu` in a new mount namespace, where it may mount a small tmpfs or
/// a read-only bind mount. The mounts vanish when it exits. `DENDRITE` is the binary; `vars`
/// adds more variables.
///
/// The namespace comes with a new user namespace, which needs no privileges where the kernel
/// allows unprivileged user namespaces. Where it does not, root can still create the mount
/// namespace alone. The test fails, naming both attempts, if neither works.
fn run_with_mounts(script: &str, vars: &[(&str, &Path)]) -> Run {
    let attempts: [&[&str]; 2] = [&["--user", "--map-root-user", "--mount"], &["--mount"]];
    let mut errors = Vec::new();
    let flags = attempts
        .into_iter()
        .find(|flags| {
            let probe = Command::new("unshare")
                .args(*flags)
                .arg("true")
                .output()
                .expect("unshare (util-linux) must be installed to run this test");
            errors.push(format!(
                "unshare {}: {}",
                flags.join(" "),
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
            probe.status.success()
        })
        .unwrap_or_else(|| panic!("cannot create a mount namespace: {errors:?}"));

    let mut command = Command::new("unshare");
    command
        .args(flags)
        .args(["sh", "-eu", "-c", script])
        .env("DENDRITE", env!("CARGO_BIN_EXE_dendrite"));
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command
        .output()
        .expect("unshare (util-linux) must be installed to run this test");
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(
        run.code,
        Some(0),
        "the script in the namespace failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// Returns every file below `dir` with its contents, by path relative to `dir`.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_path_buf();
                files.push((relative, read(&path)));
            }
        }
    }
    files.sort();
    files
}

/// Asserts that the model files and the checkpoints of two copies of a run folder agree
/// byte for byte, and that `after` contains no temporary file.
fn assert_model_and_checkpoints_kept(before: &Path, after: &Path) {
    let model_and_checkpoints = |dir: &Path| {
        tree(dir)
            .into_iter()
            .filter(|(path, _)| {
                path.starts_with("checkpoints")
                    || path == Path::new("model.json")
                    || path == Path::new("model.safetensors")
            })
            .collect::<Vec<_>>()
    };
    let before_files = model_and_checkpoints(before);
    let names =
        |files: &[(PathBuf, Vec<u8>)]| files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        before_files.len(),
        10,
        "the model files and two checkpoints of 4 files each: {:?}",
        names(&before_files)
    );
    let after_files = model_and_checkpoints(after);
    assert_eq!(names(&after_files), names(&before_files));
    for ((path, old), (_, new)) in before_files.iter().zip(&after_files) {
        assert!(old == new, "{} changed", path.display());
    }

    let temporary: Vec<PathBuf> = tree(after)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| {
            path.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        })
        .collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");
}

#[test]
fn full_disk_keeps_previous_run() {
    let dir = TempDir::new("full-disk");
    let config = wide_config(&dir, 2);
    let longer = wide_config(&dir, 4);
    let mount = dir.join("disk");
    let copies = dir.join("copies");
    fs::create_dir_all(&mount).unwrap();
    fs::create_dir_all(&copies).unwrap();

    // A first run of 2 epochs is written to a 2 MiB tmpfs. A filler file then leaves 32 KiB
    // free, less than one copy of the weights, and the run is resumed for 2 more epochs.
    let script = r#"
        mount -t tmpfs -o size=2m tmpfs "$MOUNT"
        "$DENDRITE" train "$CONFIG" --out "$MOUNT/run" --quiet > /dev/null
        cp -a "$MOUNT/run" "$COPIES/before"
        free=$(df --output=avail -B1 "$MOUNT" | tail -n 1)
        dd if=/dev/zero of="$MOUNT/filler" bs=4096 count=$(( (free - 32768) / 4096 )) 2> /dev/null
        status=0
        "$DENDRITE" train "$LONGER" --resume "$MOUNT/run" --quiet > /dev/null \
            2> "$COPIES/stderr" || status=$?
        echo "$status" > "$COPIES/status"
        cp -a "$MOUNT/run" "$COPIES/after"
    "#;
    run_with_mounts(
        script,
        &[
            ("MOUNT", &mount),
            ("COPIES", &copies),
            ("CONFIG", &config),
            ("LONGER", &longer),
        ],
    );

    let status = String::from_utf8(read(&copies.join("status"))).unwrap();
    let stderr = String::from_utf8(read(&copies.join("stderr"))).unwrap();
    assert_eq!(status.trim(), "2", "stderr:\n{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "stderr:\n{stderr}"
    );
    assert!(stderr.contains("the disk is full"), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&*mount.join("run").to_string_lossy()),
        "the error names the file; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert_model_and_checkpoints_kept(&copies.join("before"), &copies.join("after"));

    // The kept run is whole: the model loads and the newest checkpoint resumes.
    dendrite([
        "evaluate".as_ref(),
        copies.join("after").as_os_str(),
        fixture("resume/train.csv").as_os_str(),
    ])
    .assert_success();
    let resumed = dir.join("resumed");
    let run = dendrite(train_args(
        &config,
        &resumed,
        &["--resume", &copies.join("after").display().to_string()],
    ));
    run.assert_success();
    assert!(
        run.stdout.contains("step-0000000016"),
        "stdout:\n{}",
        run.stdout
    );
}

#[test]
fn read_only_folder_keeps_previous_run() {
    let dir = TempDir::new("read-only");
    let config = wide_config(&dir, 2);
    let longer = wide_config(&dir, 4);
    let out = dir.join("run");
    dendrite(train_args(&config, &out, &[])).assert_success();
    let before = dir.join("before");
    fs::create_dir_all(&before).unwrap();
    for (path, bytes) in tree(&out) {
        fs::create_dir_all(before.join(&path).parent().unwrap()).unwrap();
        fs::write(before.join(&path), bytes).unwrap();
    }

    // The run folder becomes a read-only bind mount, which rejects writes even by root.
    // Resuming it for 2 more epochs, and a new run in a folder inside it, must both stop
    // before changing anything.
    let script = r#"
        mount --bind "$OUT" "$OUT"
        mount -o remount,bind,ro "$OUT"
        status=0
        "$DENDRITE" train "$LONGER" --resume "$OUT" --quiet > /dev/null 2> "$LOGS/resume" \
            || status=$?
        echo "$status" >> "$LOGS/resume"
        status=0
        "$DENDRITE" train "$LONGER" --out "$OUT/new" --quiet > /dev/null 2> "$LOGS/new" \
            || status=$?
        echo "$status" >> "$LOGS/new"
    "#;
    run_with_mounts(
        script,
        &[("OUT", &out), ("LOGS", dir.path()), ("LONGER", &longer)],
    );

    for mode in ["resume", "new"] {
        let log = String::from_utf8(read(&dir.join(mode))).unwrap();
        assert!(
            log.ends_with("2\n"),
            "{mode}: exit status 2; output:\n{log}"
        );
        assert!(log.contains("Read-only file system"), "{mode}:\n{log}");
        assert!(
            log.contains("write to another folder with --out"),
            "{mode}:\n{log}"
        );
        assert!(log.contains(&*out.to_string_lossy()), "{mode}:\n{log}");
        assert!(!log.contains("panicked"), "{mode}:\n{log}");
    }
    assert_model_and_checkpoints_kept(&before, &out);
    assert_eq!(tree(&before), tree(&out), "no file of the run changed");
}

#[test]
fn new_run_rejects_folder_with_checkpoints() {
    let dir = TempDir::new("earlier-checkpoints");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 2, &data, "");
    let out = dir.join("run");
    dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();
    let before = tree(&out);

    // A new run there would mix its checkpoints with the earlier run's.
    let run = dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ));

    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    let checkpoints = out.join("checkpoints");
    assert!(
        run.stderr.contains(&*checkpoints.to_string_lossy()),
        "stderr:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("--resume"), "stderr:\n{}", run.stderr);
    assert_eq!(tree(&out), before, "no file of the earlier run changed");

    fs::remove_dir_all(&checkpoints).unwrap();
    dendrite(train_args(
        &config,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();
}

#[test]
fn resume_into_other_run_folder_rejected() {
    let dir = TempDir::new("resume-elsewhere");
    let data = fixture("resume/train.csv");
    let config = resume_config(&dir, 2, &data, "");
    let first = dir.join("first");
    let second = dir.join("second");
    for out in [&first, &second] {
        dendrite(train_args(
            &config,
            out,
            &["--checkpoint-every-epochs", "1"],
        ))
        .assert_success();
    }
    let before = tree(&second);

    // The first run's checkpoint would continue among the second run's checkpoints.
    let run = dendrite(train_args(
        &config,
        &second,
        &["--resume", &first.display().to_string()],
    ));

    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("has the checkpoints of an earlier run"),
        "stderr:\n{}",
        run.stderr
    );
    assert_eq!(tree(&second), before, "no file of the second run changed");
}

#[test]
fn resumed_run_keeps_checkpoint_interval() {
    let dir = TempDir::new("keep-interval");
    let data = fixture("resume/train.csv");
    let out = dir.join("run");
    let first = resume_config(&dir, 2, &data, "");
    dendrite(train_args(
        &first,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();

    // Resumed without the flag for 2 more epochs of 8 batches each.
    let longer = resume_config(&dir, 4, &data, "");
    let run = dendrite(train_args(
        &longer,
        &out,
        &["--resume", &out.display().to_string()],
    ));
    run.assert_success();

    let names: Vec<String> = checkpoint_dirs(&out)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["step-0000000016", "step-0000000024", "step-0000000032"]
    );
}

#[test]
fn resume_with_other_thread_count_warns() {
    let dir = TempDir::new("other-threads");
    let data = fixture("resume/train.csv");
    let out = dir.join("run");
    let first = resume_config(&dir, 2, &data, "");
    dendrite(train_args(
        &first,
        &out,
        &["--checkpoint-every-epochs", "1"],
    ))
    .assert_success();

    let longer = resume_config(&dir, 3, &data, "");
    let run = dendrite([
        "--threads",
        "1",
        "train",
        &longer.display().to_string(),
        "--resume",
        &out.display().to_string(),
        "--quiet",
    ]);

    run.assert_success();
    assert!(
        run.stderr
            .contains("written with 2 threads and this run has 1"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("resume with 2 threads"),
        "stderr:\n{}",
        run.stderr
    );
    assert_eq!(metric_epochs(&out), [1, 2, 3]);
}
