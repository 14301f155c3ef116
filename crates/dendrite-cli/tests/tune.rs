//! `dendrite tune` and `dendrite lr-find` on a small CSV data set with a separate test file:
//! selection on the validation split only, one test evaluation, checks of the test source,
//! parameter errors, reproducible proposals and a search continued after a kill.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, dendrite, fixture, read_json, toml_path};

/// Writes a config for the held-out fixture (200 training rows, 60 test rows) with a search
/// of `trials` random trials over `parameters`, and returns its path. `test` replaces the
/// fixture's test file.
fn search_config(
    dir: &TempDir,
    trials: usize,
    epochs: usize,
    test: Option<&Path>,
    parameters: &str,
) -> PathBuf {
    let test = test
        .map(Path::to_path_buf)
        .unwrap_or_else(|| fixture("held-out/test.csv"));
    dir.write(
        "search.toml",
        format!(
            r#"
[data]
format = "csv"
train = "{train}"
test = "{test}"
target = "label"
task = "classification"
validation_split = 0.25

[model]
layers = [
  {{ type = "dense", units = 8, activation = "relu" }},
  {{ type = "dense", units = 2 }},
]

[training]
epochs = {epochs}
batch_size = 16
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.1
momentum = 0.9

[search]
strategy = "random"
trials = {trials}
seed = 5
parallel = 1

{parameters}
"#,
            train = toml_path(&fixture("held-out/train.csv")),
            test = toml_path(&test),
        ),
    )
}

const PARAMETERS: &str = r#"
[[search.parameters]]
key = "training.optimizer.learning_rate"
distribution = "log_uniform"
low = 0.001
high = 0.5

[[search.parameters]]
key = "model.layers.0.units"
distribution = "int_uniform"
low = 2
high = 16
"#;

/// Checks that the search report in `out` exists, makes no network request, and has one
/// row for each of the trials numbered 1 to `trials`.
fn assert_search_report(out: &Path, trials: usize, stdout: &str) {
    let path = out.join("report.html");
    assert!(
        stdout.contains(&format!("search report written to {}", path.display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(!html.contains("http://"), "the report links to a web page");
    assert!(!html.contains("https://"), "the report links to a web page");
    assert!(!html.contains("<script"), "the report has a script");
    assert!(!html.contains("<link"), "the report loads a style sheet");
    for trial in 1..=trials {
        assert_eq!(
            html.matches(&format!("<tr><td>{trial}</td>")).count(),
            1,
            "trial {trial} is not listed once"
        );
    }
    assert_eq!(html.matches("<tr><td>").count(), trials, "extra rows");
    // One chart of the validation score per searched parameter.
    assert_eq!(
        html.matches("<img src=\"data:image/svg+xml;base64,")
            .count(),
        2
    );
    assert!(out.join("plots/param_0.svg").exists());
    assert!(out.join("plots/param_1.png").exists());
}

fn tune(config: &Path, out: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "tune".to_string(),
        config.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    dendrite(args)
}

#[test]
fn tune_selects_on_validation_and_tests_once() {
    let dir = TempDir::new("tune-held-out");
    let config = search_config(&dir, 5, 20, None, PARAMETERS);
    let out = dir.join("out");
    let run = tune(&config, &out, &[]);
    run.assert_success();

    // No trial line, journal line or table column shows a test figure.
    let trial_lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("trial ") && l.contains(" epochs)"))
        .collect();
    assert_eq!(trial_lines.len(), 5, "{}", run.stdout);
    for line in &trial_lines {
        assert!(line.contains("val_accuracy"), "{line}");
        assert!(!line.contains("test"), "{line}");
    }
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 5);
    assert!(!journal.contains("test"), "{journal}");
    let table = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    assert!(!table.lines().next().unwrap().contains("test"), "{table}");

    // The number of trials and the single test evaluation are reported.
    assert!(
        run.stdout.contains("5 trials of 5 configs"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("test split, evaluated once after the search (5 trials"),
        "{}",
        run.stdout
    );
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["trials"], 5);
    assert_eq!(report["test_evaluations"], 1);
    assert!(report["test"]["accuracy"].as_f64().unwrap() > 0.5);
    assert_search_report(&out, 5, &run.stdout);

    // `dendrite report` points from the search folder to `dendrite tune`.
    let report = dendrite(["report".as_ref(), out.as_os_str()]);
    assert_eq!(report.code, Some(2), "{}", report.stdout);
    assert!(
        report
            .stderr
            .contains("is the output folder of `dendrite tune`"),
        "{}",
        report.stderr
    );

    // The best config trains as it is.
    let retrain = dendrite([
        "train".as_ref(),
        out.join("best.toml").as_os_str(),
        "--out".as_ref(),
        dir.join("again").as_os_str(),
        "--quiet".as_ref(),
    ]);
    retrain.assert_success();
}

#[test]
fn tune_rejects_the_training_file_as_test() {
    let dir = TempDir::new("tune-same-file");
    let config = search_config(&dir, 2, 5, Some(&fixture("held-out/train.csv")), PARAMETERS);
    let run = tune(&config, &dir.join("out"), &[]);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr.contains("is the training source itself"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("out").exists());
}

#[test]
fn tune_rejects_a_copy_of_the_training_file() {
    let dir = TempDir::new("tune-same-hash");
    let copy = dir.write(
        "copy.csv",
        std::fs::read(fixture("held-out/train.csv")).unwrap(),
    );
    let config = search_config(&dir, 2, 5, Some(&copy), PARAMETERS);
    let run = tune(&config, &dir.join("out"), &[]);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr.contains("has the same contents"),
        "{}",
        run.stderr
    );
}

