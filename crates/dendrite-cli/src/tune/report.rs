//! The end of a search: the table of trials, the best config, and the one test evaluation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dendrite::model;
use dendrite::tune::{Metric, Search, TrialRecord};
use serde_json::{Value, json};
use toml::Table;

use crate::html_report::{self, ParamValue, Trial};

use super::overrides::{absolute_data_paths, set_key, to_toml};
use super::{best, has_rungs, metric_name};

/// Formats the line printed when a trial finishes. It shows validation figures only.
pub fn trial_line(record: &TrialRecord, total: Option<usize>) -> String {
    let total = total.map_or_else(String::new, |n| format!("/{n}"));
    let values: Vec<String> = record
        .values
        .iter()
        .map(|(key, value)| format!("{}={}", short_key(key), value))
        .collect();
    let outcome = match (&record.error, record.val_loss) {
        (Some(error), _) => format!("failed: {error}"),
        (None, Some(loss)) => match record.val_accuracy {
            Some(accuracy) => format!("val_loss {loss:.4}  val_accuracy {accuracy:.4}"),
            None => format!("val_loss {loss:.4}"),
        },
        (None, None) => "no result".into(),
    };
    format!(
        "trial {:>3}{total} ({} epochs)  {}  |  {outcome}  {:.1} s",
        record.trial,
        record.epochs,
        values.join(" "),
        record.seconds
    )
}

/// Returns the last two parts of a dotted key (three after an array index, as in
/// `layers.1.units`), enough to tell parameters apart in a line.
fn short_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let after_index = parts.len() >= 3 && parts[parts.len() - 2].parse::<usize>().is_ok();
    let keep = if after_index { 3 } else { 2 };
    parts[parts.len().saturating_sub(keep)..].join(".")
}

/// Prints and writes the results: the table of trials (also as `trials.csv`) and the best
/// config (`best.toml`). Unless `skip_retrain` is set, the best config is retrained in
/// `best/` and evaluated once on the test split. `report.json` sums it up, and
/// `report.html` shows every trial with charts of the score against each parameter.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    config_path: &Path,
    table: &Table,
    search: &Search,
    records: &[TrialRecord],
    max_epochs: usize,
    metric: Metric,
    out_dir: &Path,
    skip_retrain: bool,
) -> Result<()> {
    let keys: Vec<&str> = search.parameters().iter().map(|p| p.key.as_str()).collect();
    let rungs = has_rungs(search);
    let mut header = vec!["trial".to_string()];
    if rungs {
        header.extend(["rung".to_string(), "epochs".to_string()]);
    }
    header.extend(keys.iter().map(|k| k.to_string()));
    header.extend(["val_loss", "val_accuracy", "seconds", "error"].map(String::from));
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![r.trial.to_string()];
            if rungs {
                row.extend([r.rung.to_string(), r.epochs.to_string()]);
            }
            row.extend(
                keys.iter()
                    .map(|k| r.values.get(*k).map_or(String::new(), plain)),
            );
            row.push(r.val_loss.map_or(String::new(), |x| format!("{x:.6}")));
            row.push(r.val_accuracy.map_or(String::new(), |x| format!("{x:.6}")));
            row.push(format!("{:.2}", r.seconds));
            row.push(r.error.clone().unwrap_or_default());
            row
        })
        .collect();

    let csv_path = out_dir.join("trials.csv");
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header)?;
    for row in &rows {
        writer.write_record(row)?;
    }
    let bytes = writer.into_inner().context("cannot format trials.csv")?;
    model::write_atomic(&csv_path, &bytes)?;

    println!("\n{}", format_table(&header, &rows));
    let configs = {
        let mut ids: Vec<usize> = records.iter().map(|r| r.trial).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let failed = records.iter().filter(|r| r.score.is_none()).count();
    println!(
        "{} trials of {configs} configs ({failed} failed), scored on the validation split \
         only; table written to {}",
        records.len(),
        csv_path.display()
    );
    // The report is written before the retraining, which may fail, and its path is printed
    // last, where it does not scroll away behind the retraining's output.
    let report_path = write_html_report(config_path, records, metric, rungs, out_dir)?;

    let Some(best) = best(records, max_epochs) else {
        anyhow::bail!(
            "no trial finished training for the full {max_epochs} epochs, so there is no best \
             config; see the errors in {} or {}",
            csv_path.display(),
            report_path.display()
        );
    };
    println!(
        "best: trial {} with validation {} {:.4}",
        best.trial,
        metric_name(metric),
        match metric {
            Metric::Accuracy => best.val_accuracy.unwrap_or_default(),
            Metric::Loss => best.val_loss.unwrap_or_default(),
        }
    );

    // The best config is the original with the best values, test source included, so that
    // `dendrite train best.toml` reports the test figure once.
    let mut best_table = table.clone();
    for (key, value) in &best.values {
        set_key(&mut best_table, key, to_toml(key, value)?)?;
    }
    absolute_data_paths(&mut best_table, config_path);
    let best_path = out_dir.join("best.toml");
    let text = format!(
        "# The best config of `dendrite tune {}`: trial {}, chosen on the validation split.\n{}",
        config_path.display(),
        best.trial,
        toml::to_string(&best_table).context("cannot write the best config as TOML")?
    );
    model::write_atomic(&best_path, text.as_bytes())?;
    println!("best config written to {}", best_path.display());

    let mut report = json!({
        "trials": records.len(),
        "configs": configs,
        "failed": failed,
        "strategy": search.config().strategy,
        "metric": metric,
        "best": {
            "trial": best.trial,
            "values": best.values,
            "val_loss": best.val_loss,
            "val_accuracy": best.val_accuracy,
        },
        "test_evaluations": 0,
    });
    let run_dir = out_dir.join("best");
    if skip_retrain {
        println!("the best config was not retrained, and the test split was not read");
        if run_dir.exists() {
            eprintln!(
                "note: {} holds the retrained model of an earlier search, which may differ \
                 from this search's best config",
                run_dir.display()
            );
        }
    } else {
        println!("\nretraining the best config and evaluating it once on the test split");
        // The folder belongs to this command: checkpoints of an earlier search's retraining
        // would stop a new run there.
        let earlier_checkpoints = run_dir.join(crate::resume::CHECKPOINT_DIR);
        if earlier_checkpoints.is_dir() {
            std::fs::remove_dir_all(&earlier_checkpoints)
                .with_context(|| format!("cannot remove {}", earlier_checkpoints.display()))?;
        }
        crate::train::run(
            &best_path,
            Some(run_dir.clone()),
            true,
            false,
            crate::train::Recovery::default(),
        )?;
        let summary: Value = serde_json::from_slice(
            &std::fs::read(run_dir.join("summary.json")).context("cannot read summary.json")?,
        )?;
        match summary.get("test") {
            Some(test) => {
                report["test_evaluations"] = json!(1);
                report["test"] = test.clone();
                println!(
                    "\ntest split, evaluated once after the search ({} trials selected on \
                     validation only): {}",
                    records.len(),
                    headline(test)
                );
            }
            None => println!(
                "\nthe config has no test split, so no test figure is reported; the model of \
                 the best config is in {}",
                run_dir.display()
            ),
        }
        report["validation_after_retraining"] =
            summary.get("validation").cloned().unwrap_or(Value::Null);
    }
    let mut bytes = serde_json::to_vec_pretty(&report)?;
    bytes.push(b'\n');
    model::write_atomic(&out_dir.join("report.json"), &bytes)?;
    println!("search report written to {}", report_path.display());
    Ok(())
}

