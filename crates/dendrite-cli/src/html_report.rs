//! `report.html` and the charts of a run folder, and the report of a hyperparameter search.
//!
//! A report is one self-contained file. The charts are SVG data URIs, the images PNG data
//! URIs and the style sheet is inline. The page has no scripts, links or web fonts, so a
//! browser opens it without a network request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use dendrite::model::{self, Task};
use serde_json::Value;

use crate::plots::{self, Figure, Series, WrittenPlot};
use crate::run_files::{
    METRICS_FILE, MOST_WRONG_FILE, MostWrong, PREDICTIONS_FILE, RUN_FILE, RunInfo, STEPS_FILE,
    SUMMARY_FILE, read_json, read_json_lines,
};

/// The file name of the report inside a run folder.
pub const REPORT_FILE: &str = "report.html";

/// The folder of the charts inside a run folder.
pub const PLOTS_DIR: &str = "plots";

/// Runs `dendrite report RUN_DIR`.
pub fn run(dir: &Path) -> Result<()> {
    let path = build(dir)?;
    println!("report written to {}", path.display());
    Ok(())
}

/// Draws the charts of the run folder `dir` into `dir/plots` and writes `dir/report.html`.
/// Returns the path of the report.
///
/// # Errors
///
/// Fails with the file name if `metrics.jsonl`, `summary.json` or the model is missing or
/// invalid, or if a file cannot be written.
pub fn build(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder; give the output folder of `dendrite train`",
            dir.display()
        );
    }
    if !dir.join(METRICS_FILE).exists() && dir.join("journal.jsonl").exists() {
        bail!(
            "{} is the output folder of `dendrite tune`; run the same `dendrite tune` command \
             again to rebuild its report.html (finished trials are read from journal.jsonl, \
             not trained again), or give the folder of a training run, such as {}",
            dir.display(),
            dir.join("best").display()
        );
    }
    let epochs = read_json_lines(&dir.join(METRICS_FILE))?;
    if epochs.is_empty() {
        bail!(
            "{} has no epochs; train again to rewrite the run folder",
            dir.join(METRICS_FILE).display()
        );
    }
    let summary: Value = read_json(&dir.join(SUMMARY_FILE))?;
    let saved = model::load(dir)?;
    let steps_path = dir.join(STEPS_FILE);
    let steps = if steps_path.exists() {
        read_json_lines(&steps_path)?
    } else {
        Vec::new()
    };
    let run_path = dir.join(RUN_FILE);
    let run_info: Option<RunInfo> = if run_path.exists() {
        Some(read_json(&run_path)?)
    } else {
        None
    };
    let most_wrong_path = dir.join(MOST_WRONG_FILE);
    let most_wrong: Option<MostWrong> = if most_wrong_path.exists() {
        Some(read_json(&most_wrong_path)?)
    } else {
        None
    };

    let class_names = match &saved.meta.task {
        Task::Classification { class_names } => Some(class_names.clone()),
        Task::Regression { .. } => None,
    };
    let mut figures = epoch_figures(&epochs);
    figures.extend(step_figures(&steps, &epochs));
    if let Some((split, confusion)) = confusion_matrix(&summary) {
        figures.push((
            "confusion_matrix".into(),
            Figure::Heatmap {
                title: format!("Confusion matrix ({split} split)"),
                labels: class_names.clone().unwrap_or_default(),
                counts: confusion,
            },
        ));
    }
    let forecaster = saved.meta.series.is_some();
    let predictions_path = dir.join(PREDICTIONS_FILE);
    if predictions_path.exists() {
        figures.extend(prediction_figures(&predictions_path, forecaster)?);
    }

    let plots_dir = dir.join(PLOTS_DIR);
    let mut plots = Vec::new();
    for (name, figure) in &figures {
        plots.push(plots::write(figure, &plots_dir, name)?);
    }

    let title = format!("dendrite run {}", dir.display());
    let mut body = String::new();
    if let Some(info) = &run_info {
        body.push_str(&data_section(info, forecaster));
    } else {
        writeln!(
            body,
            "<p class=\"note\">{RUN_FILE} is missing, so the config, data summary and timing \
             are not shown; it is written by <code>dendrite train</code>.</p>"
        )?;
    }
    body.push_str(&metrics_section(&summary));
    writeln!(
        body,
        "<h2>Model</h2>\n<pre>{}</pre>",
        escape(&crate::inspect::layer_table(&saved.model))
    )?;
    if forecaster {
        writeln!(
            body,
            "<p>The final metrics are in the units of the series file, next to the \
             persistence and seasonal naive baselines. The validation metrics per epoch are \
             on the scaled (and differenced, if configured) values the model predicts.</p>"
        )?;
    }
    body.push_str(&plots_section(&plots));
    if let Some(most_wrong) = &most_wrong {
        body.push_str(&most_wrong_section(most_wrong));
    }
    if let Some(info) = &run_info {
        writeln!(
            body,
            "<h2>Config</h2>\n<p>{}</p>\n<pre>{}</pre>",
            escape(&info.config_path),
            escape(&info.config)
        )?;
    }

    let path = dir.join(REPORT_FILE);
    model::write_atomic(&path, page(&title, &body).as_bytes())?;
    Ok(path)
}