#[test]
fn tune_warns_about_shared_rows() {
    let dir = TempDir::new("tune-shared-rows");
    let train = std::fs::read_to_string(fixture("held-out/train.csv")).unwrap();
    let mut test = std::fs::read_to_string(fixture("held-out/test.csv")).unwrap();
    for row in train.lines().skip(1).take(4) {
        test.push_str(row);
        test.push('\n');
    }
    let test = dir.write("test.csv", test);
    let config = search_config(&dir, 2, 5, Some(&test), PARAMETERS);
    let run = tune(&config, &dir.join("out"), &["--no-retrain"]);
    run.assert_success();
    assert!(
        run.stderr.contains("4 rows of the test file"),
        "{}",
        run.stderr
    );
}

#[test]
fn search_errors_name_the_parameter() {
    let cases = [
        (
            "training.optimizer.learnin_rate",
            r#"distribution = "log_uniform"
low = 0.001
high = 0.1"#,
            "unknown field `learnin_rate`",
        ),
        (
            "training.optimizer.learning_rate",
            r#"distribution = "uniform"
low = 0.5
high = 0.5"#,
            "is empty",
        ),
        (
            "training.batch_size",
            r#"distribution = "poisson"
low = 1
high = 4"#,
            "unknown distribution \"poisson\"",
        ),
        (
            "training.batch_size",
            r#"distribution = "categorical"
values = []"#,
            "non-empty list",
        ),
        (
            "training.seed",
            r#"distribution = "int_uniform"
low = 0
high = 9"#,
            "changes which rows are held out",
        ),
        (
            "model.layers.7.units",
            r#"distribution = "int_uniform"
low = 2
high = 9"#,
            "out of range",
        ),
    ];
    for (key, body, expected) in cases {
        let dir = TempDir::new("tune-errors");
        let parameters = format!("[[search.parameters]]\nkey = \"{key}\"\n{body}\n");
        let config = search_config(&dir, 2, 5, None, &parameters);
        let run = tune(&config, &dir.join("out"), &[]);
        assert_eq!(run.code, Some(2), "{key}: {}", run.stdout);
        assert!(
            run.stderr.contains(&format!("search parameter {key}")),
            "{key}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(expected), "{key}: {}", run.stderr);
    }
}

/// Returns the journal lines without the wall times.
fn journal_without_times(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            value.as_object_mut().unwrap().remove("seconds");
            value
        })
        .collect()
}