/// Writes `report.html` of the search into `out_dir`: every trial with its validation
/// score, and the score against each searched parameter. Returns the path of the report.
fn write_html_report(
    config_path: &Path,
    records: &[TrialRecord],
    metric: Metric,
    rungs: bool,
    out_dir: &Path,
) -> Result<PathBuf> {
    let trials: Vec<Trial> = records
        .iter()
        .map(|record| {
            let score = record.score.and(match metric {
                Metric::Accuracy => record.val_accuracy,
                Metric::Loss => record.val_loss,
            });
            let mut status = match &record.error {
                Some(error) => format!("failed: {error}"),
                None => "finished".to_string(),
            };
            if rungs {
                status.push_str(&format!(
                    " (rung {}, {} epochs)",
                    record.rung, record.epochs
                ));
            }
            Trial {
                number: record.trial,
                params: record
                    .values
                    .iter()
                    .map(|(key, value)| (key.clone(), param_value(value)))
                    .collect(),
                score,
                status,
            }
        })
        .collect();
    let title = format!("dendrite tune {}", config_path.display());
    let score_name = format!("validation {}", metric_name(metric));
    let higher_is_better = metric == Metric::Accuracy;
    html_report::write_search_report(out_dir, &title, &score_name, higher_is_better, &trials)
        .with_context(|| format!("cannot write the search report in {}", out_dir.display()))
}

/// Converts a searched value for the report: numbers stay numbers, anything else is text.
fn param_value(value: &Value) -> ParamValue {
    match value.as_f64() {
        Some(number) => ParamValue::Number(number),
        None => ParamValue::Text(plain(value)),
    }
}

/// Returns the loss and accuracy (or RMSE and R²) of a split's summary.
fn headline(split: &Value) -> String {
    ["accuracy", "loss", "rmse", "r2"]
        .iter()
        .filter_map(|name| {
            split
                .get(name)
                .and_then(Value::as_f64)
                .map(|x| format!("{name} {x:.4}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Formats a value without JSON quotes around strings.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligns rows in columns under a header.
fn format_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header)];
    out.extend(rows.iter().map(|row| line(row)));
    out.join("\n")
}