/// Returns the charts of `metrics.jsonl`: losses and each validation metric per epoch.
fn epoch_figures(epochs: &[Value]) -> Vec<(String, Figure)> {
    let series = |name: &str, key: &dyn Fn(&Value) -> Option<f64>| Series {
        name: name.into(),
        points: epochs
            .iter()
            .filter_map(|e| Some((e["epoch"].as_f64()?, key(e)?)))
            .collect(),
    };
    let mut losses = vec![series("training", &|e| e["train_loss"].as_f64())];
    let validation = series("validation", &|e| e["val_loss"].as_f64());
    if !validation.points.is_empty() {
        losses.push(validation);
    }
    let mut figures = vec![(
        "loss".to_string(),
        Figure::Lines {
            title: "Loss per epoch".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: losses,
            log_y: false,
        },
    )];

    let metric_names: Vec<String> = epochs
        .iter()
        .filter_map(|e| e["val_metrics"].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for name in metric_names {
        figures.push((
            format!("metric_{name}"),
            Figure::Lines {
                title: format!("Validation {name} per epoch"),
                x_label: "epoch".into(),
                y_label: name.clone(),
                series: vec![series("validation", &|e| e["val_metrics"][&name].as_f64())],
                log_y: false,
            },
        ));
    }
    figures
}

/// Returns the learning rate per step (per epoch without `steps.jsonl`) and the gradient
/// norm of each layer per step.
fn step_figures(steps: &[Value], epochs: &[Value]) -> Vec<(String, Figure)> {
    let (x_label, source, x_key) = if steps.is_empty() {
        ("epoch", epochs, "epoch")
    } else {
        ("step", steps, "step")
    };
    let learning_rate = Series {
        name: "learning rate".into(),
        points: source
            .iter()
            .filter_map(|v| Some((v[x_key].as_f64()?, v["learning_rate"].as_f64()?)))
            .collect(),
    };
    let mut figures = vec![(
        "learning_rate".to_string(),
        Figure::Lines {
            title: "Learning rate".into(),
            x_label: x_label.into(),
            y_label: "learning rate".into(),
            series: vec![learning_rate],
            log_y: false,
        },
    )];

    // A layer's norm combines the norms of its parameters: sqrt(sum of squares).
    let mut layers: BTreeMap<usize, (String, Vec<(f64, f64)>)> = BTreeMap::new();
    for step in steps {
        let (Some(x), Some(norms)) = (step["step"].as_f64(), step["gradient_norms"].as_object())
        else {
            continue;
        };
        let mut squares: BTreeMap<usize, (String, f64)> = BTreeMap::new();
        for (name, norm) in norms {
            let Some(norm) = norm.as_f64() else { continue };
            let layer = name
                .rsplit_once('.')
                .map_or(name.as_str(), |(layer, _)| layer);
            let index = layer
                .rsplit('.')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(usize::MAX);
            let entry = squares.entry(index).or_insert((layer.to_string(), 0.0));
            entry.1 += norm * norm;
        }
        for (index, (layer, sum)) in squares {
            layers
                .entry(index)
                .or_insert_with(|| (layer, Vec::new()))
                .1
                .push((x, sum.sqrt()));
        }
    }
    if !layers.is_empty() {
        figures.push((
            "gradient_norms".into(),
            Figure::Lines {
                title: "Gradient L2 norm per layer".into(),
                x_label: "step".into(),
                y_label: "gradient L2 norm".into(),
                series: layers
                    .into_values()
                    .map(|(name, points)| Series { name, points })
                    .collect(),
                log_y: true,
            },
        ));
    }
    figures
}

/// Returns the confusion matrix of the test split, else of the validation split, else of
/// the training split.
fn confusion_matrix(summary: &Value) -> Option<(String, Vec<Vec<usize>>)> {
    ["test", "validation", "train"].iter().find_map(|split| {
        let rows = summary[split]["confusion_matrix"].as_array()?;
        let counts = rows
            .iter()
            .map(|row| {
                row.as_array().map(|r| {
                    r.iter()
                        .filter_map(|c| c.as_u64())
                        .map(|c| c as usize)
                        .collect()
                })
            })
            .collect::<Option<Vec<Vec<usize>>>>()?;
        Some((split.to_string(), counts))
    })
}

/// Returns one predicted-against-actual chart per target of `predictions.csv`, whose rows
/// are test windows for a `forecaster`.
fn prediction_figures(path: &Path, forecaster: bool) -> Result<Vec<(String, Figure)>> {
    let invalid = || {
        format!(
            "{} is not valid; train again to rewrite the run folder",
            path.display()
        )
    };
    let mut reader = csv::Reader::from_path(path).with_context(invalid)?;
    let headers = reader.headers().with_context(invalid)?.clone();
    let targets: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, h.strip_suffix("_actual")?.to_string())))
        .collect();
    let mut points = vec![Vec::new(); targets.len()];
    let mut split = String::new();
    for record in reader.records() {
        let record = record.with_context(invalid)?;
        split = record.get(0).unwrap_or_default().to_string();
        for (k, (column, _)) in targets.iter().enumerate() {
            let value = |i: usize| record.get(i).and_then(|v| v.parse::<f64>().ok());
            if let (Some(actual), Some(predicted)) = (value(*column), value(column + 1)) {
                points[k].push((actual, predicted));
            }
        }
    }
    Ok(targets
        .into_iter()
        .zip(points)
        .enumerate()
        .map(|(k, ((_, name), points))| {
            (
                format!("predicted_vs_actual_{k}"),
                Figure::Scatter {
                    title: format!("{name}: predicted against actual ({split} split)"),
                    x_label: format!("actual {name}"),
                    y_label: format!("predicted {name}"),
                    points,
                    points_name: if forecaster { "windows" } else { "rows" }.into(),
                    diagonal: true,
                    log_x: false,
                },
            )
        })
        .collect())
}