#[test]
fn same_seed_gives_same_trials() {
    let dir = TempDir::new("tune-seed");
    let config = search_config(&dir, 4, 10, None, PARAMETERS);
    tune(&config, &dir.join("a"), &["--no-retrain"]).assert_success();
    tune(&config, &dir.join("b"), &["--no-retrain"]).assert_success();
    let a = journal_without_times(&dir.join("a/journal.jsonl"));
    let b = journal_without_times(&dir.join("b/journal.jsonl"));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
}

#[test]
fn killed_search_continues_where_it_stopped() {
    let dir = TempDir::new("tune-resume");
    // Enough epochs that each trial takes a moment, so the kill lands inside a trial.
    let config = search_config(&dir, 12, 400, None, PARAMETERS);
    let out = dir.join("out");
    let journal = out.join("journal.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dendrite"))
        .args([
            "tune".as_ref(),
            config.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .arg("--no-retrain")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let count = |path: &Path| std::fs::read_to_string(path).map_or(0, |text| text.lines().count());
    while count(&journal) < 7 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the journal did not reach 7 trials"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = count(&journal);
    assert!(
        (7..12).contains(&finished),
        "{finished} trials before the kill"
    );
    let before = journal_without_times(&journal);

    let run = tune(&config, &out, &["--no-retrain"]);
    run.assert_success();
    assert!(
        run.stdout
            .contains(&format!("{finished} trials finished earlier")),
        "{}",
        run.stdout
    );
    let ran: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("trial ") && l.contains(" epochs)"))
        .collect();
    assert_eq!(ran.len(), 12 - finished, "{}", run.stdout);

    let after = journal_without_times(&journal);
    assert_eq!(after.len(), 12);
    assert_eq!(after[..finished], before[..]);
    assert_search_report(&out, 12, &run.stdout);
    let mut trials: Vec<u64> = after.iter().map(|r| r["trial"].as_u64().unwrap()).collect();
    trials.sort_unstable();
    assert_eq!(trials, (1..=12).collect::<Vec<u64>>());

    // An uninterrupted search with the same seed proposes the same trials.
    tune(&config, &dir.join("whole"), &["--no-retrain"]).assert_success();
    let whole = journal_without_times(&dir.join("whole/journal.jsonl"));
    let values = |records: &[serde_json::Value]| {
        let mut v: Vec<String> = records
            .iter()
            .map(|r| format!("{} {}", r["trial"], r["values"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(values(&after), values(&whole));
}

#[test]
fn lr_find_writes_curve_and_plots() {
    let dir = TempDir::new("lr-find");
    let config = search_config(&dir, 2, 5, None, PARAMETERS);
    let out = dir.join("out");
    let run = dendrite([
        "lr-find".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--steps".as_ref(),
        "200".as_ref(),
    ]);
    run.assert_success();
    let suggestion: f64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("suggested learning rate: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no suggestion in {}", run.stdout));
    assert!((1e-4..1.0).contains(&suggestion), "{suggestion}");

    let csv = std::fs::read_to_string(out.join("lr-find.csv")).unwrap();
    let rates: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(rates.len() > 20, "{} points", rates.len());
    assert!(rates.windows(2).all(|w| w[1] > w[0]));
    let svg = std::fs::read_to_string(out.join("lr-find.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    let png = image::open(out.join("lr-find.png")).unwrap();
    assert!(png.width() >= 400, "PNG width {}", png.width());
    assert!(png.height() >= 300, "PNG height {}", png.height());
}

#[test]
fn plateau_schedule_lowers_the_logged_rate() {
    let dir = TempDir::new("plateau");
    let config = search_config(&dir, 2, 40, None, PARAMETERS);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[search]",
        "[training.schedule]\ntype = \"reduce_on_plateau\"\nfactor = 0.5\npatience = 2\n\n[search]",
    );
    std::fs::write(&config, text).unwrap();
    let out = dir.join("out");
    common::train(&config, &out).assert_success();
    let rates: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["learning_rate"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(rates.len(), 40);
    assert!((rates[0] - 0.1).abs() < 1e-7, "{rates:?}");
    assert!(rates.windows(2).all(|w| w[1] <= w[0]), "{rates:?}");
    assert!(rates[39] <= 0.05 + 1e-9, "{rates:?}");
}
