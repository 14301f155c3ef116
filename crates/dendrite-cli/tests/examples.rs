//! The small example configs in `examples/`, trained by the real binary and checked against
//! their known solutions.

mod common;

use common::{TempDir, dendrite, load_params, predicted_column, repo_path, train};

/// The least-squares line through the 7 points of `data/tiny/linear7.csv`.
const LEAST_SQUARES_SLOPE: f32 = 1.983_928_6;
const LEAST_SQUARES_INTERCEPT: f32 = 0.872_857_14;

#[test]
fn linear_regression_reaches_least_squares() {
    let dir = TempDir::new("linear");
    let out = dir.join("run");

    let run = train(&repo_path("examples/linear-regression.toml"), &out);
    run.assert_success();

    let params = load_params(&out);
    let names: Vec<&str> = params.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(
        names.len(),
        2,
        "expected one weight and one bias, got {names:?}"
    );

    let (_, weight_shape, weight) = params
        .iter()
        .find(|(name, ..)| name == "layers.0.weight")
        .expect("layers.0.weight is saved");
    assert_eq!(weight_shape, &[1, 1]);
    let slope = weight[0];
    assert!(
        (slope - LEAST_SQUARES_SLOPE).abs() < 1e-3,
        "slope {slope}, least squares {LEAST_SQUARES_SLOPE}"
    );

    let (_, bias_shape, bias) = params
        .iter()
        .find(|(name, ..)| name == "layers.0.bias")
        .expect("layers.0.bias is saved");
    assert_eq!(bias_shape, &[1]);
    let intercept = bias[0];
    assert!(
        (intercept - LEAST_SQUARES_INTERCEPT).abs() < 1e-3,
        "intercept {intercept}, least squares {LEAST_SQUARES_INTERCEPT}"
    );
}

#[test]
fn xor_classifies_all_four_rows() {
    let dir = TempDir::new("xor");
    let out = dir.join("run");

    let run = train(&repo_path("examples/xor.toml"), &out);
    run.assert_success();

    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("summary.json")).expect("summary.json is written"),
    )
    .expect("summary.json is JSON");
    assert_eq!(
        summary["train"]["accuracy"].as_f64(),
        Some(1.0),
        "summary.json: {summary}"
    );

    let data = repo_path("data/tiny/xor.csv");
    let predict = dendrite(["predict".as_ref(), out.as_os_str(), data.as_os_str()]);
    predict.assert_success();
    let predicted = predicted_column(&predict.stdout);

    let text = std::fs::read_to_string(&data).expect("data/tiny/xor.csv is readable");
    let expected: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap().trim().to_string())
        .collect();
    assert_eq!(expected.len(), 4, "data/tiny/xor.csv has 4 rows");
    assert_eq!(predicted, expected, "predict output:\n{}", predict.stdout);
}