/// Formats the splits, class counts and timing of `run.json`. A forecaster's splits count
/// windows, not rows.
fn data_section(info: &RunInfo, forecaster: bool) -> String {
    let mut html = String::from("<h2>Data</h2>\n");
    let data = &info.data;
    let unit = if forecaster { "windows" } else { "rows" };
    let _ = writeln!(
        html,
        "<p>{} of shape {:?}; {}.</p>",
        if forecaster { "Windows" } else { "Rows" },
        data.feature_shape,
        match &data.classes {
            Some(classes) => format!("{} classes", classes.len()),
            None => "regression targets".into(),
        }
    );
    let _ = write!(html, "<table>\n<tr><th>split</th><th>{unit}</th>");
    if let Some(classes) = &data.classes {
        for class in classes {
            let _ = write!(html, "<th>{}</th>", escape(class));
        }
    }
    html.push_str("</tr>\n");
    for split in &data.splits {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td>",
            escape(&split.name),
            split.rows
        );
        for count in split.class_counts.iter().flatten() {
            let _ = write!(html, "<td>{count}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");

    let timing = &info.timing;
    let _ = writeln!(
        html,
        "<h2>Timing</h2>\n<table>\n<tr><td>training ({} epochs)</td><td>{:.1} s</td></tr>\n\
         <tr><td>final evaluation</td><td>{:.1} s</td></tr>\n<tr><td>whole run</td><td>{:.1} \
         s</td></tr>\n<tr><td>threads</td><td>{}</td></tr>\n<tr><td>trainable \
         parameters</td><td>{}</td></tr>\n</table>",
        timing.epochs,
        timing.training_seconds,
        timing.evaluation_seconds,
        timing.total_seconds,
        info.threads,
        crate::inspect::thousands(info.parameters)
    );
    html
}

/// Formats the scalar metrics of each split of `summary.json` as one table. The baselines
/// of a forecaster (`baseline_persistence`, `baseline_seasonal`) get rows of their own, such
/// as `baseline_persistence mae`.
fn metrics_section(summary: &Value) -> String {
    let splits: Vec<&str> = ["train", "validation", "test"]
        .into_iter()
        .filter(|s| summary[*s].is_object())
        .collect();
    let flat: Vec<BTreeMap<String, &Value>> = splits
        .iter()
        .map(|s| scalar_metrics(&summary[*s]))
        .collect();
    let mut names: Vec<String> = flat
        .iter()
        .flat_map(|m| m.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // The loss comes first, the model's other metrics in name order, then the baselines.
    names.sort_by_key(|name| (name != "loss", name.starts_with("baseline_")));
    let mut html = String::from("<h2>Final metrics</h2>\n<table>\n<tr><th>metric</th>");
    for split in &splits {
        let _ = write!(html, "<th>{split}</th>");
    }
    html.push_str("</tr>\n");
    for name in &names {
        let _ = write!(html, "<tr><td>{}</td>", escape(name));
        for metrics in &flat {
            match metrics.get(name) {
                Some(value) if value.is_u64() => {
                    let _ = write!(html, "<td>{value}</td>");
                }
                Some(value) => {
                    let _ = write!(html, "<td>{:.4}</td>", value.as_f64().unwrap_or(f64::NAN));
                }
                None => html.push_str("<td></td>"),
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

/// Returns the numbers of one split's summary by name, with those of the `baseline_*`
/// objects under `baseline_... metric`.
fn scalar_metrics(split: &Value) -> BTreeMap<String, &Value> {
    let mut metrics = BTreeMap::new();
    let Some(object) = split.as_object() else {
        return metrics;
    };
    for (name, value) in object {
        if value.is_number() {
            metrics.insert(name.clone(), value);
        } else if name.starts_with("baseline_")
            && let Some(baseline) = value.as_object()
        {
            for (metric, value) in baseline.iter().filter(|(_, v)| v.is_number()) {
                metrics.insert(format!("{name} {metric}"), value);
            }
        }
    }
    metrics
}

fn plots_section(plots: &[WrittenPlot]) -> String {
    let mut html = String::from("<h2>Charts</h2>\n<div class=\"plots\">\n");
    for plot in plots {
        let _ = writeln!(
            html,
            "<figure><img src=\"{}\" alt=\"{}\" width=\"800\" height=\"480\"><figcaption>{} \
             ({})</figcaption></figure>",
            data_uri("image/svg+xml", plot.svg.as_bytes()),
            escape(&plot.title),
            escape(&plot.title),
            escape(
                &plot
                    .svg_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        );
    }
    html.push_str("</div>\n");
    html
}

fn most_wrong_section(most_wrong: &MostWrong) -> String {
    let mut html = format!(
        "<h2>Most wrong {} images</h2>\n<p>The misclassified images whose true class got the \
         lowest probability.</p>\n<div class=\"grid\">\n",
        escape(&most_wrong.split)
    );
    for image in &most_wrong.images {
        let _ = writeln!(
            html,
            "<figure><img src=\"data:image/png;base64,{}\" alt=\"row {}\" width=\"84\" \
             height=\"84\"><figcaption>row {}<br>true {} ({:.0}%)<br>predicted {} \
             ({:.0}%)</figcaption></figure>",
            image.png_base64,
            image.row,
            image.row,
            escape(&image.true_class),
            image.true_probability * 100.0,
            escape(&image.predicted_class),
            image.predicted_probability * 100.0
        );
    }
    if most_wrong.images.is_empty() {
        html.push_str("<p>The model classified every image correctly.</p>\n");
    }
    html.push_str("</div>\n");
    html
}

/// One trial of a hyperparameter search, for [`write_search_report`].
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The trial number, from 1.
    pub number: usize,
    /// The value of each searched parameter.
    pub params: BTreeMap<String, ParamValue>,
    /// The validation score, or `None` if the trial failed.
    pub score: Option<f64>,
    /// The outcome of the trial, such as "finished" or "stopped: NaN loss".
    pub status: String,
}

/// The value of one searched parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Number(f64),
    Text(String),
}

/// Writes `dir/report.html` for a hyperparameter search: the trials table (best score first
/// if `higher_is_better`, else lowest first) and the score against each parameter, with the
/// charts in `dir/plots`. Text parameters are plotted by their index in sorted order.
///
/// # Errors
///
/// Fails if a chart cannot be drawn or a file cannot be written.
pub fn write_search_report(
    dir: &Path,
    title: &str,
    score_name: &str,
    higher_is_better: bool,
    trials: &[Trial],
) -> Result<PathBuf> {
    let names: Vec<String> = trials
        .iter()
        .flat_map(|t| t.params.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut sorted: Vec<&Trial> = trials.iter().collect();
    sorted.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) if higher_is_better => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.number.cmp(&b.number),
    });

    let mut body = format!(
        "<h2>Trials</h2>\n<table>\n<tr><th>trial</th><th>{}</th>",
        escape(score_name)
    );
    for name in &names {
        let _ = write!(body, "<th>{}</th>", escape(name));
    }
    body.push_str("<th>status</th></tr>\n");
    for trial in &sorted {
        let score = trial.score.map_or(String::new(), |s| format!("{s:.4}"));
        let _ = write!(body, "<tr><td>{}</td><td>{score}</td>", trial.number);
        for name in &names {
            let value = match trial.params.get(name) {
                Some(ParamValue::Number(x)) => format!("{x}"),
                Some(ParamValue::Text(text)) => text.clone(),
                None => String::new(),
            };
            let _ = write!(body, "<td>{}</td>", escape(&value));
        }
        let _ = writeln!(body, "<td>{}</td></tr>", escape(&trial.status));
    }
    body.push_str("</table>\n");

    let plots_dir = dir.join(PLOTS_DIR);
    let mut plots = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let texts: Vec<&String> = trials
            .iter()
            .filter_map(|t| match t.params.get(name) {
                Some(ParamValue::Text(text)) => Some(text),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let points = trials
            .iter()
            .filter_map(|t| {
                let x = match t.params.get(name)? {
                    ParamValue::Number(x) => *x,
                    ParamValue::Text(text) => texts.iter().position(|t| *t == text)? as f64,
                };
                Some((x, t.score?))
            })
            .collect();
        // A number searched over two or more powers of ten, such as a log-uniform learning
        // rate, is easier to read on a log axis.
        let numbers = || {
            trials.iter().filter_map(|t| match t.params.get(name) {
                Some(ParamValue::Number(x)) => Some(*x),
                _ => None,
            })
        };
        let smallest = numbers().fold(f64::INFINITY, f64::min);
        let largest = numbers().fold(f64::NEG_INFINITY, f64::max);
        let log_x = texts.is_empty() && smallest > 0.0 && largest / smallest >= 100.0;
        let x_label = if texts.is_empty() {
            name.clone()
        } else {
            let legend: Vec<String> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} = {t}"))
                .collect();
            format!("{name} ({})", legend.join(", "))
        };
        let figure = Figure::Scatter {
            title: format!("{score_name} against {name}"),
            x_label,
            y_label: score_name.into(),
            points,
            points_name: "trials".into(),
            diagonal: false,
            log_x,
        };
        plots.push(plots::write(
            &figure,
            &plots_dir,
            &format!("param_{index}"),
        )?);
    }
    body.push_str(&plots_section(&plots));

    let path = dir.join(REPORT_FILE);
    model::write_atomic(&path, page(title, &body).as_bytes())?;
    Ok(path)
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Wraps `body` into a page with an inline style sheet and no external resources.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}\
         </title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n\
         </html>\n",
        title = escape(title)
    )
}

const STYLE: &str = "\
body { font-family: sans-serif; margin: 2em auto; max-width: 1700px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots img { max-width: 100%; height: auto; border: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
.grid figure { margin: 0; text-align: center; font-size: 0.8em; }
.grid img { image-rendering: pixelated; border: 1px solid #999; }
.note { color: #a40; }
";

/// Escapes the characters that HTML gives a meaning.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn search_report_lists_trials_and_plots() {
        let dir = std::env::temp_dir().join(format!("dendrite-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let trial = |number, rate: f64, optimizer: &str, score| Trial {
            number,
            params: BTreeMap::from([
                ("learning_rate".to_string(), ParamValue::Number(rate)),
                ("optimizer".to_string(), ParamValue::Text(optimizer.into())),
            ]),
            score,
            status: if score.is_some() {
                "finished"
            } else {
                "stopped: NaN loss"
            }
            .into(),
        };
        let trials = [
            trial(1, 0.1, "sgd", Some(0.91)),
            trial(2, 0.01, "adam", Some(0.95)),
            trial(3, 10.0, "sgd", None),
        ];
        let path = write_search_report(&dir, "search", "val_accuracy", true, &trials).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        let best = html.find("<td>2</td><td>0.9500</td>").expect("trial 2 row");
        let second = html.find("<td>1</td><td>0.9100</td>").expect("trial 1 row");
        let failed = html.find("stopped: NaN loss").expect("failed trial row");
        assert!(
            best < second && second < failed,
            "rows are not sorted by score"
        );
        assert_eq!(
            html.matches("<img src=\"data:image/svg+xml;base64,")
                .count(),
            2
        );
        assert!(dir.join("plots/param_0.png").exists());
        assert!(dir.join("plots/param_1.svg").exists());

        // The learning rates span 0.01 to 10, so their axis is logarithmic. The plotted
        // trials span 0.01 to 0.1 (the failed trial has no score).
        let rates = std::fs::read_to_string(dir.join("plots/param_0.svg")).unwrap();
        for label in ["0.01", "0.016", "0.1"] {
            assert!(
                rates.contains(&format!(">\n{label}\n</text>")),
                "no label {label}"
            );
        }
        let optimizers = std::fs::read_to_string(dir.join("plots/param_1.svg")).unwrap();
        assert!(!optimizers.contains(">\n0.016\n</text>"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
