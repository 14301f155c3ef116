//! Forecasters: `dendrite train` with `format = "series"`, `dendrite evaluate` of a
//! forecaster, and `dendrite forecast`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dendrite::data::series::{ForecastEvaluation, ForecastMetrics, Series, SeriesPreprocessor};
use dendrite::data::{Dataset, SeriesConfig};
use dendrite::model::{self, ModelInfo, SavedModel, Task};
use dendrite::nn::Sequential;
use dendrite::train::{self, FitOptions};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::html_report;
use crate::run_files::{
    self, DataSummary, PREDICTIONS_FILE, RUN_FILE, RunInfo, SUMMARY_FILE, Timing,
};
use crate::runlog::RunLog;
use crate::train::Progress;

/// Trains a forecaster on the series of `series` and writes the run folder as `dendrite
/// train` does: the model, `metrics.jsonl`, `steps.jsonl`, `summary.json` with the test
/// errors next to the baselines', `run.json`, the test part's `predictions.csv`, the charts
/// and `report.html`.
pub fn train(
    config_path: &Path,
    config: &Config,
    series: &SeriesConfig,
    out: Option<PathBuf>,
    quiet: bool,
    tensorboard: bool,
    started: Instant,
) -> Result<()> {
    let prepared = series
        .prepare()
        .map_err(|e| crate::config::name_config(e.into(), config_path))?;
    for note in &prepared.notes {
        eprintln!("note: {note}");
    }
    let preprocessor = &prepared.preprocessor;
    let mut model = Sequential::new(
        prepared.train.feature_shape(),
        config.model.layers.clone(),
        config.training.seed,
    )
    .with_context(|| format!("{}: [model]", config_path.display()))?;
    let outputs: usize = model.output_shape().iter().product();
    if outputs != preprocessor.outputs() {
        bail!(
            "{}: [model] the last layer gives {outputs} values per window, but a forecaster \
             of horizon {} over {} value columns needs {}; set the last layer's units to {}",
            config_path.display(),
            preprocessor.horizon,
            preprocessor.value_columns.len(),
            preprocessor.outputs(),
            preprocessor.outputs()
        );
    }
    let info = ModelInfo {
        series: Some(preprocessor.clone()),
        ..ModelInfo::new(
            config.training.loss,
            Task::Regression {
                target_names: target_names(preprocessor),
            },
        )
    };
    let out_dir = out.unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(stem)
    });
    let windows = prepared.train.windows().expect("series data is windowed");
    println!(
        "training on {} windows, validating on {}, testing on {}; {} parameters; windows \
         share one {:.1} KiB series matrix ({:.1} KiB if stored one by one)",
        prepared.train.len(),
        prepared.validation.as_ref().map_or(0, |v| v.len()),
        prepared.test.len(),
        model.params().numel(),
        windows.matrix_bytes() as f64 / 1024.0,
        windows.materialized_bytes() as f64 / 1024.0
    );

    let training_started = Instant::now();
    let mut progress = Progress {
        out_dir: &out_dir,
        bar: None,
        quiet,
        metrics: None,
        last_save: Instant::now(),
        rows_in_epoch: 0,
        info: &info,
        epochs: config.training.epochs,
        log: RunLog::new(&out_dir, tensorboard),
    };
    let fitted = train::fit_with(
        &mut model,
        &prepared.train,
        prepared.validation.as_ref(),
        &config.training,
        &FitOptions::default(),
        &mut progress,
    );
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let training_seconds = training_started.elapsed().as_secs_f64();
    let history = match fitted {
        Ok(history) => history,
        Err(error @ dendrite::Error::NonFinite { .. }) => {
            model::save(&out_dir, &model, &info)?;
            let message = crate::train::kept_model(&error, &out_dir, false);
            return Err(anyhow::Error::new(error).context(message));
        }
        Err(error) => return Err(error.into()),
    };
    if history.stopped_early {
        println!("early stopping after epoch {}", history.epochs.len());
    }
    if let Some(best) = history.best_epoch {
        println!("the model holds the weights of epoch {best}");
    }

    // The test part is evaluated here, once.
    let evaluation_started = Instant::now();
    let series_data = &prepared.series;
    let mut summary = Map::new();
    let mut evaluations = vec![(
        "train",
        preprocessor.evaluate(&model, series_data, &prepared.train),
    )];
    if let Some(validation) = &prepared.validation {
        evaluations.push((
            "validation",
            preprocessor.evaluate(&model, series_data, validation),
        ));
    }
    evaluations.push((
        "test",
        preprocessor.evaluate(&model, series_data, &prepared.test),
    ));
    for (part, evaluation) in &evaluations {
        summary.insert(part.to_string(), evaluation_json(evaluation));
    }
    let evaluation_seconds = evaluation_started.elapsed().as_secs_f64();
    model::save(&out_dir, &model, &info)?;
    write_predictions(
        &out_dir,
        &model,
        preprocessor,
        series_data,
        "test",
        &prepared.test,
    )?;
    let mut json = serde_json::to_vec_pretty(&Value::Object(summary))?;
    json.push(b'\n');
    model::write_atomic(&out_dir.join(SUMMARY_FILE), &json)?;
    let run_info = RunInfo {
        config_path: config_path.display().to_string(),
        config: std::fs::read_to_string(config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?,
        data: DataSummary::new(
            &prepared.train,
            prepared.validation.as_ref(),
            Some(&prepared.test),
        ),
        timing: Timing {
            total_seconds: started.elapsed().as_secs_f64(),
            training_seconds,
            evaluation_seconds,
            epochs: history.epochs.len(),
        },
        threads: rayon::current_num_threads(),
        parameters: model.params().numel(),
    };
    run_files::write_json(&out_dir.join(RUN_FILE), &run_info)?;
    let report = html_report::build(&out_dir)?;

    for (part, evaluation) in &evaluations {
        println!("{part}:");
        print!("{}", evaluation_table(evaluation));
    }
    println!(
        "model written to {} in {:.1} s",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!("report written to {}", report.display());
    Ok(())
}

/// Writes `predictions.csv` for the windows of `dataset` (one part of `series`): one row per
/// window with the time of its first target, then the actual and predicted value of each
/// output in the file's units, in the layout of a regression model's predictions.
fn write_predictions(
    dir: &Path,
    model: &Sequential,
    preprocessor: &SeriesPreprocessor,
    series: &Series,
    part: &str,
    dataset: &Dataset,
) -> Result<()> {
    let windows = dataset.windows().expect("series data is windowed");
    let outputs = preprocessor.predict_windows(model, dataset);
    let width = preprocessor.outputs();
    let channels = preprocessor.value_columns.len();
    let time_label = |row: usize| match preprocessor.time_format {
        Some(format) => format.format(series.times[row]),
        None => series.times[row].to_string(),
    };

    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["split".to_string(), "row".to_string(), "time".to_string()];
    for name in target_names(preprocessor) {
        header.push(format!("{name}_actual"));
        header.push(format!("{name}_predicted"));
    }
    writer.write_record(&header)?;
    for (w, &start) in windows.starts().iter().enumerate() {
        let predicted =
            preprocessor.invert(&series.values, start, &outputs[w * width..(w + 1) * width]);
        let first_target = start + preprocessor.lookback;
        let mut record = vec![part.to_string(), w.to_string(), time_label(first_target)];
        for (i, prediction) in predicted.iter().enumerate() {
            let (h, c) = (i / channels, i % channels);
            let actual = series.values[(first_target + h) * channels + c];
            record.push(actual.to_string());
            record.push(prediction.to_string());
        }
        writer.write_record(&record)?;
    }
    let path = dir.join(PREDICTIONS_FILE);
    let bytes = writer
        .into_inner()
        .with_context(|| format!("cannot write {}", path.display()))?;
    model::write_atomic(&path, &bytes)?;
    Ok(())
}

/// The output names, `column` for a horizon of 1, else `column+h` for step `h` from 1.
fn target_names(preprocessor: &SeriesPreprocessor) -> Vec<String> {
    let mut names = Vec::new();
    for h in 1..=preprocessor.horizon {
        for column in &preprocessor.value_columns {
            if preprocessor.horizon == 1 {
                names.push(column.clone());
            } else {
                names.push(format!("{column}+{h}"));
            }
        }
    }
    names
}

fn metrics_json(metrics: &ForecastMetrics) -> Value {
    json!({
        "mae": metrics.mae,
        "rmse": metrics.rmse,
        "mape": metrics.mape,
        "values": metrics.values,
    })
}

/// The model's figures at the top level, the baselines under `baseline_persistence` and
/// `baseline_seasonal`.
fn evaluation_json(evaluation: &ForecastEvaluation) -> Value {
    let mut object = metrics_json(&evaluation.model);
    object["windows"] = evaluation.windows.into();
    object["baseline_persistence"] = metrics_json(&evaluation.persistence);
    if let Some(seasonal) = &evaluation.seasonal {
        object["baseline_seasonal"] = metrics_json(seasonal);
    }
    object
}

/// A table of MAE, RMSE and MAPE of the model and the baselines, side by side.
fn evaluation_table(evaluation: &ForecastEvaluation) -> String {
    let mut rows = vec![
        ("model", evaluation.model),
        ("persistence", evaluation.persistence),
    ];
    if let Some(seasonal) = evaluation.seasonal {
        rows.push(("seasonal naive", seasonal));
    }
    let mut text = format!(
        "  {} windows\n  {:<16}{:>12}{:>12}{:>10}\n",
        evaluation.windows, "", "MAE", "RMSE", "MAPE %"
    );
    for (name, metrics) in rows {
        let mape = metrics
            .mape
            .map_or_else(|| "-".to_string(), |m| format!("{m:.2}"));
        text.push_str(&format!(
            "  {name:<16}{:>12.4}{:>12.4}{mape:>10}\n",
            metrics.mae, metrics.rmse
        ));
    }
    if evaluation.model.zero_actuals > 0 {
        text.push_str(&format!(
            "  MAPE leaves out {} actual values of 0\n",
            evaluation.model.zero_actuals
        ));
    }
    text
}

/// Reads `path` with a forecaster's stored preprocessing.
fn read_series(preprocessor: &SeriesPreprocessor, path: &Path) -> Result<Series> {
    let mut reader = preprocessor.clone();
    let series = reader.read(path)?;
    for note in &series.notes {
        eprintln!("note: {note}");
    }
    Ok(series)
}

/// Runs `dendrite evaluate` for a forecaster: the errors on the test part of `path` (its
/// last `test_length` steps) next to the baselines on the same windows.
pub fn evaluate(
    model: &Sequential,
    preprocessor: &SeriesPreprocessor,
    path: &Path,
    json: Option<&Path>,
) -> Result<()> {
    let series = read_series(preprocessor, path)?;
    let parts = preprocessor.parts(series.len(), path)?;
    let matrix = std::sync::Arc::new(preprocessor.input_matrix(&series)?);
    let test = preprocessor.windows(&matrix, parts.test, 1)?;
    if test.is_empty() {
        bail!(
            "{}: no window fits in the last {} steps (the test part)",
            path.display(),
            preprocessor.test_length
        );
    }
    let evaluation = preprocessor.evaluate(model, &series, &test);
    println!(
        "test part: the last {} steps of {}",
        preprocessor.test_length,
        path.display()
    );
    print!("{}", evaluation_table(&evaluation));
    if let Some(json_path) = json {
        let object = json!({ "test": evaluation_json(&evaluation) });
        let mut bytes = serde_json::to_vec_pretty(&object)?;
        bytes.push(b'\n');
        model::write_atomic(json_path, &bytes)?;
    }
    Ok(())
}

/// Runs `dendrite forecast MODEL SERIES --steps K [--out FILE]`.
pub fn forecast(model_path: &Path, input: &Path, steps: usize, out: Option<&Path>) -> Result<()> {
    let SavedModel { model, meta } = model::load(model_path)?;
    if steps == 0 {
        bail!("--steps is 0; pass the number of steps to forecast, 1 or more");
    }
    let Some(preprocessor) = &meta.series else {
        bail!(
            "{}: the model was not trained on a series (format = \"series\"), so it cannot \
             forecast",
            model_path.display()
        );
    };
    let series = read_series(preprocessor, input)?;
    let forecast = preprocessor
        .forecast(&model, &series, steps)
        .with_context(|| input.display().to_string())?;

    let mut writer = csv::Writer::from_writer(Vec::new());
    let time_column = preprocessor
        .time_column
        .clone()
        .unwrap_or_else(|| "step".to_string());
    let mut header = vec![time_column];
    header.extend(preprocessor.value_columns.iter().cloned());
    writer.write_record(&header)?;
    for (time, values) in &forecast {
        let mut record = vec![time.clone()];
        record.extend(values.iter().map(|v| format!("{v}")));
        writer.write_record(&record)?;
    }
    let bytes = writer.into_inner().context("cannot write the forecast")?;
    match out {
        Some(path) => model::write_atomic(path, &bytes)?,
        None => {
            let mut stdout = std::io::stdout().lock();
            if let Err(error) = stdout.write_all(&bytes).and_then(|()| stdout.flush())
                && error.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(error.into());
            }
        }
    }
    Ok(())
}
