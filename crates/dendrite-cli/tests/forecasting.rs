//! The forecasting examples, trained by the real binary: each beats its baseline on the test
//! part, `evaluate` prints the model next to the baselines, `forecast` continues the
//! timestamps after the end of the file, and the run folder has the report and charts of
//! any run.

mod common;

use common::{TempDir, dendrite, example_config, read_json, repo_path, train};

#[test]
fn airline_beats_seasonal_naive() {
    let dir = TempDir::new("airline");
    let out = dir.join("run");
    let config = example_config(&dir, "airline-passengers", &[]);
    train(&config, &out).assert_success();

    let summary = read_json(&out.join("summary.json"));
    let test = &summary["test"];
    let mae = test["mae"].as_f64().unwrap();
    let seasonal = test["baseline_seasonal"]["mae"].as_f64().unwrap();
    let persistence = test["baseline_persistence"]["mae"].as_f64().unwrap();
    assert_eq!(test["windows"], 24);
    assert!(mae < seasonal, "test MAE {mae}, seasonal naive {seasonal}");
    assert!(
        mae < persistence,
        "test MAE {mae}, persistence {persistence}"
    );

    let data = repo_path("data/air-passengers/air_passengers.csv");
    let run = dendrite(["evaluate".as_ref(), out.as_os_str(), data.as_os_str()]);
    run.assert_success();
    assert!(run.stdout.contains("seasonal naive"), "{}", run.stdout);
    assert!(run.stdout.contains("persistence"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{mae:.4}")), "{}", run.stdout);

    let forecast_file = dir.join("forecast.csv");
    let run = dendrite([
        "forecast".as_ref(),
        out.as_os_str(),
        data.as_os_str(),
        "--steps".as_ref(),
        "14".as_ref(),
        "--out".as_ref(),
        forecast_file.as_os_str(),
    ]);
    run.assert_success();
    let text = std::fs::read_to_string(&forecast_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "month,passengers_thousands");
    assert_eq!(lines.len(), 15);
    assert!(lines[1].starts_with("1961-01,"), "{text}");
    assert!(lines[14].starts_with("1962-02,"), "{text}");
    for line in &lines[1..] {
        let value: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
        assert!((200.0..900.0).contains(&value), "{line}");
    }
}

#[test]
fn airline_run_has_report_charts_and_inspect() {
    let dir = TempDir::new("airline-report");
    let out = dir.join("run");
    let config = example_config(&dir, "airline-passengers", &[]);
    let run = train(&config, &out);
    run.assert_success();
    let report = out.join("report.html");
    assert!(
        run.stdout
            .contains(&format!("report written to {}", report.display())),
        "{}",
        run.stdout
    );

    let info = read_json(&out.join("run.json"));
    assert_eq!(info["timing"]["epochs"], 50);
    let splits: Vec<u64> = info["data"]["splits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(splits, [84, 12, 24], "windows per part");

    // One row per test window, in the file's units; their MAE is the summary's test MAE.
    let predictions = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let lines: Vec<&str> = predictions.lines().collect();
    assert_eq!(
        lines[0],
        "split,row,time,passengers_thousands_actual,passengers_thousands_predicted"
    );
    assert_eq!(lines.len(), 25, "{predictions}");
    assert!(lines[1].starts_with("test,0,1959-01,360,"), "{}", lines[1]);
    assert!(
        lines[24].starts_with("test,23,1960-12,432,"),
        "{}",
        lines[24]
    );
    let errors: Vec<f64> = lines[1..]
        .iter()
        .map(|line| {
            let fields: Vec<f64> = line
                .split(',')
                .skip(3)
                .map(|v| v.parse().unwrap())
                .collect();
            (fields[0] - fields[1]).abs()
        })
        .collect();
    let mae = errors.iter().sum::<f64>() / errors.len() as f64;
    let summary_mae = read_json(&out.join("summary.json"))["test"]["mae"]
        .as_f64()
        .unwrap();
    assert!(
        (mae - summary_mae).abs() < 1e-6,
        "predictions.csv MAE {mae}, summary.json {summary_mae}"
    );

    for file in [
        "loss",
        "learning_rate",
        "gradient_norms",
        "predicted_vs_actual_0",
    ] {
        for extension in ["svg", "png"] {
            let path = out.join(format!("plots/{file}.{extension}"));
            assert!(path.exists(), "{} is missing", path.display());
        }
    }
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("passengers_thousands: predicted against actual (test split)"),
        "no predicted-against-actual chart"
    );
    assert!(
        html.contains("<td>baseline_seasonal mae</td>"),
        "no baseline row"
    );
    assert!(
        html.contains("<th>windows</th>"),
        "the parts do not count windows"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));

    // `dendrite report` rebuilds the page and the charts from the files alone.
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_dir_all(out.join("plots")).unwrap();
    let rebuilt = dendrite(["report".as_ref(), out.as_os_str()]);
    rebuilt.assert_success();
    assert_eq!(std::fs::read_to_string(&report).unwrap(), html);
    assert!(out.join("plots/predicted_vs_actual_0.png").exists());

    // `inspect` shows the stored series preprocessing.
    let inspect = dendrite(["inspect".as_ref(), out.as_os_str()]);
    inspect.assert_success();
    for expected in [
        "windows      lookback 12, horizon 1, forecast recursive",
        "difference   y_t - y_(t-12)",
        "scaling      standard (passengers_thousands: (x - ",
        "parts        test: the last 24 steps; validation: the 12 steps before them",
    ] {
        assert!(inspect.stdout.contains(expected), "{}", inspect.stdout);
    }
    assert!(
        !inspect.stdout.contains("none (inputs"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn sunspots_beat_persistence() {
    let dir = TempDir::new("sunspots");
    let out = dir.join("run");
    let config = example_config(&dir, "sunspots", &[]);
    train(&config, &out).assert_success();

    let summary = read_json(&out.join("summary.json"));
    let test = &summary["test"];
    let mae = test["mae"].as_f64().unwrap();
    let persistence = test["baseline_persistence"]["mae"].as_f64().unwrap();
    assert!(
        mae < persistence,
        "test MAE {mae}, persistence {persistence}"
    );
    assert!(test["baseline_seasonal"]["mae"].as_f64().is_some());
}

#[test]
fn direct_forecast_refuses_steps_past_horizon() {
    let dir = TempDir::new("direct");
    let out = dir.join("run");
    let config = example_config(
        &dir,
        "sunspots",
        &[
            ("epochs", "epochs = 1"),
            ("horizon", "horizon = 2\nforecast = \"direct\""),
            ("  { type = \"dense\"", "  { type = \"dense\", units = 2 },"),
        ],
    );
    train(&config, &out).assert_success();
    let data = repo_path("data/sunspots/sunspots_yearly.csv");
    let run = dendrite([
        "forecast".as_ref(),
        out.as_os_str(),
        data.as_os_str(),
        "--steps".as_ref(),
        "3".as_ref(),
    ]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("ask for at most 2 steps"),
        "{}",
        run.stderr
    );

    let run = dendrite([
        "forecast".as_ref(),
        out.as_os_str(),
        data.as_os_str(),
        "--steps".as_ref(),
        "2".as_ref(),
    ]);
    run.assert_success();
    assert!(
        run.stdout.starts_with("year,sunactivity\n2009,"),
        "{}",
        run.stdout
    );

    let run = dendrite([
        "forecast".as_ref(),
        out.as_os_str(),
        data.as_os_str(),
        "--steps".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: --steps is 0; pass the number of steps to forecast, 1 or more\n"
    );

    // `predict` reads tables; a forecaster points to `forecast` instead.
    let run = dendrite(["predict".as_ref(), out.as_os_str(), data.as_os_str()]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("dendrite forecast MODEL FILE --steps N"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_values_fail_training_with_rows() {
    let dir = TempDir::new("sensor");
    let file = repo_path("crates/dendrite/tests/fixtures/series/sensor-missing.csv");
    let config = dir.write(
        "sensor.toml",
        format!(
            "[data]\nformat = \"series\"\nfile = \"{}\"\ntime_column = \"timestamp\"\n\
             value_columns = [\"value\"]\nlookback = 8\ntest_length = 30\n\n\
             [model]\nlayers = [{{ type = \"rnn\", units = 4 }}, {{ type = \"dense\", units = 1 }}]\n\n\
             [training]\nepochs = 1\nbatch_size = 16\nloss = \"mse\"\n\
             [training.optimizer]\ntype = \"adam\"\n",
            common::toml_path(&file)
        ),
    );
    let run = train(&config, &dir.join("run"));
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains(
            "column \"value\" has 6 missing values, at data rows 57, 58, 120, 201, 202, 250"
        ),
        "{}",
        run.stderr
    );
    assert!(!dir.join("run").exists(), "a failed run wrote its folder");
}
